"""End-to-end smoke test of the scaling study on a micro zoo, and its input errors."""
import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from rosetta_jax import pairs
from rosetta_jax.studies import config, context, registry
from rosetta_jax.zoo.config import ZooConfig

# Three seeds per width (three pairs), four null permutations, one budget, the
# untrained baseline and the unit-identity null: every part of the count.
MICRO = config.StudyConfig(
    zoo=ZooConfig(widths=(16, 32, 48), num_layers=1, vocab_size=400, seq_len=64,
                  batch_size=16, steps=120, warmup=20, ckpt_every=60, seeds=(0, 1, 2)),
    record_docs=80, record_chars=400, record_len=64, bootstrap=30, candidates=4,
    null_permutations=4, budgets=(0.5,))


def run_scaling(cfg, workdir, models="zoo") -> dict:
  return registry.run_study("scaling", context.load_context(cfg, workdir, models,
                                                           progress=False)).to_json()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("study"))
  return workdir, run_scaling(MICRO, workdir)


def test_outputs_exist_and_are_sane(run):
  workdir, res = run
  for name in ("config.json", "results.json", "report.html"):
    assert os.path.getsize(os.path.join(workdir, name)) > 0
  with open(os.path.join(workdir, "results.json")) as f:
    disk = json.load(f)
  assert disk["counts"] == res["counts"]
  assert res["sizes"] == [64.0] * 3 + [128.0] * 3 + [192.0] * 3   # 1 layer x 4 * width
  assert [p["label"] for p in res["pairs"][:3]] == ["w16-s0s1", "w16-s0s2", "w16-s1s2"]
  counts = np.array(res["counts"])
  assert np.all(counts > 0) and np.all(counts <= np.array(res["sizes"]))
  # The headline: the mean count of each size's three pairs, and its regression
  # interval the t-interval of the log-log line through them (SciPy).
  from scipy import stats as sps  # pylint: disable=g-import-not-at-top
  head = res["headline"]
  means = counts.reshape(3, 3).mean(1)
  assert head["sizes"] == [64.0, 128.0, 192.0] and head["counts"] == pytest.approx(means)
  lr = sps.linregress(np.log(head["sizes"]), np.log(means))
  t = sps.t.ppf(0.975, 1)
  assert head["beta"] == pytest.approx(lr.slope) == res["fit"]["count"]["beta"]
  assert head["regression_ci"] == pytest.approx([lr.slope - t * lr.stderr,
                                                 lr.slope + t * lr.stderr])
  assert head["resamples"] == "models (seeds within each size) and documents"
  assert res["fit"]["n_boot"] == 30 and head["ci"][0] < head["beta"] < head["ci"][1]
  # The declared criterion: FDR q = 0.05 over 4 permutations; every kept pair is at
  # or above its threshold, and the null explains at most 5% of the count.
  for p in res["pairs"]:
    assert p["criterion"] == {"k": 1, "r_min": None, "null": "fdr", "q": 0.05,
                              "permutations": 4}
    assert p["null_count"] > 0 and min(p["r"]) >= p["r_threshold"]
    assert p["false_positives"] <= 0.05 * p["count"] + 1e-9
    assert p["count"] <= p["raw_count"]
    r = np.array(p["r"])
    assert len(r) == p["count"] and np.all((r > -1) & (r <= 1 + 1e-6))
    assert os.path.exists(os.path.join(workdir, "pairs", p["cache"] + ".tsv"))
  html = open(os.path.join(workdir, "report.html")).read()
  assert html.count("Plotly.newPlot") >= 5 and "beta" in html
  assert "Sensitivity" in html and "Unit budget" in html and "Untrained" in html


