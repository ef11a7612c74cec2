"""Pair results: one matched pair of models under the declared criterion (cached).

``match_pair(ctx, pair)`` matches one pair of the pipeline's context
(``studies/context.py``) with the matcher, runs the dataset-permutation null over
the criterion's permutations, turns them into an r floor, bootstraps the count
over documents (the null's permutations resampled too), computes the
alternatives of ``SENSITIVITY`` and the unit-identity null, and returns a frozen
``PairResult``, cached in ``workdir/pairs`` under ``pair_key``: a hash of
everything it depends on, so a study that needs other settings computes and
keeps its own entry, never another's. ``anchor_sets`` intersects the pair
results of three or more models. ``ctx`` is always a ``studies.context.Context``
(this module does not import it: the context imports the pairs).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from typing import Sequence

import numpy as np
from absl import logging

from rosetta_jax import io as io_lib
from rosetta_jax import store as store_lib
from rosetta_jax.analysis import bootstrap, stats
from rosetta_jax.match import rosetta
from rosetta_jax.match.sources import ConcatSource, HostSource, SelectedSource, as_source
from rosetta_jax.models import base


@dataclasses.dataclass(frozen=True)
class Pair:
  """Two models compared at one size."""
  label: str
  a: base.Model
  b: base.Model

  @property
  def size(self) -> float:
    """Geometric mean of the two models' studied neuron counts."""
    return float(np.sqrt(self.a.num_neurons * self.b.num_neurons))


def doc_index(store: store_lib.Store) -> np.ndarray:
  """[T] document index of each unit."""
  offs = store.documents["unit_offsets"]
  return np.repeat(np.arange(len(offs) - 1), np.diff(offs))


PAIR_FORMAT = 3
# A pair whose two recordings together fit in this many bytes is read into memory
# once and matched from there (the main match, every null permutation, the
# identity null and the bootstrap's pass); larger pairs stream from the stores.
IN_MEMORY_BYTES = 2 << 30

# The alternatives reported beside the declared criterion (``sensitivity``):
# (name, criterion fields; "declared" keeps the declared null rule).
SENSITIVITY = (
    ("raw mutual NN", dict(k=1, null="none")),
    ("max-null", dict(k=1, null="max")),
    ("FDR q=0.01", dict(k=1, null="fdr", q=0.01)),
    ("FDR q=0.05", dict(k=1, null="fdr", q=0.05)),
    ("FDR q=0.1", dict(k=1, null="fdr", q=0.1)),
    ("r >= 0.3", dict(k=1, null="none", r_min=0.3)),
    ("r >= 0.5", dict(k=1, null="none", r_min=0.5)),
    ("mutual k=1", dict(k=1, null="declared")),
    ("mutual k=3", dict(k=3, null="declared")),
)
EXCESS = "excess over null"     # raw mutual NN minus the null's expected count


def sensitivity_criteria(declared: rosetta.Criterion) -> dict[str, rosetta.Criterion]:
  """{name: Criterion} of the alternatives, with the declared permutations."""
  out = {}
  for name, kw in SENSITIVITY:
    kw = dict(kw)
    if kw["null"] == "declared":
      kw.update(null=declared.null, q=declared.q, r_min=declared.r_min)
    out[name] = rosetta.Criterion(permutations=declared.permutations, **kw)
  return out


