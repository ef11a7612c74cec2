"""The explorer's data (rosetta_jax/explorer) on a micro run, checked against NumPy.

Cards must show what the store holds: every number below is recomputed here from
the store's activations and the documents, independently of the builder.
"""

import json
import os
import re

import numpy as np
import pytest

from explorer_micro import NEURONS, shared_micro_run
from rosetta_jax.explorer.cards import rounded
from rosetta_jax import explorer
from rosetta_jax.analysis import selectivity as sel
from rosetta_jax.explorer import cards as cards_lib
from rosetta_jax.explorer import page
from rosetta_jax.match.sources import ArraySource
from rosetta_jax.studies.context import unit_labels


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  return shared_micro_run(tmp_path_factory)


def column(run, model, site, n):
  st = run.stores[model]
  return st.site(site).read(0, st.units_done)[:, n]


def test_rosetta_pairs_are_the_permutation(run):
  # Sanity of the fixture: B is A relabelled, so every pair of an unscrambled
  # neuron is (n, perm[n]) at r ~ 1, and scrambled neurons are left without one.
  last = sorted(run.perms)[-1]
  kept = 0
  for s, n, sb, m, r in zip(run.rosetta.site_a, run.rosetta.neuron_a, run.rosetta.site_b,
                            run.rosetta.neuron_b, run.rosetta.r):
    assert s == sb
    if s == last and n in run.scrambled:
      assert r < 0.99
      continue
    assert run.perms[s][n] == m and r > 0.9999
    kept += 1
  assert kept >= 2 * NEURONS - len(run.scrambled) - 4      # constant neurons aside
  assert float(np.max(run.null.r)) < 0.99
  assert sum(r.kind == "control" for r in run.rows) == 4


def test_unit_text_matches_polarization_unit_labels(run):
  labels, spans = unit_labels(list(run.models.values()), run.docs, run.stores)
  np.testing.assert_array_equal(run.units.spans, spans)
  np.testing.assert_array_equal(run.units.unit_offsets,
                                run.stores["micro-a"].documents["unit_offsets"])
  # Unit strings read back as the documents: their concatenation per document is
  # the document's text from its first unit to its last.
  for d, doc in enumerate(run.docs):
    a, b = run.units.unit_offsets[d], run.units.unit_offsets[d + 1]
    joined = "".join(run.units.unit_strings(range(a, b)))
    raw = doc.text.encode()
    assert joined == raw[run.units.spans[a, 0]:run.units.spans[b - 1, 1]].decode()
  assert labels.num_units == run.units.num_units


def test_units_save_load(run, tmp_path):
  p = run.units.save(str(tmp_path / "units.npz"))
  back = explorer.UnitText.load(p)
  np.testing.assert_array_equal(back.spans, run.units.spans)
  assert back.texts == run.units.texts and back.domains == run.units.domains