def test_sensitivity_baselines_and_verdict(run):
  workdir, res = run
  sens = res["sensitivity"]
  assert list(sens) == [n for n, _ in pairs.SENSITIVITY] + [pairs.EXCESS]
  for p in res["pairs"]:
    s = p["sensitivity"]
    assert s["raw mutual NN"]["count"] == p["raw_count"]
    assert s["mutual k=1"]["count"] == p["count"]             # the declared rule at k = 1
    # A stricter FDR level never keeps more pairs; max-null is the strictest null rule.
    assert s["FDR q=0.01"]["count"] <= s["FDR q=0.05"]["count"] <= s["FDR q=0.1"]["count"]
    assert s["max-null"]["count"] <= s["FDR q=0.01"]["count"]
    assert s["r >= 0.5"]["count"] <= s["r >= 0.3"]["count"] <= p["raw_count"]
    assert s[pairs.EXCESS]["count"] == pytest.approx(p["raw_count"] - p["null_count"])
    # The unit-identity null keeps each unit's text: with one parallel-residual
    # layer, GPT-NeoX's MLP sees the token embedding only, so every unit's
    # activation is a function of its text and the null changes nothing.
    assert p["identity"]["count"] == p["count"] and p["identity"]["fixed_units"] < 0.05
  assert res["identity_null"]["counts"] == res["counts"]
  assert list(res["budgets"]) == ["0.5", "1"]
  assert res["budget_units"]["0.5"] < res["budget_units"]["1"] == res["units"]
  assert res["budgets"]["1"]["beta"] == res["headline"]["beta"]
  assert set(res["leave_one_model_out"]) == {f"zoo-w{w}-s{s}" for w in (16, 32, 48)
                                             for s in range(3)}
  u = res["untrained"]
  assert len(u["counts"]) == 9 and all(p["label"].startswith("untrained-w") for p in u["pairs"])
  v = res["converged"]
  assert isinstance(v["converged"], bool) and v["verdict"].startswith(
      "converged" if v["converged"] else "not converged")
  assert v["converged"] == (v["criteria_agree"] and v["budget_stable"])


def _pairs(workdir):
  """The saved PairResults of a workdir, as their summaries plus the bootstrap counts."""
  out = []
  for f in sorted(os.listdir(os.path.join(workdir, "pairs"))):
    if f.endswith(".npz"):
      r = pairs.PairResult.load(os.path.join(workdir, "pairs", f))
      out.append(dict(r.summary(), boot_counts=r.boot_counts))
  return sorted(out, key=lambda p: p["size"])


def test_rerun_resumes_and_reuses(run):
  workdir, res = run
  again = run_scaling(MICRO, workdir)
  assert again["counts"] == res["counts"] and again["pairs"] == res["pairs"]
  assert again["seconds"]["models"] < res["seconds"]["models"]
  assert again["seconds"]["match"] == res["seconds"]["match"]      # the cached PairResults


def test_pair_results_round_trip_and_keys(run):
  workdir, res = run
  ctx = context.load_context(MICRO, workdir, progress=False)
  pair = ctx.pairs[0]
  got = ctx.result(pair)
  assert got.count == res["pairs"][0]["count"] and got.members_a.shape == (30, got.neurons_a)
  # Each resample's Rosetta set is its own, and mostly the full-data set.
  assert (got.members_a != got.mask_a).any()
  assert (got.members_a & got.mask_a).sum() > 0.5 * got.count * 30
  t = got.matches
  assert len(t) == got.count and set(t.site_a) <= set(pair.a.mlp_sites())
  # Another setting is another entry: nothing of the first is reused or overwritten.
  other = context.Context(dataclasses.replace(MICRO, null_threshold=False), workdir, "zoo",
                          ctx.pairs, ctx.stores, ctx.docs, ctx.weights, {}, progress=False)
  raw = other.result(pair)
  assert raw.key != got.key and raw.count == len(got.raw_r) >= got.count
  assert pairs.PairResult.load(os.path.join(workdir, "pairs",
                                              f"{pair.label}-{got.key}.npz")).count == got.count



def _files(folder):
  return {f: open(os.path.join(folder, f), "rb").read() for f in sorted(os.listdir(folder))}


def test_seed_and_resample_count_get_their_own_cache_entries(run):
  """A study with another seed or another number of resamples computes and keeps its
  own PairResult; the scaling run's entries and results.json stay byte for byte."""
  from rosetta_jax.analysis import bootstrap
  workdir, res = run
  ctx = context.load_context(MICRO, workdir, progress=False)
  pair = ctx.pairs[0]
  base = ctx.result(pair)
  before = _files(os.path.join(workdir, "pairs"))
  results_before = open(os.path.join(workdir, "results.json"), "rb").read()

  def with_cfg(**kw):
    cfg = dataclasses.replace(MICRO, **kw)
    w = bootstrap.bootstrap_weights(len(ctx.docs), cfg.bootstrap, cfg.seed)
    return context.Context(cfg, workdir, "zoo", ctx.pairs, ctx.stores, ctx.docs, w, {},
                           progress=False)

  seed1 = with_cfg(seed=1).result(pair)
  b50 = with_cfg(bootstrap=50).result(pair)
  assert len({base.key, seed1.key, b50.key}) == 3
  # Each entry holds its own settings' numbers, not the scaling run's.
  assert len(seed1.boot_counts) == 30 and len(b50.boot_counts) == 50
  assert not np.array_equal(seed1.boot_counts, base.boot_counts)
  assert not np.array_equal(seed1.null_r, base.null_r)      # the null is seeded too
  after = _files(os.path.join(workdir, "pairs"))
  assert {f: after[f] for f in before} == before             # nothing overwritten
  assert len(after) == len(before) + 4                       # two new npz + tsv
  assert open(os.path.join(workdir, "results.json"), "rb").read() == results_before
  assert pairs.PairResult.load(os.path.join(
      workdir, "pairs", f"{pair.label}-{base.key}.npz")).summary()["resamples"] == 30
  # Each is found again under its own settings, and only there.
  again = with_cfg(seed=1).result(pair)
  assert again.key == seed1.key and again.seconds == seed1.seconds   # loaded, not redone
  assert ctx.result(pair).key == base.key
  # The resamples themselves are part of the key (not just their count and seed).
  odd = context.Context(MICRO, workdir, "zoo", ctx.pairs, ctx.stores, ctx.docs,
                        ctx.weights[::-1].copy(), {}, progress=False)
  assert pairs.pair_key(odd, pair, MICRO.criterion) != base.key