@dataclasses.dataclass(frozen=True)
class PairResult:
  """One matched pair of models under one criterion.

  Neuron indices run over each model's studied sites concatenated in order
  (``offsets_*`` [S + 1]: the first neuron of each site, then the total).

  Attributes:
    label, model_a, model_b: the pair and its models.
    neurons_a, neurons_b: studied neurons of each model.
    size: geometric mean of the two (the size axis of the scaling fit).
    sites_a, sites_b, offsets_a, offsets_b: the studied sites and their offsets.
    num_layers_a, num_layers_b: layers of each model (for relative depth).
    criterion: the declared ``rosetta.Criterion`` applied, as a dict.
    r_threshold: the r floor it came to on the full data (None: none).
    idx_a, idx_b, r, rank: the Rosetta pairs.
    raw_r: r of every mutual pair (declared k) before any r floor.
    null_r: r of the mutual pairs under the dataset-permutation null, all
      permutations pooled; ``null_perm`` the permutation of each.
    null_idx_a, null_idx_b: the first permutation's mutual pairs (the rows of
      ``null_r`` with ``null_perm == 0``, in order): what the explorer shows as null
      pairs.
    false_positives: the null's expected count at the threshold (the count's
      estimated false positives).
    boot_counts: [B] the count in each document resample, re-matched among the
      candidates, under the threshold re-estimated on a resample of the null's
      permutations (``boot_threshold``), so the null's own noise is in the interval.
    members_a, members_b: [B, N] which neurons are Rosetta in each resample.
    sensitivity: {criterion name: {criterion, threshold, count, false_positives,
      boot}} for the alternatives (``SENSITIVITY``) and the excess over the null.
    identity: the unit-identity null (B's units permuted among units with the
      same text): {count, raw_count, fixed_units} under the same r floor; None
      when not run.
    excluded_a, excluded_b: constant neurons left out of matching.
    units: units matched over; documents: documents they come from.
    seconds: time per stage ("match", "null", "identity", "bootstrap").
    key: the cache key (hash of everything the result depends on).
  """
  label: str
  model_a: str
  model_b: str
  neurons_a: int
  neurons_b: int
  size: float
  sites_a: tuple[str, ...]
  sites_b: tuple[str, ...]
  offsets_a: np.ndarray
  offsets_b: np.ndarray
  num_layers_a: int
  num_layers_b: int
  criterion: dict
  r_threshold: float | None
  idx_a: np.ndarray
  idx_b: np.ndarray
  r: np.ndarray
  rank: np.ndarray
  raw_r: np.ndarray
  null_r: np.ndarray
  null_perm: np.ndarray
  null_idx_a: np.ndarray
  null_idx_b: np.ndarray
  false_positives: float
  boot_counts: np.ndarray
  boot_threshold: np.ndarray
  members_a: np.ndarray
  members_b: np.ndarray
  sensitivity: dict
  identity: dict | None
  excluded_a: int
  excluded_b: int
  units: int
  documents: int
  seconds: dict
  key: str

  _ARRAYS = ("offsets_a", "offsets_b", "idx_a", "idx_b", "r", "rank", "raw_r", "null_r",
             "null_perm", "null_idx_a", "null_idx_b", "boot_counts", "boot_threshold")

  @property
  def count(self) -> int:
    return int(len(self.idx_a))

  @property
  def fraction(self) -> float:
    """The count over the smaller model's studied neurons (a pair of unequal models
    can have at most that many one-to-one pairs)."""
    return self.count / min(self.neurons_a, self.neurons_b)

  @property
  def count_ci(self) -> list[float]:
    return stats.count_interval(self.count, self.boot_counts)

  @property
  def permutations(self) -> int:
    return int(self.criterion.get("permutations", 1))

  @property
  def null_count(self) -> float:
    """The null's mean mutual-pair count per permutation (no r floor)."""
    return len(self.null_r) / self.permutations

  @property
  def null_r_max(self) -> float | None:
    return float(self.null_r.max()) if len(self.null_r) else None

  @property
  def mask_a(self) -> np.ndarray:
    m = np.zeros(self.neurons_a, bool)
    m[self.idx_a] = True
    return m

  @property
  def mask_b(self) -> np.ndarray:
    m = np.zeros(self.neurons_b, bool)
    m[self.idx_b] = True
    return m

  @property
  def matches(self) -> rosetta.Matches:
    """The pairs as a ``Matches`` table (site and neuron within site)."""
    return rosetta.Matches.from_indices(self.idx_a, self.idx_b, self.r, self.rank,
                                        self.sites_a, self.offsets_a, self.sites_b,
                                        self.offsets_b, self.model_a, self.model_b)

  @property
  def null_matches(self) -> rosetta.Matches:
    """The first null permutation's mutual pairs as a ``Matches`` table."""
    r = self.null_r[self.null_perm == 0]
    return rosetta.Matches.from_indices(self.null_idx_a, self.null_idx_b, r,
                                        np.ones(len(r), np.int32), self.sites_a,
                                        self.offsets_a, self.sites_b, self.offsets_b,
                                        self.model_a, self.model_b)

  @property
  def depth_a(self) -> list[float]:
    return list(stats.relative_depths(self.sites_a, self.num_layers_a).values())

  @property
  def layer_density_a(self) -> np.ndarray:
    layer = np.searchsorted(self.offsets_a, self.idx_a, side="right") - 1
    return np.bincount(layer, minlength=len(self.sites_a)) / np.diff(self.offsets_a)

  def criterion_counts(self, name: str) -> tuple[float, np.ndarray]:
    """(count, [B] resampled counts) under a sensitivity criterion (or "declared")."""
    if name == "declared":
      return float(self.count), np.asarray(self.boot_counts, np.float64)
    s = self.sensitivity[name]
    return float(s["count"]), np.asarray(s["boot"], np.float64)

  def summary(self) -> dict:
    """The JSON-ready summary kept in results.json."""
    raw, null = self.raw_r, self.null_r
    q = lambda x: np.quantile(x, [0.5, 0.9, 0.99]).tolist() if len(x) else None
    return {
        "label": self.label, "model_a": self.model_a, "model_b": self.model_b,
        "neurons_a": self.neurons_a, "neurons_b": self.neurons_b, "size": self.size,
        "count": self.count, "fraction": self.fraction, "count_ci": self.count_ci,
        "false_positives": self.false_positives,
        "boot_mean": float(self.boot_counts.mean()), "raw_count": int(len(raw)),
        "null_count": self.null_count, "null_permutations": self.permutations,
        "null_r_max": self.null_r_max,
        "null_r_quantiles": q(null), "raw_r_quantiles": q(raw),
        "criterion": self.criterion, "r_threshold": self.r_threshold,
        "r": self.r.tolist(), "r_mean": float(self.r.mean()) if self.count else float("nan"),
        "sensitivity": {k: {kk: vv for kk, vv in v.items() if kk != "boot"} |
                        {"count_ci": stats.count_interval(v["count"], np.asarray(v["boot"]))}
                        for k, v in self.sensitivity.items()},
        "identity": self.identity,
        "excluded_a": self.excluded_a, "excluded_b": self.excluded_b, "units": self.units,
        "documents": self.documents,
        "layer_density_a": self.layer_density_a.tolist(), "num_layers_a": len(self.sites_a),
        "depth_a": self.depth_a, "resamples": int(len(self.boot_counts)),
        "seconds": self.seconds, "cache": f"{self.label}-{self.key}",
    }

  def save(self, path: str) -> None:
    meta = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
            if f.name not in self._ARRAYS + ("members_a", "members_b")}
    meta["format"] = PAIR_FORMAT
    io_lib.save_npz(path, meta=np.array(json.dumps(meta, default=io_lib.json_default)),
                    members_a=np.packbits(self.members_a, axis=1),
                    members_b=np.packbits(self.members_b, axis=1),
                    **{k: getattr(self, k) for k in self._ARRAYS})

  @staticmethod
  def load(path: str) -> "PairResult":
    with np.load(path) as z:
      meta = json.loads(str(z["meta"]))
      if meta.pop("format", None) != PAIR_FORMAT:
        raise ValueError(f"{path}: a pair result of another format; delete "
                         f"{os.path.dirname(path)} and re-run to recompute it")
      arrays = {k: z[k] for k in PairResult._ARRAYS}
      ma = np.unpackbits(z["members_a"], axis=1, count=meta["neurons_a"]).astype(bool)
      mb = np.unpackbits(z["members_b"], axis=1, count=meta["neurons_b"]).astype(bool)
    meta["sites_a"], meta["sites_b"] = tuple(meta["sites_a"]), tuple(meta["sites_b"])
    return PairResult(**meta, **arrays, members_a=ma, members_b=mb)

  def write_table(self, path: str) -> None:
    """The pairs as a tab-separated table (site_a, neuron_a, site_b, neuron_b, r)."""
    t = self.matches
    lines = ["site_a\tneuron_a\tsite_b\tneuron_b\tr"]
    lines += [f"{sa}\t{na}\t{sb}\t{nb}\t{r:.6f}" for sa, na, sb, nb, r in
              zip(t.site_a, t.neuron_a, t.site_b, t.neuron_b, t.r)]
    io_lib.atomic_write(path, "\n".join(lines) + "\n")


