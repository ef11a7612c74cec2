"""The capacity-allocation model: which features get a neuron of their own.

Setting (derivation in docs/theory.md). F latent features, feature f with utility
``u_f = f ** -alpha`` (importance x frequency, rank-ordered). A layer of N neurons
dedicates one neuron each to the top D features (monosemantic neurons); the other
K = F - D features share the remaining M = N - D neurons in superposition. With
the best packing of K unit vectors in M dimensions (a tight frame, the Welch
bound), every shared feature suffers interference whose mean square is
``(K - M) / (M (K - 1))`` per active neighbour, so the interference loss is

    L(D) = U_S(D) * K * (K - M) / (M (K - 1)),    U_S(D) = sum_{f > D} u_f

(up to constants that do not move the optimum). Dedicating feature D + 1 removes
its share of the shared utility and costs the pool one neuron; the optimum D(N)
is where the marginal feature's share of the shared utility equals one neuron's
share of the pool,

    h(D) = log u_{D+1} - log U_S(D) + log M_eff(D) = 0,
    1 / M_eff = 1 / (N - D) + 1 / (F - D - 1) - 1 / (F - D),

i.e. *a feature gets its own neuron when its utility beats the interference cost
of sharing, U_S / M*. h is decreasing in D, so the root is unique (D = 0 if
h(0) < 0, D = F if N >= F).

Closed forms:
* Tail-dominated limit (D << F so U_S ~ U, D << N):
  ``D + 1 = (N / U) ** (1 / alpha)``, so ``beta = 1 / alpha``.
* Head-dominated limit (alpha > 1, 1 << D, N << F): ``D / N -> (alpha-1) / alpha``,
  so ``beta -> 1``.

Everything is ``jax.numpy``: ``jax.grad`` of ``local_beta`` / ``fitted_beta`` gives
the sensitivity of the exponent to alpha, F and the stochastic terms.

Rosetta count: two independent trainings each dedicate feature f with probability
``pi_f = sigmoid(h_f / seed_noise)`` (``h_f`` the margin of f over the threshold,
``seed_noise`` the run-to-run jitter of log utilities); the pair is then found by
the matcher with probability ``detect``: ``R(N) = detect * sum_f pi_f ** 2``.

Selectivity (polarization): a dedicated neuron carries one feature
(selectivity 1); a shared neuron carries K / M features on average, so its
top-feature share is ``min(1, M / K)``.
"""

from __future__ import annotations

import functools
from typing import Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


@flax.struct.dataclass
class CapacityParams:
  """Parameters of the capacity model (a pytree: ``jax.grad`` flows to each).

  Attributes:
    alpha: utility exponent, ``u_f ∝ f ** -alpha``; fixed from the corpus's
      rank-frequency law (``theory.corpus_stats``), never fitted to Rosetta counts.
    num_features: F, the number of latent features (float for gradients).
    seed_noise: run-to-run jitter (logistic scale) of a feature's log margin; sets
      how often two runs dedicate the same marginal feature.
    detect: probability that the matcher finds a pair of twin dedicated neurons.
  """
  alpha: Array | float = 1.0
  num_features: Array | float = 1024.0
  seed_noise: Array | float = 0.25
  detect: Array | float = 1.0


def _as_float(p: CapacityParams) -> CapacityParams:
  return jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float32), p)


def _tail_integral(a: Array, b: Array, alpha: Array) -> Array:
  """∫_a^b x^-alpha dx, stable through alpha = 1 (where it is log(b / a))."""
  log_ratio = jnp.log(b) - jnp.log(a)
  e = (1.0 - alpha) * log_ratio
  safe = jnp.where(jnp.abs(e) < 1e-6, 1.0, e)
  expm1_over = jnp.where(jnp.abs(e) < 1e-6, 1.0 + 0.5 * e, jnp.expm1(safe) / safe)
  return a ** (1.0 - alpha) * log_ratio * expm1_over


def shared_utility(d: Array, params: CapacityParams) -> Array:
  """U_S(D) = sum_{f=D+1}^{F} f^-alpha, Euler-Maclaurin for continuous D.

  Args:
    d: [...] number of dedicated features (continuous, 0 <= d < F).
    params: model parameters.

  Returns:
    [...] the shared utility.
  """
  p = _as_float(params)
  a, b, al = d + 1.0, p.num_features, p.alpha
  return (_tail_integral(a, b, al) + 0.5 * (a ** -al + b ** -al)
          + al / 12.0 * (a ** (-al - 1.0) - b ** (-al - 1.0)))


def margin(d: Array, log_n: Array, params: CapacityParams) -> Array:
  """h(D; N): log-margin of the marginal feature D + 1 over the sharing cost.

  Positive: dedicating feature D + 1 lowers the interference loss.

  Args:
    d: [...] dedicated count (0 <= d < min(N, F) - 1).
    log_n: [...] log of the neuron budget N.
    params: model parameters.
  """
  p = _as_float(params)
  n = jnp.exp(log_n)
  f = p.num_features
  inv_m_eff = 1.0 / (n - d) + 1.0 / (f - d - 1.0) - 1.0 / (f - d)
  return -p.alpha * jnp.log(d + 1.0) - jnp.log(shared_utility(d, p)) - jnp.log(inv_m_eff)


