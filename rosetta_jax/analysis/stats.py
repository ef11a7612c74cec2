"""The one home of the project's statistics: intervals, effect sizes, depth, power laws.

Every study, the theory package and the reports take these from here, so that a
number means the same thing wherever it is printed.

Intervals. Every bootstrap interval is the *basic* (reverse-percentile) interval
``[2 theta - q_hi, 2 theta - q_lo]`` around the full-data estimate ``theta``,
where ``q`` are quantiles of the resampled statistic. Resampling documents with
replacement biases mutual-nearest-neighbour counts (a duplicated document changes
every correlation), and everything computed from those counts (exponents, shares,
effect sizes of Rosetta sets) inherits the bias; the basic interval corrects it
to first order, where the plain percentile interval can miss its own estimate.
Where a statistic has a natural range (a count >= 0, an AUROC in [0, 1]) the
interval is clipped to it. BUILD_NOTES.md ("Intervals") gives the reasons and
the values that changed when the project moved to this one construction.

The one interval that is not a bootstrap interval is ``mean_interval``: a
Student-t interval of a mean over a few independent replicates (training runs
with different seeds), where there is nothing to resample.

Depth. Layer ``l`` of an ``L``-layer model sits at relative depth
``(l + 0.5) / L``, the centre of its share of the depth axis; a depth ``d`` in
[0, 1] selects the layer whose share ``[l / L, (l + 1) / L)`` contains it
(``layer_at_depth``; 1 selects the last layer).
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Sequence

import numpy as np

LEVEL = 0.95
_SITE_RE = re.compile(r"^layer_(\d+)/(\w+)$")

# ----------------------------------------------------------------------------
# Intervals
# ----------------------------------------------------------------------------


def interval(boot, estimate: float, level: float = LEVEL,
             bounds: tuple[float | None, float | None] = (None, None)) -> list[float]:
  """The basic bootstrap interval of ``estimate`` from its resampled values.

  Args:
    boot: [B] the statistic on each resample (non-finite values are dropped).
    estimate: the statistic on the full data.
    level: confidence level.
    bounds: (lo, hi) range of the statistic to clip to (None: unbounded).

  Returns:
    [lo, hi]; [nan, nan] when fewer than two resamples are finite or the
    estimate is not finite.
  """
  s = np.asarray(boot, np.float64).ravel()
  s = s[np.isfinite(s)]
  if len(s) < 2 or not np.isfinite(estimate):
    return [float("nan"), float("nan")]
  a = (1 - level) / 2
  q_lo, q_hi = np.quantile(s, [a, 1 - a])
  lo, hi = 2 * estimate - q_hi, 2 * estimate - q_lo
  if bounds[0] is not None:
    lo, hi = max(lo, bounds[0]), max(hi, bounds[0])
  if bounds[1] is not None:
    lo, hi = min(lo, bounds[1]), min(hi, bounds[1])
  return [float(lo), float(hi)]


def count_interval(count: int, boot, level: float = LEVEL) -> list[float]:
  """``interval`` of a count (clipped at 0)."""
  return interval(boot, float(count), level, bounds=(0.0, None))


def mean_interval(x, level: float = LEVEL) -> tuple[float, float, float]:
  """(mean, lo, hi): Student-t interval of the mean of independent replicates."""
  from scipy import stats as sps  # pylint: disable=g-import-not-at-top
  x = np.asarray(x, dtype=np.float64)
  if len(x) < 2:
    return float(x.mean()) if len(x) else float("nan"), float("nan"), float("nan")
  h = sps.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))
  return float(x.mean()), float(x.mean() - h), float(x.mean() + h)


def degenerate(ci: Sequence[float], estimate: float) -> bool:
  """True when an interval has zero width (too few documents or resamples to vary)."""
  return bool(np.isfinite(ci[0]) and ci[0] == ci[1] == estimate)


# ----------------------------------------------------------------------------
# Effect sizes
# ----------------------------------------------------------------------------


def cohens_d(a, b) -> float:
  """Difference of means over the pooled standard deviation (NaN if undefined)."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if len(a) < 2 or len(b) < 2:
    return float("nan")
  pooled = math.sqrt(((len(a) - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1))
                     / (len(a) + len(b) - 2))
  return float((a.mean() - b.mean()) / pooled) if pooled > 0 else float("nan")