def pair_key(ctx, pair: Pair, criterion: rosetta.Criterion,
             budget: float = 1.0) -> str:
  """Hash of everything a PairResult depends on.

  The models' weights, documents, units and recorded values enter through the
  stores' content ids (``Store.fingerprint``: the header with the weights hash,
  the documents hash, the units committed and the SHA-256 of the chunk
  checksums) and the units they hold; the neuron subset through the studied
  sites and the unit budget; the resamples through the bootstrap multiplicities
  themselves (so their number, their seed and the documents drawn from all
  enter), besides the criterion (its null permutations included), the
  candidates, the null's seed and whether the unit-identity null ran.
  """
  cfg = ctx.cfg
  sa, sb = ctx.stores[pair.a.name], ctx.stores[pair.b.name]
  weights = np.ascontiguousarray(ctx.weights)
  parts = {"format": PAIR_FORMAT, "a": pair.a.name, "b": pair.b.name,
           "store_a": sa.fingerprint, "store_b": sb.fingerprint,
           "units": [sa.units_done, sb.units_done],
           "sites_a": pair.a.mlp_sites(), "sites_b": pair.b.mlp_sites(),
           "criterion": dataclasses.asdict(criterion), "candidates": cfg.candidates,
           "bootstrap": cfg.bootstrap, "seed": cfg.seed, "budget": budget,
           "identity": cfg.identity_null and budget == 1.0,
           "weights": [list(weights.shape), str(weights.dtype),
                       hashlib.sha256(weights.tobytes()).hexdigest()]}
  return hashlib.sha1(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]


