"""analysis/stats.py against SciPy: intervals, effect sizes, the power-law fit, depth."""
import numpy as np
import pytest
from scipy import stats as sps

from rosetta_jax.analysis import stats


def _boot_means(x, b, rng):
  return x[rng.integers(0, len(x), (b, len(x)))].mean(1)


def test_basic_interval_matches_scipy_basic_bootstrap():
  rng = np.random.default_rng(0)
  x = rng.exponential(size=80)
  ours = stats.interval(_boot_means(x, 20000, rng), x.mean())
  ref = sps.bootstrap((x,), np.mean, n_resamples=20000, method="basic",
                      random_state=np.random.default_rng(1)).confidence_interval
  width = ref.high - ref.low
  assert abs(ours[0] - ref.low) < 0.03 * width and abs(ours[1] - ref.high) < 0.03 * width
  # ... and is the percentile interval reflected about the estimate, not that interval.
  boot = _boot_means(x, 20000, rng)
  pct = np.quantile(boot, [0.025, 0.975])
  assert stats.interval(boot, x.mean()) == pytest.approx([2 * x.mean() - pct[1],
                                                          2 * x.mean() - pct[0]])
  assert stats.interval(boot, x.mean()) != pytest.approx(list(pct), abs=1e-3)


def test_basic_interval_coverage_on_a_known_distribution():
  """The mean of Gamma(4) samples (true mean 4): 95% intervals cover it ~95% of the time."""
  rng = np.random.default_rng(2)
  hits = 0
  trials = 400
  for _ in range(trials):
    x = rng.gamma(4.0, size=60)
    lo, hi = stats.interval(_boot_means(x, 400, rng), x.mean())
    hits += lo <= 4.0 <= hi
  assert 0.91 <= hits / trials <= 0.98, hits / trials


def test_interval_bounds_and_degenerate_cases():
  boot = np.arange(100, 141)                 # resamples biased upward of the count 100
  lo, hi = stats.count_interval(100, boot)
  assert hi == pytest.approx(200 - np.quantile(boot, 0.025))
  assert lo == pytest.approx(200 - np.quantile(boot, 0.975))
  assert stats.count_interval(1, np.array([5, 6, 7]))[0] == 0.0
  assert stats.interval([0.9, 0.95, 1.0], 0.99, bounds=(0.0, 1.0))[1] == 1.0
  assert np.isnan(stats.interval([1.0], 1.0)).all()
  assert np.isnan(stats.interval([1.0, np.nan, np.inf], 1.0)).all()
  assert stats.degenerate([3.0, 3.0], 3.0) and not stats.degenerate([2.0, 3.0], 3.0)


def test_mean_interval_is_scipys_t_interval():
  x = np.array([2.1, 2.5, 1.9, 2.8])
  m, lo, hi = stats.mean_interval(x)
  ref = sps.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=sps.sem(x))
  assert m == pytest.approx(x.mean()) and (lo, hi) == pytest.approx(ref)


def test_cohens_d_and_auroc_against_scipy():
  rng = np.random.default_rng(3)
  a = rng.normal(0.5, 1.0, 40)
  b = np.round(rng.normal(0.0, 1.5, 70), 1)          # ties within and across groups
  a[:5] = b[:5]
  t = sps.ttest_ind(a, b).statistic                   # pooled-variance t
  assert stats.cohens_d(a, b) == pytest.approx(t * np.sqrt(1 / len(a) + 1 / len(b)))
  u = sps.mannwhitneyu(a, b).statistic
  assert stats.auroc(a, b) == pytest.approx(u / (len(a) * len(b)))
  assert np.isnan(stats.cohens_d(a[:1], b)) and np.isnan(stats.cohens_d([1, 1], [2, 2]))


def test_effect_sizes_orient_and_take_a_group_per_resample():
  rng = np.random.default_rng(4)
  v = rng.normal(size=(4, 50))
  masks = rng.random((4, 50)) < 0.3
  got = stats.effect_sizes(v, masks)
  for b in range(4):
    one = stats.effect_sizes(v[b], masks[b])
    assert got["d"][b] == pytest.approx(one["d"]) and got["auroc"][b] == pytest.approx(one["auroc"])
  neg = stats.effect_sizes(v[0], masks[0], sign=-1)
  assert neg["d"] == pytest.approx(-got["d"][0]) and neg["auroc"] == pytest.approx(1 - got["auroc"][0])
  with pytest.raises(ValueError, match="in_group"):
    stats.effect_sizes(v, masks[:, :10])


def test_power_law_fit_is_scipys_regression_in_log_space():
  rng = np.random.default_rng(5)
  sizes = np.geomspace(100, 10000, 7)
  counts = np.round(3 * sizes ** 0.7 * np.exp(rng.normal(0, 0.1, 7)))
  fit = stats.fit_power_law(sizes, counts)
  ref = sps.linregress(np.log(sizes), np.log(counts))
  assert fit.beta == pytest.approx(ref.slope) and fit.log_c == pytest.approx(ref.intercept)
  assert fit.r2 == pytest.approx(ref.rvalue ** 2)
  h = sps.t.ppf(0.975, len(sizes) - 2) * ref.stderr
  assert fit.ci == pytest.approx((ref.slope - h, ref.slope + h)) and fit.method == "t"
  assert stats.loglog_slope(sizes, counts) == pytest.approx(ref.slope)
  tr = stats.trend(sizes, np.log(counts))
  assert tr["slope"] == pytest.approx(ref.slope)


def test_depth_has_one_definition():
  for n in (1, 2, 3, 12, 24, 30):
    for layer in range(n):
      d = stats.relative_depth(layer, n)
      assert d == pytest.approx((layer + 0.5) / n)
      assert stats.layer_at_depth(float(d), n) == layer
    assert stats.layer_at_depth(0.0, n) == 0 and stats.layer_at_depth(1.0, n) == n - 1
  assert stats.relative_depths(["layer_0/mlp", "layer_3/mlp"], 4) == {
      "layer_0/mlp": 0.125, "layer_3/mlp": 0.875}
  assert stats.site_layer("layer_17/mlp") == 17
  with pytest.raises(ValueError, match="layer_"):
    stats.site_layer("mlp_3")
  with pytest.raises(ValueError, match=r"\[0, 1\]"):
    stats.layer_at_depth(1.5, 4)


def test_degenerate_pair_interval_is_warned(caplog):
  import dataclasses  # pylint: disable=g-import-not-at-top
  from rosetta_jax import pairs  # pylint: disable=g-import-not-at-top
  fields = {f.name: None for f in dataclasses.fields(pairs.PairResult)}
  res = pairs.PairResult(**{**fields, "label": "p", "idx_a": np.arange(5),
                              "boot_counts": np.full(20, 5)})
  assert pairs.warn_degenerate(res)
  assert "degenerate" in caplog.text and "--record_docs" in caplog.text
  varied = dataclasses.replace(res, boot_counts=np.arange(20))
  assert not pairs.warn_degenerate(varied)
