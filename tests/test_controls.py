"""Matched controls of Rosetta sets (analysis/controls.py) and Cliff's delta."""

import numpy as np
import pytest
from scipy import stats as sps

from rosetta_jax.analysis import controls, stats
from synthetic_context import synthetic_context

# The frequency tolerance the matched control is held to: the largest gap between
# the Rosetta set's and the control's frequency quantiles (q = 0.05 ... 0.95).
TOLERANCE = 0.05


def _skewed_neurons(seed=0, layers=6, per_layer=400):
  """Neurons whose frequency rises with layer and whose chance of being Rosetta
  rises with layer and falls with frequency: a random draw of non-Rosetta
  neurons is then off in both layer and frequency."""
  rng = np.random.default_rng(seed)
  layer = np.repeat(np.arange(layers), per_layer)
  freq = rng.beta(2 + layer, 6 - 0.5 * layer)
  logit = -3.5 + 0.5 * layer - 4 * (freq - freq.mean())
  ros = rng.random(layer.size) < 1 / (1 + np.exp(-logit))
  return layer, freq, ros


def test_matched_control_reproduces_layers_and_frequency_where_a_random_draw_does_not():
  layer, freq, ros = _skewed_neurons()
  mc = controls.matched_control(layer, freq, ros, seed=1)
  assert len(mc.indices) == ros.sum() and len(np.unique(mc.indices)) == len(mc.indices)
  assert not ros[mc.indices].any()
  np.testing.assert_array_equal(np.bincount(layer[mc.indices], minlength=6),
                                np.bincount(layer[ros], minlength=6))
  b = mc.balance
  assert b.layers_equal and b.spilled == 0 and b.replaced == 0
  assert b.max_quantile_gap < TOLERANCE
  # The report's numbers are the ones SciPy / NumPy give for the two sets.
  fr, fc = freq[ros], freq[mc.indices]
  assert b.ks == pytest.approx(sps.ks_2samp(fr, fc).statistic)
  q = controls.QUANTILES
  assert b.max_quantile_gap == pytest.approx(np.abs(np.quantile(fr, q) - np.quantile(fc, q)).max())
  # A uniform draw of as many non-Rosetta neurons fails both.
  rnd = controls.balance(layer, freq, np.flatnonzero(ros), controls.random_control(ros, seed=1))
  assert not rnd.layers_equal and rnd.max_quantile_gap > TOLERANCE and rnd.ks > 2 * b.ks


def test_balance_ks_with_tied_frequencies_is_scipys():
  rng = np.random.default_rng(5)
  freq = rng.random(300).round(1)             # frequencies are fractions of units: ties
  layer = np.zeros(300, int)
  ref, ctl = np.arange(0, 120), np.arange(100, 300)
  b = controls.balance(layer, freq, ref, ctl)
  assert b.ks == pytest.approx(sps.ks_2samp(freq[ref], freq[ctl]).statistic)
  assert b.per_layer == {0: (120, 200)} and not b.layers_equal


def test_matched_control_is_reproducible_by_seed():
  layer, freq, ros = _skewed_neurons(seed=3, layers=3, per_layer=300)
  a = controls.matched_control(layer, freq, ros, seed=7)
  np.testing.assert_array_equal(a.indices, controls.matched_control(layer, freq, ros, seed=7).indices)
  assert not np.array_equal(a.indices, controls.matched_control(layer, freq, ros, seed=8).indices)


def test_matched_control_spills_to_the_nearest_bin_and_skips_constant_neurons():
  # One layer of 20 neurons, 5 bins of 4 by frequency; Rosetta: 3 of the top bin.
  freq = np.arange(20) / 20.0
  ros = np.zeros(20, bool)
  ros[[16, 17, 18]] = True
  mc = controls.matched_control(np.zeros(20, int), freq, ros, seed=0, bins=5)
  assert 19 in mc.indices and set(mc.indices) - {19} <= {12, 13, 14, 15}
  assert len(mc.indices) == 3 and mc.balance.spilled == 2 and mc.balance.replaced == 0
  # A constant neuron (NaN frequency) is never drawn; a constant Rosetta one is not matched.
  freq2 = freq.copy()
  freq2[19] = np.nan
  freq2[16] = np.nan
  mc2 = controls.matched_control(np.zeros(20, int), freq2, ros, seed=0, bins=5)
  assert len(mc2.indices) == 2 and 19 not in mc2.indices and not ros[mc2.indices].any()


