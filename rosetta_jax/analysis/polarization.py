"""Effect sizes between Rosetta and non-Rosetta neurons, per resample, and their trend.

``effect_sizes`` gives AUROC (the probability that a random Rosetta neuron is more
selective than a random non-Rosetta one; 0.5 = no separation) and Cohen's d
(difference of means over the pooled standard deviation), both oriented so that
positive / above 0.5 means "Rosetta neurons are more selective" (a metric where
smaller is more selective, such as activation frequency, is negated first).
``trend`` fits the effect against log model size, per bootstrap resample.
"""

from __future__ import annotations

import numpy as np
from scipy import stats as sps


def effect_sizes(values, is_rosetta, sign: int = 1) -> dict[str, np.ndarray]:
  """AUROC and Cohen's d of Rosetta vs non-Rosetta neurons.

  Args:
    values: [N] or [B, N] metric values (NaN = excluded neuron, e.g. constant).
    is_rosetta: [N] bool, or [B, N] (a Rosetta set per resample row of ``values``).
    sign: +1 if larger means more selective, -1 if smaller does.

  Returns:
    {"auroc": [] or [B], "d": [] or [B]}; NaN where a group has < 2 neurons.
  """
  v = np.asarray(values, np.float64)
  single = v.ndim == 1
  v = np.atleast_2d(v) * sign
  pos = np.asarray(is_rosetta, bool)
  if pos.shape not in ((v.shape[1],), v.shape):
    raise ValueError(f"is_rosetta must have shape ({v.shape[1]},) or {v.shape}, got {pos.shape}")
  pos = np.broadcast_to(pos, v.shape)
  auroc = np.full(len(v), np.nan)
  d = np.full(len(v), np.nan)
  for b, row in enumerate(v):
    ok = np.isfinite(row)
    a, c = row[ok & pos[b]], row[ok & ~pos[b]]
    if len(a) < 2 or len(c) < 2:
      continue
    ranks = sps.rankdata(np.concatenate([a, c]))
    auroc[b] = (ranks[:len(a)].sum() - len(a) * (len(a) + 1) / 2) / (len(a) * len(c))
    pooled = np.sqrt(((len(a) - 1) * a.var(ddof=1) + (len(c) - 1) * c.var(ddof=1))
                     / (len(a) + len(c) - 2))
    d[b] = (a.mean() - c.mean()) / pooled if pooled > 0 else np.nan
  if single:
    return {"auroc": auroc[0], "d": d[0]}
  return {"auroc": auroc, "d": d}


def ci(samples, level: float = 0.95) -> list[float]:
  """Percentile interval of the finite samples ([nan, nan] if fewer than 2)."""
  s = np.asarray(samples, np.float64)
  s = s[np.isfinite(s)]
  if len(s) < 2:
    return [float("nan"), float("nan")]
  a = (1 - level) / 2
  return [float(np.quantile(s, a)), float(np.quantile(s, 1 - a))]


def trend(sizes, effect, boot_effect=None, level: float = 0.95) -> dict:
  """Slope of an effect size against log(size), with a percentile bootstrap CI.

  Args:
    sizes: [S] model sizes.
    effect: [S] full-data effect per size.
    boot_effect: [B, S] per-resample effects (the same resamples at every size).

  Returns:
    {"slope", "ci", "n_boot"}: slope per e-fold of size.
  """
  x = np.log(np.asarray(sizes, np.float64))
  y = np.asarray(effect, np.float64)
  if x.shape != y.shape or len(x) < 2:
    raise ValueError(f"need >= 2 sizes with one effect each, got {x.shape} and {y.shape}")
  ok = np.isfinite(y)
  slope = float(np.polyfit(x[ok], y[ok], 1)[0]) if ok.sum() >= 2 else float("nan")
  out = {"slope": slope, "ci": [float("nan")] * 2, "n_boot": 0}
  if boot_effect is not None:
    be = np.asarray(boot_effect, np.float64)
    rows = [r for r in be if np.isfinite(r).sum() >= 2]
    slopes = [np.polyfit(x[np.isfinite(r)], r[np.isfinite(r)], 1)[0] for r in rows]
    out.update(ci=ci(slopes, level), n_boot=len(slopes))
  return out
