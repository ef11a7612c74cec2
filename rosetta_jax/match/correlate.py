"""The kernel: blockwise Pearson correlation with running row and column top-k.

For A: [T, Na] and B: [T, Nb] it returns, for every neuron of A, its top-k
neurons of B by Pearson r, and for every neuron of B its top-k of A, without ever
materialising the Na x Nb matrix:

  for each block of A neurons (size ``ba``) and each block of B neurons (``bb``):
    G = sum over unit chunks (``tc``) of  Z_a[chunk]^T Z_b[chunk]      # [ba, bb]
    rows of G  -> merged into A's running top-k   (lax.top_k)
    cols of G  -> merged into B's running top-k   (argmax along G's rows:
                                                   ``merge_topk_cols``)

Z = (x - mean) / sqrt(M2) is formed chunk by chunk, on the fly, from float64
host moments (see ``moments.py``), so sum_t z_a z_b is r itself and no
standardised copy of the inputs ever exists. The float64 mean reaches the
float32 kernel as two float32 terms, ``mu`` (the mean rounded to float32) and
``lo`` (the rest): for data whose offset dwarfs its spread, x - mu is exact in
float32 (the two are within a factor of 2 of each other), and subtracting
``lo`` then centres as precisely as the float64 mean would, where the float32
mean alone is off by up to half its ulp, which grows with the offset. Inputs
with more precision or range than float32 arrive already standardised on the
host (``prep.py``: mu = lo = 0, scale 1). Memory per device is
O(tc * (ba + bb) + ba * bb + (Na + Nb) * k).

Sharding (``shard_map`` over the ``("data", "model")`` mesh of
``rosetta_jax.sharding``): units are split over ``data`` and the partial Grams
summed with ``psum``; A's neurons are split over ``model``, each shard keeps B's
column top-k over its own A neurons, and the shards' lists are all-gathered and
merged at the end. Sizes that do not divide the devices or the blocks are padded;
padded units are masked to zero inside the chunk standardisation and padded
neurons have scale 0 and are masked to -inf before every top-k.

Ties: ``lax.top_k`` and ``argmax`` keep the lower position first among equal
values, and every merge puts the running list (lower neuron indices, earlier
blocks or lower shards) before the new block, so among exactly equal r the
lowest neuron index wins, in every layout.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from rosetta_jax import sharding as shd
from rosetta_jax.match.moments import Moments

NEG_INF = -jnp.inf


@dataclasses.dataclass(frozen=True)
class MatchResult:
  """Top-k neighbours in both directions.

  Attributes:
    a_to_b_idx: [Na, k] int32, B neurons best correlated with each A neuron, best
      first. -1 for excluded A neurons (and where fewer than k B neurons are valid).
    a_to_b_r: [Na, k] float32 Pearson r of those pairs; nan where idx is -1.
    b_to_a_idx: [Nb, k] int32, the same for each B neuron.
    b_to_a_r: [Nb, k] float32.
    excluded_a: int64 indices of constant A neurons (never anyone's neighbour).
    excluded_b: int64 indices of constant B neurons.
    num_units: T, the number of units matched over.
  """
  a_to_b_idx: np.ndarray
  a_to_b_r: np.ndarray
  b_to_a_idx: np.ndarray
  b_to_a_r: np.ndarray
  excluded_a: np.ndarray
  excluded_b: np.ndarray
  num_units: int

  @property
  def k(self) -> int:
    return int(self.a_to_b_idx.shape[1])

  def __repr__(self) -> str:
    from rosetta_jax.explorer import notebook  # pylint: disable=g-import-not-at-top
    return notebook.match_result_repr(self)

  def _repr_html_(self) -> str:
    from rosetta_jax.explorer import notebook  # pylint: disable=g-import-not-at-top
    return notebook.match_result_html(self)


# ----------------------------------------------------------------------------
# Block geometry.


def _round_up(n: int, m: int) -> int:
  return -(-n // m) * m


def split_axis(n: int, parts: int, block: int, align: int = 8) -> tuple[int, int]:
  """Splits an axis of size n over ``parts`` devices into equal blocks.

  Returns:
    (blk, nblocks): each device holds nblocks blocks of blk elements; the padded
    size is parts * nblocks * blk >= n, with as little padding as the block cap
    ``block`` and the ``align``-ment allow.
  """
  per = max(1, -(-n // parts))
  nblocks = max(1, -(-per // block))
  blk = -(-per // nblocks)
  if blk >= align:
    blk = _round_up(blk, align)
  return blk, nblocks


# ----------------------------------------------------------------------------
# Device-side pieces (pure, traced inside shard_map).


def _standardise(x, mu, lo, s, unit0, num_units, compute_dtype):
  """z = ((x - mu) - lo) * s for a chunk [tc, n]; units >= num_units (padding) -> 0.

  The parentheses matter: x - mu is exact at large offsets, then ``lo``
  (the float64 mean's remainder) is removed from the small difference."""
  units = unit0 + jnp.arange(x.shape[0])
  z = jnp.where((units < num_units)[:, None], ((x.astype(jnp.float32) - mu) - lo) * s, 0.0)
  return z.astype(compute_dtype)


def gram_dot(za, zb, precision=None):
  """za^T zb with float32 accumulation, at full float32 precision by default.

  ``Precision.HIGHEST`` matters on accelerators only: there a float32 dot at the
  default precision runs on TF32 (GPU) or bfloat16 passes (TPU) tensor units,
  whose ~1e-3 relative error would break the matcher's 1e-5 exactness. bfloat16
  operands are exact in any mode, so they keep the default (fast) path.
  ``precision`` overrides this: a ``lax.Precision`` or a ``lax.DotAlgorithmPreset``
  such as ``BF16_BF16_F32_X6`` (float32-class accuracy from six bfloat16
  tensor-core passes on a GPU; not yet measured there, see BUILD_NOTES).
  """
  if precision is None and za.dtype == jnp.float32:
    precision = lax.Precision.HIGHEST
  return lax.dot_general(za, zb, (((0,), (0,)), ((), ())), precision=precision,
                         preferred_element_type=jnp.float32)


def _merge_topk(vals, idx, new_vals, offset, k):
  """Merges a running top-k [n, k] with candidates [n, m] whose neuron ids are
  ``offset + column`` (all higher than the running ids). Ids are recovered from the
  top-k positions, so no [n, m] index array is ever built."""
  v = jnp.concatenate([vals, new_vals], axis=1)
  top_v, pos = lax.top_k(v, k)
  old = jnp.take_along_axis(idx, jnp.minimum(pos, k - 1), axis=1)
  return top_v, jnp.where(pos < k, old, offset + pos - k).astype(jnp.int32)


def merge_topk_cols(vals, idx, block, offset, k):
  """Merges running top-k lists of n columns, vals/idx [n, k], with a block
  [m, n] of new candidates whose ids are ``offset + row``.

  Reduces along axis 0 (k rounds of max/argmax), so the block is never
  transposed: on a GPU, ``lax.top_k`` of a transposed [ba, bb] Gram block
  returned wrong columns for blocks of 2048 neurons (see BUILD_NOTES, Matcher on
  a GPU). ``argmax`` returns the first maximum, and the running list (lower ids)
  comes first, so ties still go to the lowest neuron index.
  """
  cand = jnp.concatenate([vals.T, block], axis=0)          # [k + m, n]
  rows = jnp.arange(cand.shape[0], dtype=jnp.int32)[:, None]
  top_v, pos = [], []
  for _ in range(k):
    p = jnp.argmax(cand, axis=0).astype(jnp.int32)
    top_v.append(jnp.take_along_axis(cand, p[None, :], axis=0)[0])
    pos.append(p)
    cand = jnp.where(rows == p[None, :], NEG_INF, cand)
  top_v, pos = jnp.stack(top_v, axis=1), jnp.stack(pos, axis=1)
  old = jnp.take_along_axis(idx, jnp.minimum(pos, k - 1), axis=1)
  return top_v, jnp.where(pos < k, old, offset + pos - k).astype(jnp.int32)


def _masked_block(g, s_a_blk, s_b_blk):
  """Pearson block: clipped to [-1, 1], -inf where either neuron is invalid."""
  ok = (s_a_blk > 0)[:, None] & (s_b_blk > 0)[None, :]
  return jnp.where(ok, jnp.clip(g, -1.0, 1.0), NEG_INF)


def _gather_cols(vals, idx, k):
  """Merges B's column top-k lists across 'model' shards (shard order = index order)."""
  gv = lax.all_gather(vals, "model")       # [m, Nb, k]
  gi = lax.all_gather(idx, "model")
  m, nb, _ = gv.shape
  gv = jnp.transpose(gv, (1, 0, 2)).reshape(nb, m * k)
  gi = jnp.transpose(gi, (1, 0, 2)).reshape(nb, m * k)
  top_v, pos = lax.top_k(gv, k)
  return top_v, jnp.take_along_axis(gi, pos, axis=1)


def _kernel_body(a, b, mu_a, lo_a, s_a, mu_b, lo_b, s_b, *, k, ba, bb, tc, num_units,
                 compute_dtype, precision=None):
  """Per-shard body: a [Tl, Nal], b [Tl, Nb] -> rows [Nal, k], cols [Nb, k]."""
  tl, nal = a.shape
  nb = b.shape[1]
  unit_off = lax.axis_index("data") * tl
  a_off = lax.axis_index("model") * nal
  n_chunks, n_ab, n_bb = tl // tc, nal // ba, nb // bb

  def gram(i, j):
    # One [ba, bb] block accumulated over unit chunks: one matmul per chunk.
    # Standardising here costs O(tc * (ba + bb)) per chunk, ~1/bb of the matmul,
    # and saves a standardised copy of the inputs.
    ma, la, sa = (lax.dynamic_slice(v, (i * ba,), (ba,)) for v in (mu_a, lo_a, s_a))
    mb, lb, sb = (lax.dynamic_slice(v, (j * bb,), (bb,)) for v in (mu_b, lo_b, s_b))

    def chunk(c, g):
      xa = lax.dynamic_slice(a, (c * tc, i * ba), (tc, ba))
      xb = lax.dynamic_slice(b, (c * tc, j * bb), (tc, bb))
      za = _standardise(xa, ma, la, sa, unit_off + c * tc, num_units, compute_dtype)
      zb = _standardise(xb, mb, lb, sb, unit_off + c * tc, num_units, compute_dtype)
      return g + gram_dot(za, zb, precision)

    g = lax.fori_loop(0, n_chunks, chunk, jnp.zeros((ba, bb), jnp.float32))
    return _masked_block(lax.psum(g, "data"), sa, sb)

  def a_block(i, carry):
    rows_v, rows_i, cols_v, cols_i = carry
    a0 = (a_off + i * ba).astype(jnp.int32)

    def b_block(j, inner):
      rv, ri, cv, ci = inner
      g = gram(i, j)
      rv, ri = _merge_topk(rv, ri, g, (j * bb).astype(jnp.int32), k)
      bcv = lax.dynamic_slice(cv, (j * bb, 0), (bb, k))
      bci = lax.dynamic_slice(ci, (j * bb, 0), (bb, k))
      bcv, bci = merge_topk_cols(bcv, bci, g, a0, k)
      cv = lax.dynamic_update_slice(cv, bcv, (j * bb, 0))
      ci = lax.dynamic_update_slice(ci, bci, (j * bb, 0))
      return rv, ri, cv, ci

    rv0 = jnp.full((ba, k), NEG_INF, jnp.float32)
    ri0 = jnp.full((ba, k), -1, jnp.int32)
    rv, ri, cols_v, cols_i = lax.fori_loop(0, n_bb, b_block, (rv0, ri0, cols_v, cols_i))
    rows_v = lax.dynamic_update_slice(rows_v, rv, (i * ba, 0))
    rows_i = lax.dynamic_update_slice(rows_i, ri, (i * ba, 0))
    return rows_v, rows_i, cols_v, cols_i

  init = (jnp.full((nal, k), NEG_INF, jnp.float32), jnp.full((nal, k), -1, jnp.int32),
          jnp.full((nb, k), NEG_INF, jnp.float32), jnp.full((nb, k), -1, jnp.int32))
  rows_v, rows_i, cols_v, cols_i = lax.fori_loop(0, n_ab, a_block, init)
  cols_v, cols_i = _gather_cols(cols_v, cols_i, k)
  return rows_v, rows_i, cols_v, cols_i


@functools.partial(jax.jit, static_argnames=("mesh", "k", "ba", "bb", "tc",
                                             "num_units", "compute_dtype", "precision"))
def correlate_topk(a, b, mu_a, lo_a, s_a, mu_b, lo_b, s_b, *, mesh, k, ba, bb, tc,
                   num_units, compute_dtype=jnp.float32, precision=None):
  """Sharded blockwise top-k of Pearson r, both directions.

  Args:
    a: [Tp, Nap] float activations, Tp = data * chunks * tc, Nap = model * blocks * ba
      (already padded).
    b: [Tp, Nbp] float, Nbp = blocks * bb.
    mu_a, lo_a, s_a: [Nap] float32 mean (its float32 rounding and the rest) and
      1 / sqrt(M2) (0 for excluded or padded neurons).
    mu_b, lo_b, s_b: [Nbp] float32.
    mesh: a ("data", "model") Mesh.
    k: neighbours kept per neuron.
    ba, bb, tc: block sizes along A neurons, B neurons and units (per shard).
    num_units: the true T; units beyond it are padding.
    compute_dtype: dtype of the standardised operands of the matmul (float32 or
      bfloat16); accumulation is float32 either way.
    precision: the Gram dots' precision (see ``gram_dot``); None: full float32.

  Returns:
    (a_r [Nap, k], a_idx [Nap, k], b_r [Nbp, k], b_idx [Nbp, k]); r = -inf and
    idx = -1 where there is no valid neighbour.
  """
  body = functools.partial(_kernel_body, k=k, ba=ba, bb=bb, tc=tc,
                           num_units=num_units, compute_dtype=compute_dtype,
                           precision=precision)
  fn = jax.shard_map(
      body, mesh=mesh,
      in_specs=(shd.ACTS_A, shd.ACTS_B, shd.NEURONS_A, shd.NEURONS_A, shd.NEURONS_A,
                shd.NEURONS_B, shd.NEURONS_B, shd.NEURONS_B),
      out_specs=(shd.P("model", None), shd.P("model", None), shd.P(), shd.P()),
      check_vma=False)
  return fn(a, b, mu_a, lo_a, s_a, mu_b, lo_b, s_b)


# ----------------------------------------------------------------------------
# Host-side helpers shared by the in-memory and streaming drivers.


def scales(m: Moments) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """(mu, lo, s, excluded) for the kernel from float64 moments: mu the mean
  rounded to float32, lo = float32(mean - mu) the rest, s = 1/sqrt(M2) in
  float32 (0 for constant neurons), and the excluded (constant) neurons."""
  const = m.constant
  with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
    s = np.where(const, 0.0, 1.0 / np.sqrt(m.m2))
  mean = np.where(const, 0.0, m.mean)
  mu = mean.astype(np.float32)
  lo = (mean - mu.astype(np.float64)).astype(np.float32)
  return mu, lo, s.astype(np.float32), np.flatnonzero(const)


def finalize(r, idx, n):
  """Cuts padding; -inf -> (nan, -1). Arrays spanning several processes are
  all-gathered first (``sharding.to_host``), so every process gets the result."""
  r = shd.to_host(r)[:n].astype(np.float32)
  idx = shd.to_host(idx)[:n].astype(np.int32)
  bad = ~np.isfinite(r)
  return np.where(bad, -1, idx).astype(np.int32), np.where(bad, np.nan, r).astype(np.float32)


def pad_to(x, shape):
  """Zero-pads a host or device array up to ``shape`` (no copy when equal)."""
  if tuple(x.shape) == tuple(shape):
    return x
  widths = [(0, t - s) for s, t in zip(x.shape, shape)]
  return jnp.pad(jnp.asarray(x), widths) if isinstance(x, jax.Array) else np.pad(x, widths)
