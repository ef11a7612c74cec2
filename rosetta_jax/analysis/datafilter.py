"""Rosetta neurons as data filters (claim 6): the pieces of the study.

* ``domain_selectivity`` / ``pick_neurons``: on labelled units, each neuron's
  standardised mean difference target vs rest, and the most selective neurons
  of an allowed set (the Rosetta set, or a matched control).
* ``score_documents``: a document's mean standardised activation of the chosen
  neurons over its units (the pool's labels are never read).
* ``split_documents`` / ``DocumentSets``: three disjoint sets of documents
  (selection, pool, evaluation) and the check that they are disjoint and unseen
  in training.
* ``arm_orders`` / ``take_budget`` / ``arm_streams``: each arm's documents,
  best first, cut to one token budget shared by every arm.
* ``oracle_share``: the share of the oracle arm's gain an arm recovers.

The study itself (``studies/datafilter.py``) continues pretraining on each arm's
tokens and measures the evaluation set's loss.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Sequence

import numpy as np

from rosetta_jax.match.sources import ConcatSource


def unit_domains(documents: dict) -> np.ndarray:
  """[T] domain label of each unit of a store (from its documents table)."""
  offs = np.asarray(documents["unit_offsets"])
  return np.repeat(np.asarray(documents["domains"], dtype=object), np.diff(offs))


def domain_selectivity(source, domains: np.ndarray, target: str, chunk: int = 8192) -> np.ndarray:
  """Standardised mean difference of each neuron, target-domain units vs the rest.

  Args:
    source: [T, N] activations (array or ``ActivationSource``).
    domains: [T] domain label per unit.
    target: the target domain.

  Returns:
    [N] float64 (mu_target - mu_rest) / sd_all; 0 for constant neurons.
  """
  is_t = np.asarray(domains) == target
  if not is_t.any() or is_t.all():
    raise ValueError(f"target domain {target!r} must cover some but not all units")
  n = source.num_neurons
  s_t, s_r, s2 = np.zeros(n), np.zeros(n), np.zeros(n)
  for s in range(0, source.num_units, chunk):
    x = np.asarray(source.read(s, min(s + chunk, source.num_units)), np.float64)
    m = is_t[s:s + len(x)]
    s_t += x[m].sum(0)
    s_r += x[~m].sum(0)
    s2 += (x * x).sum(0)
  t = source.num_units
  mu = (s_t + s_r) / t
  sd = np.sqrt(np.maximum(s2 / t - mu ** 2, 0.0))
  diff = s_t / is_t.sum() - s_r / (~is_t).sum()
  return np.where(sd > 0, diff / np.where(sd > 0, sd, 1.0), 0.0)


def pick_neurons(selectivity: np.ndarray, allowed: np.ndarray, m: int) -> np.ndarray:
  """Indices of the ``m`` most selective neurons among ``allowed`` (bool [N])."""
  idx = np.flatnonzero(allowed)
  if len(idx) == 0:
    raise ValueError("no neurons to pick from")
  order = np.argsort(-selectivity[idx], kind="stable")
  return idx[order[:m]]


def score_documents(source, unit_offsets, neurons: np.ndarray, mean, sd,
                    chunk: int = 8192) -> np.ndarray:
  """[D] mean standardised activation of ``neurons`` over each document's units."""
  offs = np.asarray(unit_offsets)
  doc = np.repeat(np.arange(len(offs) - 1), np.diff(offs))
  total = np.zeros(len(offs) - 1)
  for s in range(0, source.num_units, chunk):
    x = np.asarray(source.read(s, min(s + chunk, source.num_units)), np.float64)[:, neurons]
    z = ((x - mean[neurons]) / sd[neurons]).mean(1)
    total += np.bincount(doc[s:s + len(x)], weights=z, minlength=len(total))
  return total / np.maximum(np.diff(offs), 1)


def concat_sites(store, sites) -> ConcatSource:
  """All ``sites`` of a store side by side (neuron index = site offset + neuron)."""
  return ConcatSource([store.site(s) for s in sites])


# ----------------------------------------------------------------------------
# The three document sets, the token budget and the oracle share
# ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DocumentSets:
  """Three disjoint sets of held-out documents (``split_documents``).

  Attributes:
    selection: the documents the selector neurons are chosen on (the Rosetta
      set of the pair and the controls are found on their units).
    pool: the candidates the arms select training data from.
    evaluation: the documents the held-out losses are measured on.
  """
  selection: tuple
  pool: tuple
  evaluation: tuple

  def check(self, trained_ids=()) -> None:
    """Raises ValueError if two sets share a document id, or a pool or evaluation
    document is among ``trained_ids`` (the starting model's training documents)."""
    ids = {name: {d.doc_id for d in getattr(self, name)}
           for name in ("selection", "pool", "evaluation")}
    for a, b in (("selection", "pool"), ("selection", "evaluation"), ("pool", "evaluation")):
      both = ids[a] & ids[b]
      if both:
        raise ValueError(f"the {a} and {b} sets share {len(both)} document(s), e.g. "
                         f"{sorted(both)[:3]}")
    trained = set(trained_ids)
    for name in ("pool", "evaluation"):
      seen = ids[name] & trained
      if seen:
        raise ValueError(f"{len(seen)} {name} document(s) are training documents of the "
                         f"starting model, e.g. {sorted(seen)[:3]}")

  def summary(self) -> dict:
    """Per set, its size and its documents per domain."""
    out = {}
    for name in ("selection", "pool", "evaluation"):
      docs = getattr(self, name)
      doms = sorted({d.domain for d in docs})
      out[name] = {"documents": len(docs),
                   "domains": {k: sum(d.domain == k for d in docs) for k in doms}}
    return out


