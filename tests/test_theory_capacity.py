"""The capacity model: closed forms in its limits, gradients, corpus alpha."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from theory import capacity as cap
from theory import corpus_stats


def test_shared_utility_matches_the_discrete_sum():
  for alpha in (0.7, 1.0, 1.5):
    p = cap.CapacityParams(alpha=alpha, num_features=500.0)
    for d in (0.0, 10.0, 100.0):
      exact = np.sum(np.arange(d + 1, 501, dtype=np.float64) ** -alpha)
      np.testing.assert_allclose(float(cap.shared_utility(jnp.asarray(d), p)), exact, rtol=0.02)


def test_tail_limit_closed_form():
  # F >> N and D << N: D + 1 = (N / U)^(1/alpha), so beta -> 1/alpha.
  p = cap.CapacityParams(alpha=0.7, num_features=1e6)
  for n in (1000.0, 3000.0):
    got = float(cap.dedicated_count(n, p))
    want = float(cap.closed_form_dedicated(n, 0.7, 1e6))
    assert got == pytest.approx(want, rel=0.05)
  assert float(cap.local_beta(3000.0, p)) == pytest.approx(1 / 0.7, rel=0.05)


def test_head_limit_fraction():
  # alpha > 1, 1 << D, N << F: D / N -> (alpha - 1) / alpha, beta -> 1.
  p = cap.CapacityParams(alpha=2.0, num_features=1e7)
  d = float(cap.dedicated_count(1e4, p))
  assert d / 1e4 == pytest.approx(0.5, rel=0.01)
  assert float(cap.local_beta(1e4, p)) == pytest.approx(1.0, abs=0.01)


def test_root_is_the_minimum_of_the_interference_loss():
  p = cap.CapacityParams(alpha=1.1, num_features=400.0)
  n = 60.0
  d = float(cap.dedicated_count(n, p))
  grid = np.linspace(0.0, n - 1.0, 2000)
  loss = np.asarray(cap.interference_loss(jnp.asarray(grid), n, p))
  assert abs(grid[np.argmin(loss)] - d) < 1.5
  assert 0 < d < n


def test_saturation_and_empty_regimes():
  p = cap.CapacityParams(alpha=1.0, num_features=64.0)
  assert float(cap.dedicated_count(64.0, p)) == 64.0
  assert float(cap.dedicated_count(100.0, p)) == 64.0
  assert float(cap.dedicated_count(1.5, p)) == 0.0  # N < U: even feature 1 is shared
  r = float(cap.rosetta_count(80.0, p, 64))
  assert r == pytest.approx(64.0, rel=1e-4)


def _fd(f, x, eps):
  return (f(x + eps) - f(x - eps)) / (2 * eps)


def test_dedicated_gradient_matches_finite_differences():
  p = cap.CapacityParams(alpha=1.2, num_features=2000.0)
  g = jax.grad(lambda n: cap.dedicated_count(n, p))(100.0)
  fd = _fd(lambda n: float(cap.dedicated_count(n, p)), 100.0, 1.0)
  assert float(g) == pytest.approx(fd, rel=2e-2)
  ga = jax.grad(lambda a: cap.dedicated_count(100.0, dataclasses.replace(p, alpha=a)))(1.2)
  fda = _fd(lambda a: float(cap.dedicated_count(100.0, dataclasses.replace(p, alpha=a))), 1.2, 1e-2)
  assert float(ga) == pytest.approx(fda, rel=2e-2)


def test_beta_sensitivity_matches_finite_differences():
  p = cap.CapacityParams(alpha=1.1, num_features=1000.0)
  n = 50.0
  # local beta itself against a finite-difference log-log slope of D.
  lb = float(cap.local_beta(n, p))
  slope = (np.log(float(cap.dedicated_count(n * 1.02, p))) -
           np.log(float(cap.dedicated_count(n / 1.02, p)))) / (2 * np.log(1.02))
  assert lb == pytest.approx(slope, rel=2e-2)
  sens = cap.sensitivities(n, p)
  for name, eps in (("alpha", 1e-2), ("num_features", 20.0)):
    fd = _fd(lambda v: float(cap.local_beta(n, dataclasses.replace(p, **{name: v}))),
             float(getattr(p, name)), eps)
    assert sens[name] == pytest.approx(fd, rel=5e-2, abs=1e-5), name
  # beta of D does not depend on the stochastic terms; the Rosetta beta does.
  assert sens["seed_noise"] == 0.0
  grad_r = jax.grad(lambda s: cap.fitted_beta([20.0, 40.0, 80.0],
                                              dataclasses.replace(p, seed_noise=s), 1000))(0.25)
  fd_r = _fd(lambda s: float(cap.fitted_beta([20.0, 40.0, 80.0],
                                             dataclasses.replace(p, seed_noise=s), 1000)),
             0.25, 1e-2)
  assert float(grad_r) == pytest.approx(fd_r, rel=5e-2, abs=1e-4)


def test_predict_shapes_and_validation():
  p = cap.CapacityParams(alpha=1.1, num_features=128.0)
  out = cap.predict([4, 8, 16, 32], p, 128)
  assert len(out["rosetta"]) == 4 and np.all(np.diff(out["rosetta"]) > 0)
  sel = out["selectivity"]
  assert all(0 <= s <= 1 for s in sel["non_rosetta"])
  with pytest.raises(ValueError, match="budgets"):
    cap.predict([8], p, 128)
  with pytest.raises(ValueError, match="num_features"):
    cap.predict([4, 8], p, 64)


@pytest.mark.parametrize("alpha", [0.8, 1.1])
def test_zipf_estimator_recovers_synthetic_exponent(alpha):
  rng = np.random.default_rng(0)
  vocab = 5000
  probs = np.arange(1, vocab + 1, dtype=np.float64) ** -alpha
  probs /= probs.sum()
  words = [f"w{i}" for i in range(vocab)]
  docs = [" ".join(words[i] for i in rng.choice(vocab, 1000, p=probs)) for _ in range(100)]
  est = corpus_stats.estimate_alpha(docs, bootstrap=10)
  assert est["alpha"] == pytest.approx(alpha, abs=0.05)
  assert est["ci"][0] - 0.05 <= alpha <= est["ci"][1] + 0.05
  assert est["num_units"] == 100_000


def test_zipf_estimator_errors():
  with pytest.raises(ValueError, match="no texts"):
    corpus_stats.estimate_alpha([])
  with pytest.raises(ValueError, match="too small"):
    corpus_stats.fit_zipf(np.array([5, 3, 1]))
  with pytest.raises(ValueError, match="decreasing"):
    corpus_stats.fit_zipf(np.array([1, 5, 3]))


def test_alpha_bootstrap_equals_adding_counters():
  """The count-matrix bootstrap gives the alphas of adding each resample's Counters."""
  import collections  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(3)
  words = [f"w{i}" for i in range(400)]
  p = 1.0 / np.arange(1, 401) ** 1.1
  per_doc = [collections.Counter(rng.choice(words, size=rng.integers(50, 300), p=p / p.sum()))
             for _ in range(60)]
  got = corpus_stats.estimate_alpha_counts(per_doc, min_count=5, bootstrap=30, seed=4)
  total = sum(per_doc, collections.Counter())
  counts = np.sort(np.fromiter(total.values(), np.int64))[::-1]
  assert got["alpha"] == corpus_stats.fit_zipf(counts, min_count=5)
  draws = np.random.default_rng(4)
  samples = []
  for _ in range(30):
    c = sum((per_doc[i] for i in draws.integers(0, 60, 60)), collections.Counter())
    sc = np.sort(np.fromiter(c.values(), np.int64))[::-1]
    samples.append(corpus_stats.fit_zipf(sc, rank_max=got["rank_max"]))
  se = np.std(samples)
  np.testing.assert_allclose(got["ci"], [got["alpha"] - 1.96 * se, got["alpha"] + 1.96 * se],
                             rtol=1e-12)
