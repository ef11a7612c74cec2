"""Presets of the real sizes: shape-checked with jax.eval_shape (no memory)."""

import jax
import numpy as np
import pytest
from jax.sharding import Mesh

from rosetta_jax.models import partition, presets, registry

# Parameter counts of the published checkpoints (tied embeddings counted once).
KNOWN_PARAMS = {
    "pythia-70m": 70_426_624,
    "pythia-160m": 162_322_944,
    "opt-125m": 125_239_296,
    "opt-350m": 331_196_416,
    "qwen2.5-0.5b": 494_032_768,
    "gpt2": 124_439_808,
    "gemma-2-2b": 2_614_341_888,
    "gemma-2-9b": 9_241_705_984,
    "gemma-2-27b": 27_227_128_320,
    "gemma-3-270m": 268_098_176,
    "gemma-3-1b": 999_885_952,
}


def test_every_family_has_presets():
  fams = {registry.family_of_config(c).name for c in presets.PRESETS.values()}
  assert {"gpt_neox", "opt", "qwen2", "gpt2", "gemma2", "gemma3_text"} <= fams
  for prefix, n in [("pythia-", 8), ("opt-", 7), ("qwen2.5-", 6), ("gpt2", 4),
                    ("gemma-2-", 3), ("gemma-3-", 5)]:
    assert sum(k.startswith(prefix) for k in presets.PRESETS) == n, prefix


@pytest.mark.parametrize("name", sorted(KNOWN_PARAMS))
def test_known_parameter_counts(name):
  assert presets.num_params(presets.PRESETS[name]) == KNOWN_PARAMS[name]


def test_all_presets_eval_shape_and_shard():
  """Every preset builds abstractly; its MLP kernels have the neuron counts and split
  over an 8-wide model axis (all real widths are multiples of 8)."""
  mesh = Mesh(np.array(jax.devices()[:8]).reshape(1, 8), ("data", "model"))
  for name, cfg in presets.PRESETS.items():
    shapes = presets.param_shapes(cfg)
    fam = registry.family_of_config(cfg).name
    flat = partition.flat_paths(shapes)
    up = [p for p in flat if p.endswith(("dense_h_to_4h/kernel", "fc1/kernel",
                                         "up_proj/kernel", "c_fc/kernel",
                                         "intermediate/kernel"))]
    assert len(up) == cfg.num_layers, name
    assert all(flat[p].shape[1] == cfg.neurons_per_layer for p in up), name
    info = partition.describe(fam, shapes, mesh, cfg)
    assert not [p for p in info["fell_back"] if p in up], name
    assert cfg.num_layers * cfg.neurons_per_layer > 0