@pytest.mark.parametrize("damage", ["delete", "truncate"])
def test_damaged_chunk_is_refused_with_and_without_cached_pairs(run, tmp_path, damage):
  """A chunk file deleted or cut short (as a partial copy leaves it) is an error
  naming the store, site and chunk: when the pairs are cached (no activations
  read: the cache lookup checks the files) and when they are recomputed."""
  import shutil
  from rosetta_jax import store as store_lib
  workdir, _ = run
  work = str(tmp_path / "w")
  shutil.copytree(workdir, work, ignore=shutil.ignore_patterns(".lock"))
  acts = sorted(a for a in os.listdir(os.path.join(work, "acts"))
                if not a.startswith("untrained-"))[0]          # a trained model's store
  chunk = os.path.join(work, "acts", acts, "sites", "layer_0", "mlp", "0.0")
  assert store_lib.Store(os.path.join(work, "acts", acts)).layout("layer_0/mlp")[0] < \
      store_lib.Store(os.path.join(work, "acts", acts)).units_done    # row 0 is not the last
  if damage == "delete":
    os.remove(chunk)
    want = r"chunk file sites/layer_0/mlp/0.0 is missing"
  else:
    with open(chunk, "r+b") as f:
      f.truncate(100)
    want = r"chunk file sites/layer_0/mlp/0.0 holds 100 bytes"
  want = (rf"store {os.path.join(work, 'acts', acts)}: site 'layer_0/mlp': chunk row 0 "
          rf"\(units \[0, \d+\)\) is damaged: {want}.*delete the store")
  ctx = context.load_context(MICRO, work, progress=False)
  pair = next(p for p in ctx.pairs if acts in (context.safe_name(p.a.name),
                                               context.safe_name(p.b.name)))
  cached = os.path.join(work, "pairs", f"{pair.label}-{pairs.pair_key(ctx, pair, MICRO.criterion)}.npz")
  assert os.path.exists(cached)
  with pytest.raises(store_lib.StoreDamagedError, match=want):   # the cache lookup
    ctx.result(pair)
  os.remove(cached)
  with pytest.raises(store_lib.StoreDamagedError, match=want):   # read by the matcher
    ctx.result(pair)
  assert not os.path.exists(cached)


def test_workdir_with_other_config_is_refused(run):
  workdir, _ = run
  other = config.StudyConfig(zoo=MICRO.zoo, bootstrap=31)
  with pytest.raises(ValueError, match=r"bootstrap: 30 in the workdir, 31 now"):
    run_scaling(other, workdir)


def test_bad_models_spec(tmp_path):
  with pytest.raises(ValueError, match="empty"):
    context.resolve_models(" ", MICRO, str(tmp_path))
  with pytest.raises(ValueError, match=r"'\+' group"):
    context.parse_models("a+b,c")


@pytest.mark.parametrize("flag,message", [
    ("--preset=huge", "--preset: unknown preset 'huge'"),
    ("--bootstrap=1", "--bootstrap: must be an integer >= 2, got 1"),
    ("--record_len=0", "--record_len: must be an integer >= 1, got 0"),
    ("--record_docs=-3", "--record_docs: must be an integer >= 0"),
    ("--record_docs=2", "--record_docs: needs at least 4 documents"),
    ("--depths=0,1.5", "--depths: must be numbers in [0, 1]"),
    ("--depths=mid", "--depths: expected float values"),
    ("--r_min=2", "--r_min: a correlation must lie in [-1, 1], got 2.0"),
    ("--null_fdr=1.5", "--null_fdr: must lie in (0, 1)"),
    ("--models=a+b,c", "--models: every '+' group")])