def interference_loss(d: Array, n: Array, params: CapacityParams) -> Array:
  """L(D) = U_S(D) K (K - M) / (M (K - 1)), the loss the allocation minimises.

  Args:
    d: [...] dedicated count; n: [...] neuron budget (n < F).
  """
  p = _as_float(params)
  k, m = p.num_features - d, n - d
  return shared_utility(d, p) * k * (k - m) / (m * (k - 1.0))


def _bisect_root(log_n: Array, params: CapacityParams, iters: int = 80) -> Array:
  """Root of ``margin`` in d, by bisection (no gradient)."""
  p = _as_float(params)
  n = jnp.exp(log_n)
  hi0 = jnp.minimum(n, p.num_features - 1.0) - 1e-4
  lo0 = jnp.zeros_like(hi0)

  def body(_, lohi):
    lo, hi = lohi
    mid = 0.5 * (lo + hi)
    pos = margin(mid, log_n, p) > 0
    return jnp.where(pos, mid, lo), jnp.where(pos, hi, mid)

  lo, hi = jax.lax.fori_loop(0, iters, body, (lo0, hi0))
  return 0.5 * (lo + hi)


@jax.jit
def dedicated_count(n: Array, params: CapacityParams) -> Array:
  """D(N): the number of features with a dedicated neuron (continuous).

  Differentiable in ``n`` and in every parameter: the root is found by bisection
  and one Newton step through ``margin`` carries the implicit-function gradient
  ``dD/dθ = -(∂h/∂θ) / (∂h/∂D)``.

  Args:
    n: scalar neuron budget (> 0). Use ``jax.vmap`` for many budgets.
    params: model parameters.

  Returns:
    Scalar D in [0, F]. D = F for N >= F, 0 when even the top feature is shared.
  """
  p = _as_float(params)
  n = jnp.asarray(n, jnp.float32)
  log_n = jnp.log(n)
  d0 = jax.lax.stop_gradient(_bisect_root(log_n, p))
  h, dh_dd = jax.value_and_grad(margin)(d0, log_n, p)
  d = d0 - (h - jax.lax.stop_gradient(h)) / jax.lax.stop_gradient(dh_dd)
  none = margin(0.0, log_n, p) <= 0
  d = jnp.where(none, 0.0, d)
  return jnp.where(n >= p.num_features, p.num_features, d)


@jax.jit
def local_beta(n: Array, params: CapacityParams) -> Array:
  """beta(N) = dlog D / dlog N at budget N, by the implicit function theorem.

  Written as ``-(∂h/∂log N) / (D ∂h/∂D)`` at the root, so ``jax.grad`` of it with
  respect to ``params`` (the sensitivity of beta) is exact.
  """
  p = _as_float(params)
  log_n = jnp.log(jnp.asarray(n, jnp.float32))
  d = dedicated_count(jnp.exp(log_n), p)
  dh_dd = jax.grad(margin, argnums=0)(d, log_n, p)
  dh_dlogn = jax.grad(margin, argnums=1)(d, log_n, p)
  return -dh_dlogn / (d * dh_dd)


def _feature_margins(n: Array, params: CapacityParams, max_features: int) -> tuple[Array, Array]:
  """Margins h_f = log u_f - log(U_S / M_eff) of every feature at budget n."""
  p = _as_float(params)
  d = dedicated_count(n, p)
  log_threshold = -p.alpha * jnp.log(d + 1.0) - margin(d, jnp.log(n), p)
  f = jnp.arange(1, max_features + 1, dtype=jnp.float32)
  mask = f <= p.num_features
  h = -p.alpha * jnp.log(f) - log_threshold
  # N >= F: every feature has its own neuron (the margin formula is undefined).
  h = jnp.where(n >= p.num_features, 1e3, h)
  return h, mask


@functools.partial(jax.jit, static_argnames="max_features")
def dedication_probability(n: Array, params: CapacityParams, max_features: int) -> Array:
  """pi_f: probability that one training run dedicates a neuron to feature f.

  Args:
    n: scalar budget; max_features: static size of the feature axis (>= F).

  Returns:
    [max_features] probabilities (0 beyond F).
  """
  p = _as_float(params)
  h, mask = _feature_margins(n, p, max_features)
  pi = jax.nn.sigmoid(h / p.seed_noise)
  return jnp.where(mask, pi, 0.0)


@functools.partial(jax.jit, static_argnames="max_features")
def rosetta_count(n: Array, params: CapacityParams, max_features: int) -> Array:
  """Expected Rosetta count R(N) = detect * sum_f pi_f^2 for two independent runs."""
  p = _as_float(params)
  pi = dedication_probability(n, p, max_features)
  return p.detect * jnp.sum(pi ** 2)


