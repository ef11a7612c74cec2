"""Per-neuron moments, mergeable across chunks (Chan et al. parallel Welford).

Everything is accumulated in float64 on the host: the moments cost O(T * N), a
rounding error here would bias every correlation, and float64 on the host is
cheap next to the O(T * N^2) Gram. ``Moments.merge`` combines two disjoint sets
of units exactly as if they had been seen together, so stores can compute them
chunk by chunk and resume.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Moments:
  """Streaming statistics of N neurons over ``count`` units.

  Attributes:
    count: number of units seen (python int).
    mean: [N] float64 mean.
    m2: [N] float64 sum of squared deviations from the mean.
    min: [N] float64 minimum.
    max: [N] float64 maximum.
  """
  count: int
  mean: np.ndarray
  m2: np.ndarray
  min: np.ndarray
  max: np.ndarray

  @property
  def num_neurons(self) -> int:
    return int(self.mean.shape[0])

  @staticmethod
  def empty(num_neurons: int) -> "Moments":
    """Moments of zero units (the identity of ``merge``)."""
    z = np.zeros(num_neurons, np.float64)
    return Moments(0, z, z.copy(), np.full(num_neurons, np.inf),
                   np.full(num_neurons, -np.inf))

  @staticmethod
  def from_array(x, chunk: int = 8192) -> "Moments":
    """Moments of ``x`` [T, N], computed chunk by chunk (no float64 copy of x)."""
    x = np.asarray(x)
    if x.ndim != 2:
      raise ValueError(f"expected a [units, neurons] array, got shape {x.shape}")
    out = Moments.empty(x.shape[1])
    for s in range(0, x.shape[0], chunk):
      out = out.merge(Moments._of_chunk(x[s:s + chunk]))
    return out

  @staticmethod
  def _of_chunk(x: np.ndarray) -> "Moments":
    x64 = x.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):   # NaN/inf: reported by check_finite
      mean = x64.mean(axis=0)
      m2 = ((x64 - mean) ** 2).sum(axis=0)
    return Moments(x.shape[0], mean, m2, x64.min(axis=0), x64.max(axis=0))

  def merge(self, other: "Moments") -> "Moments":
    """Statistics of the union of two disjoint sets of units (Chan's formula)."""
    if other.num_neurons != self.num_neurons:
      raise ValueError(f"cannot merge moments of {self.num_neurons} and "
                       f"{other.num_neurons} neurons")
    if other.count == 0:
      return self
    if self.count == 0:
      return other
    n = self.count + other.count
    with np.errstate(invalid="ignore", over="ignore"):
      return self._merge(other, n)

  def _merge(self, other: "Moments", n: int) -> "Moments":
    delta = other.mean - self.mean
    frac = other.count / n
    mean = self.mean + delta * frac
    m2 = self.m2 + other.m2 + delta ** 2 * (self.count * frac)
    return Moments(n, mean, m2, np.minimum(self.min, other.min),
                   np.maximum(self.max, other.max))

  @staticmethod
  def concat(parts) -> "Moments":
    """Moments of neuron sets laid side by side (same units)."""
    parts = list(parts)
    counts = {p.count for p in parts}
    if len(counts) != 1:
      raise ValueError(f"cannot concatenate moments over different unit counts {counts}")
    cat = lambda f: np.concatenate([getattr(p, f) for p in parts])
    return Moments(parts[0].count, cat("mean"), cat("m2"), cat("min"), cat("max"))

  @property
  def var(self) -> np.ndarray:
    """[N] population variance."""
    return self.m2 / max(self.count, 1)

  @property
  def constant(self) -> np.ndarray:
    """[N] bool: neurons that never change value (max == min), excluded from matching."""
    return self.max == self.min

  def first_nonfinite(self) -> int | None:
    """Index of the first neuron with a NaN or inf value, or None."""
    bad = ~(np.isfinite(self.mean) & np.isfinite(self.min) & np.isfinite(self.max)
            & np.isfinite(self.m2))
    idx = np.flatnonzero(bad)
    return int(idx[0]) if idx.size else None

  def check_finite(self, site: str) -> None:
    """Raises ValueError naming ``site`` and the first non-finite neuron."""
    i = self.first_nonfinite()
    if i is not None:
      raise ValueError(f"site {site!r}: neuron {i} has non-finite activations "
                       f"(NaN or inf); clean the input before matching")
