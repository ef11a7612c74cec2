"""A stand-in for ``studies.context.Context`` over synthetic pair results, shared by
the controls and domains tests (the studies read only these attributes)."""
import types

from rosetta_jax.analysis import bootstrap


def synthetic_context(pairs, results, neuron_stats, labels, *, seed: int, resamples: int,
                      docs: int) -> types.SimpleNamespace:
  """``pairs``' results (by label), neuron statistics (by model name) and unit labels,
  with ``resamples`` document-bootstrap weights over ``docs`` documents."""
  cfg = types.SimpleNamespace(seed=seed, bootstrap=resamples)
  return types.SimpleNamespace(
      cfg=cfg, pairs=pairs, result=lambda p: results[p.label],
      neuron_stats=lambda m: neuron_stats[m.name],
      weights=bootstrap.bootstrap_weights(docs, resamples, seed), models="synthetic",
      docs=list(range(docs)), labels=labels, seconds={})