def hash_unit(doc_id: str, salt: str) -> float:
  """A uniform number in [0, 1) from a document id alone (SHA-256 of salt:id)."""
  h = hashlib.sha256(f"{salt}:{doc_id}".encode()).digest()[:8]
  return int.from_bytes(h, "little") / 2 ** 64


def split_documents(heldout: Sequence, selection_ids, pool_share: float,
                    salt: str = "data_filter", max_pool: int = 0) -> DocumentSets:
  """The selection, pool and evaluation sets.

  The selection set is the documents of ``heldout`` whose ids are in
  ``selection_ids``; every other document goes to the pool when
  ``hash_unit(id, salt) < pool_share`` and to the evaluation set otherwise, so
  the split depends on the document ids only (the same on every machine, and a
  document never moves between pool and evaluation when others are added).
  ``max_pool`` > 0 keeps the pool's ``max_pool`` documents of smallest hash (a
  nested prefix); the others are dropped, not moved to the evaluation set.
  """
  if not 0 < pool_share < 1:
    raise ValueError(f"pool_share must lie in (0, 1), got {pool_share}")
  sel_ids = set(selection_ids)
  selection = tuple(d for d in heldout if d.doc_id in sel_ids)
  if len(selection) != len(sel_ids):
    raise ValueError(f"{len(sel_ids) - len(selection)} selection document(s) are not in the "
                     "held-out documents")
  rest = [(hash_unit(d.doc_id, salt), d) for d in heldout if d.doc_id not in sel_ids]
  pool = [(u, d) for u, d in rest if u < pool_share]
  if max_pool:
    keep = {d.doc_id for _, d in sorted(pool, key=lambda x: x[0])[:max_pool]}
    pool = [(u, d) for u, d in pool if d.doc_id in keep]
  sets = DocumentSets(selection, tuple(d for _, d in pool),
                      tuple(d for u, d in rest if u >= pool_share))
  sets.check()
  return sets


def take_budget(doc_tokens: Sequence[np.ndarray], order, budget: int) -> tuple[np.ndarray, int]:
  """The first ``budget`` tokens of the documents taken in ``order``.

  Args:
    doc_tokens: each document's tokens (EOS included).
    order: document indices, best first.
    budget: tokens to take; the last document taken is cut.

  Returns:
    ([budget] int32 stream, documents it draws on).

  Raises:
    ValueError: the documents in ``order`` hold fewer than ``budget`` tokens.
  """
  out, have, used = [], 0, 0
  for i in order:
    if have >= budget:
      break
    x = np.asarray(doc_tokens[i])[:budget - have]
    out.append(x)
    have += len(x)
    used += 1
  if have < budget:
    raise ValueError(f"the {len(order)} documents hold {have} tokens, fewer than the budget "
                     f"of {budget}")
  return np.concatenate(out).astype(np.int32), used


def oracle_share(loss_start, loss_arm, loss_oracle) -> np.ndarray:
  """Share of the oracle's gain an arm recovers,
  (loss_start - loss_arm) / (loss_start - loss_oracle), elementwise (per seed);
  NaN where the oracle gains nothing (loss_oracle >= loss_start)."""
  s, a, o = (np.asarray(x, np.float64) for x in (loss_start, loss_arm, loss_oracle))
  gain = s - o
  with np.errstate(divide="ignore", invalid="ignore"):
    return np.where(gain > 0, (s - a) / np.where(gain > 0, gain, 1.0), np.nan)


def frequency(source, chunk: int = 8192) -> np.ndarray:
  """[N] fraction of the source's units with x > 0 (a neuron's firing frequency)."""
  n = np.zeros(source.num_neurons)
  for s in range(0, source.num_units, chunk):
    n += (np.asarray(source.read(s, min(s + chunk, source.num_units))) > 0).sum(0)
  return n / max(source.num_units, 1)


def unit_rows(unit_offsets, documents) -> np.ndarray:
  """[U] the units (rows) of the given documents (indices into ``unit_offsets``)."""
  offs = np.asarray(unit_offsets, np.int64)
  docs = np.asarray(documents, np.int64)
  if not len(docs):
    return np.zeros(0, np.int64)
  return np.concatenate([np.arange(offs[d], offs[d + 1]) for d in docs])


def arm_orders(scores: dict, pool_domains, target: str, seed) -> dict:
  """Each arm's order of the pool's documents, best first.

  Args:
    scores: {arm: [D] document scores} of the neuron-selected arms (highest first;
      ties keep the pool's order).
    pool_domains: [D] the pool's domain labels (read by the oracle arm only).
    target: the target domain.
    seed: seeds the random arm's order and the oracle's order of the target
      documents.

  Returns:
    {arm: document indices}: the scored arms, "random" (all documents) and
    "oracle" (the target-domain documents only).
  """
  pool_domains = np.asarray(pool_domains)
  rng = np.random.default_rng([*np.atleast_1d(seed).tolist(), 11])
  out = {name: np.argsort(-np.asarray(s), kind="stable") for name, s in scores.items()}
  out["random"] = rng.permutation(len(pool_domains))
  out["oracle"] = rng.permutation(np.flatnonzero(pool_domains == target))
  return out


def arm_streams(doc_tokens: Sequence[np.ndarray], orders: dict, budget: int) -> dict:
  """{arm: (stream, documents drawn on)}: every arm's first ``budget`` tokens
  (``take_budget``), so every arm trains on exactly the same number of tokens."""
  out = {name: take_budget(doc_tokens, o, budget) for name, o in orders.items()}
  assert all(len(s) == budget for s, _ in out.values())
  return out