def test_cards_hold_the_store_activations(run):
  ex = explorer.open_explorer(run.out_dir)
  assert ex.num_rows == len(run.rows)
  cfg = explorer.CardConfig()
  seen_kinds = set()
  for i in (0, 1, len(run.rosetta), len(run.rows) - 1):      # pairs, a null pair, a control
    row = run.rows[i]
    card = ex.card(f"r{i}").data
    seen_kinds.add(card["kind"])
    assert card["kind"] == row.kind and len(card["members"]) == len(row.members)
    unit_of, _ = cards_lib.expand_runs(card["units"]["runs"])
    for j, (mem, head) in enumerate(zip(row.members, card["members"])):
      x = column(run, mem.model, mem.site, mem.neuron).astype(np.float64)
      assert (head["model"], head["site"], head["neuron"]) == mem.key
      # Top contexts: the k largest activations, descending, marked at their unit.
      order = np.lexsort((np.arange(len(x)), -x))[:cfg.top_k]
      assert [unit_of[c[0]] for c in head["top"]] == order.tolist()
      # Values are written rounded (page size): exactly the reference, rounded alike.
      assert [c[3] for c in head["top"]] == [rounded(v, cfg.digits) for v in x[order]]
      # Every member's activation on every unit of the table.
      for jj, mem2 in enumerate(row.members):
        x2 = column(run, mem2.model, mem2.site, mem2.neuron)
        assert card["units"]["act"][jj] == [rounded(v, cfg.act_digits) for v in
                                            np.asarray(x2[unit_of], np.float64)]
      # Windows: [unit - before, unit + after] clipped to the unit's document.
      offs = run.units.unit_offsets
      for c, a, b, _ in head["top"]:
        u = unit_of[c]
        d = np.searchsorted(offs, u, side="right") - 1
        assert unit_of[a] == max(u - cfg.before, offs[d])
        assert unit_of[b - 1] == min(u + cfg.after, offs[d + 1] - 1)
        assert card["units"]["text"][c] == run.units.unit_strings([u])[0]
      # Histogram and bands over [min, max]; samples lie in their band.
      h = np.histogram(x, bins=cfg.hist_bins, range=(x.min(), x.max()))[0]
      assert sum(head["hist"]["counts"]) == len(x)
      np.testing.assert_array_equal(head["hist"]["counts"], h)
      edges = np.linspace(x.min(), x.max(), cfg.bands + 1)
      assert [b["units"] for b in head["bands"]] == \
          np.histogram(x, bins=cfg.bands, range=(x.min(), x.max()))[0].tolist()
      assert head["bands"][-1]["pct"][1] == 100.0
      for jb, band in enumerate(head["bands"]):
        assert len(band["samples"]) == min(cfg.samples_per_band, band["units"])
        for c, _, _, v in band["samples"]:
          assert edges[jb] - 1e-6 <= x[unit_of[c]] <= edges[jb + 1] + 1e-6
      # Statistics.
      d = x - x.mean()
      assert head["stats"]["kurtosis"] == pytest.approx(
          np.mean(d ** 4) / np.mean(d ** 2) ** 2 - 3, rel=1e-3, abs=1e-3)
      assert head["stats"]["frequency"] == pytest.approx(np.mean(x > 0), abs=1e-3)
      # Vocabulary: the projection of this neuron.
      vp = run.vocab[mem.model][mem.site]
      assert [t[1] for t in head["vocab"]["top"]] == vp.top_ids[mem.neuron].tolist()
  assert seen_kinds == {"rosetta", "null", "control"}


def test_partner_fires_on_the_same_text(run):
  # Model B is A relabelled: a Rosetta pair's two columns show the same top units.
  ex = explorer.open_explorer(run.out_dir)
  card = ex.card("r0").data
  a, b = card["members"]
  assert [c[0] for c in a["top"]] == [c[0] for c in b["top"]]


def test_builder_statistics_agree_with_selectivity(run):
  labels, _ = unit_labels(list(run.models.values()), run.docs, run.stores)
  st = run.stores["micro-a"]
  x = st.site("layer_1/mlp").read(0, st.units_done)
  ref = sel.metrics(sel.neuron_stats(ArraySource(x), labels, top_m=8))
  ex = explorer.open_explorer(run.out_dir)
  checked = 0
  for i, row in enumerate(run.rows):
    m = row.members[0]
    if m.model != "micro-a" or m.site != "layer_1/mlp" or checked >= 5:
      continue
    head = ex.card(f"r{i}").data["members"][0]
    assert head["stats"]["dsi"] == pytest.approx(ref["dsi"][m.neuron], rel=1e-3, abs=1e-4)
    assert head["stats"]["kurtosis"] == pytest.approx(ref["kurtosis"][m.neuron], rel=1e-3, abs=1e-3)
    assert head["domain"] == labels.domains[int(ref["preferred_domain"][m.neuron])]
    checked += 1
  assert checked == 5


