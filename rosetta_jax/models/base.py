"""The ``Model`` handle: a Flax module, its parameters and its tokenizer, callable.

Every family (zoo, Hugging Face ports) is wrapped the same way, so the recorder
and the studies never care where a model came from.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from rosetta_jax.analysis import stats
from rosetta_jax.models import common


@dataclasses.dataclass(eq=False)
class Model:
  """A ready-to-run model.

  Attributes:
    name: a stable identifier (zoo name, directory, or hub id).
    module: the Flax module (e.g. ``gpt_neox.GPTNeoX(config)``).
    params: its parameter pytree (possibly sharded).
    config: the family config dataclass (has ``num_layers`` and
      ``neurons_per_layer``).
    tokenizer: a ``rosetta_jax.data.tokenizer.Tokenizer`` (the zoo's), a transformers
      fast tokenizer (``load_model``; the recorder wraps it), or None.
    causal: whether the model is a causal LM (False for encoders such as BERT).
    studied_layers: the layers whose MLP neurons the studies record and match
      (None: all); see ``select_depths``.
  """
  name: str
  module: nn.Module
  params: Any
  config: Any
  tokenizer: Any = None
  causal: bool = True
  studied_layers: tuple[int, ...] | None = None

  @property
  def num_layers(self) -> int:
    return self.config.num_layers

  @property
  def neurons_per_layer(self) -> int:
    return self.config.neurons_per_layer

  @property
  def num_neurons(self) -> int:
    """MLP neurons of the studied layers (the population Rosetta neurons are counted in)."""
    return len(self.mlp_sites()) * self.neurons_per_layer

  def mlp_sites(self) -> list[str]:
    """``layer_{i}/mlp`` for every studied layer (all layers unless restricted)."""
    layers = range(self.num_layers) if self.studied_layers is None else self.studied_layers
    return [common.mlp_site(i) for i in layers]

  def select_depths(self, depths: Sequence[float]) -> "Model":
    """Restricts the studied layers to those nearest the relative ``depths``.

    Depth d in [0, 1] selects the layer whose share of the depth axis holds it
    (``analysis.stats.layer_at_depth``: layer l of L sits at (l + 0.5) / L), so 0
    is the first layer and 1 the last whatever the depth of the model, which
    keeps the layers of models of different depths comparable. Duplicates collapse.
    """
    if not depths:
      return self
    bad = [d for d in depths if not 0.0 <= d <= 1.0]
    if bad:
      raise ValueError(f"relative depths must lie in [0, 1], got {bad}")
    layers = sorted({stats.layer_at_depth(d, self.num_layers) for d in depths})
    self.studied_layers = tuple(layers)
    return self

  @functools.cached_property
  def _apply(self):
    def fwd(params, tokens, attention_mask, sites):
      return self.module.apply({"params": params}, tokens, attention_mask, sites=sites)
    return jax.jit(fwd, static_argnums=(3,))

  def __call__(self, tokens, attention_mask=None, sites: Sequence[str] = ()):
    """Runs the jitted forward pass.

    Args:
      tokens: [batch, seq] int token ids.
      attention_mask: [batch, seq], 1 for real tokens, 0 for padding; None = all real.
      sites: site names to return (see ``models.common``).

    Returns:
      (logits [batch, seq, vocab], {site: [batch, seq, width]}).
    """
    sites = common.check_sites(tuple(sites), self.num_layers)
    tokens = jnp.asarray(tokens, jnp.int32)
    if attention_mask is not None:
      attention_mask = jnp.asarray(attention_mask, jnp.int32)
    return self._apply(self.params, tokens, attention_mask, sites)


def count_params(params) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(params)))
