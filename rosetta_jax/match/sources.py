"""Activation sources: anything that can hand out chunks of units.

The matcher streams units in chunks from a source and never asks for all of them
at once, so a store on disk (issue 6) can feed it directly. Plain arrays are
wrapped in ``ArraySource``.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import jax
import numpy as np

from rosetta_jax.match.moments import Moments


@runtime_checkable
class ActivationSource(Protocol):
  """A [num_units, num_neurons] matrix readable by unit ranges.

  ``moments()`` is optional: a source that already tracks its per-neuron moments
  (a store does, while recording) saves the matcher one pass over the data.
  """
  num_units: int
  num_neurons: int

  def read(self, start: int, stop: int) -> np.ndarray:
    """Returns units ``[start, stop)`` as a [stop - start, num_neurons] array."""
    ...


class ArraySource:
  """An in-memory [T, N] array seen as an ``ActivationSource``."""

  def __init__(self, x):
    if getattr(x, "ndim", None) != 2:
      raise ValueError(f"activations must be a [units, neurons] array, got shape "
                       f"{getattr(x, 'shape', None)}")
    self.array = x
    self.num_units, self.num_neurons = (int(d) for d in x.shape)

  def read(self, start: int, stop: int) -> np.ndarray:
    return np.asarray(self.array[start:stop])

  def moments(self) -> Moments:
    x = self.array
    on_host = not isinstance(x, jax.Array) or all(d.platform == "cpu" for d in x.devices())
    # Host arrays (and jax arrays on a CPU, read in place): one tiled NumPy
    # pass, 5-10x faster there than XLA:CPU's reduction over the unit axis.
    return Moments.from_host(x) if on_host else Moments.from_device(x)


class HostSource:
  """Another source read into host memory once, read from there by unit ranges
  (views, no copy) with the original source's moments. A pair matched many
  times (the null's permutations, the bootstrap) reads its stores once; it is
  deliberately not an ``ArraySource``, so the matcher streams it in chunks
  instead of padding and copying the whole matrix per call.

  ``HostSource.columns`` lays several sources side by side in one array; a
  ``ConcatSource`` of consecutive columns of it then reads plain slices.
  """

  def __init__(self, source, base=None, cols=None):
    source = as_source(source)
    self.num_units, self.num_neurons = source.num_units, source.num_neurons
    if base is None:
      base = np.ascontiguousarray(source.read(0, source.num_units), np.float32)
      cols = (0, self.num_neurons)
    self._base, self._cols = base, cols
    self.host_array = base[:, cols[0]:cols[1]]
    self._moments = source_moments(source)

  @classmethod
  def columns(cls, sources) -> list["HostSource"]:
    """The sources read into one [units, sum of neurons] array, one view each."""
    sources = [as_source(s) for s in sources]
    offs = np.cumsum([0] + [s.num_neurons for s in sources])
    base = np.empty((sources[0].num_units, int(offs[-1])), np.float32)
    for s, lo, hi in zip(sources, offs[:-1], offs[1:]):
      base[:, lo:hi] = s.read(0, s.num_units)
    return [cls(s, base, (int(lo), int(hi))) for s, lo, hi in zip(sources, offs[:-1], offs[1:])]

  def read(self, start: int, stop: int) -> np.ndarray:
    return self.host_array[start:stop]

  def moments(self) -> Moments:
    return self._moments


def as_source(x) -> ActivationSource:
  """Wraps arrays (and nested lists, as ``np.asarray`` reads them); returns
  sources unchanged."""
  if isinstance(x, ActivationSource) and not hasattr(x, "shape"):
    return x
  if isinstance(x, (list, tuple)):
    x = np.asarray(x)
  return ArraySource(x)


def source_moments(src, chunk: int = 8192) -> Moments:
  """The source's own moments if it has them, else one streaming pass."""
  fn = getattr(src, "moments", None)
  if callable(fn):
    m = fn()
    if m is not None:
      return m
  out = Moments.empty(src.num_neurons)
  for s in range(0, src.num_units, chunk):
    out = out.merge(Moments._of_chunk(np.asarray(src.read(s, min(s + chunk, src.num_units)))))
  return out


class ConcatSource:
  """Several sources over the same units, neurons laid side by side."""

  def __init__(self, parts):
    self.parts = [as_source(p) for p in parts]
    if not self.parts:
      raise ValueError("ConcatSource needs at least one source")
    units = {p.num_units for p in self.parts}
    if len(units) != 1:
      raise ValueError(f"cannot concatenate sources over different unit counts {sorted(units)}")
    self.num_units = units.pop()
    self.num_neurons = sum(p.num_neurons for p in self.parts)

  @property
  def host_array(self):
    """A view of the parts when they are consecutive columns of one
    ``HostSource.columns`` array (reads are then slices), else None."""
    bases = {id(getattr(p, "_base", None)) for p in self.parts}
    if len(bases) != 1 or getattr(self.parts[0], "_base", None) is None:
      return None
    cols = [p._cols for p in self.parts]  # pylint: disable=protected-access
    if any(a[1] != b[0] for a, b in zip(cols[:-1], cols[1:])):
      return None
    return self.parts[0]._base[:, cols[0][0]:cols[-1][1]]  # pylint: disable=protected-access

  def read(self, start: int, stop: int) -> np.ndarray:
    host = self.host_array
    if host is not None:
      return host[start:stop]
    return np.concatenate([np.asarray(p.read(start, stop)) for p in self.parts], axis=1)

  def moments(self) -> Moments:
    return Moments.concat([source_moments(p) for p in self.parts])


class PermutedSource:
  """``source`` with its units reordered: unit t of the view is unit ``order[t]``.

  Reads are grouped into runs of consecutive units, so a document-block
  permutation of a store costs one read per document, not one per unit.
  """

  def __init__(self, source, order):
    self.source = as_source(source)
    self.order = np.asarray(order, dtype=np.int64)
    if not np.array_equal(np.sort(self.order), np.arange(self.source.num_units)):
      raise ValueError("order must be a permutation of the source's units")
    self.num_units, self.num_neurons = self.source.num_units, self.source.num_neurons

  def read(self, start: int, stop: int) -> np.ndarray:
    idx = self.order[start:stop]
    host = getattr(self.source, "host_array", None)
    if host is not None:
      return host[idx]
    if isinstance(self.source, ArraySource):
      return np.asarray(self.source.array)[idx]
    breaks = np.flatnonzero(np.diff(idx) != 1) + 1
    runs = np.split(idx, breaks)
    return np.concatenate([np.asarray(self.source.read(int(r[0]), int(r[-1]) + 1))
                           for r in runs], axis=0)

  def moments(self) -> Moments:
    return source_moments(self.source)   # a permutation of units keeps the moments.


class SelectedSource(PermutedSource):
  """Some of ``source``'s units, in the given order (a unit budget's subset):
  unit t of the view is unit ``rows[t]``; its moments are its own."""

  def __init__(self, source, rows):  # pylint: disable=super-init-not-called
    self.source = as_source(source)
    self.order = np.asarray(rows, dtype=np.int64)
    if self.order.ndim != 1 or (self.order.size and (
        self.order.min() < 0 or self.order.max() >= self.source.num_units)):
      raise ValueError(f"rows must index the source's {self.source.num_units} units")
    self.num_units, self.num_neurons = len(self.order), self.source.num_neurons

  def moments(self) -> None:
    return None       # a subset's moments are its own: one streaming pass computes them
