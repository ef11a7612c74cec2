"""Rosetta neurons as data filters (claim 6).

1. On held-out documents with domain labels, pick the Rosetta neurons most
   selective for a target domain (standardised mean difference, target vs rest).
2. Score each document of an *unlabelled* candidate pool by the mean activation of
   those neurons over its units; the pool's labels are used only to evaluate.
3. Select the top-K documents. A control selects K documents with the same number
   of the most target-selective *non*-Rosetta neurons; a baseline takes K random
   documents.
4. Continue pretraining the same model on each subset (``zoo.train.continue_training``)
   and compare held-out loss on the target domain.
"""

from __future__ import annotations

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
