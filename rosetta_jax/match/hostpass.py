"""Memory-bound passes over activations on the host, in cache-sized tiles.

Sketch-and-rescore (``sketch.py``) reads the activations twice: once to fold
the unit axis into a CountSketch (``fold``), once to rescore candidate pairs
exactly (``rescore``); per-neuron moments (``moments``, for
``Moments.from_host``) and the document bootstrap's per-document candidate
sums (``doc_sums``, for ``analysis.bootstrap``) are passes of the same kind.
All are gathers or reductions plus a few flops per value, so on a CPU they are bound by
how many bytes travel between memory and the cores, not by arithmetic. Written
naively (one gather over a whole chunk, then a multiply, then a reduction, each
a full pass over a 100 MB temporary) they ran at ~3 GB/s on the 2-core test
machine, a tenth of its memory bandwidth. Here every step touches a tile small
enough to stay in the core's cache (about ``TILE_BYTES``), so each activation
is read from memory once per pass, and the tiles are shared among threads
(NumPy releases the GIL in ``take``, ufuncs and ``einsum``).

Measured primitives there (2-core AMD EPYC, 32 GB/s streaming reads): a
column gather ``np.take(x, idx, axis=1)`` costs 0.36 ns per value with
``mode="wrap"`` and 0.70 ns with ``mode="clip"`` (0.94 ns when it must raise);
``wrap`` is a plain load for in-range indices, which all ours are. XLA:CPU's
gather of the same shape costs 2-3 ns per value, hence NumPy here.
"""

from __future__ import annotations

import concurrent.futures
import functools
import os

import numpy as np

TILE_BYTES = 4 << 20    # bytes touched per tile: 4 MB measured fastest on the test
# machine (1 MB L2 per core, 32 MB shared L3): 1.3x faster than 1 MB tiles, as
# fewer NumPy calls amortise their overhead, and the tiles still sit in L3.


@functools.lru_cache(maxsize=1)
def _pool() -> concurrent.futures.ThreadPoolExecutor:
  return concurrent.futures.ThreadPoolExecutor(max_workers=num_threads(),
                                               thread_name_prefix="rosetta_hostpass")


if hasattr(os, "register_at_fork"):     # a forked child starts without the pool's threads
  os.register_at_fork(after_in_child=_pool.cache_clear)


def num_threads() -> int:
  """Threads of the host passes: the cores this process may use."""
  try:
    return max(1, len(os.sched_getaffinity(0)))
  except AttributeError:                                    # not on Linux
    return max(1, os.cpu_count() or 1)


def _run(tasks):
  """Runs ``tasks`` (callables) on the pool, re-raising the first error."""
  if len(tasks) == 1 or num_threads() == 1:
    return [t() for t in tasks]
  return [f.result() for f in [_pool().submit(t) for t in tasks]]


def _spans(n: int, parts: int):
  """``parts`` contiguous, near-equal [start, stop) spans covering range(n)."""
  edges = np.linspace(0, n, parts + 1).round().astype(int)
  return [(int(s), int(e)) for s, e in zip(edges[:-1], edges[1:]) if e > s]