def null_seeds(seed: int, permutations: int) -> list[int]:
  """Seeds of the null's document derangements (the first is ``seed`` itself)."""
  return [seed + 7919 * p for p in range(permutations)]


def budget_documents(num_docs: int, fraction: float, seed: int) -> np.ndarray:
  """The sorted documents of a unit budget: the first ``ceil(fraction * D)`` of one
  seeded order, so smaller budgets nest inside larger ones."""
  if fraction >= 1.0:
    return np.arange(num_docs)
  order = np.random.default_rng([seed, 1]).permutation(num_docs)
  return np.sort(order[:max(4, int(np.ceil(fraction * num_docs)))])


def identity_order(token: np.ndarray, seed: int) -> tuple[np.ndarray, float]:
  """The unit-identity null's order: units permuted among units of the same text.

  Each group of units with one text id is shuffled and cycled by one place, so no
  unit of a group of two or more keeps its place; units whose text occurs once
  cannot move. Returns (order [T], share of units that stayed in place).
  """
  token = np.asarray(token)
  rng = np.random.default_rng([seed, 2])
  order = np.arange(len(token))
  srt = np.argsort(token, kind="stable")
  bounds = np.flatnonzero(np.r_[True, token[srt][1:] != token[srt][:-1], True])
  for lo, hi in zip(bounds[:-1], bounds[1:]):
    if hi - lo > 1:
      members = rng.permutation(srt[lo:hi])
      order[members] = np.roll(members, -1)
  return order, float(np.mean(order == np.arange(len(token))))


def unit_copies(acts: dict, order: np.ndarray, folder: str, chunk: int = 8192) -> dict:
  """{site: the site's units ``order`` (unit t of the copy is unit order[t])} as
  memory-mapped arrays under ``folder`` (removed by the caller).

  ``order`` is a permutation of all units (the unit-identity null: single units
  move, which a chunked store cannot serve in runs, so one sequential pass
  scatters each chunk into place) or an increasing subset (a unit budget: read
  in runs of consecutive units).
  """
  os.makedirs(folder, exist_ok=True)
  order = np.asarray(order, np.int64)
  out = {}
  for i, (site, src) in enumerate(acts.items()):
    src = as_source(src)
    arr = np.lib.format.open_memmap(os.path.join(folder, f"site{i}.npy"), mode="w+",
                                    dtype=np.float32, shape=(len(order), src.num_neurons))
    if np.all(np.diff(order) > 0):
      view = SelectedSource(src, order)
      for s in range(0, len(order), chunk):
        e = min(s + chunk, len(order))
        arr[s:e] = np.asarray(view.read(s, e), np.float32)
    else:
      if len(order) != src.num_units:
        raise ValueError(f"order must permute the {src.num_units} units or select some in "
                         "increasing order")
      inverse = np.empty_like(order)
      inverse[order] = np.arange(len(order))
      for s in range(0, src.num_units, chunk):
        e = min(s + chunk, src.num_units)
        arr[inverse[s:e]] = np.asarray(src.read(s, e), np.float32)
    arr.flush()
    out[site] = arr
  return out