def test_matched_control_refuses_a_short_layer_or_draws_with_replacement_when_asked():
  layer = np.array([0] * 10 + [1] * 4)
  freq = np.linspace(0, 1, 14)
  ros = np.zeros(14, bool)
  ros[[10, 11, 12]] = True          # layer 1: 3 Rosetta, 1 non-Rosetta
  ros[[0, 1]] = True
  with pytest.raises(ValueError, match="layer 1 has 3 Rosetta neurons but only 1"):
    controls.matched_control(layer, freq, ros, seed=0)
  mc = controls.matched_control(layer, freq, ros, seed=0, on_short="replace")
  assert mc.balance.layers_equal and mc.balance.replaced == 2
  assert list(mc.indices[layer[mc.indices] == 1]) == [13, 13, 13]
  # A layer without any non-Rosetta neuron: no control there, counted as unmatched.
  ros[13] = True
  mc = controls.matched_control(layer, freq, ros, seed=0, on_short="replace")
  assert mc.balance.unmatched == 4 and not mc.balance.layers_equal
  assert len(mc.indices) == 2 and (layer[mc.indices] == 0).all()
  with pytest.raises(ValueError, match="on_short"):
    controls.matched_control(layer, freq, ros, seed=0, on_short="ignore")


def test_null_control_mask():
  m = controls.null_control_mask(6, [4, 1, 4])
  np.testing.assert_array_equal(m, [False, True, False, False, True, False])
  with pytest.raises(ValueError):
    controls.null_control_mask(6, [6])


def test_cliffs_delta_against_a_double_loop_and_scipy():
  rng = np.random.default_rng(0)
  a = rng.normal(0.3, 1, 40).round(1)         # rounded: ties on both sides
  b = rng.normal(0, 1, 55).round(1)
  brute = np.mean([np.sign(x - y) for x in a for y in b])
  assert stats.cliffs_delta(a, b) == pytest.approx(brute, abs=1e-12)
  u = sps.mannwhitneyu(a, b, alternative="two-sided").statistic
  assert stats.cliffs_delta(a, b) == pytest.approx(2 * u / (len(a) * len(b)) - 1, abs=1e-12)
  assert stats.cliffs_delta(b, a) == pytest.approx(-brute, abs=1e-12)
  assert stats.cliffs_delta([3.0], [1.0, 2.0]) == 1.0
  assert np.isnan(stats.cliffs_delta([], b))


def test_polarization_pair_controls_match_each_model_and_each_resample():
  """The study's controls: per model of the pair, per resample, layer counts equal to
  that resample's Rosetta set, never a Rosetta neuron, reproducible by seed."""
  import types  # pylint: disable=g-import-not-at-top
  from rosetta_jax.studies import polarization  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  na, nb, nres = 3 * 40, 2 * 90, 5
  res = types.SimpleNamespace(neurons_a=na, neurons_b=nb, offsets_a=np.array([0, 40, 80, 120]),
                              offsets_b=np.array([0, 90, 180]))
  layer = np.concatenate([np.repeat(np.arange(3), 40), 10 + np.repeat(np.arange(2), 90)])
  freq = rng.random(na + nb)
  boot_freq = np.clip(freq + rng.normal(0, 0.02, (nres, na + nb)), 0, 1)
  ros = rng.random(na + nb) < 0.1
  members = rng.random((nres, na + nb)) < 0.1
  ctrl, ctrl_b, bal, short = polarization.pair_controls(res, freq, boot_freq, ros, members, 3)
  for mask, idx in [(ros, ctrl)] + list(zip(members, ctrl_b)):
    assert not mask[idx].any() and len(np.unique(idx)) == len(idx) == mask.sum()
    np.testing.assert_array_equal(np.bincount(layer[idx], minlength=12),
                                  np.bincount(layer[mask], minlength=12))
  assert bal["a"].layers_equal and bal["b"].layers_equal
  assert short == {"replaced": 0, "unmatched": 0}
  assert sum(v[0] for v in bal["a"].per_layer.values()) == ros[:na].sum()
  again = polarization.pair_controls(res, freq, boot_freq, ros, members, 3)
  np.testing.assert_array_equal(ctrl, again[0])
  assert all(np.array_equal(x, y) for x, y in zip(ctrl_b, again[1]))
  # Against every non-Rosetta neuron, the study's effect is the one effect_sizes gives.
  v = rng.standard_t(3, na + nb) + ros
  auc, d = polarization._against(v, ros, np.flatnonzero(~ros), -1)  # pylint: disable=protected-access
  ref = stats.effect_sizes(v, ros, -1)
  assert auc == pytest.approx(float(ref["auroc"])) and d == pytest.approx(float(ref["d"]))


