"""fit_power_law recovers known exponents and refuses bad input."""
import numpy as np
import pytest

from rosetta_jax.analysis.stats import fit_power_law


def test_recovers_exponent_noiseless():
  sizes = np.array([128, 256, 512, 1024, 4096.0])
  fit = fit_power_law(sizes, 0.5 * sizes ** 0.73)
  assert abs(fit.beta - 0.73) < 1e-9
  assert abs(fit.beta_fraction + 0.27) < 1e-9
  assert abs(np.exp(fit.log_c) - 0.5) < 1e-9


def test_recovers_exponent_with_noise_and_bootstrap_ci_covers_it():
  rng = np.random.default_rng(0)
  sizes = np.geomspace(100, 10000, 8)
  truth = 3.0 * sizes ** 0.6
  counts = rng.poisson(truth)
  boot = rng.poisson(counts, size=(300, len(sizes)))       # a parametric bootstrap of the data
  fit = fit_power_law(sizes, counts, boot_counts=boot)
  assert fit.method == "bootstrap" and fit.n_boot == 300
  assert abs(fit.beta - 0.6) < 0.05
  assert fit.ci[0] < 0.6 < fit.ci[1]
  # The basic interval around the estimate, from the refitted slopes' quantiles.
  q = np.quantile(fit.boot_betas, [0.025, 0.975])
  assert fit.ci == pytest.approx((2 * fit.beta - q[1], 2 * fit.beta - q[0]))
  assert fit.ci[1] < 1.0 and fit.to_dict()["sublinear"]
  t = fit_power_law(sizes, counts)
  assert t.method == "t" and t.ci[0] < t.beta < t.ci[1]


def test_band_brackets_fit():
  sizes = np.geomspace(100, 10000, 5)
  rng = np.random.default_rng(1)
  fit = fit_power_law(sizes, 2 * sizes ** 0.5, boot_counts=rng.poisson(2 * sizes ** 0.5, (50, 5)) + 1)
  lo, hi = fit.band(sizes)
  # The band follows the fit: narrowest at the centroid of the sizes, wider at the ends.
  width = np.log(hi) - np.log(lo)
  assert width[2] < width[0] and width[2] < width[-1]
  assert np.all(lo < fit.predict(sizes) * 1.001) and np.all(hi > fit.predict(sizes) * 0.999)


@pytest.mark.parametrize("sizes,counts,msg", [
    ([1, 2], [1, 2, 3], "equal"),
    ([10, 20], [0, 5], "at least two"),
    ([10, 10], [3, 5], "at least two"),
    ([10, np.nan], [3, 5], "finite"),
    ([10, 20], [-1, 5], "non-negative"),
])
def test_bad_input(sizes, counts, msg):
  with pytest.raises(ValueError, match=msg):
    fit_power_law(sizes, counts)