def in_memory(acts: dict, other: dict, limit: int = IN_MEMORY_BYTES) -> tuple[dict, dict]:
  """Both models' sites read into memory (``HostSource``) when they fit in ``limit`` bytes."""
  size = sum(4 * s.num_units * s.num_neurons for s in [*acts.values(), *other.values()])
  if size > limit:
    return acts, other
  return (dict(zip(acts, HostSource.columns(list(acts.values())))),
          dict(zip(other, HostSource.columns(list(other.values())))))


def _thresholds(crit: rosetta.Criterion, raw_r, null_r, null_perm, picks) -> np.ndarray:
  """[B] thresholds re-estimated on a resample of the null's permutations each."""
  if crit.null == "none":
    return np.full(len(picks), np.nan if crit.r_min is None else crit.r_min)
  by_perm = [null_r[null_perm == p] for p in range(crit.permutations)]
  out = np.empty(len(picks))
  for b, pick in enumerate(picks):
    t = crit.threshold(raw_r, np.concatenate([by_perm[p] for p in pick]))
    out[b] = np.nan if t is None else t
  return out


def _floor(t: np.ndarray):
  return None if np.all(np.isnan(t)) else np.where(np.isnan(t), -np.inf, t)


def match_pair(ctx, pair: Pair, criterion: rosetta.Criterion | None = None,
               budget: float = 1.0) -> PairResult:
  """Matches one pair, applies the criterion, bootstraps the count (cached).

  The dataset-permutation null runs through the same matcher ``permutations``
  times (B's documents deranged as whole blocks, seeds ``null_seeds``); the
  criterion's null rule turns their pooled pairs into an r floor. Each document
  resample re-matches among ``cfg.candidates`` candidates per neuron
  (``analysis.bootstrap``) under a floor re-estimated on a resample of the
  permutations. ``budget`` < 1 matches on a nested subset of the documents (the
  unit-budget curve) with everything re-estimated on it.
  """
  cfg = ctx.cfg
  crit = criterion or cfg.criterion
  key = pair_key(ctx, pair, crit, budget)
  folder = os.path.join(ctx.workdir, "pairs")
  tag = pair.label + ("" if budget == 1.0 else f"-budget{budget:g}")
  path = os.path.join(folder, f"{tag}-{key}.npz")
  sa, sb = ctx.stores[pair.a.name], ctx.stores[pair.b.name]
  if os.path.exists(path):
    # A cached result reads no activations: a deleted or cut chunk file must
    # still be noticed (a stat per file; ``--verify`` checks the contents).
    sa.check_files()
    sb.check_files()
    return PairResult.load(path)
  store_lib.check_same_units(sa, sb)
  acts_a, acts_b = in_memory({s: sa.site(s) for s in pair.a.mlp_sites()},
                             {s: sb.site(s) for s in pair.b.mlp_sites()})
  doc = doc_index(sa)
  num_docs = len(sa.documents["doc_ids"])
  weights = ctx.weights
  keep_docs = budget_documents(num_docs, budget, cfg.seed)
  tmp_budget = os.path.join(ctx.workdir, "tmp", f"{tag}-{key}-units")
  if budget < 1.0:
    rows = np.flatnonzero(np.isin(doc, keep_docs))
    acts_a = unit_copies(acts_a, rows, os.path.join(tmp_budget, "a"))
    acts_b = unit_copies(acts_b, rows, os.path.join(tmp_budget, "b"))
    doc = np.searchsorted(keep_docs, doc[rows])
    weights = bootstrap.bootstrap_weights(len(keep_docs), cfg.bootstrap, cfg.seed)
  mesh_kw = {} if getattr(ctx, "mesh", None) is None else {"mesh": ctx.mesh}
  crits = sensitivity_criteria(crit)
  ks = sorted({crit.k} | {c.k for c in crits.values()})
  kmax = max(ks)
  # k + candidates - 1: a resample can re-rank k-NN lists (with c == k it never could).
  c = cfg.candidates + kmax - 1
  seconds = {}
  t0 = time.time()
  result, sites_a, off_a, sites_b, off_b = rosetta.match_sites(
      acts_a, acts_b, k=c, model_a=pair.a.name, model_b=pair.b.name, progress=ctx.progress,
      **mesh_kw)
  seconds["match"] = time.time() - t0
  t0 = time.time()
  null_rs = {k: [] for k in ks}
  for p, seed in enumerate(null_seeds(cfg.seed, crit.permutations)):
    null, *_ = rosetta.match_sites(acts_a, acts_b, k=kmax, model_a=pair.a.name,
                                   model_b=pair.b.name, null_permutation=seed,
                                   doc_ids=doc, progress=ctx.progress, **mesh_kw)
    for k in ks:
      ni, nj, nr = rosetta.mutual_pairs(null, k=k)
      null_rs[k].append(nr)
      if p == 0 and k == crit.k:
        null_idx = (ni, nj)
  seconds["null"] = time.time() - t0
  raw = {k: rosetta.mutual_pairs(result, k=k)[2] for k in ks}
  nulls = {k: (np.concatenate(v), np.repeat(np.arange(len(v)), [len(x) for x in v]))
           for k, v in null_rs.items()}

  def floor_of(cr):
    null_r = nulls[cr.k][0]
    if cr.r_min is not None:
      null_r = null_r[null_r >= cr.r_min]
    return cr.threshold(raw[cr.k], null_r)

  r_min = floor_of(crit)
  ia, jb, r = rosetta.mutual_pairs(result, k=crit.k, r_min=r_min)
  t0 = time.time()
  doc_stats = bootstrap.doc_stats(ConcatSource(list(acts_a.values())),
                                  ConcatSource(list(acts_b.values())), doc,
                                  result.a_to_b_idx, result.b_to_a_idx,
                                  num_docs=len(keep_docs))
  picks = np.random.default_rng([cfg.seed, 3]).integers(
      0, crit.permutations, size=(len(weights), crit.permutations))
  resampled = {k: bootstrap.resample_pairs(doc_stats, weights, k=k) for k in ks}

  def boot_of(cr):
    null_r, perm = nulls[cr.k]
    if cr.r_min is not None:
      null_r, perm = null_r[null_r >= cr.r_min], perm[null_r >= cr.r_min]
    t = _thresholds(cr, raw[cr.k], null_r, perm, picks)
    return resampled[cr.k].counts(_floor(t)), t

  boot, boot_t = boot_of(crit)
  in_a, in_b = resampled[crit.k].masks(_floor(boot_t), num_b=pair.b.num_neurons)
  sens = {}
  for name, cr in crits.items():
    t = floor_of(cr)
    nr = nulls[cr.k][0]
    sens[name] = {"criterion": dataclasses.asdict(cr), "threshold": t,
                  "count": int((raw[cr.k] >= (-np.inf if t is None else t)).sum()),
                  "false_positives": cr.expected_false(
                      nr if cr.r_min is None else nr[nr >= cr.r_min], t),
                  "boot": boot_of(cr)[0].tolist()}
  raw_boot = resampled[1].counts(None)
  null1, perm1 = nulls[1]
  per_perm = np.bincount(perm1, minlength=crit.permutations)
  sens[EXCESS] = {"criterion": None, "threshold": None,
                  "count": float(len(raw[1]) - len(null1) / crit.permutations),
                  "false_positives": 0.0,
                  "boot": (raw_boot - per_perm[picks].mean(1)).tolist()}
  seconds["bootstrap"] = time.time() - t0
  identity = None
  if cfg.identity_null and budget == 1.0:
    t0 = time.time()
    order, fixed = identity_order(ctx.labels.token, cfg.seed)
    tmp = os.path.join(ctx.workdir, "tmp", f"{tag}-{key}")
    if all(isinstance(v, HostSource) for v in acts_b.values()):
      # In memory: B's units reordered by one gather per group of sites, as the null's.
      ident, *_ = rosetta.match_sites(acts_a, acts_b, k=crit.k, model_a=pair.a.name,
                                      model_b=pair.b.name, null_permutation=order,
                                      progress=ctx.progress, **mesh_kw)
    else:
      ident, *_ = rosetta.match_sites(acts_a, unit_copies(acts_b, order, tmp), k=crit.k,
                                      model_a=pair.a.name, model_b=pair.b.name,
                                      progress=ctx.progress, **mesh_kw)
    shutil.rmtree(tmp, ignore_errors=True)
    identity = {"count": int(len(rosetta.mutual_pairs(ident, k=crit.k, r_min=r_min)[0])),
                "raw_count": int(len(rosetta.mutual_pairs(ident, k=crit.k)[0])),
                "fixed_units": fixed}
    seconds["identity"] = time.time() - t0
  out = PairResult(
      label=pair.label, model_a=pair.a.name, model_b=pair.b.name,
      neurons_a=pair.a.num_neurons, neurons_b=pair.b.num_neurons, size=pair.size,
      sites_a=tuple(sites_a), sites_b=tuple(sites_b), offsets_a=np.asarray(off_a, np.int64),
      offsets_b=np.asarray(off_b, np.int64), num_layers_a=pair.a.num_layers,
      num_layers_b=pair.b.num_layers, criterion=dataclasses.asdict(crit),
      r_threshold=None if r_min is None else float(r_min),
      idx_a=ia, idx_b=jb, r=r,
      rank=rosetta.pair_ranks(result, ia, jb) if len(ia) else np.zeros(0, np.int32),
      raw_r=raw[crit.k], null_r=nulls[crit.k][0], null_perm=nulls[crit.k][1].astype(np.int32),
      null_idx_a=null_idx[0], null_idx_b=null_idx[1],
      false_positives=crit.expected_false(nulls[crit.k][0], r_min),
      boot_counts=np.asarray(boot, np.int64), boot_threshold=boot_t.astype(np.float64),
      members_a=in_a, members_b=in_b, sensitivity=sens, identity=identity,
      excluded_a=int(len(result.excluded_a)), excluded_b=int(len(result.excluded_b)),
      units=int(result.num_units), documents=int(len(keep_docs)), seconds=seconds, key=key)
  del acts_a, acts_b
  shutil.rmtree(tmp_budget, ignore_errors=True)
  out.save(path)
  out.write_table(os.path.join(folder, f"{tag}-{key}.tsv"))
  if budget == 1.0:
    warn_degenerate(out)
  return out


