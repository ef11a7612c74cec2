"""Mechanisms for the Rosetta count as variants with one interface.

Every variant is a differentiable ``jax.numpy`` function

    rosetta(theta, n, alpha, num_features, size) -> expected Rosetta count R(N)

and a companion ``selectivity(theta, n, alpha, num_features, size)`` giving the
Rosetta and non-Rosetta mean top-feature shares at the same N. ``theta`` is a dict
of *unconstrained* free parameters (each variant maps them to its physical ones,
so an optax fit needs no projections); ``alpha`` and ``num_features`` (F) are
fixed by the rule in ``theory.predict`` before any count is seen; ``size`` is a
static bound on the feature axis (``feature_axis``).

All variants share the allocation core of ``theory.capacity``: with budget N the
top D(N) features get a neuron each (the root of the margin ``h``), one training
run dedicates feature f with probability ``pi_f = sigmoid(h_f / s)``, and two
independent runs twin it with probability ``pi_f ** 2``. They differ in what
grows with N:

* ``allocation``: the model as derived (``theory.capacity``); free: the jitter s
  and the matcher's detection probability.
* ``growing_features``: the feature set grows with the model: a model with N
  neurons resolves ``F(N) = F (N / F) ** gamma`` of the corpus's F features
  (all of them at N = F); free: gamma in (0, 1) and detection.
* ``isolation``: a twinned pair is found only when its isolation (its log
  margin ``h_f`` over the sharing threshold) clears a detection threshold that
  rises with the matcher's search space, ``tau(N) = tau0 + tau1 log(N / F)``, with
  logistic width s: ``R = sum_f pi_f^2 sigmoid((h_f - tau(N)) / s)``. The detected
  count and their mean isolation both rise with N while the features just above
  the threshold stay a weakly isolated tail; free: tau0, tau1.
* ``concave``: concave returns on capacity: N neurons act as
  ``N_eff = N_c log(1 + N / N_c)`` for the allocation (linear for N << N_c);
  free: log N_c and detection.

In the tail-dominated limit (D << F, N) the allocation gives ``beta = 1/alpha``;
``isolation`` gives ``1/alpha - tau1/alpha``, ``concave`` a local exponent falling
from 1/alpha to 0, and ``growing_features`` (alpha near 1) ``1/alpha`` less a
``1/log F(N)`` correction. Derivations: docs/theory.md.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from theory import capacity

Array = jax.Array

# A priori constants (fixed before any comparison, not fitted).
SEED_NOISE = 0.25   # logistic run-to-run jitter of log margins (as in theory.capacity)


def feature_axis(num_features: float, n_max: float) -> int:
  """Static size of the feature axis that covers every variant up to ``n_max`` neurons."""
  return int(math.ceil(max(float(num_features), float(n_max)))) + 1


def _pi(n_eff: Array, alpha: Array, f: Array, noise: Array, size: int) -> tuple[Array, Array]:
  """(pi_f [size], h_f [size]) of one run at effective budget ``n_eff``."""
  p = capacity.CapacityParams(alpha=alpha, num_features=f, seed_noise=noise)
  h, mask = capacity._feature_margins(n_eff, p, size)   # pylint: disable=protected-access
  pi = jnp.where(mask, jax.nn.sigmoid(h / noise), 0.0)
  return pi, h


def _split(n: Array, f: Array, d: Array, r: Array) -> dict:
  """Selectivity of the Rosetta / non-Rosetta populations (``capacity.selectivity``'s rule).

  A dedicated neuron carries one feature (share 1); a shared neuron carries
  K / M features (share min(1, M / K)).
  """
  k, m = jnp.maximum(f - d, 1e-6), jnp.maximum(n - d, 1e-6)
  shared = jnp.clip(m / k, 0.0, 1.0)
  non_r = ((d - r) + (n - d) * shared) / jnp.maximum(n - r, 1e-6)
  return {"rosetta": jnp.ones_like(n), "non_rosetta": non_r, "gap": 1.0 - non_r,
          "rosetta_fraction": r / n, "dedicated": d}


# ---------------------------------------------------------------- the variants
def _allocation_parts(theta, n, alpha, f, size):
  noise = jnp.exp(theta["log_noise"])
  pi, _ = _pi(n, alpha, f, noise, size)
  return n, f, jnp.sum(pi), jax.nn.sigmoid(theta["logit_detect"]) * jnp.sum(pi ** 2)


def _growing_parts(theta, n, alpha, f, size):
  gamma = jax.nn.sigmoid(theta["logit_gamma"])
  f_n = jnp.maximum(f * (n / f) ** gamma, 2.0)
  pi, _ = _pi(n, alpha, f_n, SEED_NOISE, size)
  return n, f_n, jnp.sum(pi), jax.nn.sigmoid(theta["logit_detect"]) * jnp.sum(pi ** 2)


def _isolation_parts(theta, n, alpha, f, size):
  pi, h = _pi(n, alpha, f, SEED_NOISE, size)
  tau = theta["tau0"] + theta["tau1"] * jnp.log(n / f)
  q = jax.nn.sigmoid((jnp.minimum(h, 50.0) - tau) / SEED_NOISE)
  return n, f, jnp.sum(pi), jnp.sum(pi ** 2 * q)


def _concave_parts(theta, n, alpha, f, size):
  n_c = jnp.exp(theta["log_nc"])
  n_eff = jnp.maximum(n_c * jnp.log1p(n / n_c), 1.0)
  pi, _ = _pi(n_eff, alpha, f, SEED_NOISE, size)
  return n, f, jnp.sum(pi), jax.nn.sigmoid(theta["logit_detect"]) * jnp.sum(pi ** 2)


@dataclasses.dataclass(frozen=True)
class Variant:
  """One mechanism.

  Attributes:
    name: registry key.
    summary: one line for tables.
    init: default unconstrained parameters (a priori values, used as the first
      start of a fit).
    starts: further starting points for fits (dicts overriding ``init``).
    physical: maps theta to the physical parameters (for reports).
    parts: ``(theta, n, alpha, F, size) -> (N, F_eff, D, R)``.
  """
  name: str
  summary: str
  init: dict
  starts: tuple
  physical: Callable[[dict], dict]
  parts: Callable

  def rosetta(self, theta: dict, n, alpha, num_features, size: int) -> Array:
    """Expected Rosetta count at N neurons (scalar; ``jax.vmap`` over N)."""
    return _rosetta(self.name, theta, jnp.asarray(n, jnp.float32), jnp.asarray(alpha, jnp.float32),
                    jnp.asarray(num_features, jnp.float32), size)

  def selectivity(self, theta: dict, n, alpha, num_features, size: int) -> dict:
    """Rosetta / non-Rosetta selectivity, the Rosetta fraction and D at N."""
    return _selectivity(self.name, theta, jnp.asarray(n, jnp.float32),
                        jnp.asarray(alpha, jnp.float32), jnp.asarray(num_features, jnp.float32),
                        size)


def _logit(p: float) -> float:
  return math.log(p / (1.0 - p))


VARIANTS: dict[str, Variant] = {
    "allocation": Variant(
        "allocation", "capacity model as derived (fixed F)",
        {"log_noise": math.log(SEED_NOISE), "logit_detect": _logit(0.9)},
        ({"log_noise": math.log(1.0)}, {"logit_detect": _logit(0.3)},
         {"log_noise": math.log(0.05), "logit_detect": _logit(0.5)}),
        lambda t: {"seed_noise": float(np.exp(t["log_noise"])),
                   "detect": float(jax.nn.sigmoid(t["logit_detect"]))},
        _allocation_parts),
    "growing_features": Variant(
        "growing_features", "feature set grows with N: F(N) = F (N/F)^gamma",
        {"logit_gamma": 0.0, "logit_detect": _logit(0.9)},
        ({"logit_gamma": _logit(0.1)}, {"logit_gamma": _logit(0.9), "logit_detect": _logit(0.3)},
         {"logit_gamma": _logit(0.3), "logit_detect": _logit(0.5)}),
        lambda t: {"gamma": float(jax.nn.sigmoid(t["logit_gamma"])),
                   "detect": float(jax.nn.sigmoid(t["logit_detect"]))},
        _growing_parts),
    "isolation": Variant(
        "isolation", "detection needs isolation above tau0 + tau1 log(N/F)",
        {"tau0": 0.5, "tau1": 0.0},
        ({"tau0": 0.0, "tau1": 0.3}, {"tau0": 1.5, "tau1": -0.3}, {"tau0": -1.0, "tau1": 0.6}),
        lambda t: {"tau0": float(t["tau0"]), "tau1": float(t["tau1"])},
        _isolation_parts),
    "concave": Variant(
        "concave", "concave capacity: N_eff = N_c log(1 + N/N_c)",
        {"log_nc": math.log(1000.0), "logit_detect": _logit(0.9)},
        ({"log_nc": math.log(100.0)}, {"log_nc": math.log(10.0), "logit_detect": _logit(0.5)},
         {"log_nc": math.log(1e4), "logit_detect": _logit(0.3)}),
        lambda t: {"n_c": float(np.exp(t["log_nc"])),
                   "detect": float(jax.nn.sigmoid(t["logit_detect"]))},
        _concave_parts),
}


def get(name: str) -> Variant:
  if name not in VARIANTS:
    raise ValueError(f"unknown variant {name!r}; known: {sorted(VARIANTS)}")
  return VARIANTS[name]


def _theta32(theta: dict) -> dict:
  return {k: jnp.asarray(v, jnp.float32) for k, v in theta.items()}


@functools.partial(jax.jit, static_argnames=("name", "size"))
def _rosetta(name, theta, n, alpha, f, size):
  return VARIANTS[name].parts(_theta32(theta), n, alpha, f, size)[3]


@functools.partial(jax.jit, static_argnames=("name", "size"))
def _selectivity(name, theta, n, alpha, f, size):
  nn, f_eff, d, r = VARIANTS[name].parts(_theta32(theta), n, alpha, f, size)
  return _split(nn, f_eff, d, r)


def counts(name: str, theta: dict, sizes, alpha, num_features, size: int) -> Array:
  """[S] expected Rosetta counts at every N in ``sizes``."""
  sizes = jnp.asarray(sizes, jnp.float32)
  return jax.vmap(lambda n: _rosetta(name, theta, n, jnp.float32(alpha),
                                     jnp.float32(num_features), size))(sizes)


def local_beta(name: str, theta: dict, n, alpha, num_features, size: int) -> Array:
  """d log R / d log N at N (autodiff through the allocation's implicit root)."""
  def log_r(log_n):
    return jnp.log(_rosetta(name, theta, jnp.exp(log_n), jnp.float32(alpha),
                            jnp.float32(num_features), size))
  return jax.grad(log_r)(jnp.log(jnp.float32(n)))


def fitted_beta(name: str, theta: dict, sizes, alpha, num_features, size: int) -> float:
  """Least-squares log-log slope of the predicted counts over ``sizes`` (as the study fits)."""
  from rosetta_jax.analysis import stats  # pylint: disable=g-import-not-at-top
  return stats.loglog_slope(np.asarray(sizes, float),
                            np.asarray(counts(name, theta, sizes, alpha, num_features, size)))


# ---------------------------------------------------------------- fitting
@dataclasses.dataclass(frozen=True)
class Fit:
  """A variant's free parameters fitted by gradient to (sizes, counts).

  Attributes:
    name: the variant.
    theta: fitted unconstrained parameters.
    physical: the same, as physical parameters.
    loss: mean squared log error at the fitted parameters.
    start: index of the winning start (0 = the a priori ``init``).
  """
  name: str
  theta: dict
  physical: dict
  loss: float
  start: int


def _log_loss(name, theta, sizes, log_counts, weights, alpha, f, size):
  """Mean squared log error over the sizes with weight 1 (0 leaves a size out)."""
  pred = jax.vmap(lambda n: _rosetta(name, theta, n, alpha, f, size))(sizes)
  err = (jnp.log(jnp.maximum(pred, 1e-12)) - log_counts) ** 2
  return jnp.sum(weights * err) / jnp.sum(weights)


@functools.partial(jax.jit, static_argnames=("name", "size", "steps", "lr"))
def _adam(name, theta, sizes, log_counts, weights, alpha, f, size, steps, lr):
  opt = optax.adam(lr)

  def step(carry, _):
    th, state = carry
    loss, g = jax.value_and_grad(_log_loss, argnums=1)(name, th, sizes, log_counts, weights,
                                                       alpha, f, size)
    g = jax.tree_util.tree_map(lambda x: jnp.where(jnp.isfinite(x), x, 0.0), g)
    upd, state = opt.update(g, state, th)
    return (optax.apply_updates(th, upd), state), loss

  (theta, _), losses = jax.lax.scan(step, (theta, opt.init(theta)), None, length=steps)
  return theta, _log_loss(name, theta, sizes, log_counts, weights, alpha, f, size), losses


def fit(name: str, sizes: Sequence[float], counts_: Sequence[float], alpha: float,
        num_features: float, size: int | None = None, steps: int = 400,
        lr: float = 0.05) -> Fit:
  """Fits the variant's free parameters with optax Adam on mean squared log error.

  Every start in ``[init, *starts]`` is run; the lowest loss wins (the losses
  are not convex in theta).

  Raises:
    ValueError: fewer than two sizes, or a count <= 0 (no log error).
  """
  v = get(name)
  sizes = np.asarray(sizes, np.float64)
  c = np.asarray(counts_, np.float64)
  if len(sizes) < 2 or sizes.shape != c.shape or np.any(c <= 0):
    raise ValueError(f"need >= 2 sizes with positive counts, got {sizes.tolist()} {c.tolist()}")
  size = size or feature_axis(num_features, sizes.max())
  best = None
  for i, start in enumerate([{}, *v.starts]):
    th0 = _theta32({**v.init, **start})
    th, loss, _ = _adam(name, th0, jnp.asarray(sizes, jnp.float32),
                        jnp.asarray(np.log(c), jnp.float32), jnp.ones(len(c), jnp.float32),
                        jnp.float32(alpha),
                        jnp.float32(num_features), size, steps, lr)
    loss = float(loss)
    if np.isfinite(loss) and (best is None or loss < best.loss):
      th = {k: float(x) for k, x in th.items()}
      best = Fit(name, th, v.physical(th), loss, i)
  if best is None:
    raise FloatingPointError(f"{name}: every start diverged")
  return best


def fit_many(name: str, sizes: Sequence[float], counts_: np.ndarray, alpha: float,
             num_features: float, size: int | None = None, steps: int = 400,
             lr: float = 0.05, weights: np.ndarray | None = None) -> tuple[dict, np.ndarray]:
  """``fit`` on many count vectors at once (bootstrap resamples), ``jax.vmap``-ed.

  Every row is fitted from every start in ``[init, *starts]`` (all starts and rows in
  one vmapped Adam run) and keeps its lowest loss, as ``fit`` does; a row's fit
  equals ``fit`` on its sizes of weight 1.

  Args:
    counts_: [B, S] positive counts, one row per resample, at ``sizes`` [S].
    weights: [B, S] 1 for the sizes a row is fitted on, 0 for those left out
      (default: all 1), so fits on different subsets share one compiled program.

  Returns:
    (theta: {param: [B] array} of unconstrained parameters, losses [B]; rows whose
    every start diverged have loss inf).
  """
  v = get(name)
  sizes = np.asarray(sizes, np.float64)
  c = np.asarray(counts_, np.float64)
  if c.ndim != 2 or c.shape[1] != len(sizes) or np.any(c <= 0):
    raise ValueError(f"need [B, {len(sizes)}] positive counts, got shape {c.shape}")
  w = np.ones_like(c) if weights is None else np.asarray(weights, np.float64)
  if w.shape != c.shape or np.any(w.sum(1) < 2):
    raise ValueError(f"weights must be [B, S] with >= 2 sizes per row, got {w.shape}")
  size = size or feature_axis(num_features, sizes.max())
  starts = [_theta32({**v.init, **s}) for s in [{}, *v.starts]]
  th0 = {k: jnp.stack([s[k] for s in starts]) for k in v.init}           # [K]
  n = jnp.asarray(sizes, jnp.float32)

  th, loss = _adam_many(name, th0, n, jnp.asarray(np.log(c), jnp.float32),
                        jnp.asarray(w, jnp.float32), jnp.float32(alpha),
                        jnp.float32(num_features), size, steps, lr)       # [B, K]
  loss = np.where(np.isfinite(np.asarray(loss)), np.asarray(loss), np.inf)
  best = np.argmin(loss, axis=1)
  rows = np.arange(len(c))
  theta = {k: np.asarray(x)[rows, best] for k, x in th.items()}
  return theta, loss[rows, best]


@functools.partial(jax.jit, static_argnames=("name", "size", "steps", "lr"))
def _adam_many(name, th0, sizes, log_c, weights, alpha, f, size, steps, lr):
  """[K] starts x [B] rows of ``_adam`` in one program: ([B, K] theta, [B, K] loss)."""
  def one(th, lc, wt):
    return _adam(name, th, sizes, lc, wt, alpha, f, size, steps, lr)[:2]
  return jax.vmap(jax.vmap(one, in_axes=(0, None, None)), in_axes=(None, 0, 0))(
      th0, log_c, weights)