def test_matched_control_removes_a_frequency_confound_and_keeps_a_real_effect():
  """Rosetta neurons chosen by low frequency alone, kurtosis a function of frequency:
  against the rest the Rosetta set looks far more kurtotic, against the matched
  control it does not; a kurtosis shift planted on the Rosetta set survives."""
  import types  # pylint: disable=g-import-not-at-top
  from rosetta_jax.studies import polarization  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  layers, per_layer = 8, 500
  n = layers * per_layer
  offsets = np.arange(layers + 1) * per_layer
  res = types.SimpleNamespace(neurons_a=n, neurons_b=n, offsets_a=offsets, offsets_b=offsets)
  freq = rng.uniform(0.02, 0.6, 2 * n)
  kurt = 1 / freq + rng.normal(0, 2, 2 * n)
  ros = rng.random(2 * n) < 0.35 * np.exp(-5 * freq)
  ctrl, *_ = polarization.pair_controls(res, freq, freq[None], ros, ros[None], 0)
  against = lambda v: 2 * polarization._against(v, ros, ctrl, 1)[0] - 1  # pylint: disable=protected-access
  assert stats.cliffs_delta(kurt[ros], kurt[~ros]) > 0.3
  assert abs(against(kurt)) < 0.1
  assert against(kurt + 3 * ros) > 0.15


