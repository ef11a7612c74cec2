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
2. Candidates (2 width Na Nb flops): the Pearson r of the sketched columns,
   keeping the top ``candidates`` (c) of every neuron in both directions (on a
   CPU one matmul per block plus ``lax.top_k``, ``_candidates_host``; with an
   accelerator backend or a mesh the exact kernel, ``match``, on the sketches).
3. Rescore (O(T (Na k + P))): the exact Pearson r of candidate pairs over all T
   units, in a second streaming pass. Each A neuron's first k candidates are
   rescored slot by slot (one column gather of B per slot, A's columns used in
   place); the other candidates of both sides are kept only if their sketched r
   is within ``margin`` of the neuron's k-th best sketched r, deduplicated (a
   Rosetta pair is usually in both lists) and rescored as a pair list (P pairs,
   a gather on both sides). Every neuron's list is then ranked on the exact r of
   all rescored pairs that contain it (its own candidates and the other side's).

Cost on a CPU: the fold and the rescoring are memory-bound gathers, done in
cache-sized tiles by threaded NumPy (``hostpass.py``): the fold reads each
activation once (~10 GB/s on the 2-core test machine), the rescoring costs
~0.4 ns per gathered value per thread, and the candidate search is one matmul
of the sketches (``_candidates_host``). At T=262144, N=4096 (the issue's size)
the exact kernel took 44 s there and this route 2.9 s (median; the rescoring
about half of it, docs/matcher.md). On an H100 the exact kernel runs at ~50 TFLOP/s
(float32, full precision) and the device route's passes at 0.3-0.7 TB/s: at
T=262144, N=4096 the route took 65 ms against 209 ms exact (3.2x), the
rescoring 34 ms of it.

Where it runs: with numpy inputs or activation sources, the sketch and the
rescoring stream unit chunks from the host (the fast route on a CPU). With both
inputs jax arrays on one accelerator (``jnp.asarray`` them on a GPU), the fold and
the rescoring run on that device over the resident arrays (``_fold_device``,
``_rescore_device``): memory-bound passes, with no host copy of the
activations.

The result is exact (same neighbours, same r as ``match``, to float32 rounding of
sums in a different order) for every neuron whose true top-k is among its
rescored pairs; ``benchmarks/bench_match.py`` measures the recall of exact mutual
pairs and the speed-up.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from rosetta_jax.match import correlate as cor
from rosetta_jax.match import hostpass
from rosetta_jax.match import prep
from rosetta_jax.match.api import check_k, match, prepare

CHUNK_BYTES = 512 << 20   # default chunk: this many bytes of one side's activations
PAIR_BUCKET = 512   # residual pair lists are padded to a multiple of this (fewer compiles)


@dataclasses.dataclass(frozen=True)
class SketchConfig:
  """Sketch-and-rescore settings.

  Attributes:
    width: sketch size (buckets along the unit axis); the candidate search costs
      2 * width * Na * Nb flops. T / width is the compression.
    candidates: candidates kept per neuron (>= k), rescored exactly.
    seed: seed of the bucket permutations and signs.
    chunk: units per streaming step (rounded up to a multiple of ``width``);
      None (default): as many as make ``CHUNK_BYTES`` of one side's float32
      activations (32768 units at N=4096; larger chunks mean fewer, longer
      steps of the host passes: the fold ran at 12-13 GB/s with 32768-unit
      chunks against 8-9 GB/s with 8192 on the test machine).
    margin: candidates beyond a neuron's first k are rescored only if their
      sketched r is within ``margin`` of its k-th best sketched r (None: all
      are); a looser margin costs rescoring time, a tighter one recall.
  """
  width: int = 2048
  candidates: int = 4
  seed: int = 0
  chunk: int | None = None
  margin: float | None = 0.1


@functools.lru_cache(maxsize=8)
def bucket_plan(num_units: int, width: int, seed: int):
  """Gather order and signs of the balanced CountSketch.

  Cached (the same plan serves both sides and repeated calls).

  Returns:
    (gather [Tp], sign [Tp] float32, read-only), Tp = num_units rounded up to ``width``:
    bucket b of group g holds unit gather[g * width + b] with sign sign[...];
    padded units have sign 0.
  """
  groups = -(-num_units // width)
  rng = np.random.default_rng(seed)
  perm = np.argsort(rng.random((groups, width)), axis=1)
  gather = (perm + np.arange(groups)[:, None] * width).reshape(-1)
  sign = rng.choice(np.array([-1.0, 1.0], np.float32), size=groups * width)
  sign[gather >= num_units] = 0.0
  gather.flags.writeable = sign.flags.writeable = False     # cached: shared by callers
  return gather, sign


def _topk_pairs(owner, other, r, n, k):
  """Per-owner top-k of (other, r) pairs: r descending, ties to the lowest index.

  Returns:
    (idx [n, k] int32, r [n, k] float32), -1 / nan where an owner has < k pairs.
  """
  keep = np.isfinite(r)
  owner, other, r = owner[keep], other[keep], r[keep]
  order = np.lexsort((other, -r.astype(np.float64), owner))
  owner, other, r = owner[order], other[order], r[order]
  first = np.searchsorted(owner, owner, side="left")
  pos = np.arange(len(owner)) - first
  sel = pos < k
  idx = np.full((n, k), -1, np.int32)
  out = np.full((n, k), np.nan, np.float32)
  idx[owner[sel], pos[sel]] = other[sel]
  out[owner[sel], pos[sel]] = r[sel]
  return idx, out


def _extra_pairs(cand_a, r_a, cand_b, r_b, k, margin):
  """Candidate pairs beyond A's first k slots that are worth rescoring, deduplicated.

  A pair (i, j) is kept if j is in i's candidates (slot >= k) or i in j's, with
  its sketched r within ``margin`` of the owner's k-th best sketched r (B's
  first k slots always count), and it is not one of A's first k slots already.

  Returns:
    (ia, jb) int64 arrays, sorted by ia.
  """
  nb = cand_b.shape[0]

  def kept(cand, r):
    ok = cand >= 0
    if margin is not None:
      floor = np.nan_to_num(r[:, k - 1:k], nan=-np.inf) - margin
      ok[:, k:] &= np.nan_to_num(r[:, k:], nan=-np.inf) >= floor
    return ok

  ok_a = kept(cand_a, r_a)
  ok_a[:, :k] = False                                  # those are the dense slots
  ok_b = kept(cand_b, r_b)
  ia = np.concatenate([np.nonzero(ok_a)[0], cand_b[ok_b]]).astype(np.int64)
  jb = np.concatenate([cand_a[ok_a], np.nonzero(ok_b)[0]]).astype(np.int64)
  dense = (cand_a[ia, :k] == jb[:, None]).any(axis=1)
  key = np.unique(ia[~dense] * nb + jb[~dense])
  return key // nb, key % nb


def _chunks(t, tc, desc):
  """Chunk starts over t units, with a tqdm bar (units) when ``desc`` is given."""
  starts = range(0, t, tc)
  if desc is None:
    return starts
  from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top
  return tqdm(starts, desc=desc[-60:], total=len(starts), unit="chunk")


def _rescore_host(side_a, side_b, dense, pair_a, pair_b, tc, desc=None):
  """Pass 2 on the host: float64 sums of centred products of every candidate
  pair (``dense`` [Na, k] slots and the ``pair_a``/``pair_b`` list), streamed
  in chunks of ``tc`` units (``hostpass.rescore``; the means' float32
  remainders are subtracted too where the offsets make them matter)."""
  src_a, src_b = side_a.source(), side_b.source()
  lo_a = side_a.lo if side_a.lo_matters else None
  lo_b = side_b.lo if side_b.lo_matters else None
  acc_a = np.zeros(dense.shape, np.float64)
  acc_p = np.zeros(len(pair_a), np.float64)
  for u0 in _chunks(src_a.num_units, tc, desc):
    u1 = min(u0 + tc, src_a.num_units)
    d, p = hostpass.rescore(np.asarray(src_a.read(u0, u1)), np.asarray(src_b.read(u0, u1)),
                            side_a.mu, side_b.mu, dense, pair_a, pair_b, lo_a, lo_b)
    acc_a += d
    acc_p += p
  return acc_a, acc_p


def _sketch(side_a, side_b, t, w, tc, seed, desc=None):
  """Pass 1: the sketches S (X_a - c_a) [w, Na], S (X_b - c_b) [w, Nb] and S 1 [w],
  with c the float32 means where offsets dwarf spreads (float32 bucket sums
  would lose the spread's digits), else 0; returns (sk_a, sk_b, s1, c_a, c_b)."""
  gather, sign = bucket_plan(t, w, seed)
  src_a, src_b = side_a.source(), side_b.source()
  na, nb = src_a.num_neurons, src_b.num_neurons
  c_a = side_a.mu if side_a.needs_shift else None
  c_b = side_b.mu if side_b.needs_shift else None
  sk_a = np.zeros((w, na), np.float64)
  sk_b = np.zeros((w, nb), np.float64)
  for u0 in _chunks(t, tc, desc):
    u1 = min(u0 + tc, t)
    g = gather[u0:u0 + tc] - u0
    sg = sign[u0:u0 + tc]
    # The last chunk is not padded: its gather indices past the chunk wrap
    # around (mode="wrap") onto real rows, and carry sign 0.
    hostpass.fold(np.asarray(src_a.read(u0, u1)), g, sg, sk_a, c_a)
    hostpass.fold(np.asarray(src_b.read(u0, u1)), g, sg, sk_b, c_b)
  s1 = sign.reshape(-1, w).sum(axis=0).astype(np.float64)
  zero = lambda n: np.zeros(n, np.float32)
  return sk_a, sk_b, s1, zero(na) if c_a is None else c_a, zero(nb) if c_b is None else c_b


CAND_BLOCK_BYTES = 64 << 20   # the host candidate search's Gram block [rows, Nb]


@functools.partial(jax.jit, static_argnames=("ca", "cb", "rows", "precision"))
def _sketch_topk(ya, yb, valid_a, valid_b, *, ca, cb, rows, precision=None):
  """Top candidates by sketched r in both directions, one Gram block at a time.

  Args:
    ya: [w, Nap] unit-norm, centred sketch columns of A (Nap a multiple of rows).
    yb: [w, Nb] the same for B.
    valid_a, valid_b: [Nap], [Nb] bool; invalid neurons are nobody's candidate.
    ca, cb: candidates per A neuron (<= Nb) and per B neuron (<= rows).
    rows: A neurons per block.
    precision: the Gram dot's precision (``correlate.gram_dot``).

  Returns:
    (ra [Nap, ca], ia [Nap, ca], rb [Nb, cb], ib [Nb, cb]), r descending, -inf
    where there is no valid candidate.

  Each block's Gram [rows, Nb] gives its rows' top-ca directly (the whole of B
  is in it) and its columns' top-cb, merged into B's running lists.
  """
  nap, nb = ya.shape[1], yb.shape[1]

  def body(i, carry):
    ra, ia, rb, ib = carry
    a = lax.dynamic_slice_in_dim(ya, i * rows, rows, axis=1)
    ok = lax.dynamic_slice_in_dim(valid_a, i * rows, rows)
    g = cor.gram_dot(a, yb, precision)
    g = jnp.where(ok[:, None] & valid_b[None, :], g, -jnp.inf)
    r, j = lax.top_k(g, ca)
    ra = lax.dynamic_update_slice_in_dim(ra, r, i * rows, axis=0)
    ia = lax.dynamic_update_slice_in_dim(ia, j, i * rows, axis=0)
    r, j = lax.top_k(g.T, cb)
    mr = jnp.concatenate([rb, r], axis=1)
    mi = jnp.concatenate([ib, j + i * rows], axis=1)
    r, pos = lax.top_k(mr, cb)
    return ra, ia, r, jnp.take_along_axis(mi, pos, axis=1)

  init = (jnp.full((nap, ca), -jnp.inf), jnp.zeros((nap, ca), jnp.int32),
          jnp.full((nb, cb), -jnp.inf), jnp.zeros((nb, cb), jnp.int32))
  return lax.fori_loop(0, nap // rows, body, init)


def _unit_columns(y):
  """Centred, unit-norm float32 columns of a sketch, and which are non-constant."""
  y = np.asarray(y, np.float64)
  y = y - y.mean(axis=0)
  norm = np.sqrt(np.einsum("ij,ij->j", y, y))
  valid = norm > 0
  return (y / np.where(valid, norm, 1.0)).astype(np.float32), valid


def _candidates_host(y_a, y_b, c, precision=None):
  """Each neuron's top-c candidates by sketched r, both directions (host route).

  The sketched r are the Pearson r of the sketch columns, as ``match`` on the
  sketches would give them, but without ``match``'s exact-kernel machinery: one
  full-precision matmul per block of A neurons, then ``lax.top_k`` of its rows
  and of its columns. On the 2-core test machine, at width 2048 and N=4096,
  this takes 0.35-0.4 s against 0.6 s for ``match(k=4)``, whose column merge
  (k rounds of argmax along axis 0, 51 ms each on 4096 x 4096 here) replaced a
  transposed ``top_k`` that a GPU miscompiled inside the kernel's loop; with an
  accelerator backend or a mesh the sketch route keeps ``match``.

  ``precision`` is the matmul's (``match``'s ``precision``); the search always
  runs in float32 (``compute_dtype`` applies to the exact kernel only).

  Returns:
    (cand_a [Na, c], r_a, cand_b [Nb, c], r_b): indices best first, -1 / nan
    where a neuron has fewer valid candidates (excluded or constant neurons).
  """
  (za, va), (zb, vb) = _unit_columns(y_a), _unit_columns(y_b)
  na, nb = za.shape[1], zb.shape[1]
  ca, cb = min(c, nb), min(c, na)
  rows = max(cb, min(na, CAND_BLOCK_BYTES // (4 * nb)))
  nap = -(-na // rows) * rows
  ra, ia, rb, ib = _sketch_topk(cor.pad_to(za, (za.shape[0], nap)), zb,
                                cor.pad_to(va, (nap,)), vb, ca=ca, cb=cb, rows=rows,
                                precision=precision)
  out = []
  for r, i, n in ((ra, ia, na), (rb, ib, nb)):
    r = np.asarray(r)[:n].astype(np.float32)
    i = np.where(np.isfinite(r), np.asarray(i)[:n], -1).astype(np.int32)
    r[i < 0] = np.nan
    pad = c - r.shape[1]
    out += [np.pad(i, ((0, 0), (0, pad)), constant_values=-1),
            np.pad(r, ((0, 0), (0, pad)), constant_values=np.nan)]
  return out[0], out[1], out[2], out[3]


FOLD_UNITS = 65536    # units per step of the device fold (bounds its temporaries)
RESCORE_UNITS = 2048  # units per step of the device rescoring (H100: 34 ms vs 49 at 8192)


@functools.partial(jax.jit, static_argnames=("width", "step"))
def _fold_device(x, mu, gather, sign, *, width, step):
  """S (x - mu) [width, N] of a device array x [T, N], on the device (mu: [N]
  float32, the means' float32 part: centring first keeps the spread's digits
  in the float32 bucket sums at any offset; it fuses into the gather).

  ``gather``/``sign`` come from ``bucket_plan`` padded to a multiple of ``step``
  (itself a multiple of ``width``); indices past T are clipped and carry sign 0,
  so x is never padded or copied. Each step gathers ``step`` rows, flips their
  signs and sums groups: one memory-bound pass over x.
  """
  n = x.shape[1]

  def body(i, acc):
    g = lax.dynamic_slice_in_dim(gather, i * step, step)
    sg = lax.dynamic_slice_in_dim(sign, i * step, step)
    y = (jnp.take(x, g, axis=0, mode="clip").astype(jnp.float32) - mu) * sg[:, None]
    return acc + y.reshape(-1, width, n).sum(axis=0)

  return lax.fori_loop(0, gather.shape[0] // step, body, jnp.zeros((width, n), jnp.float32))


def _rescore_terms(xa, xb, mu_a, lo_a, mu_b, lo_b, cand_a, pair_a, pair_b):
  """sum over the units of xa, xb of centred products: dense slots [Na, k] and pairs [P].

  The chunk is transposed to neuron-major first, so every gather takes whole
  rows (contiguous, coalesced on a GPU) rather than scattered elements of each
  unit's row, which on a GPU cost a 32-byte memory sector per 4-byte value.
  """
  za = ((xa.astype(jnp.float32) - mu_a) - lo_a).T       # [Na, step]
  yb = xb.astype(jnp.float32).T                          # [Nb, step]
  cb = lambda j: (jnp.take(yb, j, axis=0) - mu_b[j][:, None]) - lo_b[j][:, None]
  dense = jnp.stack([jnp.sum(za * cb(cand_a[:, s]), axis=1)
                     for s in range(cand_a.shape[1])], axis=1)
  pairs = jnp.sum(jnp.take(za, pair_a, axis=0) * cb(pair_b), axis=1)
  return dense, pairs


@functools.partial(jax.jit, static_argnames=("step",))
def _rescore_device(xa, xb, mu_a, lo_a, mu_b, lo_b, cand_a, pair_a, pair_b, *, step):
  """Exact centred products of every candidate pair over all units of device arrays.

  Walks the units in steps of ``step`` (a static remainder step at the end, so no
  unit is counted twice and nothing is padded): a memory-bound pass over A and
  the gathered rows of B (see ``_rescore_terms``).
  """
  t = xa.shape[0]
  full = t // step

  def body(c, accs):
    d, p = _rescore_terms(lax.dynamic_slice_in_dim(xa, c * step, step),
                          lax.dynamic_slice_in_dim(xb, c * step, step),
                          mu_a, lo_a, mu_b, lo_b, cand_a, pair_a, pair_b)
    return accs[0] + d, accs[1] + p

  init = (jnp.zeros(cand_a.shape, jnp.float32), jnp.zeros(pair_a.shape, jnp.float32))
  dense, pairs = lax.fori_loop(0, full, body, init) if full else init
  if t > full * step:
    d, p = _rescore_terms(xa[full * step:], xb[full * step:], mu_a, lo_a, mu_b, lo_b,
                          cand_a, pair_a, pair_b)
    dense, pairs = dense + d, pairs + p
  return dense, pairs


DEVICE_ROUTE_ON_CPU = False   # tests set it to run the device route on a CPU


def _device_resident(a, b) -> bool:
  """Both inputs are jax arrays on one accelerator: sketch and rescore there.

  jax arrays on a CPU take the host route: there the device route's gathers are
  4-5x slower than NumPy's (measured at T=65536, N=2048 on the 2-core machine).
  """
  if not (isinstance(a, jax.Array) and isinstance(b, jax.Array)
          and len(a.devices()) == 1 and a.devices() == b.devices()):
    return False
  return DEVICE_ROUTE_ON_CPU or next(iter(a.devices())).platform != "cpu"


def match_sketched(a, b, k: int = 1, *, sketch: SketchConfig = SketchConfig(),
                   names=("a", "b"), mesh=None, moments_a=None, moments_b=None,
                   progress: bool = False, **kernel_kw) -> cor.MatchResult:
  """``match`` via sketch-and-rescore (see the module docstring).

  Args:
    a, b: [T, Na], [T, Nb] arrays or activation sources.
    k: neighbours per neuron (<= sketch.candidates).
    sketch: a ``SketchConfig``.
    names, mesh, moments_a, moments_b, **kernel_kw: as in ``match`` (the mesh and
      block sizes are used by the candidate search).
    progress: tqdm bars over the chunks of the two host passes.

  Returns:
    A ``MatchResult`` whose r are exact Pearson r over all T units.
  """
  k = check_k(k)
  if not k <= sketch.candidates:
    raise ValueError(f"need 1 <= k <= candidates, got k={k}, candidates={sketch.candidates}")
  w = sketch.width
  nmax = max(int(x.num_neurons if prep.is_source(x) else np.shape(x)[1])
             for x in (prep.as_input(a, names[0]), prep.as_input(b, names[1])))
  chunk = sketch.chunk or CHUNK_BYTES // (4 * max(nmax, 1))
  tc = max(1, -(-chunk // w)) * w
  side_a, side_b = prepare(a, b, names=names, moments_a=moments_a, moments_b=moments_b,
                           chunk=tc)
  t, na, nb = side_a.num_units, side_a.num_neurons, side_b.num_neurons
  mu_a, lo_a, s_a, excl_a = side_a.mu, side_a.lo, side_a.s, side_a.excluded
  mu_b, lo_b, s_b, excl_b = side_b.mu, side_b.lo, side_b.s, side_b.excluded
  a, b = side_a.data, side_b.data
  on_device = _device_resident(a, b)
  if on_device:
    step = max(1, FOLD_UNITS // w) * w
    gather, sign = bucket_plan(t, w, sketch.seed)
    tail = -len(gather) % step
    gather = np.concatenate([gather, np.full(tail, t - 1, gather.dtype)]).astype(np.int32)
    sign = np.concatenate([sign, np.zeros(tail, np.float32)])
    g_d, s_d = jnp.asarray(gather), jnp.asarray(sign)
    s1 = jnp.asarray(sign.reshape(-1, w).sum(axis=0))[:, None]
    # S Z, kept on the device (the candidate search reads it there).
    y_a = (_fold_device(a, jnp.asarray(mu_a), g_d, s_d, width=w, step=step) - s1 * lo_a) * s_a
    y_b = (_fold_device(b, jnp.asarray(mu_b), g_d, s_d, width=w, step=step) - s1 * lo_b) * s_b
  else:
    sk_a, sk_b, s1, c_a, c_b = _sketch(side_a, side_b, t, w, tc, sketch.seed,
                                       desc=f"sketch {names[0]} ~ {names[1]}" if progress
                                       else None)
    # S Z = (S (X - c) - (S 1)(mean - c)) s, the mean as mu + lo in float64.
    rest = lambda mu, lo, c: mu.astype(np.float64) - c.astype(np.float64) + lo
    y_a = ((sk_a - s1[:, None] * rest(mu_a, lo_a, c_a)) * s_a).astype(np.float32)
    y_b = ((sk_b - s1[:, None] * rest(mu_b, lo_b, c_b)) * s_b).astype(np.float32)
  # Candidates: top-c by the sketch columns' Pearson r (excluded neurons are
  # all-zero columns there, hence constant, hence excluded again). On a CPU a
  # dedicated search; on an accelerator or a mesh, the exact kernel on the sketch.
  c = min(sketch.candidates, max(na, nb))
  if on_device or mesh is not None or jax.default_backend() != "cpu":
    # The host search's jit would run on the default backend: on a GPU it is
    # the transposed top_k in a loop that the H100 miscompiled, so devices keep
    # the exact kernel there (numpy inputs on a GPU machine included).
    cand = match(y_a, y_b, k=c, mesh=mesh, names=names, **kernel_kw)
    cand_a, r_a, cand_b, r_b = cand.a_to_b_idx, cand.a_to_b_r, cand.b_to_a_idx, cand.b_to_a_r
  else:
    cand_a, r_a, cand_b, r_b = _candidates_host(y_a, y_b, c, kernel_kw.get("precision"))
  dense = cand_a[:, :k]                 # A's first k candidates: one gather per slot
  res_i, res_j = _extra_pairs(cand_a, r_a, cand_b, r_b, k, sketch.margin)
  n_res = len(res_i)
  # Pass 2: exact centred products of every candidate pair; r = sum * s_a * s_b.
  if on_device:
    pad = max(PAIR_BUCKET, -(-n_res // PAIR_BUCKET) * PAIR_BUCKET)   # fewer compiles
    pair_a = np.zeros(pad, np.int32)
    pair_b = np.zeros(pad, np.int32)
    pair_a[:n_res], pair_b[:n_res] = res_i, res_j
    acc_a, acc_p = _rescore_device(a, b, *(jnp.asarray(v) for v in (mu_a, lo_a, mu_b, lo_b)),
                                   jnp.asarray(np.maximum(dense, 0)), jnp.asarray(pair_a),
                                   jnp.asarray(pair_b), step=RESCORE_UNITS)
  else:
    acc_a, acc_p = _rescore_host(side_a, side_b, np.maximum(dense, 0), res_i, res_j, tc,
                                 desc=f"rescore {names[0]} ~ {names[1]}" if progress else None)
  # Every rescored pair, with its exact r; then each neuron's top-k among its pairs.
  ia = np.concatenate([np.repeat(np.arange(na), k), res_i]).astype(np.int64)
  jb = np.concatenate([dense.reshape(-1), res_j]).astype(np.int64)
  ok = jb >= 0
  ia, jb = ia[ok], jb[ok]
  g = np.concatenate([np.asarray(acc_a, np.float64).reshape(-1),
                      np.asarray(acc_p, np.float64)[:n_res]])[ok]
  r = np.clip(g * s_a[ia] * s_b[jb], -1.0, 1.0)
  r[(s_a[ia] == 0) | (s_b[jb] == 0)] = -np.inf
  a_idx, a_r = _topk_pairs(ia, jb, r, na, k)
  b_idx, b_r = _topk_pairs(jb, ia, r, nb, k)
  return cor.MatchResult(a_idx, a_r, b_idx, b_r, excl_a, excl_b, int(t))
