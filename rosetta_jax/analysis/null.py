"""Robustness of Rosetta counts: the permutation null, criteria, unit budgets.

``count_variants`` matches two models once with ``c`` candidates per neuron and
counts the mutual pairs under several criteria (mutual k-NN for k <= c, r
thresholds), each with its document-bootstrap distribution (re-matching every
resample among the candidates, ``analysis/bootstrap.py``). With
``null_permutation`` B's units are first misaligned by a document-block
derangement (``match.rosetta.document_permutation``): the dataset-permutation
null, through the same code path. ``UnitSubset`` restricts both models to a
subset of documents for the unit-budget curve.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from rosetta_jax.analysis import bootstrap, stats
from rosetta_jax.match import rosetta
from rosetta_jax.match.sources import ConcatSource, PermutedSource, as_source


class UnitSubset:
  """The units ``units`` (sorted) of a source, as a source; reads run by run."""

  def __init__(self, source, units):
    self.source = as_source(source)
    self.units = np.asarray(units, np.int64)
    if self.units.ndim != 1 or np.any(np.diff(self.units) <= 0):
      raise ValueError("units must be strictly increasing")
    if self.units.size and (self.units[0] < 0 or self.units[-1] >= self.source.num_units):
      raise ValueError(f"units must lie in [0, {self.source.num_units})")
    self.num_units, self.num_neurons = len(self.units), self.source.num_neurons

  def read(self, start: int, stop: int) -> np.ndarray:
    idx = self.units[start:stop]
    if idx.size == 0:
      return np.zeros((0, self.num_neurons), np.float32)
    runs = np.split(idx, np.flatnonzero(np.diff(idx) != 1) + 1)
    return np.concatenate([np.asarray(self.source.read(int(r[0]), int(r[-1]) + 1))
                           for r in runs], axis=0)


def document_subset(doc_index, fraction: float, seed: int = 0) -> np.ndarray:
  """Units of a seeded random subset of ceil(fraction * D) documents (nested in fraction)."""
  doc_index = np.asarray(doc_index)
  d = int(doc_index.max()) + 1
  if not 0 < fraction <= 1:
    raise ValueError(f"fraction must be in (0, 1], got {fraction}")
  keep = np.random.default_rng(seed).permutation(d)[:max(2, int(np.ceil(fraction * d)))]
  return np.flatnonzero(np.isin(doc_index, keep))


def count_variants(acts_a: Mapping, acts_b: Mapping, doc_index, weights,
                   criteria: Sequence[tuple[int, float | None]], candidates: int = 10,
                   null_permutation=None) -> list[dict]:
  """Rosetta counts of one model pair under several criteria, with bootstrap counts.

  Args:
    acts_a, acts_b: {site: [T, n] array or source} of the two models.
    doc_index: [T] document index (0..D-1) of each unit, documents contiguous.
    weights: [B, D] bootstrap document multiplicities.
    criteria: (k, r_min) pairs; every k <= candidates.
    candidates: neighbours kept per neuron (the bootstrap re-matches among them).
    null_permutation: None, or a seed for the document-block permutation null.

  Returns:
    One dict per criterion: k, r_min, count, boot [B] counts, ci [2], r_max (the
    largest r among the pairs).
  """
  doc_index = np.asarray(doc_index)
  if max(k for k, _ in criteria) > candidates:
    raise ValueError(f"k up to {max(k for k, _ in criteria)} needs candidates >= that")
  result, _, _, _, _ = rosetta.match_sites(acts_a, acts_b, k=candidates,
                                           null_permutation=null_permutation,
                                           doc_ids=doc_index)
  src_a = ConcatSource([as_source(x) for x in acts_a.values()])
  src_b = ConcatSource([as_source(x) for x in acts_b.values()])
  if null_permutation is not None:
    src_b = PermutedSource(src_b, rosetta.document_permutation(
        src_b.num_units, null_permutation, doc_index))
  # Document statistics are grouped by A's documents: the units a resample keeps.
  dense = np.unique(doc_index, return_inverse=True)[1]
  doc_stats = bootstrap.doc_stats(src_a, src_b, dense, result.a_to_b_idx, result.b_to_a_idx,
                              num_docs=int(dense.max()) + 1)
  out = []
  for k, r_min in criteria:
    ia, _, r = rosetta.mutual_pairs(result, k=k, r_min=r_min)
    boot = bootstrap.resample_counts(doc_stats, weights, k=k, r_min=r_min)
    out.append({"k": int(k), "r_min": r_min, "count": int(len(ia)), "boot": boot.tolist(),
                "ci": stats.count_interval(len(ia), boot),
                "r_max": float(r.max()) if len(r) else float("nan")})
  return out