def warn_degenerate(res: PairResult) -> bool:
  """Logs a warning when a pair's count interval has zero width (every resample gave
  the same count: too few documents for the bootstrap to vary); returns whether."""
  if stats.degenerate(res.count_ci, float(res.count)):
    logging.warning("%s: the count's interval %s is degenerate (all %d resamples gave %d "
                    "pairs): record more documents (--record_docs) before reading it",
                    res.label, res.count_ci, len(res.boot_counts), res.count)
    return True
  return False


def anchor_sets(ctx, results: Sequence[PairResult]) -> dict | None:
  """Neurons of each model with a Rosetta partner in *every* other model.

  Defined when every pair of >= 3 models was matched (a plain ``A,B,C`` list).
  For model X the anchor set is ``model_anchors`` of X's pairs with each other model.

  Returns:
    {model: {count, fraction, count_ci, partners, layer_density, depth}} or None.
  """
  models = ctx.unique_models
  names = [m.name for m in models]
  by = {(r.model_a, r.model_b): r for r in results}
  if len(names) < 3 or any((x, y) not in by and (y, x) not in by
                           for i, x in enumerate(names) for y in names[i + 1:]):
    return None
  return {m.name: model_anchors(m, [by[(m.name, y)] if (m.name, y) in by else by[(y, m.name)]
                                    for y in names if y != m.name])
          for m in models}