def _synthetic_context(seed=0, resamples=6):
  """A context stand-in for polarization.run: three pairs of 3-layer models with
  neuron statistics of random activations and planted Rosetta sets."""
  import types  # pylint: disable=g-import-not-at-top
  from rosetta_jax.analysis import selectivity as sel  # pylint: disable=g-import-not-at-top
  from rosetta_jax import pairs as pairs_lib  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  docs, per_doc = 24, 20
  labels = sel.UnitLabels.build(np.arange(docs + 1) * per_doc,
                                [("code", "math", "prose")[i % 3] for i in range(docs)],
                                [f"t{rng.integers(30)}" for _ in range(docs * per_doc)])
  neuron_stats, results, pairs = {}, {}, []
  for width in (16, 32, 64):
    models = [types.SimpleNamespace(name=f"{s}{width}", num_neurons=3 * width, num_layers=3)
              for s in "ab"]
    for m in models:
      x = rng.standard_t(4, (labels.num_units, m.num_neurons)) + rng.normal(0, 1, m.num_neurons)
      neuron_stats[m.name] = sel.neuron_stats(x.astype(np.float32), labels, top_m=8)
    pair = pairs_lib.Pair(f"w{width}", *models)
    n = 3 * width
    mask = lambda: rng.random(n) < 0.15
    offsets = np.arange(4) * width
    nulls = np.stack([rng.choice(n, n // 5, replace=False) for _ in range(2)])
    results[pair.label] = types.SimpleNamespace(
        neurons_a=n, neurons_b=n, mask_a=mask(), mask_b=mask(), offsets_a=offsets,
        offsets_b=offsets, members_a=np.stack([mask() for _ in range(resamples)]),
        members_b=np.stack([mask() for _ in range(resamples)]),
        null_idx_a=nulls[0], null_idx_b=rng.permutation(nulls[1]))
    pairs.append(pair)
  return synthetic_context(pairs, results, neuron_stats, labels, seed=seed,
                           resamples=resamples, docs=docs)


def test_polarization_run_reports_effects_against_the_matched_control():
  import json  # pylint: disable=g-import-not-at-top
  from rosetta_jax.analysis import selectivity as sel  # pylint: disable=g-import-not-at-top
  from rosetta_jax.report.html import Report  # pylint: disable=g-import-not-at-top
  from rosetta_jax.studies import polarization  # pylint: disable=g-import-not-at-top
  ctx = _synthetic_context()
  result = polarization.run(ctx, ctx.cfg)
  js = json.loads(json.dumps(result.to_json()))
  for e, pair in zip(js["per_size"], ctx.pairs):
    full, _, ros, _ = polarization.pair_metrics(ctx, pair)
    c = e["matched_control"]
    assert c["count"] == e["rosetta"] and c["balance"]["a"]["layers_equal"]
    for m in sel.METRICS:
      x = e["metrics"][m]
      assert x["delta"] == pytest.approx(2 * x["auroc"] - 1)       # beside the old keys
      ref = stats.effect_sizes(full[m], ros, sel.SELECTIVE_SIGN[m])
      assert x["d"] == pytest.approx(float(ref["d"]))
      y = c["metrics"][m]
      assert -1 <= y["delta_ci"][0] and y["delta_ci"][1] <= 1
      assert y["delta"] == pytest.approx(2 * y["auroc"] - 1)
  t = js["trend_control"]["kurtosis"]["delta"]
  assert t["n_boot"] == 6 and np.isfinite(t["slope"])
  slope = stats.ols(np.log(js["sizes"]), [e["matched_control"]["metrics"]["kurtosis"]["delta"]
                                          for e in js["per_size"]]).slope
  assert t["slope"] == pytest.approx(slope)
  assert any("matched control" in row[0] for row in polarization.claims(result))
  html = polarization.section(Report("t"), result).render()
  assert "Against the matched control" in html and "max quantile gap" in html


def test_polarization_run_reports_effects_against_the_null_paired_neurons():
  """The second control: the neurons of the first null permutation's mutual pairs
  (A's, then B's offset by Na), against which every effect is recomputed here."""
  import json  # pylint: disable=g-import-not-at-top
  from rosetta_jax.analysis import selectivity as sel  # pylint: disable=g-import-not-at-top
  from rosetta_jax.report.html import Report  # pylint: disable=g-import-not-at-top
  from rosetta_jax.studies import polarization  # pylint: disable=g-import-not-at-top
  ctx = _synthetic_context(seed=1)
  result = polarization.run(ctx, ctx.cfg)
  js = json.loads(json.dumps(result.to_json()))
  for e, pair in zip(js["per_size"], ctx.pairs):
    res = ctx.result(pair)
    full, boot, ros, members = polarization.pair_metrics(ctx, pair)
    null = np.unique(np.concatenate([res.null_idx_a, res.neurons_a + res.null_idx_b]))
    c = e["null_control"]
    assert c["count"] == len(null) and c["pairs"] == len(res.null_idx_a)
    assert c["overlap_rosetta"] == int(ros[null].sum()) > 0
    for m in sel.METRICS:
      sign = sel.SELECTIVE_SIGN[m]
      y = c["metrics"][m]
      v = sign * full[m]
      x, z = v[ros & np.isfinite(v)], v[null][np.isfinite(v[null])]
      assert y["delta"] == pytest.approx(stats.cliffs_delta(x, z), abs=1e-12)
      assert y["d"] == pytest.approx(stats.cohens_d(x, z))
      assert y["median_control"] == pytest.approx(np.nanmedian(full[m][null]))
      per_b = [2 * controls.versus(boot[m][b], members[b], null, sign)[0] - 1
               for b in range(len(members))]
      assert y["delta_ci"] == pytest.approx(stats.interval(per_b, y["delta"], bounds=(-1, 1)))
  t = js["trend_null"]["kurtosis"]["delta"]
  slope = stats.ols(np.log(js["sizes"]), [e["null_control"]["metrics"]["kurtosis"]["delta"]
                                          for e in js["per_size"]]).slope
  assert t["slope"] == pytest.approx(slope) and t["n_boot"] == 6
  rows = polarization.claims(result)
  for name in ("matched control", "null-paired neurons"):
    row = next(r for r in rows if f"kurtosis (Rosetta - {name})" in r[0])
    trend = js["trend_control" if name == "matched control" else "trend_null"]["kurtosis"]
    assert row[2] == f"[{trend['delta']['ci'][0]:.3f}, {trend['delta']['ci'][1]:.3f}]"
  html = polarization.section(Report("t"), result).render()
  assert "Against the null-paired neurons" in html and "delta vs null-paired" in html
  from rosetta_jax.report import docs  # pylint: disable=g-import-not-at-top
  text = docs.TEMPLATES["polarization_controls"]({"results": js})
  tc = js["trend_control"]["kurtosis"]["delta"]
  assert f"| kurtosis | {tc['slope']:+.3f} [{tc['ci'][0]:.3f}, {tc['ci'][1]:.3f}] |" in text
  sizes = docs.TEMPLATES["polarization_sizes"]({"results": js})
  x = js["per_size"][2]["null_control"]["metrics"]["hoyer"]
  assert f"| w64 | hoyer | {js['per_size'][2]['rosetta']} |" in sizes
  assert f"{x['delta']:+.3f} [{x['delta_ci'][0]:.3f}, {x['delta_ci'][1]:.3f}]" in sizes


def test_null_paired_control_removes_what_selection_by_r_explains():
  """Selection by r alone favours heavy-tailed neurons: if the null's pairs are as
  kurtotic as the Rosetta set, the effect against the rest is large and the effect
  against the null-paired neurons is not; a real extra shift survives."""
  import types  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  n = 4000
  kurt = rng.gamma(2.0, 2.0, n)
  # Both sets favour high kurtosis in the same way (a soft threshold on it).
  pick = lambda: rng.random(n) < 0.3 / (1 + np.exp(-(kurt - 6)))
  ros, null = pick(), np.flatnonzero(pick())
  assert stats.cliffs_delta(kurt[ros], kurt[~ros]) > 0.4
  assert abs(2 * controls.versus(kurt, ros, null)[0] - 1) < 0.1
  assert 2 * controls.versus(kurt + 3 * ros, ros, null)[0] - 1 > 0.2
  np.testing.assert_array_equal(
      controls.null_control(types.SimpleNamespace(neurons_a=n - 100, neurons_b=100,
                                                  null_idx_a=[5, 2, 5], null_idx_b=[99, 0])),
      [2, 5, n - 100, n - 1])


def test_pair_matched_control_is_the_per_model_draw():
  """``pair_matched_control`` = ``matched_control`` of each model with (*seed, side)."""
  rng = np.random.default_rng(4)
  oa, ob = np.array([0, 30, 60]), np.array([0, 50, 100, 150])
  f = rng.random(210)
  ros = rng.random(210) < 0.2
  idx, bal = controls.pair_matched_control(oa, ob, f, ros, (7,))
  a = controls.matched_control(np.repeat([0, 1], 30), f[:60], ros[:60], seed=(7, 0),
                               on_short="replace")
  b = controls.matched_control(np.repeat([0, 1, 2], 50), f[60:], ros[60:], seed=(7, 1),
                               on_short="replace")
  np.testing.assert_array_equal(idx, np.concatenate([a.indices, 60 + b.indices]))
  assert bal[0] == a.balance and bal[1] == b.balance
  assert not ros[idx].any()
  with pytest.raises(ValueError, match=r"must be \[210\]"):
    controls.pair_matched_control(oa, ob, f[:-1], ros, (7,))


def test_polarization_vocabulary_metrics_against_the_controls():
  """With vocabulary projections (``ctx.vocab``, the explorer's), the study adds
  their kurtosis and skew per neuron, in the pair's site order, to the metrics and
  compares them with the rest and both controls; without them it does not."""
  import json  # pylint: disable=g-import-not-at-top
  import types  # pylint: disable=g-import-not-at-top
  from rosetta_jax.studies import polarization  # pylint: disable=g-import-not-at-top
  ctx = _synthetic_context(seed=2)
  assert "vocab_kurtosis" not in polarization.run(ctx, ctx.cfg).trend
  rng = np.random.default_rng(9)
  proj = {}
  for pair in ctx.pairs:
    res = ctx.result(pair)
    res.sites_a = res.sites_b = ("layer_0/mlp", "layer_1/mlp", "layer_2/mlp")
    for m, mask in ((pair.a, res.mask_a), (pair.b, res.mask_b)):
      w = len(mask) // 3
      k = rng.gamma(2, 2, len(mask)) + 4.0 * mask          # Rosetta neurons more peaked
      proj[m.name] = {s: types.SimpleNamespace(kurtosis=k[i * w:(i + 1) * w],
                                               skew=-k[i * w:(i + 1) * w])
                      for i, s in enumerate(res.sites_a)}
  ctx.vocab = lambda m: proj[m.name]
  result = polarization.run(ctx, ctx.cfg)
  js = json.loads(json.dumps(result.to_json()))
  assert set(js["trend"]) == set(polarization.metric_names(ctx)) >= {"vocab_kurtosis",
                                                                     "vocab_skew"}
  for e, pair in zip(js["per_size"], ctx.pairs):
    res = ctx.result(pair)
    ros = np.concatenate([res.mask_a, res.mask_b])
    k = np.concatenate([proj[m.name][s].kurtosis for m in (pair.a, pair.b)
                        for s in res.sites_a])
    x = e["metrics"]["vocab_kurtosis"]
    ref = stats.effect_sizes(k, ros, 1)
    assert x["d"] == pytest.approx(float(ref["d"])) and x["d"] > 0.5
    assert x["auroc"] == pytest.approx(float(ref["auroc"]))
    assert e["metrics"]["vocab_skew"]["auroc"] == pytest.approx(1 - x["auroc"])
    null = controls.null_control(res)
    assert e["null_control"]["metrics"]["vocab_kurtosis"]["auroc"] == pytest.approx(
        controls.versus(k, ros, null)[0])
    assert e["matched_control"]["metrics"]["vocab_kurtosis"]["delta"] > 0.3
  assert any("vocab_kurtosis (Rosetta - matched control)" in r[0]
             for r in polarization.claims(result))
