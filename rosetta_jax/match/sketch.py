"""Sketch-and-rescore: approximate candidates from a unit sketch, exact final r.

Exact matching costs 2 T Na Nb flops. For large unit counts T, compress the unit
axis first:

1. Sketch (O(T N), one pass): a *balanced CountSketch*. Units are taken in groups
   of ``width``; inside each group a random permutation sends every unit to its
   own bucket, with a random sign, and each bucket sums its units:
   ``S X`` is [width, N]. Unlike subsampling units, every unit contributes, so the
   rare, large activations of selective neurons survive; with random signs
   ``<S x, S y>`` is an unbiased estimate of ``<x, y>``. Centering is applied
   after sketching (``S(x - mu) = S x - (S 1) mu``), so one pass suffices.
2. Candidates (2 width Na Nb flops): the exact kernel (``match``) on the sketched
   columns, keeping the top ``candidates`` of every neuron in both directions.
3. Rescore (O(T (Na + Nb) c)): the exact Pearson r of every candidate pair over
   all T units, in a second streaming pass; neighbours are re-ranked on these.

The result is exact (same neighbours, same r as ``match``) for every neuron whose
true top-k is among its candidates; ``benchmarks/bench_match.py`` measures the
recall of exact mutual pairs and the flop saving.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from rosetta_jax.match import correlate as cor
from rosetta_jax.match.api import match, prepare


@dataclasses.dataclass(frozen=True)
class SketchConfig:
  """Sketch-and-rescore settings.

  Attributes:
    width: sketch size (buckets along the unit axis); the candidate search costs
      2 * width * Na * Nb flops.
    candidates: candidates kept per neuron (>= k), rescored exactly.
    seed: seed of the bucket permutations and signs.
    chunk: units per streaming step (rounded up to a multiple of ``width``).
  """
  width: int = 2048
  candidates: int = 8
  seed: int = 0
  chunk: int = 8192


def bucket_plan(num_units: int, width: int, seed: int):
  """Gather order and signs of the balanced CountSketch.

  Returns:
    (gather [Tp], sign [Tp] float32), Tp = num_units rounded up to ``width``:
    bucket b of group g holds unit gather[g * width + b] with sign sign[...];
    padded units have sign 0.
  """
  groups = -(-num_units // width)
  rng = np.random.default_rng(seed)
  perm = np.argsort(rng.random((groups, width)), axis=1)
  gather = (perm + np.arange(groups)[:, None] * width).reshape(-1)
  sign = rng.choice(np.array([-1.0, 1.0], np.float32), size=groups * width)
  sign[gather >= num_units] = 0.0
  return gather, sign


@functools.partial(jax.jit, static_argnames=("width",))
def _sketch_chunk(acc, x, gather, sign, *, width):
  """acc [width, N] += bucket sums of the chunk x [tc, N] (tc = groups * width)."""
  y = x[gather].astype(jnp.float32) * sign[:, None]
  return acc + y.reshape(-1, width, x.shape[1]).sum(axis=0)


@jax.jit
def _rescore_chunk(acc_a, acc_b, xa, xb, mu_a, s_a, mu_b, s_b, cand_a, cand_b,
                   unit0, num_units):
  """Exact partial sums of z_a z_b over a chunk for the candidate pairs.

  acc_a [Na, c] += sum_t z_a[t, i] z_b[t, cand_a[i]]; acc_b likewise for B.
  Neuron-major ([N, tc]) operands make each candidate gather a contiguous row.
  """
  za = cor._standardise(xa, mu_a, s_a, unit0, num_units, jnp.float32).T   # [Na, tc]
  zb = cor._standardise(xb, mu_b, s_b, unit0, num_units, jnp.float32).T   # [Nb, tc]
  acc_a = acc_a + jnp.einsum("nt,nct->nc", za, zb[cand_a])
  acc_b = acc_b + jnp.einsum("nt,nct->nc", zb, za[cand_b])
  return acc_a, acc_b


def _rank(r, idx, k):
  """Top-k of rescored candidates; ties: lowest index first; -1/nan when none."""
  r = np.where(idx < 0, -np.inf, np.clip(r, -1.0, 1.0))
  key_i = np.where(idx < 0, np.iinfo(np.int64).max, idx)
  order = np.lexsort((key_i, -r.astype(np.float64)), axis=1)[:, :k]
  return cor.finalize(np.take_along_axis(r, order, 1), np.take_along_axis(idx, order, 1),
                      r.shape[0])


def match_sketched(a, b, k: int = 1, *, sketch: SketchConfig = SketchConfig(),
                   names=("a", "b"), mesh=None, moments_a=None, moments_b=None,
                   **kernel_kw) -> cor.MatchResult:
  """``match`` via sketch-and-rescore (see the module docstring).

  Args:
    a, b: [T, Na], [T, Nb] arrays or activation sources.
    k: neighbours per neuron (<= sketch.candidates).
    sketch: a ``SketchConfig``.
    names, mesh, moments_a, moments_b, **kernel_kw: as in ``match`` (the mesh and
      block sizes are used by the candidate search).

  Returns:
    A ``MatchResult`` whose r are exact Pearson r over all T units.
  """
  if not 1 <= k <= sketch.candidates:
    raise ValueError(f"need 1 <= k <= candidates, got k={k}, candidates={sketch.candidates}")
  w = sketch.width
  tc = max(1, -(-sketch.chunk // w)) * w
  src_a, src_b, ma, mb = prepare(a, b, names=names, moments_a=moments_a,
                                 moments_b=moments_b, chunk=tc)
  t, na, nb = src_a.num_units, src_a.num_neurons, src_b.num_neurons
  gather, sign = bucket_plan(t, w, sketch.seed)
  s1 = sign.reshape(-1, w).sum(axis=0).astype(np.float64)            # S 1, [w]
  # Pass 1: sketch both sides.
  sk_a = jnp.zeros((w, na), jnp.float32)
  sk_b = jnp.zeros((w, nb), jnp.float32)
  for u0 in range(0, t, tc):
    u1 = min(u0 + tc, t)
    g = jnp.asarray(gather[u0:u0 + tc] - u0)
    sg = jnp.asarray(sign[u0:u0 + tc])
    rows = len(sg)
    sk_a = _sketch_chunk(sk_a, cor.pad_to(np.asarray(src_a.read(u0, u1)), (rows, na)), g, sg, width=w)
    sk_b = _sketch_chunk(sk_b, cor.pad_to(np.asarray(src_b.read(u0, u1)), (rows, nb)), g, sg, width=w)
  mu_a, s_a, excl_a = cor.scales(ma)
  mu_b, s_b, excl_b = cor.scales(mb)
  y_a = (np.asarray(sk_a, np.float64) - s1[:, None] * mu_a) * s_a     # S Z_a
  y_b = (np.asarray(sk_b, np.float64) - s1[:, None] * mu_b) * s_b
  # Candidates: the exact kernel on the sketch (excluded neurons are all-zero
  # columns there, hence constant, hence excluded again).
  c = min(sketch.candidates, max(na, nb))
  cand = match(y_a.astype(np.float32), y_b.astype(np.float32), k=c, mesh=mesh,
               names=names, **kernel_kw)
  cand_a, cand_b = cand.a_to_b_idx, cand.b_to_a_idx
  # Pass 2: exact r of every candidate pair.
  acc_a = jnp.zeros(cand_a.shape, jnp.float32)
  acc_b = jnp.zeros(cand_b.shape, jnp.float32)
  ca, cb = jnp.asarray(np.maximum(cand_a, 0)), jnp.asarray(np.maximum(cand_b, 0))
  args = [jnp.asarray(v) for v in (mu_a, s_a, mu_b, s_b)]
  for u0 in range(0, t, tc):
    u1 = min(u0 + tc, t)
    xa = cor.pad_to(np.asarray(src_a.read(u0, u1)), (tc, na))
    xb = cor.pad_to(np.asarray(src_b.read(u0, u1)), (tc, nb))
    acc_a, acc_b = _rescore_chunk(acc_a, acc_b, xa, xb, *args, ca, cb,
                                  np.int32(u0), np.int32(t))
  a_idx, a_r = _rank(np.asarray(acc_a), cand_a, k)
  b_idx, b_r = _rank(np.asarray(acc_b), cand_b, k)
  return cor.MatchResult(a_idx, a_r, b_idx, b_r, excl_a, excl_b, int(t))