def model_anchors(model: base.Model, results: Sequence[PairResult]) -> dict:
  """Neurons of ``model`` with a Rosetta partner in the other model of every pair.

  ``results`` holds one pair of ``model`` (on either side) with each other model
  (e.g. the vision zoo's generator with every discriminator). The anchor set is
  ``rosetta.anchors`` of ``model``'s Rosetta masks; its interval intersects the
  same document resamples of every pair (all pairs share the resamples).

  Returns:
    {count, fraction, count_ci, partners, layer_density, depth}.
  """
  points, members = [], []
  for r in results:
    if r.model_a == model.name:
      points.append(r.mask_a)
      members.append(r.members_a)
    elif r.model_b == model.name:
      points.append(r.mask_b)
      members.append(r.members_b)
    else:
      raise ValueError(f"pair {r.label} does not hold model {model.name!r}")
  point = rosetta.anchors(points)
  count = int(point.sum())
  site_of = np.arange(model.num_neurons) // model.neurons_per_layer
  density = (np.bincount(site_of[point], minlength=len(model.mlp_sites())) /
             np.bincount(site_of))
  return {"count": count, "fraction": count / model.num_neurons, "partners": len(results),
          "count_ci": stats.count_interval(count, rosetta.anchors(members).sum(1)),
          "layer_density": density.tolist(),
          "depth": list(stats.relative_depths(model.mlp_sites(), model.num_layers).values())}
