"""Streaming driver: the matcher over ``ActivationSource``s too big for memory.

Loop order: for each panel of ``block_a`` A neurons, one pass over the units in
chunks; each chunk (all of B's neurons, the panel's A neurons) is standardised and
added into a per-device Gram [block_a, Nb]; after the pass the panel's rows give
A's top-k directly and its columns are merged into B's running top-k. Data is
read Na / block_a times; memory per device is
O(chunk * (block_a + Nb) + block_a * Nb + Nb * k), host memory one chunk of rows.
Units are split over the mesh's ``data`` axis (partial Grams kept per shard and
``psum``-ed once per panel), the panel's A neurons over ``model``; the same
standardisation, masking and tie rules as ``correlate.py`` apply.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from rosetta_jax import sharding as shd
from rosetta_jax.match import correlate as cor

P = shd.P


def _step_body(g, xa, xb, mu_a, lo_a, s_a, mu_b, lo_b, s_b, unit0, num_units, *,
               compute_dtype, precision=None):
  """Adds one chunk's local Gram: g [1, pa_l, nb] += z_a^T z_b."""
  tc = xa.shape[0]
  u0 = unit0 + lax.axis_index("data") * tc
  za = cor._standardise(xa, mu_a, lo_a, s_a, u0, num_units, compute_dtype)
  zb = cor._standardise(xb, mu_b, lo_b, s_b, u0, num_units, compute_dtype)
  return g + cor.gram_dot(za, zb, precision)[None]


def _merge_body(g, cols_v, cols_i, s_a, s_b, a0, *, k):
  """Panel done: psum over data, A rows' top-k, B columns merged into the running lists."""
  pa_l = g.shape[1]
  blk = cor._masked_block(lax.psum(g[0], "data"), s_a, s_b)   # [pa_l, nb]
  rv, ri = lax.top_k(blk, k)
  first = (a0 + lax.axis_index("model") * pa_l).astype(jnp.int32)
  cv, ci = cor.merge_topk_cols(cols_v, cols_i, blk, first, k)
  return rv, ri.astype(jnp.int32), cv, ci


@functools.lru_cache(maxsize=None)
def _fns(mesh, k, compute_dtype, precision=None):
  step = jax.jit(jax.shard_map(
      functools.partial(_step_body, compute_dtype=compute_dtype, precision=precision),
      mesh=mesh,
      in_specs=(P("data", "model", None), shd.ACTS_A, shd.ACTS_B, shd.NEURONS_A,
                shd.NEURONS_A, shd.NEURONS_A, shd.NEURONS_B, shd.NEURONS_B,
                shd.NEURONS_B, P(), P()),
      out_specs=P("data", "model", None), check_vma=False), donate_argnums=0)
  merge = jax.jit(jax.shard_map(
      functools.partial(_merge_body, k=k), mesh=mesh,
      in_specs=(P("data", "model", None), P("model"), P("model"), shd.NEURONS_A,
                shd.NEURONS_B, P()),
      out_specs=(P("model"), P("model"), P("model"), P("model")), check_vma=False),
      donate_argnums=(1, 2))        # the running column lists (updated in place)
  gather = jax.jit(jax.shard_map(
      functools.partial(cor._gather_cols, k=k), mesh=mesh,
      in_specs=(P("model"), P("model")), out_specs=(P(), P()), check_vma=False))
  return step, merge, gather


def _put_units(mesh, spec, src, u0, u1, shape, c0, c1, dtype):
  """A [step_units, cols] global array of ``src``'s units [u0, u1) and columns
  [c0, c1), zero-padded to ``shape``, built from this process's shards only: each
  process reads from the source just the units its devices hold (``data``)."""
  cache = {}

  def shard(index):
    rows, cols = index
    r0, r1, _ = rows.indices(shape[0])
    if (r0, r1) not in cache:
      a, b = min(u0 + r0, u1), min(u0 + r1, u1)
      x = (np.asarray(src.read(a, b))[:, c0:c1] if b > a     # all padding: no read
           else np.zeros((0, c1 - c0), dtype))
      cache[(r0, r1)] = cor.pad_to(x, (r1 - r0, shape[1]))
    return cache[(r0, r1)][:, cols]
  return jax.make_array_from_callback(shape, shd.named(mesh, spec), shard)