def test_index_lists_every_row(run):
  ix = page.read_index(os.path.join(run.out_dir, "index.html"))
  assert len(ix["rows"]["id"]) == len(run.rows)
  kinds = [ix["kinds"][k] for k in ix["rows"]["kind"]]
  assert kinds == [r.kind for r in run.rows]
  for i in (0, len(run.rows) - 1):
    mem = [(ix["models"][m[0]], ix["sites"][m[1]], m[2]) for m in ix["rows"]["mem"][i]]
    assert mem == [m.key for m in run.rows[i].members]
    assert ix["rows"]["r"][i] == cards_lib.rounded(run.rows[i].r, 4)
  assert ix["rows"]["mem"][0][0][3] == pytest.approx(0.25 if run.rows[0].members[0].site ==
                                                      "layer_0/mlp" else 0.75)
  html_text = open(os.path.join(run.out_dir, "index.html"), encoding="utf-8").read()
  # Offline: nothing is loaded from a network address (the SVG namespace is a name).
  assert not re.search(r"""(src|href)\s*=\s*['"]?(https?:)?//|url\(\s*['"]?https?:|@import""",
                       html_text)
  assert "fetch(" not in html_text and "XMLHttpRequest" not in html_text


def test_find_and_exports(run, tmp_path):
  ex = explorer.open_explorer(run.out_dir)
  m = run.rows[3].members[0]
  layer = int(m.site.split("/")[0].split("_")[1])
  ids = ex.find(f"L{layer} N{m.neuron}")
  assert "r3" in ids
  assert all(any(s.startswith(f"layer_{layer}/") and n == m.neuron for _, s, n in ex.members(
      ex.index["rows"]["id"].index(i))) for i in ids)
  assert ex.find(m.key)[0] == ids[0]
  with pytest.raises(ValueError, match="cannot read"):
    ex.find("L1 bogus")
  p = ex.export("r3", str(tmp_path / "r3.json"))
  assert json.load(open(p))["id"] == "r3"
  import pyarrow.parquet as pq  # the test extra installs pyarrow
  p = ex.export("r3", str(tmp_path / "r3.parquet"), format="parquet")
  t = pq.read_table(p)
  card = ex.card("r3")
  recs = card.records()
  assert t.num_rows == len(recs) > 0
  assert t.column("act_1").to_pylist() == [r["act_1"] for r in recs]
  assert json.loads(t.schema.metadata[b"rosetta_jax.card"])["id"] == "r3"
  assert "<script>" in card._repr_html_() and "RJ.renderCard" in card._repr_html_()


def test_rows_roundtrip_and_validation(run, tmp_path):
  p = explorer.save_rows(str(tmp_path / "rows.json"), run.rows, {"run": "micro"})
  back, meta = explorer.load_rows(p)
  assert back == run.rows and meta == {"run": "micro"}
  with pytest.raises(ValueError, match="kind"):
    explorer.Row("pair", (explorer.Member("a", "layer_0/mlp", 1),))
  with pytest.raises(ValueError, match="twice"):
    explorer.Row("rosetta", (explorer.Member("a", "layer_0/mlp", 1),) * 2)
  with pytest.raises(KeyError, match="no activation source"):
    explorer.build_explorer(str(tmp_path / "x"), [explorer.Row(
        "control", (explorer.Member("nope", "layer_0/mlp", 1),))], run.stores, run.units)
  with pytest.raises(ValueError, match="neurons; a row asks"):
    explorer.build_explorer(str(tmp_path / "x"), [explorer.Row(
        "control", (explorer.Member("micro-a", "layer_0/mlp", NEURONS),))], run.stores, run.units)


def test_short_reprs(run):
  from rosetta_jax.match.rosetta import match_sites
  st = run.stores
  res = match_sites({s: st["micro-a"].site(s) for s in st["micro-a"].sites},
                    {s: st["micro-b"].site(s) for s in st["micro-b"].sites})[0]
  text = repr(res)
  assert len(text) < 400 and f"A: {2 * NEURONS} neurons" in text
  assert f"mutual best pairs: {len(run.rosetta)}" in text
  h = res._repr_html_()
  assert "<svg" in h and "mutual best pairs" in h and "<script" not in h
  text = repr(run.rosetta)
  assert len(text) < 400 and f"Matches({len(run.rosetta)} pairs" in text
  h = run.rosetta._repr_html_()
  assert h.count("<tr>") >= 11 and "micro-b" in h


