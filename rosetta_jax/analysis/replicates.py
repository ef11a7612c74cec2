"""Counts across replicated models: intervals that resample models and documents.

A size of the zoo has several independently trained models (seeds) and so
several pairs. Which models were trained is a source of variance as real as
which documents were recorded, and the interval of a count or an exponent has
to include both. ``ModelResampler`` draws, for every size, its models with
replacement; a pair enters a resample with the product of its two models'
multiplicities (a pair of one model with itself does not exist). Each draw is
combined with the same row of the document bootstrap, so one resample redraws
models and documents together.

A size with two models (one pair) cannot show model variance: its draws always
weigh its one pair, and the interval there resamples documents only. The
``resamples`` text of a fit says which applied.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from rosetta_jax.analysis import stats

_MAX_REDRAWS = 50


@dataclasses.dataclass(frozen=True)
class Group:
  """The pairs at one size: their columns and the models each pairs."""
  size: float
  columns: tuple[int, ...]
  models: tuple[tuple[str, str], ...]

  @property
  def model_names(self) -> tuple[str, ...]:
    return tuple(sorted({m for p in self.models for m in p}))


def group_by_size(sizes: Sequence[float], models: Sequence[tuple[str, str]]) -> list[Group]:
  """Pairs grouped by size (sizes equal to 1e-9 relative), by increasing size."""
  sizes = np.asarray(sizes, np.float64)
  groups: list[list[int]] = []
  for i in np.argsort(sizes, kind="stable"):
    if groups and np.isclose(sizes[groups[-1][0]], sizes[i], rtol=1e-9):
      groups[-1].append(int(i))
    else:
      groups.append([int(i)])
  return [Group(float(sizes[g[0]]), tuple(g), tuple(tuple(models[i]) for i in g))
          for g in groups]


class ModelResampler:
  """Per-resample weights of every pair within its size, from a model draw.

  Attributes:
    groups: the sizes' pairs.
    weights: [B, P] weight of pair p in resample b (each size's weights sum to 1).
    replicated: whether any size has three or more models (model variance enters).
  """

  def __init__(self, groups: Sequence[Group], resamples: int, seed: int):
    self.groups = list(groups)
    num_pairs = sum(len(g.columns) for g in self.groups)
    rng = np.random.default_rng([seed, 4])
    w = np.zeros((resamples, num_pairs))
    for g in self.groups:
      names = g.model_names
      index = {m: i for i, m in enumerate(names)}
      pa = np.array([index[a] for a, _ in g.models])
      pb = np.array([index[b] for _, b in g.models])
      for b in range(resamples):
        for _ in range(_MAX_REDRAWS):
          mult = np.bincount(rng.integers(0, len(names), len(names)), minlength=len(names))
          pw = mult[pa] * mult[pb]
          if pw.sum() > 0:
            break
        else:
          pw = np.ones(len(g.columns))
        w[b, list(g.columns)] = pw / pw.sum()
    self.weights = w
    self.replicated = any(len(g.model_names) >= 3 for g in self.groups)

  @property
  def sizes(self) -> np.ndarray:
    return np.array([g.size for g in self.groups])

  def point(self, counts: Sequence[float]) -> np.ndarray:
    """[S] the mean count over each size's pairs."""
    c = np.asarray(counts, np.float64)
    return np.array([c[list(g.columns)].mean() for g in self.groups])

  def resampled(self, boot: np.ndarray) -> np.ndarray:
    """[B, S] each resample's weighted count per size, from [B, P] per-pair counts
    that share the document resample of each row."""
    boot = np.asarray(boot, np.float64)
    if boot.shape != self.weights.shape:
      raise ValueError(f"per-pair resampled counts must be {self.weights.shape}, got "
                       f"{boot.shape}")
    return np.stack([(boot[:, list(g.columns)] * self.weights[:, list(g.columns)]).sum(1)
                     for g in self.groups], 1)

  @property
  def resamples_text(self) -> str:
    if self.replicated:
      return "models (seeds within each size) and documents"
    return "documents only (one pair per size: no model replication)"


@dataclasses.dataclass(frozen=True)
class Fit:
  """An exponent over replicated sizes.

  Attributes:
    fit: count ~ N^beta on the mean count per size, interval over the model-and-
      document resamples (None: fewer than two sizes with pairs).
    regression: the same points' least-squares t-interval across sizes (what
      the spread of the points alone supports).
    sizes, counts, count_ci: per size, the mean count and its interval.
    resamples: what the interval resamples, in words.
  """
  fit: stats.PowerLawFit | None
  regression: stats.PowerLawFit | None
  sizes: np.ndarray
  counts: np.ndarray
  count_ci: np.ndarray
  resamples: str

  @property
  def beta(self) -> float | None:
    return None if self.fit is None else self.fit.beta

  @property
  def ci(self) -> tuple[float, float] | None:
    return None if self.fit is None else tuple(self.fit.ci)

  def to_dict(self) -> dict:
    return {"beta": self.beta, "ci": self.ci, "resamples": self.resamples,
            "regression_ci": None if self.regression is None else list(self.regression.ci),
            "sizes": self.sizes.tolist(), "counts": self.counts.tolist(),
            "count_ci": self.count_ci.tolist(),
            "fit": None if self.fit is None else self.fit.to_dict()}


def fit(resampler: ModelResampler, counts, boot) -> Fit:
  """The power law over sizes with the model-and-document interval."""
  point = np.maximum(resampler.point(counts), 0.0)
  rb = np.maximum(resampler.resampled(boot), 0.0)
  ci = np.array([stats.count_interval(point[s], rb[:, s]) for s in range(len(point))])
  sizes = resampler.sizes
  f = reg = None
  try:
    f = stats.fit_power_law(sizes, point, boot_counts=rb)
    reg = stats.fit_power_law(sizes, point)
  except ValueError:
    pass
  return Fit(f, reg, sizes, point, ci, resampler.resamples_text)


def leave_one_model_out(groups: Sequence[Group], counts) -> dict[str, float | None]:
  """{model: beta refitted without every pair of that model} (None: no fit left)."""
  counts = np.asarray(counts, np.float64)
  names = sorted({m for g in groups for p in g.models for m in p})
  out = {}
  for name in names:
    sizes, means = [], []
    for g in groups:
      keep = [c for c, p in zip(g.columns, g.models) if name not in p]
      if keep:
        sizes.append(g.size)
        means.append(max(counts[keep].mean(), 0.0))
    try:
      out[name] = stats.fit_power_law(sizes, means).beta
    except ValueError:
      out[name] = None
  return out


def intervals_agree(cis: Sequence[Sequence[float]]) -> bool:
  """Whether intervals share a common point."""
  cis = [c for c in cis if c is not None]
  return bool(cis) and max(c[0] for c in cis) <= min(c[1] for c in cis)


def converged(criteria: dict[str, Fit], budgets: dict[float, Fit]) -> dict:
  """The ``converged`` verdict of a scaling measurement.

  Converged when (a) every criterion's interval of beta at the full budget shares
  a common point with every other's and (b) the last doubling of the units (half
  of the documents -> all) moved the declared beta by less than the half-width
  of its interval. Criteria without a fit are listed, not counted.

  Args:
    criteria: {name: Fit} at the full budget; "declared" is the headline.
    budgets: {document fraction: Fit} of the declared criterion (1.0 included).
  """
  fitted = {k: v for k, v in criteria.items() if v.fit is not None}
  unfitted = sorted(set(criteria) - set(fitted))
  agree = intervals_agree([v.ci for v in fitted.values()])
  full = budgets.get(1.0)
  halves = sorted(f for f in budgets if f < 1.0)
  moved = half_width = None
  stable = False
  if full is not None and full.fit is not None and halves and budgets[halves[-1]].fit is not None:
    moved = abs(full.beta - budgets[halves[-1]].beta)
    half_width = (full.ci[1] - full.ci[0]) / 2
    stable = moved < half_width
  lo = min((v.beta for v in fitted.values()), default=None)
  hi = max((v.beta for v in fitted.values()), default=None)
  if agree and stable:
    words = "converged: the criteria agree within their intervals and the last doubling " \
            "of the units moved beta by less than its interval's half-width"
  else:
    why = []
    if not agree:
      why.append(f"the answer depends on the criterion (beta from {lo:.3f} to {hi:.3f} "
                 "across the criteria, intervals without a common point)"
                 if lo is not None else "no criterion could be fitted")
    if not stable:
      why.append("the last doubling of the units moved beta by "
                 f"{moved:.3f}, more than its interval's half-width {half_width:.3f}"
                 if moved is not None else "the unit-budget curve is not measurable")
    words = "not converged: " + "; ".join(why)
  return {"converged": bool(agree and stable), "criteria_agree": bool(agree),
          "budget_stable": bool(stable), "last_doubling_moved": moved,
          "half_width": half_width, "unfitted": unfitted, "beta_range": [lo, hi],
          "verdict": words}
