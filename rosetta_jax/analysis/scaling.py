"""Power-law fits of Rosetta counts (and fractions) against model size, with CIs.

count ~ c * N^beta  and  fraction = count / N ~ c * N^(beta - 1),

fitted by least squares in log-log space. Confidence intervals come from a
document bootstrap when the caller supplies resampled counts (``boot_counts``,
one row per resample, see ``analysis/bootstrap.py``), else from the regression's
t-interval.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np


@dataclasses.dataclass(frozen=True)
class PowerLawFit:
  """A fitted power law.

  Attributes:
    beta: exponent of the count (sublinear when < 1).
    log_c: natural log of the prefactor.
    ci: (lo, hi) confidence interval of beta.
    beta_fraction: exponent of the fraction, beta - 1.
    ci_fraction: its interval.
    r2: coefficient of determination in log-log space.
    method: "bootstrap" (percentile over resamples) or "t" (regression).
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

  def band(self, sizes, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Pointwise CI band of the fitted count at ``sizes`` (bootstrap fits only)."""
    if not len(self.boot_betas):
      p = self.predict(sizes)
      return p, p
    x = np.log(np.asarray(sizes, dtype=np.float64))
    xm, ym = np.log(self.sizes).mean(), np.log(self.counts).mean()
    # Each resampled line passes through its own centroid; approximating it by the
    # observed centroid keeps the band a function of the slope alone.
    preds = np.exp(ym + np.outer(self.boot_betas, x - xm))
    a = (1 - level) / 2
    return np.quantile(preds, a, axis=0), np.quantile(preds, 1 - a, axis=0)

  def to_dict(self) -> dict:
    return {
        "count": {"beta": self.beta, "ci": list(self.ci), "log_c": self.log_c},
        "fraction": {"beta": self.beta_fraction, "ci": list(self.ci_fraction)},
        "r2": self.r2, "method": self.method, "n_boot": self.n_boot,
        "sublinear": bool(self.ci[1] < 1.0),
    }


def _ols(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float, float]:
  """Slope, intercept, r2 and the slope's standard error."""
  xm, ym = x.mean(), y.mean()
  sxx = ((x - xm) ** 2).sum()
  slope = ((x - xm) * (y - ym)).sum() / sxx
  intercept = ym - slope * xm
  resid = y - (intercept + slope * x)
  sst = ((y - ym) ** 2).sum()
  r2 = 1.0 - (resid ** 2).sum() / sst if sst > 0 else 1.0
  dof = len(x) - 2
  se = math.sqrt((resid ** 2).sum() / dof / sxx) if dof > 0 else float("nan")
  return float(slope), float(intercept), float(r2), se


def _t_quantile(p: float, dof: int) -> float:
  """Student-t quantile (scipy ships with jax)."""
  from scipy import stats  # pylint: disable=g-import-not-at-top
  return float(stats.t.ppf(p, dof)) if dof > 0 else float("nan")


def fit_power_law(sizes, counts, boot_counts=None, level: float = 0.95) -> PowerLawFit:
  """Fits count ~ c * N^beta in log-log space.

  Args:
    sizes: [S] model sizes (total neurons, or parameters).
    counts: [S] Rosetta counts (positive).
    boot_counts: optional [B, S] counts from document-bootstrap resamples; the CI
      is then the percentile interval of the B refitted exponents.
    level: confidence level.

  Returns:
    A ``PowerLawFit``.

  Raises:
    ValueError: mismatched shapes, non-finite values, or fewer than two sizes with a
      positive count.
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
  beta, log_c, r2, se = _ols(x, y)
  a = (1 - level) / 2
  boot = np.zeros((0,))
  if boot_counts is not None:
    bc = np.asarray(boot_counts, dtype=np.float64)
    if bc.ndim != 2 or bc.shape[1] != len(sizes):
      raise ValueError(f"boot_counts must be [resamples, {len(sizes)}], got {bc.shape}")
    bc = bc[:, keep]
    ok = np.all(bc > 0, axis=1)
    boot = np.array([_ols(x, np.log(row))[0] for row in bc[ok]])
    if len(boot) < 2:
      raise ValueError("fewer than two bootstrap resamples have positive counts at every size")
    ci = (float(np.quantile(boot, a)), float(np.quantile(boot, 1 - a)))
    method = "bootstrap"
  else:
    t = _t_quantile(1 - a, len(x) - 2)
    ci = (beta - t * se, beta + t * se)
    method = "t"
  return PowerLawFit(
      beta=beta, log_c=log_c, ci=ci, beta_fraction=beta - 1.0,
      ci_fraction=(ci[0] - 1.0, ci[1] - 1.0), r2=r2, method=method, n_boot=len(boot),
      boot_betas=boot, sizes=sizes[keep], counts=counts[keep])
