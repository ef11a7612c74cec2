"""Rosetta criteria on top of the kernel: mutual neighbours, layers, zoo, null.

A *Rosetta pair* is a pair of neurons (one per model) that are each other's
nearest neighbour by Pearson r over the same units (``k=1``: best buddies), or
each in the other's top-k (mutual k-NN, the ablation), optionally with
r >= ``r_min``. The search space is every neuron of A against every neuron of B
across all sites (default), the same layer only (``within_layer``), or layer pairs
whose relative depths differ by at most ``depth_band``.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import numpy as np

from rosetta_jax.analysis.stats import relative_depths, site_layer
from rosetta_jax.match.api import match
from rosetta_jax.match.correlate import MatchResult
from rosetta_jax.match.moments import Moments
from rosetta_jax.match.sources import (ArraySource, ConcatSource, PermutedSource, as_source,
                                       source_moments)

def mutual_pairs(result: MatchResult, k: int = 1, r_min: float | None = None):
  """Mutual top-k pairs of a ``MatchResult``.

  Args:
    result: from ``match`` (its k must be >= ``k``).
    k: 1 for best buddies; >1 for mutual k-NN (j in i's top-k and i in j's top-k).
    r_min: keep only pairs with r >= r_min.

  Returns:
    (idx_a, idx_b, r): int64, int64, float32 arrays, sorted by idx_a then idx_b.
  """
  if k > result.k:
    raise ValueError(f"mutual_pairs(k={k}) needs a match with k >= {k}, got {result.k}")
  ia, pos = np.nonzero(result.a_to_b_idx[:, :k] >= 0)
  jb = result.a_to_b_idx[ia, pos].astype(np.int64)
  r = result.a_to_b_r[ia, pos]
  back = result.b_to_a_idx[jb, :k]                      # [P, k]
  keep = (back == ia[:, None]).any(axis=1)
  if r_min is not None:
    keep &= r >= r_min
  ia, jb, r = ia[keep].astype(np.int64), jb[keep], r[keep]
  order = np.lexsort((jb, ia))
  return ia[order], jb[order], r[order].astype(np.float32)


def pair_ranks(result: MatchResult, idx_a, idx_b) -> np.ndarray:
  """1-based rank of each pair: the worse of its two positions in the top-k lists."""
  pa = np.argmax(result.a_to_b_idx[idx_a] == np.asarray(idx_b)[:, None], axis=1)
  pb = np.argmax(result.b_to_a_idx[idx_b] == np.asarray(idx_a)[:, None], axis=1)
  return (np.maximum(pa, pb) + 1).astype(np.int32)


NULL_RULES = ("none", "max", "fdr")


@dataclasses.dataclass(frozen=True)
class Criterion:
  """What counts as a Rosetta pair, declared before a run.

  Attributes:
    k: mutual top-k (1: best buddies).
    r_min: a floor on r (None: none).
    null: how the dataset-permutation null sets a threshold: "none", "max" (r
      above the strongest null pair of any permutation) or "fdr" (the lowest r at
      which the null's expected count explains at most a fraction ``q`` of the
      real pairs above it).
    q: the FDR level of ``null="fdr"``.
    permutations: independent null permutations (the null's expected count at a
      threshold is their mean; the max rule takes the strongest over all).
  """
  k: int = 1
  r_min: float | None = None
  null: str = "max"
  q: float | None = None
  permutations: int = 1

  def __post_init__(self):
    if not isinstance(self.k, (int, np.integer)) or isinstance(self.k, bool) or self.k < 1:
      raise ValueError(f"Criterion.k must be a positive integer, got {self.k!r}")
    if self.null not in NULL_RULES:
      raise ValueError(f"Criterion.null must be one of {NULL_RULES}, got {self.null!r}")
    if (self.null == "fdr") != (self.q is not None):
      raise ValueError("Criterion: q is given exactly when null='fdr'")
    if self.r_min is not None and not -1.0 <= self.r_min <= 1.0:
      raise ValueError(f"Criterion.r_min must lie in [-1, 1], got {self.r_min}")
    p = self.permutations
    if not isinstance(p, (int, np.integer)) or isinstance(p, bool) or p < 1:
      raise ValueError(f"Criterion.permutations must be a positive integer, got {p!r}")

  @property
  def name(self) -> str:
    """A short human-readable name ("mutual 1-NN, FDR q=0.05 over 8 permutations")."""
    rule = {"none": "no null threshold", "max": "above the strongest null pair",
            "fdr": f"FDR q={self.q:g}"}[self.null]
    out = f"mutual {self.k}-NN, {rule}"
    if self.null != "none":
      out += f" ({self.permutations} permutation{'s' if self.permutations > 1 else ''})"
    if self.r_min is not None:
      out += f", r >= {self.r_min:g}"
    return out

  def threshold(self, raw_r, null_r) -> float | None:
    """The r floor this criterion applies, given the mutual pairs' r on real data
    (``raw_r``) and under the null (``null_r``: the mutual pairs of all
    ``permutations`` null runs pooled, matched with the same k and r_min)."""
    null_r = np.asarray(null_r, np.float64)
    if self.null == "none" or null_r.size == 0:
      return self.r_min
    if self.null == "max":
      above = float(np.nextafter(np.float32(null_r.max()), np.float32(np.inf)))
    else:
      above = fdr_threshold(raw_r, null_r, self.q, permutations=self.permutations)
    return above if self.r_min is None else max(self.r_min, above)

  def expected_false(self, null_r, threshold: float | None) -> float:
    """The null's expected number of pairs at or above ``threshold``: the estimated
    false positives of a count made with it (pooled null pairs / permutations)."""
    null_r = np.asarray(null_r, np.float64)
    n = null_r.size if threshold is None else int((null_r >= threshold).sum())
    return n / self.permutations


def fdr_threshold(real_r, null_r, q: float, permutations: int = 1) -> float:
  """The lowest r threshold at which the permutation null explains at most a
  fraction ``q`` of the real mutual pairs above it.

  Estimated false discovery rate at threshold t: E#(null r >= t) / #(real r >= t),
  both from the same matcher and criterion (the null with B's documents
  shuffled; ``null_r`` pools ``permutations`` independent shuffles, so the
  expected null count is the pooled count over ``permutations``). Thresholds are
  tried at the real pairs' r; the lowest whose rate is <= q wins (as a step-up
  rule, so a noisy bump at high r does not stop it). The max-null threshold is
  the q -> 0 limit.

  Returns:
    The threshold, never above the max-null threshold (just above the strongest
    null pair: no null pair there, so its rate is 0); above every real r (no pair
    kept) when no threshold qualifies.
  """
  if not 0.0 < q < 1.0:
    raise ValueError(f"the FDR level must lie in (0, 1), got {q}")
  if permutations < 1:
    raise ValueError(f"permutations must be >= 1, got {permutations}")
  real = np.sort(np.asarray(real_r, np.float64))[::-1]
  null = np.sort(np.asarray(null_r, np.float64))
  if real.size == 0:
    return float("inf")
  n_real = np.arange(1, real.size + 1)                    # real pairs with r >= real[i]
  n_null = (null.size - np.searchsorted(null, real, side="left")) / permutations
  ok = np.flatnonzero(n_null <= q * n_real)
  if ok.size == 0:
    return float(np.nextafter(real[0], np.inf))
  t = float(real[ok.max()])
  return min(t, float(np.nextafter(null[-1], np.inf))) if null.size else t


def anchors(memberships: Sequence[np.ndarray]) -> np.ndarray:
  """Anchor neurons: those in a Rosetta pair with every other model.

  Args:
    memberships: one bool array per other model, [..., N] over the same N neurons
      of the anchor model (a leading resample axis is kept).

  Returns:
    Their intersection, [..., N] bool.
  """
  if not len(memberships):
    raise ValueError("anchors need at least one other model")
  return np.logical_and.reduce([np.asarray(m, bool) for m in memberships])


@dataclasses.dataclass(frozen=True)
class Matches:
  """A table of Rosetta pairs: equal-length numpy columns, one row per pair."""
  model_a: np.ndarray
  site_a: np.ndarray
  neuron_a: np.ndarray
  model_b: np.ndarray
  site_b: np.ndarray
  neuron_b: np.ndarray
  r: np.ndarray
  rank: np.ndarray

  COLUMNS = ("model_a", "site_a", "neuron_a", "model_b", "site_b", "neuron_b", "r", "rank")

  def __len__(self) -> int:
    return int(self.r.shape[0])

  def __repr__(self) -> str:
    from rosetta_jax.explorer import notebook  # pylint: disable=g-import-not-at-top
    return notebook.matches_repr(self)

  def _repr_html_(self) -> str:
    from rosetta_jax.explorer import notebook  # pylint: disable=g-import-not-at-top
    return notebook.matches_html(self)

  def to_dict(self) -> dict:
    """JSON-friendly ``{column: list}``."""
    return {c: getattr(self, c).tolist() for c in self.COLUMNS}

  def to_records(self) -> list[dict]:
    """One dict per pair."""
    cols = self.to_dict()
    return [{c: cols[c][i] for c in self.COLUMNS} for i in range(len(self))]

  def select(self, mask) -> "Matches":
    return Matches(*(getattr(self, c)[mask] for c in self.COLUMNS))

  @staticmethod
  def from_indices(idx_a, idx_b, r, rank, sites_a: Sequence[str], offsets_a,
                   sites_b: Sequence[str], offsets_b, model_a: str = "a",
                   model_b: str = "b") -> "Matches":
    """The table of pairs given by neuron indices over the concatenated sites
    (``offsets`` [S + 1]: the first neuron of each site, then the total)."""
    ia, jb = np.asarray(idx_a, np.int64), np.asarray(idx_b, np.int64)
    sa = np.searchsorted(offsets_a, ia, side="right") - 1
    sb = np.searchsorted(offsets_b, jb, side="right") - 1
    n = len(ia)
    return Matches(model_a=np.array([model_a] * n, dtype=object),
                   site_a=np.array(sites_a, dtype=object)[sa] if n else np.array([], object),
                   neuron_a=(ia - np.asarray(offsets_a)[sa]).astype(np.int64),
                   model_b=np.array([model_b] * n, dtype=object),
                   site_b=np.array(sites_b, dtype=object)[sb] if n else np.array([], object),
                   neuron_b=(jb - np.asarray(offsets_b)[sb]).astype(np.int64),
                   r=np.asarray(r, np.float32),
                   rank=np.asarray(rank, np.int32) if n else np.array([], np.int32))

  @staticmethod
  def empty() -> "Matches":
    s = np.array([], dtype=object)
    i = np.array([], dtype=np.int64)
    return Matches(s, s, i, s, s, i, np.array([], np.float32), np.array([], np.int32))

  @staticmethod
  def concat(parts: Sequence["Matches"]) -> "Matches":
    parts = [p for p in parts if len(p)] or [Matches.empty()]
    return Matches(*(np.concatenate([getattr(p, c) for p in parts]) for c in Matches.COLUMNS))


def document_permutation(num_units: int, null_permutation, doc_ids=None) -> np.ndarray:
  """Unit order for the dataset-permutation null, moving whole documents.

  Args:
    num_units: T.
    null_permutation: an int seed (a random derangement of the documents: no
      document stays in place) or an explicit permutation of the documents (or of
      the units when ``doc_ids`` is None).
    doc_ids: [T] document id of each unit; units of one document are contiguous.
      None: every unit is its own document.

  Returns:
    [T] int64 order: unit t of the permuted B is unit order[t] of B.
  """
  if doc_ids is None and not isinstance(null_permutation, (int, np.integer)):
    perm = np.asarray(null_permutation, np.int64)          # a permutation of the units
    if perm.shape != (num_units,) or not np.array_equal(np.sort(perm), np.arange(num_units)):
      raise ValueError(f"null_permutation must permute the {num_units} units")
    return perm
  if doc_ids is None:
    starts = np.arange(num_units)
  else:
    doc_ids = np.asarray(doc_ids)
    if doc_ids.shape != (num_units,):
      raise ValueError(f"doc_ids must have shape ({num_units},), got {doc_ids.shape}")
    starts = np.flatnonzero(np.r_[True, doc_ids[1:] != doc_ids[:-1]])
    if len(np.unique(doc_ids)) != len(starts):
      raise ValueError("doc_ids: the units of each document must be contiguous")
  ends = np.r_[starts[1:], num_units]
  n_docs = len(starts)
  if isinstance(null_permutation, (int, np.integer)):
    if n_docs < 2:
      raise ValueError("the permutation null needs at least 2 documents")
    cycle = np.random.default_rng(int(null_permutation)).permutation(n_docs)
    perm = np.empty(n_docs, np.int64)
    perm[cycle] = np.roll(cycle, -1)                 # a single cycle: a derangement.
  else:
    perm = np.asarray(null_permutation, np.int64)
    if sorted(perm.tolist()) != list(range(n_docs)):
      raise ValueError(f"null_permutation must permute the {n_docs} documents")
  return np.concatenate([np.arange(starts[d], ends[d]) for d in perm])


def _site_sources(acts: Mapping, model: str):
  if not acts:
    raise ValueError(f"model {model!r}: no sites given")
  names, srcs, moms = [], [], []
  for site, x in acts.items():
    src = as_source(x)
    m = source_moments(src)
    m.check_finite(f"{model}:{site}")
    names.append(site)
    srcs.append(src)
    moms.append(m)
  return names, srcs, moms


def _allowed_groups(sites_a, sites_b, within_layer, depth_band, depth_kw):
  """Groups of A sites that share the same allowed set of B sites."""
  if within_layer and depth_band is not None:
    raise ValueError("give within_layer or depth_band, not both")
  if not within_layer and depth_band is None:
    return [(list(range(len(sites_a))), list(range(len(sites_b))))]
  if within_layer:
    la = [site_layer(s) for s in sites_a]
    lb = [site_layer(s) for s in sites_b]
    allowed = lambda i, j: la[i] == lb[j]
  else:
    da = relative_depths(sites_a, depth_kw.get("num_layers_a"))
    db = relative_depths(sites_b, depth_kw.get("num_layers_b"))
    allowed = lambda i, j: abs(da[sites_a[i]] - db[sites_b[j]]) <= depth_band + 1e-12
  groups: dict = {}
  for i in range(len(sites_a)):
    key = tuple(j for j in range(len(sites_b)) if allowed(i, j))
    if key:
      groups.setdefault(key, []).append(i)
  return [(ia, list(jb)) for jb, ia in groups.items()]


def _merge_rows(r_lists, i_lists, k):
  """Per-row top-k of concatenated candidate lists (nan = none); lowest index wins ties."""
  r = np.concatenate(r_lists, axis=1)
  i = np.concatenate(i_lists, axis=1)
  key_r = np.where(np.isnan(r), np.inf, -r.astype(np.float64))
  key_i = np.where(i < 0, np.iinfo(np.int64).max, i)
  order = np.lexsort((key_i, key_r), axis=1)[:, :k]
  return np.take_along_axis(i, order, 1), np.take_along_axis(r, order, 1)


def match_sites(acts_a: Mapping, acts_b: Mapping, k: int = 1, *, within_layer=False,
                depth_band=None, model_a="a", model_b="b", null_permutation=None,
                doc_ids=None, num_layers_a=None, num_layers_b=None, **kernel_kw):
  """``match`` over all sites of two models, restricted to the allowed layer pairs.

  Returns:
    (result, sites_a, offsets_a, sites_b, offsets_b): a ``MatchResult`` over the
    concatenated neurons (A's sites in mapping order, then B's), and the
    neuron offset of each site.
  """
  sites_a, srcs_a, moms_a = _site_sources(acts_a, model_a)
  sites_b, srcs_b, moms_b = _site_sources(acts_b, model_b)
  t = srcs_a[0].num_units
  for name, src in list(zip(sites_a, srcs_a)) + list(zip(sites_b, srcs_b)):
    if src.num_units != t:
      raise ValueError(f"mismatched unit counts: site {name!r} has {src.num_units} "
                       f"units, expected {t}")
  order = None
  if null_permutation is not None:
    # B's units reordered by whole documents, per group of sites below (so a group
    # held in one host array is gathered in one step).
    order = document_permutation(t, null_permutation, doc_ids)
  off_a = np.cumsum([0] + [s.num_neurons for s in srcs_a])
  off_b = np.cumsum([0] + [s.num_neurons for s in srcs_b])
  na, nb = int(off_a[-1]), int(off_b[-1])
  groups = _allowed_groups(sites_a, sites_b, within_layer, depth_band,
                           dict(num_layers_a=num_layers_a, num_layers_b=num_layers_b))
  a_idx = np.full((na, k), -1, np.int32)
  a_r = np.full((na, k), np.nan, np.float32)
  b_idx = np.full((nb, k), -1, np.int32)
  b_r = np.full((nb, k), np.nan, np.float32)
  const_a = np.concatenate([m.constant for m in moms_a])
  const_b = np.concatenate([m.constant for m in moms_b])
  for ia, jb in groups:
    ga = np.concatenate([np.arange(off_a[i], off_a[i + 1]) for i in ia])
    gb = np.concatenate([np.arange(off_b[j], off_b[j + 1]) for j in jb])
    x = _cat(srcs_a, ia)
    y = _cat(srcs_b, jb)
    if order is not None:
      y = np.asarray(y)[order] if hasattr(y, "shape") else PermutedSource(y, order)
    res = match(x, y, k, names=(f"{model_a}:{'+'.join(sites_a[i] for i in ia)}",
                                f"{model_b}:{'+'.join(sites_b[j] for j in jb)}"),
                moments_a=Moments.concat([moms_a[i] for i in ia]),
                moments_b=Moments.concat([moms_b[j] for j in jb]), **kernel_kw)
    a_idx[ga] = np.where(res.a_to_b_idx >= 0, gb[res.a_to_b_idx], -1)
    a_r[ga] = res.a_to_b_r
    new_b = np.where(res.b_to_a_idx >= 0, ga[res.b_to_a_idx], -1)
    b_idx[gb], b_r[gb] = _merge_rows([b_r[gb], res.b_to_a_r], [b_idx[gb], new_b], k)
  result = MatchResult(a_idx, a_r, b_idx.astype(np.int32), b_r.astype(np.float32),
                       np.flatnonzero(const_a), np.flatnonzero(const_b), int(t))
  return result, sites_a, off_a, sites_b, off_b


def _cat(srcs, ids):
  """The concatenation of some sites: an array when all are in memory, else a source."""
  parts = [srcs[i] for i in ids]
  if all(hasattr(p, "array") for p in parts):
    arrays = [np.asarray(p.array) for p in parts]
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays, axis=1)
  return parts[0] if len(parts) == 1 else ConcatSource(parts)


def find_rosetta(acts_a: Mapping, acts_b: Mapping, k: int = 1, r_min: float | None = None,
                 within_layer: bool = False, depth_band: float | None = None,
                 model_a: str = "a", model_b: str = "b", null_permutation=None,
                 doc_ids=None, **kernel_kw) -> Matches:
  """Rosetta pairs between two models.

  Args:
    acts_a: {site: [T, n_site]} arrays or sources of model A (e.g. ``layer_3/mlp``).
    acts_b: the same for model B, over the same T units.
    k: 1 for best buddies, >1 for mutual k-NN.
    r_min: minimum r of a pair.
    within_layer: only pair neurons of sites with the same layer index.
    depth_band: only pair layers whose relative depths (layer + 0.5) / num_layers
      differ by at most this much (``num_layers_a``/``num_layers_b`` kwargs
      override the layer counts inferred from the site names).
    model_a, model_b: model names written into the table.
    null_permutation: None, an int seed or a permutation: B's units are reordered
      by whole documents (``doc_ids`` [T]) before matching, the dataset-permutation
      null through the same code path.
    doc_ids: [T] document of each unit, for ``null_permutation``.
    **kernel_kw: passed to ``match`` (block sizes, mesh, compute_dtype, sketch, ...).

  Returns:
    A ``Matches`` table sorted by (site_a order, neuron_a).
  """
  result, sites_a, off_a, sites_b, off_b = match_sites(
      acts_a, acts_b, k, within_layer=within_layer, depth_band=depth_band,
      model_a=model_a, model_b=model_b, null_permutation=null_permutation,
      doc_ids=doc_ids, **kernel_kw)
  ia, jb, r = mutual_pairs(result, k=k, r_min=r_min)
  rank = pair_ranks(result, ia, jb) if len(ia) else np.array([], np.int32)
  return Matches.from_indices(ia, jb, r, rank, sites_a, off_a, sites_b, off_b,
                              model_a, model_b)


def find_rosetta_zoo(acts: Mapping[str, Mapping], anchor: str, k: int = 1,
                     r_min: float | None = None, **kw) -> Matches:
  """Neurons of ``anchor`` that have a mutual partner in every other model.

  Args:
    acts: {model name: {site: [T, n]}} for M >= 2 models over the same units.
    anchor: the model whose neurons are tested.
    k, r_min, **kw: as in ``find_rosetta`` for each (anchor, other) pair.

  Returns:
    ``Matches`` rows (anchor neuron, partner in model m) for every other model m,
    restricted to anchor neurons with a partner in all of them.
  """
  if anchor not in acts:
    raise ValueError(f"anchor {anchor!r} is not among the models {sorted(acts)}")
  others = [m for m in acts if m != anchor]
  if not others:
    raise ValueError("find_rosetta_zoo needs at least two models")
  tables = [find_rosetta(acts[anchor], acts[m], k=k, r_min=r_min, model_a=anchor,
                         model_b=m, **kw) for m in others]
  keys = [list(zip(t.site_a.tolist(), t.neuron_a.tolist())) for t in tables]
  index = {key: i for i, key in enumerate(sorted(set().union(*keys)))}
  masks = []
  for ks in keys:
    m = np.zeros(len(index), bool)
    m[[index[x] for x in ks]] = True
    masks.append(m)
  common = anchors(masks)
  kept = [t.select(np.array([common[index[x]] for x in ks], dtype=bool)) for t, ks in
          zip(tables, keys)]
  return Matches.concat(kept)