def test_binary_rejects_bad_flags(tmp_path, flag, message):
  out = subprocess.run([sys.executable, "-m", "experiments.scaling", flag,
                        f"--workdir={tmp_path}"], capture_output=True, text=True)
  assert out.returncode != 0 and message in out.stderr
  assert not os.listdir(tmp_path)


def test_unknown_model_is_named(tmp_path):
  with pytest.raises(FileNotFoundError, match="no_such_model_dir"):
    context.resolve_models("no_such_model_dir,other", MICRO, str(tmp_path))


def test_hf_checkpoint_dirs_end_to_end(tmp_path):
  """--models=DIR_A,DIR_B,DIR_C on tiny random HF checkpoints (issue 4's path)."""
  import torch  # pylint: disable=g-import-not-at-top
  from transformers import GPTNeoXConfig, GPTNeoXForCausalLM  # pylint: disable=g-import-not-at-top
  from rosetta_jax.data import corpus, tokenizer  # pylint: disable=g-import-not-at-top
  from transformers import PreTrainedTokenizerFast  # pylint: disable=g-import-not-at-top
  tok = tokenizer.train_bpe([d.text for d in corpus.load_corpus("train")[:50]], 300)
  dirs = []
  for i, width in enumerate((32, 48, 64)):
    torch.manual_seed(i)
    hf = GPTNeoXForCausalLM(GPTNeoXConfig(
        vocab_size=300, hidden_size=width, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=2 * width, max_position_embeddings=64)).eval()
    d = tmp_path / f"neox{width}"
    hf.save_pretrained(d)
    PreTrainedTokenizerFast(tokenizer_object=tok.backend).save_pretrained(d)
    dirs.append(str(d))
  cfg = config.StudyConfig(zoo=MICRO.zoo, record_docs=20, record_chars=200, record_len=64,
                           bootstrap=10, candidates=4, null_permutations=2, budgets=(),
                           identity_null=False)
  res = run_scaling(cfg, str(tmp_path / "run"), ",".join(dirs))
  assert [p["label"] for p in res["pairs"]] == ["neox32~neox48", "neox32~neox64", "neox48~neox64"]
  assert res["sizes"] == pytest.approx([np.sqrt(128 * 192), np.sqrt(128 * 256), np.sqrt(192 * 256)])
  assert np.isfinite(res["fit"]["count"]["beta"]) and min(res["counts"]) > 0
  assert os.path.exists(tmp_path / "run" / "report.html")
  # Anchors: every pair of the three matched, so each model's anchor set is the
  # intersection of its pair members, recomputed here from the pair tables.
  members = {}
  for p, (x, y) in zip(res["pairs"], [(0, 1), (0, 2), (1, 2)]):
    tsv = np.genfromtxt(tmp_path / "run" / "pairs" / (p["cache"] + ".tsv"),
                        dtype=None, names=True, encoding="utf-8")
    tsv = np.atleast_1d(tsv)
    layer_a = np.array([int(s.split("_")[1].split("/")[0]) for s in tsv["site_a"]])
    layer_b = np.array([int(s.split("_")[1].split("/")[0]) for s in tsv["site_b"]])
    npl = {0: 128, 1: 192, 2: 256}
    members.setdefault(x, []).append(set(layer_a * npl[x] // 2 + tsv["neuron_a"]))
    members.setdefault(y, []).append(set(layer_b * npl[y] // 2 + tsv["neuron_b"]))
  anchors = res["anchors"]
  assert len(anchors) == 3
  for i, d in enumerate(dirs):
    a = next(v for k, v in anchors.items() if k.endswith(os.path.basename(d)))
    assert a["count"] == len(members[i][0] & members[i][1])
    assert a["partners"] == 2 and len(a["count_ci"]) == 2
    assert len(a["layer_density"]) == 2
    assert sum(a["layer_density"]) * (128 + 64 * i) // 2 == pytest.approx(a["count"])
  assert "Anchors" in open(tmp_path / "run" / "report.html").read()
  # The explorer lists every pair and one row per anchor, with its partner in each model.
  from rosetta_jax import explorer  # pylint: disable=g-import-not-at-top
  ctx = context.load_context(cfg, str(tmp_path / "run"), ",".join(dirs), progress=False)
  explorer.write_explorer(ctx)
  rows, _ = explorer.load_rows(str(tmp_path / "run" / "explorer" / "inputs" / "rows.json"))
  assert sum(r.kind == "rosetta" for r in rows) == sum(res["counts"])
  # The first null permutation's pairs, as null rows with their null r.
  nulls = [r for r in rows if r.kind == "null"]
  results = [ctx.result(p) for p in ctx.pairs]
  assert len(nulls) == sum(len(x.null_idx_a) for x in results) > 0
  first = results[0]
  assert [r.r for r in nulls if r.group == f"{first.label} (null)"] == pytest.approx(
      first.null_r[first.null_perm == 0].tolist(), abs=1e-6)
  assert max(r.r for r in nulls) < min(r.r for r in rows if r.kind == "rosetta")
  # The matched control of each pair (layer + frequency, the study's seed): as many
  # neurons per model as it has Rosetta ones, none of them Rosetta.
  for x in results:
    ctrl = [r.members[0] for r in rows if r.kind == "control"
            and r.group == f"{x.label} (control)"]
    assert len(ctrl) == 2 * x.count > 0
    ros = {(m.model, m.site, m.neuron) for r in rows if r.kind == "rosetta"
           and r.group == x.label for m in r.members}
    assert not ros & {m.key for m in ctrl}
    assert sum(m.model == x.model_a for m in ctrl) == x.count
  anchor = [r for r in rows if r.kind == "anchor"]
  assert len(anchor) == sum(a["count"] for a in anchors.values())
  assert all(len(r.members) == 3 for r in anchor)
  # Depth-selected layers: only the last layer of each model is recorded and matched.
  last = dataclasses.replace(cfg, depths=(1.0,), null_fdr=0.2)
  res = run_scaling(last, str(tmp_path / "last"), ",".join(dirs))
  for p in res["pairs"]:               # the FDR rule: never stricter than the max-null rule
    assert p["criterion"] == {"k": 1, "r_min": None, "null": "fdr", "q": 0.2,
                              "permutations": 2}
    assert p["count"] <= p["raw_count"]
    assert p["count"] == 0 or p["r_threshold"] <= p["null_r_max"] + 1e-6
    assert p["count"] >= p["sensitivity"]["max-null"]["count"]
  assert [m["sites"] for m in res["model_info"]] == [["layer_1/mlp"]] * 3
  assert [m["neurons"] for m in res["model_info"]] == [64, 96, 128]
  assert all(p["depth_a"] == [0.75] and p["num_layers_a"] == 1 for p in res["pairs"])
  assert all(len(a["layer_density"]) == 1 for a in res["anchors"].values())


def test_select_depths_maps_relative_depth_to_its_layer(tmp_path):
  from rosetta_jax.models import base  # pylint: disable=g-import-not-at-top
  m = lambda n: base.Model("m", None, None, ZooConfig(num_layers=n).model_config(16))
  # Layer l of L holds the depths [l / L, (l + 1) / L); 1 is the last layer.
  assert m(30).select_depths((0, 0.5, 1)).mlp_sites() == [
      "layer_0/mlp", "layer_15/mlp", "layer_29/mlp"]
  assert m(24).select_depths((0.75,)).studied_layers == (18,)
  assert m(24).select_depths((0.5, 0.52)).studied_layers == (12,)   # duplicates collapse
  small = m(2)
  assert small.select_depths(()).mlp_sites() == ["layer_0/mlp", "layer_1/mlp"]
  assert small.num_neurons == 2 * small.neurons_per_layer
  with pytest.raises(ValueError, match=r"\[0, 1\]"):
    m(4).select_depths((1.2,))


def test_fdr_threshold_keeps_what_the_null_cannot_explain():
  from rosetta_jax.match.rosetta import fdr_threshold  # pylint: disable=g-import-not-at-top
  real = np.array([0.99, 0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
  null = np.array([0.97, 0.55, 0.45, 0.42, 0.41])
  # At 0.6: 1 null / 6 real = 0.17; at 0.5: 2 / 7; at 0.4: 5 / 8.
  assert fdr_threshold(real, null, 0.2) == 0.6
  assert fdr_threshold(real, null, 0.3) == 0.5
  # The max-null rule would keep only 0.99; a lone high null pair does not stop
  # the step-up rule (at 0.99 the rate is 0, at 0.95 it is 1/2).
  assert fdr_threshold(real, null, 0.01) == np.nextafter(0.97, 1)      # keeps 0.99 only
  assert fdr_threshold(real, null * 0.5, 0.01) == np.nextafter(0.485, 1)   # max-null: 0 null
  assert fdr_threshold(real, np.array([]), 0.05) == 0.4
  assert fdr_threshold(np.array([0.3]), np.array([0.5]), 0.05) > 0.3     # nothing kept
  with pytest.raises(ValueError, match="FDR"):
    fdr_threshold(real, null, 0.0)