def match_stream(side_a, side_b, k, *, block_a, block_b, chunk, mesh,
                 compute_dtype, precision=None, desc: str | None = None) -> cor.MatchResult:
  """Streams both sides (``prep.Side``); see the module docstring. ``block_b`` is
  unused (all of B is one panel: the unit chunk read from a source holds all of
  B's neurons anyway). ``desc``: show a tqdm bar (A neurons done, ETA) with this
  label."""
  del block_b
  src_a, src_b = side_a.source(), side_b.source()
  t, na, nb = src_a.num_units, src_a.num_neurons, src_b.num_neurons
  nd, nm = shd.axis_size(mesh, "data"), shd.axis_size(mesh, "model")
  pa_l, n_panels = cor.split_axis(na, nm, max(1, block_a // nm))
  pa = pa_l * nm                               # A neurons per panel, all shards.
  nbp = nb if nb < 8 else cor._round_up(nb, 8)
  tc = min(chunk, -(-t // nd))
  step_units = tc * nd
  nap = n_panels * pa
  mu_a, lo_a, s_a = (cor.pad_to(v, (nap,)) for v in (side_a.mu, side_a.lo, side_a.s))
  put = lambda x, spec: shd.put(x, mesh, spec)
  mu_b_d, lo_b_d, s_b_d = (put(cor.pad_to(v, (nbp,)), shd.NEURONS_B)
                           for v in (side_b.mu, side_b.lo, side_b.s))
  step, merge, gather = _fns(mesh, k, compute_dtype, precision)
  multi = shd.spans_processes(mesh)
  if multi:   # every process's shards must agree on the dtype, read or not
    dt_a, dt_b = (np.asarray(s.read(0, 1)).dtype for s in (src_a, src_b))
  cols_v = put(np.full((nm * nbp, k), -np.inf, np.float32), P("model"))
  cols_i = put(np.full((nm * nbp, k), -1, np.int32), P("model"))
  rows_v, rows_i = [], []
  bar = None
  if desc is not None:
    from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top
    bar = tqdm(total=na, desc=desc[-60:], unit="neuron", unit_scale=True)
  for p in range(n_panels):
    a0, a1 = p * pa, min((p + 1) * pa, na)
    mu_pa = put(mu_a[a0:a0 + pa], shd.NEURONS_A)
    lo_pa = put(lo_a[a0:a0 + pa], shd.NEURONS_A)
    s_pa = put(s_a[a0:a0 + pa], shd.NEURONS_A)
    g = put(np.zeros((nd, pa, nbp), np.float32), P("data", "model", None))
    for u0 in range(0, t, step_units):
      u1 = min(u0 + step_units, t)
      if multi:   # each process reads only the units its own devices hold
        xa = _put_units(mesh, shd.ACTS_A, src_a, u0, u1, (step_units, pa), a0, a1, dt_a)
        xb = _put_units(mesh, shd.ACTS_B, src_b, u0, u1, (step_units, nbp), 0, nb, dt_b)
      else:
        xa = np.asarray(src_a.read(u0, u1))[:, a0:a1]
        xb = np.asarray(src_b.read(u0, u1))
        xa = put(cor.pad_to(xa, (step_units, pa)), shd.ACTS_A)
        xb = put(cor.pad_to(xb, (step_units, nbp)), shd.ACTS_B)
      g = step(g, xa, xb, mu_pa, lo_pa, s_pa, mu_b_d, lo_b_d, s_b_d, np.int32(u0),
               np.int32(t))
    rv, ri, cols_v, cols_i = merge(g, cols_v, cols_i, s_pa, s_b_d, np.int32(a0))
    rows_v.append(shd.to_host(rv))
    rows_i.append(shd.to_host(ri))
    if bar is not None:
      bar.update(a1 - a0)
  if bar is not None:
    bar.close()
  bv, bi = gather(cols_v, cols_i)
  a_idx, a_r = cor.finalize(np.concatenate(rows_v), np.concatenate(rows_i), na)
  b_idx, b_r = cor.finalize(bv, bi, nb)
  return cor.MatchResult(a_idx, a_r, b_idx, b_r, side_a.excluded, side_b.excluded, int(t))
