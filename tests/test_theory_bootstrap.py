"""Bootstrap intervals of the fitted variants, the vmapped fits and the verdict rule."""

import math

import numpy as np
import pytest
from scipy import stats as sps

from theory import bootstrap as B
from theory import predict
from theory import variants as V

F, ALPHA = 1000.0, 1.0
SIZE = V.feature_axis(F, 1024)
SIZES = np.array([64.0, 128.0, 256.0, 512.0, 1024.0])
FIXED = {"rule": "test", "text": "given", "alpha": ALPHA, "alpha_ci": [0.98, 1.02],
         "num_features": F, "num_units": 0}


def test_resampled_counts_follow_the_split_normal_rule():
  c = np.array([10.0, 40.0])
  ci = np.array([[8.0, 11.0], [30.0, 60.0]])
  draws = B.resample_counts(c, ci, 40000, seed=1)
  # The interval's ends are the 2.5% and 97.5% points; the count is the median.
  q = np.quantile(draws, [0.025, 0.5, 0.975], axis=0)
  np.testing.assert_allclose(q[0], ci[:, 0], rtol=0.01)
  np.testing.assert_allclose(q[1], c, rtol=0.01)
  np.testing.assert_allclose(q[2], ci[:, 1], rtol=0.01)
  # each half is a half-normal in log space (SciPy's Kolmogorov-Smirnov test).
  lo = np.log(c[1]) - np.log(draws[:, 1][draws[:, 1] < c[1]])
  assert sps.kstest(lo / ((np.log(40) - np.log(30)) / B.Z95), sps.halfnorm.cdf).pvalue > 0.01
  assert np.corrcoef(np.log(draws).T)[0, 1] == pytest.approx(0.0, abs=0.02)   # independent
  with pytest.raises(ValueError, match="lo <= count <= hi"):
    B.resample_counts([10.0], [[11.0, 12.0]], 5)


def test_fit_many_rows_equal_single_fits_on_their_sizes():
  theta = {"log_nc": math.log(300.0), "logit_detect": V._logit(0.6)}
  c = np.asarray(V.counts("concave", theta, SIZES, ALPHA, F, SIZE), float)
  rows = np.stack([c, c * np.array([1.1, 0.9, 1.0, 1.2, 0.8])])
  w = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], float)
  th, loss = V.fit_many("concave", SIZES, rows, ALPHA, F, SIZE, steps=300, weights=w)
  for i in range(2):
    keep = w[i] > 0
    one = V.fit("concave", SIZES[keep], rows[i][keep], ALPHA, F, SIZE, steps=300)
    assert loss[i] == pytest.approx(one.loss, rel=1e-3, abs=1e-7)
    for k in theta:
      assert th[k][i] == pytest.approx(one.theta[k], rel=1e-3, abs=1e-4)
  with pytest.raises(ValueError, match=">= 2 sizes"):
    V.fit_many("concave", SIZES, rows, ALPHA, F, SIZE, weights=np.eye(2, 5))


def _measured(counts, half):
  c = np.asarray(counts, float)
  return predict.Measured(SIZES, c, np.stack([c * (1 - half), c * (1 + half)], 1), 0.8,
                          [0.7, 0.9], [], "synthetic")


def test_bootstrap_intervals_cover_the_generating_parameters():
  theta = {"log_nc": math.log(150.0), "logit_detect": V._logit(0.8)}
  counts = np.asarray(V.counts("concave", theta, SIZES, ALPHA, F, SIZE), float)
  res = predict.evaluate(_measured(counts, 0.1), FIXED, names=["concave"], steps=200, reps=40,
                         log=lambda *_: None)
  v = res["variants"]["concave"]
  b = v["fit_all"]["bootstrap"]
  lo, hi = b["physical_ci"]["n_c"]
  assert lo < 150.0 < hi and hi / lo > 1.05            # covers the truth, and is not a point
  assert b["dropped"] == 0
  for (lo, hi), c in zip(b["counts_ci"], counts):
    assert lo < c < hi
  # the power law's bootstrap slope interval holds its OLS slope on the 3 smallest sizes.
  pl = res["power_law"]
  lo, hi = pl["bootstrap"]["beta_ci"]
  assert lo < pl["beta"] < hi
  # the out-of-sample error spread is measured against the resamples: above 0.
  assert v["out_of_sample"]["bootstrap"]["rms_log_error_range"][1] > 0.0
  assert res["resample"] == {"rule": B.RESAMPLE_RULE, "reps": 40, "seed": 0}


def test_verdict_follows_the_rule():
  def entry(apriori_in, oos_in, beats):
    return {"apriori": {"score": {"in_interval": apriori_in}},
            "out_of_sample": {"score": {"in_interval": oos_in},
                              **({"bootstrap": {"beats_line": beats}} if beats is not None
                                 else {})}}
  res = {"variants": {"a": entry([True] * 5, [False, False], 0.0),      # a priori
                      "b": entry([False] * 5, [True, True], 0.96),      # out of sample
                      "c": entry([False] * 5, [True, True], 0.90),      # not often enough
                      "d": entry([True, True, True, True, False], [True, True], None),
                      "e": entry([False] * 5, [True, False], 1.0)}}     # one held-out miss
  v = B.verdict(res)
  assert v["fits"] == ["a", "b"]
  assert v["mechanisms"]["a"]["apriori"] and not v["mechanisms"]["b"]["apriori"]
  assert "a (a priori)" in v["text"] and "b (out of sample)" in v["text"]
  none = B.verdict({"variants": {"c": res["variants"]["c"]}})
  assert none["fits"] == [] and none["text"].startswith("no mechanism fits")
