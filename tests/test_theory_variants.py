"""Mechanism variants: gradients, limits that tie them to the allocation model, fits."""

import math

import jax
import numpy as np
import pytest

from theory import variants as V

F, ALPHA = 1000.0, 1.0
SIZE = V.feature_axis(F, 800)
SIZES = [50.0, 100.0, 200.0, 400.0, 800.0]

TRUTH = {
    "allocation": {"log_noise": math.log(0.5), "logit_detect": V._logit(0.6)},
    "growing_features": {"logit_gamma": V._logit(0.4), "logit_detect": V._logit(0.7)},
    "isolation": {"tau0": 1.0, "tau1": 0.4},
    "concave": {"log_nc": math.log(200.0), "logit_detect": V._logit(0.7)},
}


def test_every_variant_has_a_truth_here():
  assert sorted(TRUTH) == sorted(V.VARIANTS)


@pytest.mark.parametrize("name", sorted(TRUTH))
def test_gradient_matches_finite_differences(name):
  v = V.get(name)
  th = TRUTH[name]
  n = 150.0
  g = jax.grad(lambda t: v.rosetta(t, n, ALPHA, F, SIZE))(
      {k: np.float32(x) for k, x in th.items()})
  for k in th:
    eps = 1e-2
    hi = float(v.rosetta({**th, k: th[k] + eps}, n, ALPHA, F, SIZE))
    lo = float(v.rosetta({**th, k: th[k] - eps}, n, ALPHA, F, SIZE))
    fd = (hi - lo) / (2 * eps)
    assert float(g[k]) == pytest.approx(fd, rel=3e-2, abs=1e-3), (name, k)
  # and in N: the local exponent against a finite-difference log-log slope.
  lb = float(V.local_beta(name, th, n, ALPHA, F, SIZE))
  r = lambda m: float(v.rosetta(th, m, ALPHA, F, SIZE))
  slope = (math.log(r(n * 1.02)) - math.log(r(n / 1.02))) / (2 * math.log(1.02))
  assert lb == pytest.approx(slope, rel=3e-2)


def test_limits_reduce_to_the_allocation_model():
  base = V.get("allocation")
  th = {"log_noise": math.log(V.SEED_NOISE), "logit_detect": V._logit(0.7)}
  want = np.asarray(V.counts("allocation", th, SIZES, ALPHA, F, SIZE))
  # gamma -> 0 keeps F(N) = F; N_c -> inf gives N_eff = N; tau -> -inf detects every twin.
  grow = np.asarray(V.counts("growing_features", {"logit_gamma": -30.0,
                                                  "logit_detect": V._logit(0.7)},
                             SIZES, ALPHA, F, SIZE))
  np.testing.assert_allclose(grow, want, rtol=1e-4)
  conc = np.asarray(V.counts("concave", {"log_nc": math.log(1e9), "logit_detect": V._logit(0.7)},
                             SIZES, ALPHA, F, SIZE))
  np.testing.assert_allclose(conc, want, rtol=1e-5)      # N_c = 1e9: 1.3e-6 measured
  iso = np.asarray(V.counts("isolation", {"tau0": -200.0, "tau1": 0.0}, SIZES, ALPHA, F, SIZE))
  np.testing.assert_allclose(iso, want / 0.7, rtol=1e-4)
  assert base.name == "allocation"


def test_isolation_tail_exponent_is_lowered_by_tau1_over_alpha():
  # Tail-dominated regime (F >> N): R ~ D e^{-tau(N)/alpha}, so the exponent drops
  # by tau1 / alpha relative to tau1 = 0 (while tau(N) > 0, so the threshold bites).
  f, size, sizes = 2e5, V.feature_axis(2e5, 4000), [1000.0, 2000.0, 4000.0]
  b0 = V.fitted_beta("isolation", {"tau0": 3.0, "tau1": 0.0}, sizes, 1.2, f, size)
  b1 = V.fitted_beta("isolation", {"tau0": 3.0, "tau1": 0.3}, sizes, 1.2, f, size)
  assert b0 - b1 == pytest.approx(0.3 / 1.2, rel=0.05)


def test_selectivity_split():
  for name, th in TRUTH.items():
    sel = V.get(name).selectivity(th, 200.0, ALPHA, F, SIZE)
    r = float(V.get(name).rosetta(th, 200.0, ALPHA, F, SIZE))
    assert float(sel["rosetta_fraction"]) == pytest.approx(r / 200.0, rel=1e-5)
    assert 0.0 < float(sel["non_rosetta"]) < 1.0
    assert float(sel["gap"]) == pytest.approx(1.0 - float(sel["non_rosetta"]), abs=1e-6)
  # at N >= F every feature has a neuron and the shared pool is empty.
  sel = V.get("allocation").selectivity(TRUTH["allocation"], F, ALPHA, F, SIZE)
  assert float(sel["dedicated"]) == pytest.approx(F, rel=1e-4)


@pytest.mark.parametrize("name", sorted(TRUTH))
def test_parameters_recovered_from_synthetic_counts(name):
  counts = np.asarray(V.counts(name, TRUTH[name], SIZES, ALPHA, F, SIZE))
  fit = V.fit(name, SIZES, counts, ALPHA, F, SIZE)
  want = V.get(name).physical(TRUTH[name])
  for k, x in want.items():
    assert fit.physical[k] == pytest.approx(x, rel=0.02, abs=0.01), (k, fit.physical)
  assert fit.loss < 1e-6


def test_fit_errors():
  with pytest.raises(ValueError, match="positive counts"):
    V.fit("allocation", [10.0, 20.0], [1.0, 0.0], ALPHA, F)
  with pytest.raises(ValueError, match="unknown variant"):
    V.get("nope")