def auroc(a, b) -> float:
  """P(a random element of ``a`` exceeds one of ``b``), ties counted half:
  the Mann-Whitney U of ``a`` over ``len(a) * len(b)``."""
  from scipy import stats as sps  # pylint: disable=g-import-not-at-top
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if len(a) < 1 or len(b) < 1:
    return float("nan")
  ranks = sps.rankdata(np.concatenate([a, b]))
  return float((ranks[:len(a)].sum() - len(a) * (len(a) + 1) / 2) / (len(a) * len(b)))


def cliffs_delta(a, b) -> float:
  """Cliff's delta: P(a > b) - P(a < b) over all pairs of an element of ``a`` and
  one of ``b``; equal to ``2 * auroc(a, b) - 1`` (ties count half in the AUROC and
  zero here). In [-1, 1]; NaN when a side is empty."""
  return 2.0 * auroc(a, b) - 1.0


def effect_sizes(values, in_group, sign: int = 1) -> dict[str, np.ndarray]:
  """AUROC and Cohen's d of a group of neurons against the rest.

  Args:
    values: [N] or [B, N] metric values (NaN = excluded neuron, e.g. constant).
    in_group: [N] bool, or [B, N] (a group per resample row of ``values``).
    sign: +1 if larger means more selective, -1 if smaller does; both effects are
      oriented so that positive d / AUROC > 0.5 means the group is more selective.

  Returns:
    {"auroc": [] or [B], "d": [] or [B]}; NaN where a side has < 2 neurons.
  """
  v = np.asarray(values, np.float64)
  single = v.ndim == 1
  v = np.atleast_2d(v) * sign
  pos = np.asarray(in_group, bool)
  if pos.shape not in ((v.shape[1],), v.shape):
    raise ValueError(f"in_group must have shape ({v.shape[1]},) or {v.shape}, got {pos.shape}")
  pos = np.broadcast_to(pos, v.shape)
  out_auroc = np.full(len(v), np.nan)
  out_d = np.full(len(v), np.nan)
  for b, row in enumerate(v):
    ok = np.isfinite(row)
    x, y = row[ok & pos[b]], row[ok & ~pos[b]]
    if len(x) < 2 or len(y) < 2:
      continue
    out_auroc[b], out_d[b] = auroc(x, y), cohens_d(x, y)
  if single:
    return {"auroc": out_auroc[0], "d": out_d[0]}
  return {"auroc": out_auroc, "d": out_d}


def trend(sizes, effect, boot_effect=None, level: float = LEVEL) -> dict:
  """Slope of a statistic against ln(size), with its bootstrap interval.

  Args:
    sizes: [S] model sizes.
    effect: [S] full-data statistic per size.
    boot_effect: [B, S] the statistic per resample (the same resamples at every size).

  Returns:
    {"slope", "ci", "n_boot"}: slope per e-fold of size.
  """
  x = np.log(np.asarray(sizes, np.float64))
  y = np.asarray(effect, np.float64)
  if x.shape != y.shape or len(x) < 2:
    raise ValueError(f"need >= 2 sizes with one value each, got {x.shape} and {y.shape}")
  ok = np.isfinite(y)
  slope = ols(x[ok], y[ok]).slope if ok.sum() >= 2 else float("nan")
  out = {"slope": slope, "ci": [float("nan")] * 2, "n_boot": 0}
  if boot_effect is not None:
    rows = [r for r in np.asarray(boot_effect, np.float64) if np.isfinite(r).sum() >= 2]
    slopes = [ols(x[np.isfinite(r)], r[np.isfinite(r)]).slope for r in rows]
    out.update(ci=interval(slopes, slope, level), n_boot=len(slopes))
  return out


# ----------------------------------------------------------------------------
# Sites and depth
# ----------------------------------------------------------------------------


