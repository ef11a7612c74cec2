"""Document bootstrap of Rosetta counts, re-matching every resample at O(T*N*c) once.

Re-running the full matcher for every resample costs B * 2*T*Na*Nb flops. Instead:

1. One pass over the data accumulates per-document sufficient statistics of each
   neuron (sum z, sum z^2) and of each neuron's ``c`` candidate partners (sum
   z_a*z_b), the candidates being its top-c neighbours on the full data (from the
   matcher's top-k lists). Cost: O(T * (Na + Nb) * c). When the documents lie
   in runs of units (as recorded stores have them) this runs as tiled NumPy on
   the host (``hostpass.doc_sums``: 1.7 s against 7.8-9.7 s for the XLA segment
   sums at T=65536, N=2304, c=8 on the 2-core test machine); otherwise as XLA
   segment sums.
2. A resample is a vector of document multiplicities w [D]; every weighted
   correlation of every candidate pair is then ``w @ stats``: one small matmul
   for all B resamples together, O(B * D * N * c).

A resample's neighbours are searched among the full-data candidates: exact
whenever a neuron's resampled best partner is among its full-data top-c, which
is what a stable match means (``candidates`` controls it; the study uses 8).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from rosetta_jax.match import hostpass, sources


@dataclasses.dataclass(frozen=True)
class DocStats:
  """Per-document sufficient statistics of two activation sets' candidate pairs.

  Shapes: D documents, Na/Nb neurons, c candidates.
  n [D]; sa, saa [D, Na]; sb, sbb [D, Nb]; sab [D, Na, c] (a_i with b_{cand_a[i,c]});
  sba [D, Nb, c] (b_j with a_{cand_b[j,c]}); cand_a [Na, c]; cand_b [Nb, c].
  """
  n: np.ndarray
  sa: np.ndarray
  saa: np.ndarray
  sb: np.ndarray
  sbb: np.ndarray
  sab: np.ndarray
  sba: np.ndarray
  cand_a: np.ndarray
  cand_b: np.ndarray


@functools.partial(jax.jit, static_argnames=("num_docs",))
def _chunk_stats(za, zb, seg, cand_a, cand_b, num_docs):
  seg_sum = lambda x: jax.ops.segment_sum(x, seg, num_segments=num_docs)
  sab = seg_sum(za[:, :, None] * zb[:, cand_a])
  sba = seg_sum(zb[:, :, None] * za[:, cand_b])
  return (seg_sum(jnp.ones_like(seg, dtype=jnp.float32)), seg_sum(za), seg_sum(za * za),
          seg_sum(zb), seg_sum(zb * zb), sab, sba)


def doc_stats(a, b, doc_index, cand_a, cand_b, num_docs: int | None = None,
              chunk: int = 4096) -> DocStats:
  """Accumulates per-document statistics in one streaming pass over units.

  Args:
    a: [T, Na] activations of A (an array or an ``ActivationSource``, e.g. a store).
    b: [T, Nb] activations of B over the same units.
    doc_index: [T] document index (0..D-1) of each unit.
    cand_a: [Na, c] candidate B-neurons of each A-neuron (-1 = none).
    cand_b: [Nb, c] candidate A-neurons of each B-neuron (-1 = none).
    num_docs: D (default max(doc_index) + 1).
    chunk: units per step (bounds memory at chunk * N * c floats).
  """
  src_a, src_b = sources.as_source(a), sources.as_source(b)
  doc_index = np.asarray(doc_index)
  if not src_a.num_units == src_b.num_units == doc_index.shape[0]:
    raise ValueError(f"unit counts differ: a {src_a.num_units}, b {src_b.num_units}, "
                     f"doc_index {doc_index.shape[0]}")
  d = int(num_docs if num_docs is not None else doc_index.max() + 1)
  # Standardising with full-data moments avoids cancellation in the weighted sums;
  # correlation is invariant to it. Constant neurons become all-zero columns.
  def scale(src):
    m = sources.source_moments(src)
    sd = np.sqrt(m.var)
    return m.mean, np.where(sd > 0, sd, 1.0)
  (mu_a, sd_a), (mu_b, sd_b) = scale(src_a), scale(src_b)
  ca, cb = np.maximum(cand_a, 0).astype(np.int32), np.maximum(cand_b, 0).astype(np.int32)
  starts = np.flatnonzero(np.diff(doc_index)) + 1
  if len(starts) + 1 <= max(1, len(doc_index) // HOST_MIN_RUN):
    acc = _doc_stats_host(src_a, src_b, doc_index, starts, mu_a, sd_a, mu_b, sd_b, ca, cb, d)
  else:
    acc = None
    for s in range(0, src_a.num_units, chunk):
      e = min(s + chunk, src_a.num_units)
      za = ((np.asarray(src_a.read(s, e), np.float64) - mu_a) / sd_a).astype(np.float32)
      zb = ((np.asarray(src_b.read(s, e), np.float64) - mu_b) / sd_b).astype(np.float32)
      out = _chunk_stats(za, zb, doc_index[s:e].astype(np.int32), ca, cb, d)
      out = [np.asarray(o, dtype=np.float64) for o in out]
      acc = out if acc is None else [x + y for x, y in zip(acc, out)]
  return DocStats(*acc, cand_a=np.asarray(cand_a), cand_b=np.asarray(cand_b))


HOST_MIN_RUN = 16          # documents at least this long on average: the host pass
HOST_CHUNK_BYTES = 512 << 20   # units read per host step: this many bytes of one side


def _doc_stats_host(src_a, src_b, doc_index, starts, mu_a, sd_a, mu_b, sd_b, ca, cb, d):
  """``doc_stats`` for documents in runs of units, by ``hostpass.doc_sums``.

  Sums of z = (x - mean) / sd are taken per document in cache-sized tiles (one
  read of the data, gathers at ~0.4 ns per value on the 2-core test machine
  against 2-3 ns for the XLA gather of ``_chunk_stats``); each tile is centred
  and scaled in the data's own precision before its float32 products
  (``hostpass.doc_sums``), so offsets and scales cost no digits.
  """
  t = len(doc_index)
  na, nb, c = len(mu_a), len(mu_b), ca.shape[1]
  out = {"n": np.zeros(d), "sa": np.zeros((d, na)), "saa": np.zeros((d, na)),
         "sb": np.zeros((d, nb)), "sbb": np.zeros((d, nb)),
         "sab": np.zeros((d, na, c)), "sba": np.zeros((d, nb, cb.shape[1]))}
  edges = np.concatenate([[0], starts, [t]])
  step = max(1, HOST_CHUNK_BYTES // (4 * max(na, nb)))
  for s in range(0, t, step):
    e = min(s + step, t)
    lo, hi = np.searchsorted(edges, s, "right") - 1, np.searchsorted(edges, e, "left")
    runs = [(max(edges[i], s) - s, min(edges[i + 1], e) - s, int(doc_index[edges[i]]))
            for i in range(lo, hi) if min(edges[i + 1], e) > max(edges[i], s)]
    hostpass.doc_sums(np.asarray(src_a.read(s, e)), np.asarray(src_b.read(s, e)),
                      mu_a, mu_b, ca, cb, runs, out, scale_a=1 / sd_a, scale_b=1 / sd_b)
  return [out["n"], out["sa"], out["saa"], out["sb"], out["sbb"], out["sab"], out["sba"]]


@dataclasses.dataclass(frozen=True)
class Resampled:
  """Every resample's mutual-k-NN candidates, before any r floor.

  Attributes:
    mutual: [B, Na, k] whether A's j-th neighbour is a mutual pair in resample b.
    r: [B, Na, k] its r in that resample (-inf where undefined).
    top_a: [B, Na, k] the B-side neuron of each entry.
  """
  mutual: np.ndarray
  r: np.ndarray
  top_a: np.ndarray

  def keep(self, r_min=None) -> np.ndarray:
    """[B, Na, k] pairs kept under an r floor: None, a number, or one per resample."""
    ok = self.mutual
    if r_min is None:
      return ok
    t = np.asarray(r_min, np.float64)
    if t.ndim == 0:
      return ok & (self.r >= t)
    if t.shape != (len(ok),):
      raise ValueError(f"r_min per resample must have shape ({len(ok)},), got {t.shape}")
    return ok & (self.r >= t[:, None, None])

  def counts(self, r_min=None) -> np.ndarray:
    """[B] pair counts under an r floor (see ``keep``)."""
    return self.keep(r_min).sum(axis=(1, 2)).astype(np.int64)

  def masks(self, r_min=None, num_b: int | None = None):
    """([B, Na], [B, Nb]) which neurons of each side are in a kept pair."""
    ok = self.keep(r_min)
    in_a = ok.any(-1)
    nb = int(self.top_a.max()) + 1 if num_b is None else num_b
    in_b = np.zeros((len(ok), nb), bool)
    bi, _, _ = np.nonzero(ok)
    in_b[bi, self.top_a[ok]] = True
    return in_a, in_b


def resample_pairs(stats: DocStats, weights: np.ndarray, k: int = 1) -> Resampled:
  """Re-matches every resample among the kept candidates (mutual k-NN, no floor).

  Args:
    stats: from ``doc_stats``.
    weights: [B, D] document multiplicities (a bootstrap resample per row).
    k: mutual-k-NN criterion (k <= c).
  """
  w = np.asarray(weights, dtype=np.float64)
  na, c = stats.cand_a.shape
  nb, c_b = stats.cand_b.shape
  if k > min(c, c_b):
    raise ValueError(f"k={k} exceeds the {min(c, c_b)} candidates kept per neuron")
  n = w @ stats.n
  ma, mb = (w @ stats.sa) / n[:, None], (w @ stats.sb) / n[:, None]
  va = (w @ stats.saa) / n[:, None] - ma ** 2
  vb = (w @ stats.sbb) / n[:, None] - mb ** 2
  # One [B, D] x [D, N*c] matmul per direction serves every resample.
  sab = (w @ stats.sab.reshape(len(stats.n), -1)).reshape(len(w), na, c) / n[:, None, None]
  sba = (w @ stats.sba.reshape(len(stats.n), -1)).reshape(len(w), nb, c_b) / n[:, None, None]
  ca, cb = np.maximum(stats.cand_a, 0), np.maximum(stats.cand_b, 0)
  with np.errstate(invalid="ignore", divide="ignore"):
    r_ab = (sab - ma[:, :, None] * mb[:, ca]) / np.sqrt(va[:, :, None] * vb[:, ca])
    r_ba = (sba - mb[:, :, None] * ma[:, cb]) / np.sqrt(vb[:, :, None] * va[:, cb])
  tiny = 1e-12
  r_ab = np.where((va[:, :, None] > tiny) & (vb[:, ca] > tiny) & (stats.cand_a >= 0), r_ab, -np.inf)
  r_ba = np.where((vb[:, :, None] > tiny) & (va[:, cb] > tiny) & (stats.cand_b >= 0), r_ba, -np.inf)
  # Stable argsort on -r: ties go to the earlier candidate (lower index in the
  # full-data ranking), as in the matcher.
  top_a = np.take_along_axis(np.broadcast_to(ca, r_ab.shape),
                             np.argsort(-r_ab, axis=-1, kind="stable")[..., :k], -1)
  r_top_a = -np.sort(-r_ab, axis=-1)[..., :k]
  top_b = np.take_along_axis(np.broadcast_to(cb, r_ba.shape),
                             np.argsort(-r_ba, axis=-1, kind="stable")[..., :k], -1)
  mutual = np.zeros((len(w), na, k), bool)
  for bi in range(len(w)):
    # j = top_a[i, m] is mutual when i is among top_b[j]: [Na, k, k] comparisons.
    mutual[bi] = (top_b[bi][top_a[bi]] == np.arange(na)[:, None, None]).any(-1)
  mutual &= np.isfinite(r_top_a)
  return Resampled(mutual, r_top_a.astype(np.float32), top_a.astype(np.int32))


def resample_counts(stats: DocStats, weights: np.ndarray, k: int = 1,
                    r_min=None, return_masks: bool = False):
  """Mutual-k-NN counts for each resample.

  Args:
    stats: from ``doc_stats``.
    weights: [B, D] document multiplicities (a bootstrap resample per row).
    k: mutual-k-NN criterion (k <= c).
    r_min: optional threshold on r: a number, or [B] one per resample (a
      threshold re-estimated with each resample).
    return_masks: also return which neurons of each side are in a pair.

  Returns:
    [B] int counts of mutual pairs; with ``return_masks``, (counts, in_a [B, Na]
    bool, in_b [B, Nb] bool): neuron i of A (j of B) is in at least one pair of
    that resample (what a zoo-anchor analysis intersects across partners).
  """
  res = resample_pairs(stats, weights, k)
  counts = res.counts(r_min)
  if not return_masks:
    return counts
  in_a, in_b = res.masks(r_min, num_b=stats.cand_b.shape[0])
  return counts, in_a, in_b


def bootstrap_weights(num_docs: int, resamples: int, seed: int) -> np.ndarray:
  """[resamples, num_docs] multiplicities of documents drawn with replacement."""
  rng = np.random.default_rng(seed)
  idx = rng.integers(0, num_docs, size=(resamples, num_docs))
  return np.stack([np.bincount(row, minlength=num_docs) for row in idx]).astype(np.float64)
