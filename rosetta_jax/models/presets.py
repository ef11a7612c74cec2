"""Configs of the real model sizes the scaling claims are made on.

``PRESETS[name]`` is the family config of a published checkpoint (shapes from its
Hugging Face ``config.json``). They cost nothing to build: ``param_shapes`` and
``num_params`` use ``jax.eval_shape``; ``neurons_per_layer`` and ``num_layers`` feed
the fraction plots and the memory planner. ``python -m rosetta_jax.models.presets``
prints the table in docs/models.md.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from rosetta_jax.models import registry
from rosetta_jax.models.bert import BertConfig
from rosetta_jax.models.gemma import Gemma2Config, Gemma3Config
from rosetta_jax.models.gpt2 import GPT2Config
from rosetta_jax.models.gpt_neox import GPTNeoXConfig
from rosetta_jax.models.llama import LlamaConfig
from rosetta_jax.models.opt import OPTConfig
from rosetta_jax.models.qwen2 import Qwen2Config


def _pythia(d, layers, heads, vocab=50304):
  return GPTNeoXConfig(vocab_size=vocab, hidden_size=d, num_layers=layers, num_heads=heads,
                       intermediate_size=4 * d, rotary_pct=0.25, rotary_base=10000.0,
                       max_position_embeddings=2048)


def _opt(d, layers, heads, **kw):
  return OPTConfig(vocab_size=50272, hidden_size=d, num_layers=layers, num_heads=heads,
                   intermediate_size=4 * d, max_position_embeddings=2048,
                   word_embed_proj_dim=kw.pop("proj", d), **kw)


def _qwen(d, layers, heads, kv, ff, vocab=151936, tied=True, eps=1e-6):
  return Qwen2Config(vocab_size=vocab, hidden_size=d, num_layers=layers, num_heads=heads,
                     num_kv_heads=kv, head_dim=d // heads, intermediate_size=ff,
                     rotary_base=1000000.0, rms_norm_eps=eps, tie_word_embeddings=tied,
                     max_position_embeddings=32768)


def _gemma2(d, layers, heads, kv, ff, head_dim=256, scalar=256):
  return Gemma2Config(vocab_size=256000, hidden_size=d, num_layers=layers, num_heads=heads,
                      num_kv_heads=kv, head_dim=head_dim, intermediate_size=ff,
                      query_pre_attn_scalar=scalar, sliding_window=4096,
                      max_position_embeddings=8192)


def _gemma3(d, layers, heads, kv, ff, head_dim=256, scalar=256, multimodal=True):
  """Gemma 3: 270M and 1B are text-only (262144 ids, 32k context, window 512); 4B-27B
  are the text decoders of the multimodal checkpoints (262208 ids, 128k context,
  window 1024, linear rope scaling x8 on the global layers)."""
  return Gemma3Config(vocab_size=262208 if multimodal else 262144, hidden_size=d,
                      num_layers=layers, num_heads=heads, num_kv_heads=kv, head_dim=head_dim,
                      intermediate_size=ff, query_pre_attn_scalar=scalar,
                      sliding_window=1024 if multimodal else 512,
                      rotary_linear_factor=8.0 if multimodal else 1.0,
                      max_position_embeddings=131072 if multimodal else 32768)


def _gpt2(d, layers, heads):
  return GPT2Config(hidden_size=d, num_layers=layers, num_heads=heads, intermediate_size=4 * d)


PRESETS = {
    "pythia-70m": _pythia(512, 6, 8),
    "pythia-160m": _pythia(768, 12, 12),
    "pythia-410m": _pythia(1024, 24, 16),
    "pythia-1b": _pythia(2048, 16, 8),
    "pythia-1.4b": _pythia(2048, 24, 16),
    "pythia-2.8b": _pythia(2560, 32, 32),
    "pythia-6.9b": _pythia(4096, 32, 32, vocab=50432),
    "pythia-12b": _pythia(5120, 36, 40, vocab=50688),
    "opt-125m": _opt(768, 12, 12),
    "opt-350m": _opt(1024, 24, 16, proj=512, do_layer_norm_before=False,
                     final_layer_norm=False),
    "opt-1.3b": _opt(2048, 24, 32),
    "opt-2.7b": _opt(2560, 32, 32),
    "opt-6.7b": _opt(4096, 32, 32),
    "opt-13b": _opt(5120, 40, 40),
    "opt-30b": _opt(7168, 48, 56),
    "qwen2.5-0.5b": _qwen(896, 24, 14, 2, 4864),
    "qwen2.5-1.5b": _qwen(1536, 28, 12, 2, 8960),
    "qwen2.5-3b": _qwen(2048, 36, 16, 2, 11008),
    "qwen2.5-7b": _qwen(3584, 28, 28, 4, 18944, vocab=152064, tied=False),
    "qwen2.5-14b": _qwen(5120, 48, 40, 8, 13824, vocab=152064, tied=False, eps=1e-5),
    "qwen2.5-32b": _qwen(5120, 64, 40, 8, 27648, vocab=152064, tied=False, eps=1e-5),
    "gemma-2-2b": _gemma2(2304, 26, 8, 4, 9216),
    "gemma-2-9b": _gemma2(3584, 42, 16, 8, 14336),
    "gemma-2-27b": _gemma2(4608, 46, 32, 16, 36864, head_dim=128, scalar=144),
    "gemma-3-270m": _gemma3(640, 18, 4, 1, 2048, multimodal=False),
    "gemma-3-1b": _gemma3(1152, 26, 4, 1, 6912, multimodal=False),
    "gemma-3-4b": _gemma3(2560, 34, 8, 4, 10240),
    "gemma-3-12b": _gemma3(3840, 48, 16, 8, 15360),
    "gemma-3-27b": _gemma3(5376, 62, 32, 16, 21504, head_dim=128, scalar=168),
    "gpt2": _gpt2(768, 12, 12),
    "gpt2-medium": _gpt2(1024, 24, 16),
    "gpt2-large": _gpt2(1280, 36, 20),
    "gpt2-xl": _gpt2(1600, 48, 25),
    # The real checkpoints installable offline (see docs/models.md).
    "smollm2-135m": LlamaConfig(vocab_size=49152, hidden_size=576, num_layers=30,
                                num_heads=9, num_kv_heads=3, head_dim=64,
                                intermediate_size=1536, rotary_base=100000.0,
                                tie_word_embeddings=True, max_position_embeddings=8192),
    "all-minilm-l6-v2": BertConfig(),
}


@functools.lru_cache(maxsize=None)
def param_shapes(config):
  """The parameter pytree of ``config`` as ``jax.ShapeDtypeStruct`` (no memory).

  Cached per config (frozen dataclasses): tracing a 62-layer init costs seconds.
  Treat the result as read-only.
  """
  module = registry.family_of_config(config).build(config)
  tokens = jax.ShapeDtypeStruct((1, 2), jnp.int32)
  return jax.eval_shape(lambda t: module.init(jax.random.PRNGKey(0), t), tokens)["params"]


def num_params(config) -> int:
  """Parameter count of ``config`` (tied embeddings counted once)."""
  return sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(param_shapes(config)))


def table() -> str:
  """A markdown table: preset, family, layers, neurons per layer, total, parameters."""
  rows = ["| preset | family | layers | neurons / layer | neurons total | parameters |",
          "|---|---|---:|---:|---:|---:|"]
  for name, cfg in PRESETS.items():
    fam = registry.family_of_config(cfg).name
    rows.append(f"| {name} | {fam} | {cfg.num_layers} | {cfg.neurons_per_layer:,} | "
                f"{cfg.num_layers * cfg.neurons_per_layer:,} | {num_params(cfg) / 1e6:,.1f} M |")
  return "\n".join(rows)


if __name__ == "__main__":
  print(table())