def parse_site(site: str) -> tuple[int, str]:
  """(layer, kind) of a site name such as ``layer_3/mlp``."""
  m = _SITE_RE.match(site)
  if not m:
    raise ValueError(f"site {site!r} has no layer index: sites are 'layer_{{i}}/<kind>' "
                     "(e.g. layer_3/mlp)")
  return int(m.group(1)), m.group(2)


def site_layer(site: str) -> int:
  """Layer index of a site name such as ``layer_3/mlp``."""
  return parse_site(site)[0]


def relative_depth(layer, num_layers: int):
  """(layer + 0.5) / num_layers: the centre of the layer's share of the depth axis."""
  if num_layers < 1:
    raise ValueError(f"num_layers must be >= 1, got {num_layers}")
  return (np.asarray(layer, np.float64) + 0.5) / num_layers


def relative_depths(sites: Sequence[str], num_layers: int | None = None) -> dict[str, float]:
  """{site: relative depth}; ``num_layers`` defaults to 1 + the largest layer among ``sites``."""
  layers = {s: site_layer(s) for s in sites}
  n = num_layers if num_layers is not None else max(layers.values()) + 1
  return {s: float(relative_depth(l, n)) for s, l in layers.items()}


def layer_at_depth(depth: float, num_layers: int) -> int:
  """The layer whose share [l / L, (l + 1) / L) of the depth axis holds ``depth`` in [0, 1]."""
  if not 0.0 <= depth <= 1.0:
    raise ValueError(f"relative depths must lie in [0, 1], got {depth}")
  return min(num_layers - 1, int(math.floor(depth * num_layers)))


# ----------------------------------------------------------------------------
# Power laws
# ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class OLS:
  slope: float
  intercept: float
  r2: float
  se: float       # standard error of the slope (NaN with two points)


def ols(x, y) -> OLS:
  """Least-squares line of ``y`` on ``x``."""
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  xm, ym = x.mean(), y.mean()
  sxx = ((x - xm) ** 2).sum()
  if not sxx > 0:
    raise ValueError(f"a line needs two distinct x values, got {x.tolist()}")
  slope = ((x - xm) * (y - ym)).sum() / sxx
  intercept = ym - slope * xm
  resid = y - (intercept + slope * x)
  sst = ((y - ym) ** 2).sum()
  r2 = 1.0 - (resid ** 2).sum() / sst if sst > 0 else 1.0
  dof = len(x) - 2
  se = math.sqrt((resid ** 2).sum() / dof / sxx) if dof > 0 else float("nan")
  return OLS(float(slope), float(intercept), float(r2), se)


