"""The domains study (claim 3) against its controls, on a synthetic context.

The context stand-in holds neuron statistics of random activations in which the
Rosetta neurons get a planted preference for code *on the selection documents
only*: a leak that the in-sample arm reports as specialisation and the held-out
arm (preferred domain from the other documents) must not.
"""
import json
import types

import numpy as np
import pytest

from rosetta_jax import pairs as pairs_lib
from rosetta_jax.analysis import controls, domains as dom_lib, selectivity as sel
from rosetta_jax.analysis import stats
from rosetta_jax.report.html import Report
from rosetta_jax.studies import domains
import synthetic_context as synthetic_lib

DOCS, PER_DOC, LAYERS, RESAMPLES = 32, 16, 3, 8
NAMES = ("code", "docs", "math", "prose")


def synthetic_context(seed=0):
  rng = np.random.default_rng(seed)
  labels = sel.UnitLabels.build(np.arange(DOCS + 1) * PER_DOC,
                                [NAMES[i % 4] for i in range(DOCS)],
                                [f"t{rng.integers(40)}" for _ in range(DOCS * PER_DOC)])
  select, _ = domains.split_documents(DOCS, seed)
  in_select = np.isin(labels.doc_index, select)
  code = labels.doc_domain[labels.doc_index] == 0
  neuron_stats, results, pairs = {}, {}, []
  for width in (24, 48, 72):
    n = LAYERS * width
    models = [types.SimpleNamespace(name=f"{s}{width}", num_neurons=n, num_layers=LAYERS)
              for s in "ab"]
    mask = lambda: rng.random(n) < 0.3
    masks = [mask(), mask()]
    for m, ros in zip(models, masks):
      x = rng.standard_t(5, (labels.num_units, n)) + rng.normal(0, 1, n)
      # Positive activations tripled: a domain preference that leaves the activation
      # frequency (the matched control's variable) alone. The leak: the Rosetta
      # neurons on the selection documents only; other code neurons everywhere.
      leak, real = code & in_select, ~ros & (rng.random(n) < 0.1)
      for units, cols in ((leak, ros), (code, real)):
        block = x[np.ix_(units, cols)]
        x[np.ix_(units, cols)] = np.where(block > 0, 3 * block, block)
      neuron_stats[m.name] = sel.neuron_stats(x.astype(np.float32), labels, top_m=8)
    pair = pairs_lib.Pair(f"w{width}", *models)
    offsets = np.arange(LAYERS + 1) * width
    null = [rng.choice(n, n // 4, replace=False) for _ in range(2)]
    results[pair.label] = types.SimpleNamespace(
        neurons_a=n, neurons_b=n, mask_a=masks[0], mask_b=masks[1], offsets_a=offsets,
        offsets_b=offsets, null_idx_a=null[0], null_idx_b=null[1],
        members_a=np.stack([masks[0] ^ (rng.random(n) < 0.03) for _ in range(RESAMPLES)]),
        members_b=np.stack([masks[1] ^ (rng.random(n) < 0.03) for _ in range(RESAMPLES)]))
    pairs.append(pair)
  return synthetic_lib.synthetic_context(pairs, results, neuron_stats, labels, seed=seed,
                                         resamples=RESAMPLES, docs=DOCS)


@pytest.fixture(scope="module")
def run():
  ctx = synthetic_context()
  mp = pytest.MonkeyPatch()
  # The selection half's pair result is the same stand-in (its masks were planted
  # on the selection documents); the gallery needs texts the stand-in lacks.
  mp.setattr(domains, "_selection_result", lambda c, p: c.result(p))
  mp.setattr(domains, "make_gallery", lambda c, p: [])
  result = domains.run(ctx, ctx.cfg)
  mp.undo()
  return ctx, result, json.loads(json.dumps(result.to_json()))


def test_split_is_the_unit_budget_and_its_complement():
  for d, seed in ((32, 0), (101, 3), (7, 1)):
    select, est = domains.split_documents(d, seed)
    np.testing.assert_array_equal(select, pairs_lib.budget_documents(d, 0.5, seed))
    assert not np.intersect1d(select, est).size
    np.testing.assert_array_equal(np.union1d(select, est), np.arange(d))
    assert len(select) == max(4, -(-d // 2))


def test_held_out_preferred_domain_drops_a_selection_leak(run):
  """In sample the planted leak looks like specialisation; held out it does not."""
  _, _, js = run
  mean = lambda arm, k: np.mean([e[arm][k]["specialised"] for e in js["per_size"]])
  for e in js["per_size"]:
    assert e["in_sample"]["rosetta"]["specialised"] - e["held_out"]["rosetta"]["specialised"] > 0.3
  assert mean("in_sample", "minus_matched") > 0.25 and mean("in_sample", "minus_null") > 0.2
  assert abs(mean("held_out", "minus_matched")) < 0.1 and abs(mean("held_out", "minus_null")) < 0.1
  assert js["split"] == {"documents": DOCS, "selection": 16, "estimation": 16,
                         "rule": "pairs.budget_documents(D, 0.5, seed=0)"}


def test_held_out_shares_and_controls_recomputed(run):
  """Every held-out number from its definition: preferred domains on the estimation
  documents only, the matched control drawn on selection-document frequencies."""
  ctx, _, js = run
  spec = np.isin(js["domains"], domains.SPECIALISED)
  select, est = domains.split_documents(DOCS, 0)
  w_est, w_sel = np.zeros(DOCS), np.zeros(DOCS)
  w_est[est], w_sel[select] = 1, 1
  for e, pair in zip(js["per_size"], ctx.pairs):
    res = ctx.result(pair)
    st = [ctx.neuron_stats(m) for m in (pair.a, pair.b)]
    pooled = lambda w, k: np.concatenate([sel.metrics(s, w[None])[k][0] for s in st])
    pref, freq = pooled(w_est, "preferred_domain"), pooled(w_sel, "frequency")
    ros = np.concatenate([res.mask_a, res.mask_b])
    ctrl, bal = controls.pair_matched_control(res.offsets_a, res.offsets_b, freq, ros, (0,))
    assert bal[0].layers_equal and bal[1].layers_equal and not ros[ctrl].any()
    null = controls.null_control(res)
    h = e["held_out"]
    for name, idx in (("rosetta", np.flatnonzero(ros)), ("matched", ctrl), ("null", null)):
      share = dom_lib.domain_shares(pref[idx], len(js["domains"]))
      assert h[name]["specialised"] == pytest.approx(share[spec].sum(), abs=1e-12), name
      assert h[name]["count"] == len(idx)
    assert h["minus_matched"]["specialised"] == pytest.approx(
        h["rosetta"]["specialised"] - h["matched"]["specialised"])
    dsi = pooled(w_est, "dsi")
    x, y = dsi[ros], dsi[null]
    assert h["dsi_vs_null"]["delta"] == pytest.approx(stats.cliffs_delta(x, y), abs=1e-12)
    assert h["dsi_vs_null"]["d"] == pytest.approx(stats.cohens_d(x, y))
    lo, hi = h["minus_null"]["specialised_ci"]
    assert -1 <= lo and hi <= 1            # a share difference stays a share difference
    assert hi - lo > 0                      # the resamples vary: not a degenerate interval
    # In sample: all documents.
    pref_all = np.concatenate([sel.metrics(s)["preferred_domain"] for s in st])
    share = dom_lib.domain_shares(pref_all[ros], len(js["domains"]))
    assert e["in_sample"]["rosetta"]["specialised"] == pytest.approx(share[spec].sum())


def test_trends_claims_and_report(run):
  _, result, js = run
  for arm in domains.ARMS:
    for k in ("minus_matched", "minus_null"):
      t = js["trend"][arm][k]
      y = [e[arm][k]["specialised"] for e in js["per_size"]]
      assert t["slope"] == pytest.approx(stats.ols(np.log(js["sizes"]), y).slope)
      assert t["n_boot"] == RESAMPLES
  rows = domains.claims(result)
  assert len(rows) == 3 and "held-out" in rows[0][0] and "null-paired" in rows[1][0]
  for row, (arm, c) in zip(rows, (("held_out", "matched"), ("held_out", "null"),
                                  ("in_sample", "matched"))):
    lo, hi = js["trend"][arm][f"minus_{c}"]["ci"]
    assert row[2] == f"[{lo:.3f}, {hi:.3f}]"
    assert row[3] == ("yes" if lo > 0 else "no (opposite)" if hi < 0
                      else "inconclusive (CI spans 0)")
  html = domains.section(Report("t"), result).render()
  assert "null-paired" in html and "preferred domains from the other 16" in html
  assert html.count("Plotly.newPlot") >= 3 and "minus matched" in html


def test_docs_template_renders_the_results(run):
  from rosetta_jax.report import docs  # pylint: disable=g-import-not-at-top
  _, _, js = run
  text = docs.TEMPLATES["domains_controls"]({"results": js})
  t, u = js["trend"]["held_out"]["minus_matched"], js["trend"]["held_out"]["minus_null"]
  assert f"| held out | {t['slope']:+.3f} [{t['ci'][0]:.3f}, {t['ci'][1]:.3f}] |" in text
  assert f"| {u['slope']:+.3f} [{u['ci'][0]:.3f}, {u['ci'][1]:.3f}] |" in text
  e = js["per_size"][1]["held_out"]["minus_matched"]
  assert f"{e['specialised']:+.3f} [{e['specialised_ci'][0]:.3f}, " in text
  assert text.count("\n| w") == 2 * len(js["per_size"])
