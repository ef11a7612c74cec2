"""Where Rosetta neurons sit: density per relative depth."""

from __future__ import annotations

import numpy as np

from rosetta_jax.analysis import stats


def depth_density(rosetta_layers, neurons_per_layer) -> tuple[np.ndarray, np.ndarray]:
  """Share of each layer's neurons that are Rosetta.

  Args:
    rosetta_layers: [P] layer index of each Rosetta neuron (of one model).
    neurons_per_layer: [L] neurons in each layer.

  Returns:
    (relative depth of each layer [L] (``stats.relative_depth``), density [L]).
  """
  npl = np.asarray(neurons_per_layer, np.float64)
  if npl.ndim != 1 or np.any(npl <= 0):
    raise ValueError(f"neurons_per_layer must be positive, got {neurons_per_layer}")
  layers = np.asarray(rosetta_layers, np.int64)
  if layers.size and (layers.min() < 0 or layers.max() >= len(npl)):
    raise ValueError(f"layer indices must lie in [0, {len(npl)})")
  counts = np.bincount(layers, minlength=len(npl))
  return stats.relative_depth(np.arange(len(npl)), len(npl)), counts / npl


def depth_slope(depth, density) -> float:
  """Least-squares slope of density against relative depth (NaN with one layer)."""
  depth, density = np.asarray(depth, np.float64), np.asarray(density, np.float64)
  if len(depth) < 2:
    return float("nan")
  return float(np.polyfit(depth, density, 1)[0])