def test_summaries_are_exact_for_any_chunking():
  """Top-k (ties to the lowest unit) and band samples (the smallest hash keys in each
  band) equal a direct computation, whatever the chunk size."""
  from rosetta_jax.explorer.gather import CardConfig, _keys, neuron_salt, summarize_site
  rng = np.random.default_rng(0)
  for trial in range(12):
    t, n = int(rng.integers(20, 3000)), int(rng.integers(1, 6))
    x = rng.integers(0, 4, size=(t, n)) if trial % 2 else rng.normal(size=(t, n))
    x = x.astype(np.float32)
    cfg = CardConfig(chunk_bytes=int(rng.integers(1, 50)) * 4 * n * 64,
                     top_k=int(rng.integers(1, 12)), samples_per_band=int(rng.integers(1, 6)))
    cols = np.arange(n)
    salt = neuron_salt("m", "layer_0/mlp", cols)
    out, _ = summarize_site(x, cols, np.zeros(t, np.int64), 1, cfg, salt, cache=False)
    keys = _keys(np.arange(t), salt, 0)
    for c in range(n):
      s = out[c]
      assert s.top_units.tolist() == np.lexsort((np.arange(t), -x[:, c]))[:cfg.top_k].tolist()
      lo, hi = x[:, c].min(), x[:, c].max()
      b = np.clip(np.floor((x[:, c].astype(np.float64) - lo) * (40 / (hi - lo))), 0, 39) // 10
      for j in range(4):
        idx = np.flatnonzero(b == j)
        want = idx[np.argsort(keys[idx, c])[:cfg.samples_per_band]]
        assert sorted(s.band_units[j].tolist()) == sorted(want.tolist())
        assert s.band_counts[j] == len(idx)


def test_saved_inputs_and_the_binary(run, tmp_path):
  """``save_inputs`` then ``python -m experiments.explore``: the same rows and cards."""
  import subprocess
  import sys
  work = tmp_path / "work"
  explorer.save_inputs(str(work), run.rows, run.stores, run.units, vocab=run.vocab,
                       num_layers={"micro-a": 2, "micro-b": 2}, title="micro (saved)")
  back = explorer.load_inputs(str(work))
  assert back["rows"] == run.rows and back["title"] == "micro (saved)"
  vp, vq = back["vocab"]["micro-b"]["layer_1/mlp"], run.vocab["micro-b"]["layer_1/mlp"]
  np.testing.assert_array_equal(vp.top_ids, vq.top_ids)
  assert vp.top_tokens.tolist() == vq.top_tokens.tolist()
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  m = run.rows[2].members[1]
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.explore", f"--workdir={work}", "--noprogress",
       f"--export=model:{m.model} L{m.site[6]} N{m.neuron}", "--export_format=parquet"],
      cwd=repo, capture_output=True, text=True, timeout=300,
      env={**os.environ, "PYTHONPATH": repo})
  assert proc.returncode == 0, proc.stderr[-3000:]
  ex = explorer.open_explorer(str(work))
  assert ex.num_rows == len(run.rows) and ex.info["title"] == "micro (saved)"
  assert ex.card("r2").data == explorer.open_explorer(run.out_dir).card("r2").data
  exported = os.listdir(work / "explorer" / "export")
  assert exported == [f"{ex.find(m.key)[0]}.parquet"]