@dataclasses.dataclass(frozen=True)
class PowerLawFit:
  """A fitted power law count ~ c * N^beta (and fraction = count / N ~ N^(beta - 1)).

  Attributes:
    beta: exponent of the count (sublinear when < 1).
    log_c: natural log of the prefactor.
    ci: (lo, hi) interval of beta: the basic bootstrap interval of the refitted
      exponents ("bootstrap"), or the regression's t-interval ("t").
    beta_fraction: exponent of the fraction, beta - 1.
    ci_fraction: its interval.
    r2: coefficient of determination in log-log space.
    method: "bootstrap" or "t".
    n_boot: resamples used (0 for "t").
    boot_betas: the resampled exponents (empty for "t").
    sizes, counts: the points fitted (sizes with a zero count are dropped).
  """
  beta: float
  log_c: float
  ci: tuple[float, float]
  beta_fraction: float
  ci_fraction: tuple[float, float]
  r2: float
  method: str
  n_boot: int
  boot_betas: np.ndarray
  sizes: np.ndarray
  counts: np.ndarray

  def predict(self, sizes) -> np.ndarray:
    return np.exp(self.log_c) * np.asarray(sizes, dtype=np.float64) ** self.beta

  def band(self, sizes, level: float = LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """Pointwise band of the fitted count at ``sizes`` from the resampled slopes
    (the basic interval of each prediction); the fit itself for "t" fits."""
    p = self.predict(sizes)
    if not len(self.boot_betas):
      return p, p
    x = np.log(np.asarray(sizes, dtype=np.float64))
    xm, ym = np.log(self.sizes).mean(), np.log(self.counts).mean()
    # Each resampled line passes through its own centroid; approximating it by the
    # observed centroid keeps the band a function of the slope alone.
    preds = ym + np.outer(self.boot_betas, x - xm)
    a = (1 - level) / 2
    lp = np.log(p)
    lo = 2 * lp - np.quantile(preds, 1 - a, axis=0)
    hi = 2 * lp - np.quantile(preds, a, axis=0)
    return np.exp(lo), np.exp(hi)

  def to_dict(self) -> dict:
    return {
        "count": {"beta": self.beta, "ci": list(self.ci), "log_c": self.log_c},
        "fraction": {"beta": self.beta_fraction, "ci": list(self.ci_fraction)},
        "r2": self.r2, "method": self.method, "n_boot": self.n_boot,
        "sublinear": bool(self.ci[1] < 1.0),
    }


def fit_power_law(sizes, counts, boot_counts=None, level: float = LEVEL) -> PowerLawFit:
  """Fits count ~ c * N^beta by least squares in log-log space.

  Args:
    sizes: [S] model sizes (total neurons, or parameters).
    counts: [S] counts (sizes with a zero count are left out of the fit).
    boot_counts: optional [B, S] counts from bootstrap resamples; the interval is
      then the basic bootstrap interval of the refitted exponents.
    level: confidence level.

  Raises:
    ValueError: mismatched shapes, non-finite values, or fewer than two distinct
      sizes with a positive count.
  """
  sizes = np.asarray(sizes, dtype=np.float64)
  counts = np.asarray(counts, dtype=np.float64)
  if sizes.ndim != 1 or sizes.shape != counts.shape:
    raise ValueError(f"sizes {sizes.shape} and counts {counts.shape} must be equal 1-D shapes")
  if not (np.all(np.isfinite(sizes)) and np.all(np.isfinite(counts))):
    raise ValueError("sizes and counts must be finite")
  if np.any(sizes <= 0) or np.any(counts < 0):
    raise ValueError("sizes must be positive and counts non-negative")
  keep = counts > 0
  if keep.sum() < 2 or len(np.unique(sizes[keep])) < 2:
    raise ValueError(f"need at least two distinct sizes with a positive count, got "
                     f"sizes={sizes.tolist()} counts={counts.tolist()}")
  x, y = np.log(sizes[keep]), np.log(counts[keep])
  line = ols(x, y)
  beta = line.slope
  boot = np.zeros((0,))
  if boot_counts is not None:
    bc = np.asarray(boot_counts, dtype=np.float64)
    if bc.ndim != 2 or bc.shape[1] != len(sizes):
      raise ValueError(f"boot_counts must be [resamples, {len(sizes)}], got {bc.shape}")
    bc = bc[:, keep]
    ok = np.all(bc > 0, axis=1)
    boot = np.array([ols(x, np.log(row)).slope for row in bc[ok]])
    if len(boot) < 2:
      raise ValueError("fewer than two bootstrap resamples have positive counts at every size")
    ci = tuple(interval(boot, beta, level))
    method = "bootstrap"
  else:
    from scipy import stats as sps  # pylint: disable=g-import-not-at-top
    dof = len(x) - 2
    t = float(sps.t.ppf(0.5 + level / 2, dof)) if dof > 0 else float("nan")
    ci = (beta - t * line.se, beta + t * line.se)
    method = "t"
  return PowerLawFit(
      beta=beta, log_c=line.intercept, ci=ci, beta_fraction=beta - 1.0,
      ci_fraction=(ci[0] - 1.0, ci[1] - 1.0), r2=line.r2, method=method, n_boot=len(boot),
      boot_betas=boot, sizes=sizes[keep], counts=counts[keep])


def loglog_slope(n, y) -> float:
  """Least-squares slope of log y on log n (every y > 0)."""
  n, y = np.asarray(n, np.float64), np.asarray(y, np.float64)
  if np.any(~np.isfinite(y)) or np.any(y <= 0):
    raise ValueError(f"values must be finite and > 0 for a log-log fit, got {y.tolist()}")
  return ols(np.log(n), np.log(y)).slope
