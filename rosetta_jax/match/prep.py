"""Inputs made exact for the float32 kernel: validation, moments, centring, scaling.

The kernel (``correlate.py``, ``stream.py``, the sketch's passes) computes in
float32. Whether that is exact depends on the input, so each side of a match
is prepared here as a ``Side``:

* float32 (and float16 / bfloat16) data whose scale float32 holds: the fast
  path. The data goes to the kernel as it is, with float64 moments; the kernel
  centres with the float64 mean split into two float32 terms (``mu`` + ``lo``,
  see ``correlate.py``), which is as exact as a float64 centre at any offset.
* float64, integer and bool data, and float32 data at scales the float32
  kernel cannot hold (1 / sqrt(M2) beyond 2**+-120): standardised on the host,
  in float64, before the float32 cast (``hostpass.standardize``):
  z = (x - mean) / sqrt(M2), unit-norm float32 columns, so the kernel only sums
  products. Integers are centred exactly first (offsets from each column's
  minimum, in uint64). In-memory arrays become one float32 copy; sources are
  standardised chunk by chunk as they are read (``StandardizedSource``).

Constant neurons (every value equal, in the input's own precision: no absolute
threshold) are excluded. Lists are converted with ``np.asarray``; complex,
object and string data, arrays that are not [units, neurons] and empty neuron
axes are errors naming the site.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np

from rosetta_jax.match import correlate as cor
from rosetta_jax.match import hostpass
from rosetta_jax.match.moments import Moments, base_values, dtype_kind
from rosetta_jax.match.sources import ActivationSource, ArraySource, source_moments

SAFE_SCALE = 2.0 ** 120    # 1 / sqrt(M2) within 2**+-120: float32 holds z and its scale
LO_MATTERS = 1e-4          # |lo| / std above this: host passes subtract lo too
SHIFT_RATIO = 2.0 ** 12    # |mean| / std above this: the sketch folds x - mu


@dataclasses.dataclass(frozen=True)
class Side:
  """One side of a match, ready for the float32 kernel.

  Attributes:
    data: [T, N] array (numpy or jax) or ``ActivationSource`` the kernel reads,
      float32-convertible without loss.
    moments: float64 ``Moments`` of the input as given.
    mu, lo: [N] float32: the kernel centres with (x - mu) - lo.
    s: [N] float32 scale (1 / sqrt(M2), or 1 for host-standardised data; 0 for
      excluded neurons).
    excluded: int64 indices of constant neurons.
    host_standardized: the data is z = (x - mean) / sqrt(M2), made on the host.
  """
  data: Any
  moments: Moments
  mu: np.ndarray
  lo: np.ndarray
  s: np.ndarray
  excluded: np.ndarray
  host_standardized: bool

  @property
  def num_units(self) -> int:
    return int(self.moments.count)

  @property
  def num_neurons(self) -> int:
    return self.moments.num_neurons

  def source(self) -> ActivationSource:
    return self.data if is_source(self.data) else ArraySource(self.data)

  def _ratio(self, v) -> float:
    """max over valid neurons of |v| / std (0 when there are none)."""
    std = np.sqrt(self.moments.var)
    ok = self.s > 0
    if self.host_standardized or not ok.any():
      return 0.0
    return float(np.max(np.abs(v[ok].astype(np.float64)) / std[ok]))

  @property
  def lo_matters(self) -> bool:
    """Whether host passes must subtract ``lo`` as well (see ``LO_MATTERS``)."""
    return self._ratio(self.lo) > LO_MATTERS

  @property
  def needs_shift(self) -> bool:
    """Whether the sketch should fold x - mu rather than x (see ``SHIFT_RATIO``)."""
    return self._ratio(self.mu) > SHIFT_RATIO


def is_array(x) -> bool:
  return isinstance(x, (np.ndarray, jax.Array))


def is_source(x) -> bool:
  return isinstance(x, ActivationSource) and not hasattr(x, "shape")


def as_input(x, name: str):
  """Lists become arrays; arrays and sources are checked ([units, neurons], at
  least one neuron, real numbers). Returns the array or source."""
  if is_source(x):
    if int(x.num_neurons) < 1:
      raise ValueError(f"site {name!r}: the source has no neurons ({x.num_units} x "
                       f"{x.num_neurons}); nothing to match")
    return x
  if not is_array(x):
    if isinstance(x, (list, tuple)):
      try:
        x = np.asarray(x)
      except ValueError as e:
        raise ValueError(f"site {name!r}: the list is not a rectangular [units, neurons] "
                         f"table of numbers ({e})") from e
    else:
      raise TypeError(f"site {name!r}: expected a [units, neurons] array, list or "
                      f"ActivationSource, got {type(x).__name__}")
  if x.ndim != 2:
    raise ValueError(f"site {name!r}: activations must be a [units, neurons] array, "
                     f"got shape {tuple(x.shape)}")
  kind = dtype_kind(x.dtype)
  if kind not in "fiub":
    raise TypeError(f"site {name!r}: {np.dtype(x.dtype)} activations are not supported; "
                    "pass real numbers (float, integer or bool)")
  if x.shape[1] == 0:
    raise ValueError(f"site {name!r}: no neurons (shape {tuple(x.shape)}); nothing to match")
  return x


def _float32_like(dtype) -> bool:
  return dtype_kind(dtype) == "f" and np.dtype(dtype).itemsize <= 4


def _inv_sqrt(m: Moments) -> np.ndarray:
  """float64 1 / sqrt(M2), 0 for constant neurons."""
  with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
    return np.where(m.constant, 0.0, 1.0 / np.sqrt(m.m2))


def _kernel_safe(m: Moments) -> bool:
  s = _inv_sqrt(m)[~m.constant]
  return bool(np.all((s >= 1.0 / SAFE_SCALE) & (s <= SAFE_SCALE)))


def _check(m: Moments, units: int, neurons: int, name: str) -> None:
  if m.count != units or m.num_neurons != neurons:
    raise ValueError(f"site {name!r}: moments cover {m.count} units x {m.num_neurons} "
                     f"neurons, the activations are {units} x {neurons}")
  m.check_finite(name)


def _kernel_side(data, m: Moments) -> Side:
  mu, lo, s, excluded = cor.scales(m)
  return Side(data, m, mu, lo, s, excluded, False)


def _host_side(data, m: Moments, centre: np.ndarray, inv: np.ndarray) -> Side:
  n = m.num_neurons
  z = np.zeros(n, np.float32)
  ones = np.where(inv > 0, 1.0, 0.0).astype(np.float32)
  return Side(data, m, z, z.copy(), ones, np.flatnonzero(m.constant), True)


def prepare_side(x, name: str, moments: Moments | None = None, chunk: int = 8192) -> Side:
  """Makes one input ready for the kernel (see the module docstring).

  Args:
    x: [T, N] array (numpy, jax), list, or ``ActivationSource``.
    name: the site's name in error messages.
    moments: precomputed ``Moments`` of x (saves a pass; for integer inputs the
      exact centring recomputes them).
    chunk: units per read when a source's moments are computed here.

  Raises:
    ValueError / TypeError: bad shapes or dtypes, moments that do not fit,
      non-finite values (naming the site and neuron).
  """
  x = as_input(x, name)
  if is_source(x):
    return _source_side(x, name, moments, chunk)
  t, n = (int(d) for d in x.shape)
  if _float32_like(x.dtype):
    m = ArraySource(x).moments() if moments is None else moments
    _check(m, t, n, name)
    if _kernel_safe(m):
      return _kernel_side(x, m)
  xh = np.asarray(x)
  if xh.dtype.kind in "biu":
    base = hostpass.int_base(xh)
    m_off = Moments.from_host(xh, base=base)          # exact moments of x - base
    m = m_off.shifted(base_values(base, xh.dtype))
    if moments is not None:
      _check(moments, t, n, name)
    _check(m, t, n, name)
  else:
    base = None
    m = Moments.from_host(xh) if moments is None else moments
    _check(m, t, n, name)
    m_off = m
  inv = _inv_sqrt(m_off)
  centre = np.where(inv > 0, m_off.mean, 0.0)
  return _host_side(hostpass.standardize(xh, centre, inv, base), m, centre, inv)


class StandardizedSource:
  """A source standardised on the host as it is read: z = (x - centre) * scale in
  float64, returned as float32 (``hostpass.standardize``)."""

  def __init__(self, source, centre: np.ndarray, scale: np.ndarray):
    self.source = source
    self.centre, self.scale = centre, scale
    self.num_units, self.num_neurons = int(source.num_units), int(source.num_neurons)

  def read(self, start: int, stop: int) -> np.ndarray:
    return hostpass.standardize(np.asarray(self.source.read(start, stop)), self.centre,
                                self.scale)


def _source_side(src, name: str, moments: Moments | None, chunk: int) -> Side:
  m = source_moments(src, chunk) if moments is None else moments
  _check(m, int(src.num_units), int(src.num_neurons), name)
  dtype = np.asarray(src.read(0, min(1, int(src.num_units)))).dtype
  if dtype_kind(dtype) not in "fiub":
    raise TypeError(f"site {name!r}: the source reads {dtype} activations; pass real numbers")
  if _float32_like(dtype) and _kernel_safe(m):
    return _kernel_side(src, m)
  if dtype.kind in "iub":
    big = max(float(np.max(np.abs(m.min), initial=0.0)), float(np.max(np.abs(m.max), initial=0.0)))
    if big >= 2.0 ** 53:
      raise ValueError(f"site {name!r}: a source of integer activations up to {big:.3g} "
                       "(beyond 2**53, where float64 loses units); pass it as an array, "
                       "which is centred exactly")
  inv = _inv_sqrt(m)
  centre = np.where(inv > 0, m.mean, 0.0)
  return _host_side(StandardizedSource(src, centre, inv), m, centre, inv)