def test_anchor_cards_show_every_model(run, tmp_path):
  """Anchors of a three-model zoo (B's store seen twice, as B and C): one card with
  the anchor and its partner in each other model, side by side."""
  from rosetta_jax.match import find_rosetta_zoo
  st = run.stores
  acts = {name: {s: st[src].site(s) for s in st[src].sites}
          for name, src in (("micro-a", "micro-a"), ("micro-b", "micro-b"), ("micro-c", "micro-b"))}
  zoo = find_rosetta_zoo(acts, "micro-a", within_layer=True)
  rows = explorer.anchor_rows(zoo)
  assert rows and all(r.kind == "anchor" and len(r.members) == 3 for r in rows)
  assert all(r.r == min(m.r for m in r.members[1:]) for r in rows)
  sources = {"micro-a": st["micro-a"], "micro-b": st["micro-b"], "micro-c": st["micro-b"]}
  out = str(tmp_path / "anchors")
  explorer.build_explorer(out, rows[:5], sources, run.units)
  card = explorer.open_explorer(out).card("r0").data
  assert [m["model"] for m in card["members"]] == ["micro-a", "micro-b", "micro-c"]
  assert card["members"][1]["neuron"] == card["members"][2]["neuron"]
  assert len(card["units"]["act"]) == 3
  assert card["units"]["act"][1] == card["units"]["act"][2]


def test_studies_matched_control_rows_are_the_polarization_draw():
  """``write_explorer``'s control rows: per pair and model, the neurons of the
  layer- and frequency-matched control, drawn with the study's seed exactly as the
  polarization study draws its full-data control; never a Rosetta neuron, the same
  count per layer as the Rosetta set, the same rows on a second call."""
  import types  # pylint: disable=g-import-not-at-top
  from rosetta_jax.explorer.workdir import matched_control_rows  # pylint: disable=g-import-not-at-top
  from rosetta_jax.studies import polarization  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(2)
  sites = ("layer_0/mlp", "layer_1/mlp", "layer_2/mlp")

  def result(label, a, b, na, nb):
    return types.SimpleNamespace(
        label=label, model_a=a, model_b=b, neurons_a=3 * na, neurons_b=3 * nb,
        sites_a=sites, sites_b=sites, offsets_a=np.arange(4) * na,
        offsets_b=np.arange(4) * nb, mask_a=rng.random(3 * na) < 0.2,
        mask_b=rng.random(3 * nb) < 0.2)
  results = [result("p1", "m1", "m2", 40, 60), result("p2", "m1", "m3", 40, 50)]
  freq = {"m1": rng.random(120), "m2": rng.random(180), "m3": rng.random(150)}
  freq["m1"][[3, 70]] = np.nan                        # constant neurons: never drawn
  rows = matched_control_rows(results, freq, seed=5, depths={"m1": {"layer_1/mlp": 0.5}})
  assert rows and all(r.kind == "control" and len(r.members) == 1 for r in rows)
  assert matched_control_rows(results, freq, seed=5) == [
      explorer.Row(r.kind, (explorer.Member(r.members[0].model, r.members[0].site,
                                            r.members[0].neuron),), group=r.group)
      for r in rows]
  assert matched_control_rows(results, freq, seed=6) != matched_control_rows(results, freq, 5)
  for res in results:
    ros = np.concatenate([res.mask_a, res.mask_b])
    f = np.concatenate([freq[res.model_a], freq[res.model_b]])
    want, *_ = polarization.pair_controls(res, f, f[None], ros, ros[None], 5)
    got = []
    for r in rows:
      if r.group != f"{res.label} (control)":
        continue
      m = r.members[0]
      side, off = ((0, res.offsets_a) if m.model == res.model_a else
                   (res.neurons_a, res.offsets_b))
      got.append(side + off[sites.index(m.site)] + m.neuron)
    np.testing.assert_array_equal(got, np.unique(want))
    assert not ros[got].any() and np.isfinite(f[got]).all()
    layer = np.concatenate([res.offsets_a.searchsorted(np.arange(res.neurons_a), "right"),
                            10 + res.offsets_b.searchsorted(np.arange(res.neurons_b), "right")])
    ok = np.isfinite(f)
    np.testing.assert_array_equal(np.bincount(layer[want], minlength=14),
                                  np.bincount(layer[ros & ok], minlength=14))
  assert {r.members[0].depth for r in rows if r.members[0].model == "m1"
          and r.members[0].site == "layer_1/mlp"} == {0.5}