def fold(x: np.ndarray, gather: np.ndarray, sign: np.ndarray, out: np.ndarray,
         shift: np.ndarray | None = None) -> None:
  """Adds one chunk's bucket sums into ``out``: out[b] += sum_g sign[g, b] * x[gather[g, b]]
  (of x - shift with ``shift``).

  Args:
    x: [tc, N] activations of a chunk (any float dtype). Gather indices past its
      last row wrap around onto real rows; give them sign 0.
    gather: [groups * width] row indices into x (``bucket_plan``, chunk-local).
    sign: [groups * width] float32 signs (0 for padding rows).
    out: [width, N] float64 running sums, updated in place.
    shift: optional [N] float32 subtracted from every gathered value: for data
      whose offset dwarfs its spread, whose float32 bucket sums would otherwise
      lose the spread's digits (``sketch.py`` passes the means' float32 part).

  Buckets are taken in tiles of ``rows`` buckets: the tile's rows of every group
  are gathered bucket-major (a [rows, groups, N] block of about ``TILE_BYTES``)
  and each bucket's signed sum over groups is one small matrix product
  (``np.matmul`` of the [rows, 1, groups] signs with the block: 2.1x faster
  than a sign multiply plus a sum over groups), then added to ``out``'s rows,
  all in cache; threads take disjoint tiles.
  """
  width, n = out.shape
  g = gather.reshape(-1, width)
  s = sign.reshape(-1, width).astype(np.float32)
  groups = g.shape[0]
  rows = max(1, min(width, TILE_BYTES // (4 * n * (groups + 3))))

  def work(b0, b1):
    buf = np.empty((rows * groups, n), np.float32)
    tot = np.empty((rows, 1, n), np.float32)
    for r0 in range(b0, b1, rows):
      r1 = min(r0 + rows, b1)
      m = r1 - r0
      blk = buf[:m * groups]
      idx = g[:, r0:r1].T.reshape(-1)                       # bucket-major
      if x.dtype == np.float32:
        np.take(x, idx, axis=0, out=blk, mode="wrap")
      else:                                  # bfloat16 / float16 stores
        np.copyto(blk, np.take(x, idx, axis=0, mode="wrap"), casting="unsafe")
      if shift is not None:
        np.subtract(blk, shift, out=blk)
      np.matmul(s[:, r0:r1].T[:, None, :], blk.reshape(m, groups, n), out=tot[:m])
      out[r0:r1] += tot[:m, 0]

  _run([functools.partial(work, *sp) for sp in _spans(width, num_threads())])


def rescore(xa: np.ndarray, xb: np.ndarray, mu_a: np.ndarray, mu_b: np.ndarray,
            cand: np.ndarray, pair_a: np.ndarray, pair_b: np.ndarray,
            lo_a: np.ndarray | None = None, lo_b: np.ndarray | None = None):
  """Centred cross products of candidate pairs over one chunk of units.

  Args:
    xa, xb: [tc, Na], [tc, Nb] activations (the same units; no padding rows).
    mu_a, mu_b: [Na], [Nb] means (their float32 part).
    cand: [Na, k] int: A neuron i is paired with B neuron cand[i, s] (in range).
    pair_a, pair_b: [P] int: further pairs (pair_a[p], pair_b[p]).
    lo_a, lo_b: optional [Na], [Nb] float32 remainders of the means (mean -
      mu), subtracted second: x - mu is exact in float32 when the offset dwarfs
      the spread, so the two steps centre as well as a float64 mean would.

  Returns:
    (dense [Na, k], pairs [P]) float64: sum over the chunk's units of
    (xa[:, i] - mu_a[i]) * (xb[:, j] - mu_b[j]) for each pair.

  Units are walked in tiles of ``rows`` units: the tile of both sides is
  centred into cache-resident buffers, B's columns are gathered for each dense
  slot (A's used in place), both sides for the further pairs, and the products
  summed over the tile in float32; tile sums are accumulated in float64.
  """
  tc, na = xa.shape
  nb = xb.shape[1]
  k = cand.shape[1]
  npairs = len(pair_a)
  mu_a = np.asarray(mu_a, np.float32)
  mu_b = np.asarray(mu_b, np.float32)
  lo_a = None if lo_a is None else np.asarray(lo_a, np.float32)
  lo_b = None if lo_b is None else np.asarray(lo_b, np.float32)
  cols = [np.ascontiguousarray(cand[:, s], np.intp) for s in range(k)]
  pa = np.asarray(pair_a, np.intp)
  pb = np.asarray(pair_b, np.intp)
  rows = max(1, TILE_BYTES // (4 * (2 * na + nb + 2 * npairs)))

  def work(u0, u1):
    za = np.empty((rows, na), np.float32)
    zb = np.empty((rows, nb), np.float32)
    gd = np.empty((rows, na), np.float32)       # contiguous row prefixes: take()
    ga = np.empty((rows, npairs), np.float32)   # writes them without a buffer
    gb = np.empty((rows, npairs), np.float32)
    dense = np.zeros((na, k), np.float64)
    pairs = np.zeros(npairs, np.float64)
    for t0 in range(u0, u1, rows):
      m = min(rows, u1 - t0)
      a, b = za[:m], zb[:m]
      np.subtract(xa[t0:t0 + m], mu_a, out=a, casting="unsafe")
      np.subtract(xb[t0:t0 + m], mu_b, out=b, casting="unsafe")
      if lo_a is not None:
        np.subtract(a, lo_a, out=a)
      if lo_b is not None:
        np.subtract(b, lo_b, out=b)
      for s in range(k):
        g = gd[:m]
        np.take(b, cols[s], axis=1, out=g, mode="wrap")
        dense[:, s] += np.einsum("ij,ij->j", a, g)
      if npairs:
        g1, g2 = ga[:m], gb[:m]
        np.take(a, pa, axis=1, out=g1, mode="wrap")
        np.take(b, pb, axis=1, out=g2, mode="wrap")
        pairs += np.einsum("ij,ij->j", g1, g2)
    return dense, pairs

  parts = _run([functools.partial(work, *sp)
                for sp in _spans(tc, min(num_threads(), -(-tc // rows)))])
  return sum(p[0] for p in parts), sum(p[1] for p in parts)


def _tree_sum(y: np.ndarray) -> np.ndarray:
  """Sum of the rows of y [m, N] by pairwise halving, in place (y is destroyed).

  Rounding error grows with log2(m), not m as in a running sum: float32 tile
  sums stay within ~1e-7 relative.
  """
  m = y.shape[0]
  while m > 1:
    h = m // 2
    np.add(y[:h], y[m - h:m], out=y[:h])
    m -= h
  return y[0]


EXTREME_HI = 2.0 ** 50    # float32 tiles with |x| beyond this (squares could overflow)
EXTREME_LO = 2.0 ** -50   # or a spread below this (squares would underflow) go float64


def int_offsets(x: np.ndarray, base: np.ndarray) -> np.ndarray:
  """Integer (or bool) x [m, N] minus ``base`` [N] (its column minimum) as float64.

  The difference is taken in uint64 arithmetic, exact for any int64 or uint64
  data (0 <= x - base < 2**64), and only then rounded to float64, so values near
  2**62 with a spread of a few units keep every unit."""
  v = x.astype(np.uint64) if x.dtype.kind == "u" else x.astype(np.int64).view(np.uint64)
  return (v - base).astype(np.float64)


def int_base(x: np.ndarray) -> np.ndarray:
  """[N] uint64 column minima of integer or bool x (the centre ``int_offsets`` uses)."""
  lo = x.min(axis=0)
  return lo.astype(np.uint64) if x.dtype.kind == "u" else lo.astype(np.int64).view(np.uint64)


def moments(x: np.ndarray, base: np.ndarray | None = None):
  """Per-neuron moments of x [T, N] on the host, one read of x, in tiles.

  Each tile of ``rows`` units (about ``TILE_BYTES``) is reduced in cache with a
  shift: its own mean, then the sum and sum of squares of the deviations from
  it (which corrects the mean and gives M2 without cancellation; both summed
  pairwise, ``_tree_sum``), its min and max. Tiles are merged in float64 with
  Chan's formula, per thread, over contiguous unit spans.

  Float32 (and float16/bfloat16) tiles are reduced in float32, except a tile
  with a neuron whose magnitude or spread is extreme (beyond ``EXTREME_HI``, or
  a spread under ``EXTREME_LO``), where float32 squares would overflow or
  underflow: that tile is reduced in float64. Float64 data is reduced in
  float64; integer and bool data as float64 offsets from ``base`` (its column
  minima, ``int_base``: required for them), so the result describes x - base.

  Returns:
    One (count, mean, m2, min, max) per thread span, float64 [N] arrays, to be
    merged (``Moments.merge``).
  """
  t, n = x.shape
  kind = x.dtype.kind
  if kind in "biu" and base is None:
    raise ValueError("integer data needs its column minima as base (int_base)")
  wide = kind in "biu" or x.dtype.itemsize > 4
  rows = max(1, TILE_BYTES // ((8 if wide else 4) * 3 * n))

  def work(u0, u1):
    buf = {}

    def bufs(dtype):
      if dtype not in buf:
        buf[dtype] = (np.empty((rows, n), dtype), np.empty((rows, n), dtype))
      return buf[dtype]

    count = 0
    mean = np.zeros(n)
    m2 = np.zeros(n)
    lo = np.full(n, np.inf)
    hi = np.full(n, -np.inf)
    with np.errstate(invalid="ignore", over="ignore"):   # NaN/inf: check_finite reports
      for t0 in range(u0, u1, rows):
        m = min(rows, u1 - t0)
        xt = x[t0:t0 + m]
        if kind in "biu":
          xt = int_offsets(xt, base)
        t_lo, t_hi = np.min(xt, axis=0), np.max(xt, axis=0)
        np.minimum(lo, t_lo, out=lo)
        np.maximum(hi, t_hi, out=hi)
        dtype = np.float64 if wide or _extreme(t_lo, t_hi) else np.float32
        dev, sq = bufs(dtype)
        d, s = dev[:m], sq[:m]
        np.copyto(s, xt, casting="unsafe")
        m1 = _tree_sum(s) / dtype(m)                        # the tile's shift
        np.subtract(xt, m1, out=d, casting="unsafe")
        np.multiply(d, d, out=s)
        sd = _tree_sum(d).astype(np.float64)
        tile_m2 = np.maximum(_tree_sum(s) - sd * sd / m, 0.0)
        tile_mean = m1 + sd / m
        total = count + m
        delta = tile_mean - mean
        mean += delta * (m / total)
        m2 += tile_m2 + delta * delta * (count * m / total)
        count = total
    return count, mean, m2, lo, hi

  spans = _spans(t, min(num_threads(), max(1, t // rows)))
  return _run([functools.partial(work, *sp) for sp in spans])


def _extreme(lo: np.ndarray, hi: np.ndarray) -> bool:
  """Whether a float32 tile's squares would overflow or underflow (see ``moments``)."""
  lo64, hi64 = lo.astype(np.float64), hi.astype(np.float64)
  big = np.maximum(np.abs(lo64), np.abs(hi64))
  spread = hi64 - lo64
  return bool((big >= EXTREME_HI).any() or ((spread > 0) & (spread < EXTREME_LO)).any())


def standardize(x: np.ndarray, centre: np.ndarray, scale: np.ndarray,
                base: np.ndarray | None = None) -> np.ndarray:
  """(x - centre) * scale per neuron, computed in float64, returned as float32.

  The host side of exact matching for data with more precision or range than
  float32 (float64, integers) and for float32 data whose scale the float32
  kernel cannot hold: the float32 result has unit-norm columns (``scale`` =
  1 / sqrt(M2), 0 for excluded neurons), so the kernel only sums products.

  Args:
    x: [T, N] activations, any real dtype (integers and bool with ``base``,
      as in ``moments``: ``centre`` is then the mean of x - base).
    centre: [N] float64 mean.
    scale: [N] float64.
    base: [N] uint64 column minima of integer x (``int_base``); without it,
      integers are converted to float64 directly (exact below 2**53).

  Returns:
    [T, N] float32, written tile by tile over thread spans.
  """
  t, n = x.shape
  out = np.empty((t, n), np.float32)
  centre = np.asarray(centre, np.float64)
  scale = np.asarray(scale, np.float64)
  rows = max(1, TILE_BYTES // (16 * n))
  is_int = x.dtype.kind in "biu"

  def work(u0, u1):
    buf = np.empty((rows, n), np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
      for t0 in range(u0, u1, rows):
        m = min(rows, u1 - t0)
        b = buf[:m]
        xt = x[t0:t0 + m]
        if is_int and base is not None:
          b[...] = int_offsets(xt, base)
          np.subtract(b, centre, out=b)
        else:
          np.subtract(xt, centre, out=b, casting="unsafe")
        np.multiply(b, scale, out=b)
        np.copyto(out[t0:t0 + m], b, casting="unsafe")

  _run([functools.partial(work, *sp)
        for sp in _spans(t, min(num_threads(), max(1, t // rows)))])
  return out


def doc_sums(xa: np.ndarray, xb: np.ndarray, mu_a: np.ndarray, mu_b: np.ndarray,
             cand_a: np.ndarray, cand_b: np.ndarray, runs, out,
             scale_a: np.ndarray | None = None, scale_b: np.ndarray | None = None) -> None:
  """Adds per-document sums of standardised activations and candidate products.

  Args:
    xa, xb: [t, Na], [t, Nb] activations of one chunk of units.
    mu_a, mu_b: [Na], [Nb] float64 means subtracted first, in the data's own
      precision: float64 and integer data in float64 (then rounded to float32),
      float32/16 data in two float32 steps (the mean's float32 part, then its
      remainder, as in ``rescore``), so the centred values keep the spread's
      digits at any offset (a float32 mean alone is off by up to half its ulp:
      4 at 1e8, four times a unit spread).
    cand_a, cand_b: [Na, c], [Nb, c] in-range candidate indices into the other side.
    runs: (start, stop, doc) row ranges of the chunk, one document each.
    out: dict of float64 accumulators, updated in place: "n" [D], "sa", "saa"
      [D, Na], "sb", "sbb" [D, Nb], "sab" [D, Na, c], "sba" [D, Nb, c]; with
      za = (xa - mu_a) * scale_a, zb = (xb - mu_b) * scale_b: sums over the run's
      units of za, za^2, zb, zb^2, za[:, i] * zb[:, cand_a[i, s]] and
      zb[:, j] * za[:, cand_b[j, s]].
    scale_a, scale_b: optional [Na], [Nb] factors (1 / std): applied before the
      float32 products, so data at 1e20 or 1e-20 neither overflows nor underflows
      in them (float64 data is scaled in float64).

  Each run is walked in tiles of ``rows`` units (both sides centred into cache,
  one gather per candidate slot, ``einsum`` products), summed in float32 per
  tile and added in float64. Threads own disjoint documents (doc % threads),
  so no two threads write the same accumulator row.
  """
  na, nb = xa.shape[1], xb.shape[1]
  c = cand_a.shape[1]
  (hi_a, lo_a, f_a), (hi_b, lo_b, f_b) = _centre(xa, mu_a, scale_a), _centre(xb, mu_b, scale_b)
  cols_a = [np.ascontiguousarray(cand_a[:, s], np.intp) for s in range(c)]
  cols_b = [np.ascontiguousarray(cand_b[:, s], np.intp) for s in range(cand_b.shape[1])]
  rows = max(1, TILE_BYTES // (4 * 2 * (na + nb)))
  threads = num_threads()

  def standardised(x, hi, lo, f, out, wide):
    """(x - mean) * scale into the float32 ``out``, in x's own precision."""
    if lo is None:                        # float64 / integers: centre and scale in float64
      np.subtract(x, hi, out=wide)
      if f is not None:
        wide *= f
      np.copyto(out, wide, casting="unsafe")
    else:                                 # float32 and narrower: two float32 steps
      np.subtract(x, hi, out=out, casting="unsafe")
      out -= lo
      if f is not None:
        out *= f

  def work(part):
    za = np.empty((rows, na), np.float32)
    zb = np.empty((rows, nb), np.float32)
    ga = np.empty((rows, nb), np.float32)
    gb = np.empty((rows, na), np.float32)
    wa = np.empty((rows, na)) if lo_a is None else None
    wb = np.empty((rows, nb)) if lo_b is None else None
    for u0, u1, d in runs:
      if d % threads != part:
        continue
      out["n"][d] += u1 - u0
      for t0 in range(u0, u1, rows):
        m = min(rows, u1 - t0)
        a, b = za[:m], zb[:m]
        standardised(xa[t0:t0 + m], hi_a, lo_a, f_a, a, None if wa is None else wa[:m])
        standardised(xb[t0:t0 + m], hi_b, lo_b, f_b, b, None if wb is None else wb[:m])
        out["sa"][d] += a.sum(axis=0)
        out["sb"][d] += b.sum(axis=0)
        out["saa"][d] += np.einsum("ij,ij->j", a, a)
        out["sbb"][d] += np.einsum("ij,ij->j", b, b)
        for s, col in enumerate(cols_a):
          np.take(b, col, axis=1, out=gb[:m], mode="wrap")
          out["sab"][d, :, s] += np.einsum("ij,ij->j", a, gb[:m])
        for s, col in enumerate(cols_b):
          np.take(a, col, axis=1, out=ga[:m], mode="wrap")
          out["sba"][d, :, s] += np.einsum("ij,ij->j", b, ga[:m])

  _run([functools.partial(work, p) for p in range(threads)])


def _centre(x: np.ndarray, mu, scale=None):
  """What ``doc_sums`` subtracts from x and multiplies by: (the float64 mean, None,
  the float64 scale) for float64 and integer x (applied in float64); (the mean's
  float32 part, its float32 remainder, the float32 scale) for narrower floats
  (applied in float32, one after the other)."""
  mu = np.asarray(mu, np.float64)
  scale = None if scale is None else np.asarray(scale, np.float64)
  if x.dtype.kind == "f" and x.dtype.itemsize <= 4 or x.dtype.name == "bfloat16":
    hi = mu.astype(np.float32)
    return hi, (mu - hi).astype(np.float32), None if scale is None else scale.astype(np.float32)
  return mu, None, scale