@functools.partial(jax.jit, static_argnames="max_features")
def selectivity(n: Array, params: CapacityParams, max_features: int) -> dict:
  """Predicted mean selectivity (top-feature share) of neuron populations.

  Uses the stochastic dedication of one run (``pi_f``): D = sum pi_f dedicated
  neurons, of which R = detect * sum pi_f^2 are Rosetta.

  Returns:
    dict of scalars: ``dedicated`` (1), ``shared`` (min(1, M/K)), ``rosetta`` (1),
    ``non_rosetta`` (mean over the N - R other neurons), ``gap`` (rosetta minus
    non_rosetta: the polarization), ``rosetta_fraction`` (R / N).
  """
  p = _as_float(params)
  n = jnp.asarray(n, jnp.float32)
  pi = dedication_probability(n, p, max_features)
  d = jnp.sum(pi)                      # expected dedicated neurons of one run
  r = p.detect * jnp.sum(pi ** 2)      # of which Rosetta (twinned and found)
  k, m = p.num_features - d, jnp.maximum(n - d, 1e-6)
  shared = jnp.clip(m / jnp.maximum(k, 1e-6), 0.0, 1.0)
  non_r = ((d - r) * 1.0 + (n - d) * shared) / jnp.maximum(n - r, 1e-6)
  return {"dedicated": jnp.ones_like(n), "shared": shared, "rosetta": jnp.ones_like(n),
          "non_rosetta": non_r, "gap": 1.0 - non_r, "rosetta_fraction": r / n}


@functools.partial(jax.jit, static_argnames="max_features")
def fitted_beta(budgets: Sequence[float] | Array, params: CapacityParams,
                max_features: int | None = None) -> Array:
  """Least-squares slope of log count vs log N over ``budgets``.

  The quantity the simulations and the zoo measure. Counts the Rosetta count when
  ``max_features`` is given, else the dedicated count.

  Args:
    budgets: [B] neuron budgets (B >= 2, all > 0).
  """
  budgets = jnp.asarray(budgets, jnp.float32)
  if max_features is None:
    counts = jax.vmap(lambda n: dedicated_count(n, params))(budgets)
  else:
    counts = jax.vmap(lambda n: rosetta_count(n, params, max_features))(budgets)
  x = jnp.log(budgets)
  y = jnp.log(counts)
  xc = x - x.mean()
  return jnp.sum(xc * (y - y.mean())) / jnp.sum(xc ** 2)


def closed_form_dedicated(n: Array, alpha: float, num_features: float) -> Array:
  """Tail-dominated limit: D = (N / U)^(1/alpha) - 1 with U = U_S(0)."""
  u = shared_utility(jnp.asarray(0.0), CapacityParams(alpha=alpha, num_features=num_features))
  return (jnp.asarray(n) / u) ** (1.0 / alpha) - 1.0


def sensitivities(n: float, params: CapacityParams) -> dict:
  """d beta(N) / d theta for every parameter theta (``jax.grad`` of ``local_beta``)."""
  g = jax.grad(lambda p: local_beta(n, p))(_as_float(params))
  return {k: float(v) for k, v in vars(g).items()}


def predict(budgets: Sequence[float], params: CapacityParams, max_features: int) -> dict:
  """All predictions over a sweep of budgets, as plain Python numbers.

  Returns:
    dict with per-budget lists ``dedicated``, ``rosetta``, ``local_beta``,
    ``selectivity`` (dict of lists) and scalars ``beta_dedicated``,
    ``beta_rosetta`` (fitted slopes over the budgets), ``beta_sensitivity``
    (d beta / d theta at the geometric-mean budget).

  Raises:
    ValueError: fewer than 2 budgets, a budget <= 0, F < 2, or max_features < F.
  """
  budgets = [float(b) for b in budgets]
  if len(budgets) < 2 or min(budgets) <= 0:
    raise ValueError(f"need >= 2 positive budgets, got {budgets}")
  if float(params.num_features) < 2 or max_features < float(params.num_features):
    raise ValueError(f"need 2 <= num_features <= max_features, got "
                     f"{float(params.num_features)} and {max_features}")
  p = _as_float(params)
  arr = jnp.asarray(budgets, jnp.float32)
  sel = jax.vmap(lambda n: selectivity(n, p, max_features))(arr)
  mid = float(np.exp(np.mean(np.log(budgets))))
  return {
      "budgets": budgets,
      "dedicated": np.asarray(jax.vmap(lambda n: dedicated_count(n, p))(arr)).tolist(),
      "rosetta": np.asarray(jax.vmap(lambda n: rosetta_count(n, p, max_features))(arr)).tolist(),
      "local_beta": np.asarray(jax.vmap(lambda n: local_beta(n, p))(arr)).tolist(),
      "selectivity": {k: np.asarray(v).tolist() for k, v in sel.items()},
      "beta_dedicated": float(fitted_beta(arr, p)),
      "beta_rosetta": float(fitted_beta(arr, p, max_features)),
      "beta_sensitivity": sensitivities(mid, p),
      "beta_sensitivity_at": mid,
  }
