"""Qwen2 (Qwen2.5) in Flax: the Llama blocks with biases on q/k/v (not on o_proj).

Site ``layer_{i}/mlp`` is ``silu(gate_proj x) * up_proj x``. Sliding-window attention
is not implemented: a config that enables it on any layer is rejected.
"""

from __future__ import annotations

import dataclasses

from rosetta_jax.models import common, llama

Qwen2 = llama.Llama
convert_hf_tensor = llama.convert_hf_tensor


@dataclasses.dataclass(frozen=True)
class Qwen2Config(llama.LlamaConfig):
  """A ``LlamaConfig`` with Qwen2 defaults (Qwen2.5-0.5B) and q/k/v biases."""
  vocab_size: int = 151936
  hidden_size: int = 896
  num_layers: int = 24
  num_heads: int = 14
  num_kv_heads: int = 2
  head_dim: int = 64
  intermediate_size: int = 4864
  rotary_base: float = 1000000.0
  rms_norm_eps: float = 1e-6
  qkv_bias: bool = True
  tie_word_embeddings: bool = True
  max_position_embeddings: int = 32768

  FAMILY = "qwen2"
  HF_FIELDS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
               "num_key_value_heads", "intermediate_size", "rope_parameters",
               "rms_norm_eps", "hidden_act", "tie_word_embeddings", "max_position_embeddings",
               "use_sliding_window", "sliding_window", "max_window_layers", "layer_types")

  @classmethod
  def from_hf(cls, hf_config, dtype: str = "float32") -> "Qwen2Config":
    """The config of a Hugging Face ``Qwen2Config``; fields in ``HF_FIELDS``.

    Raises:
      ValueError: for sliding-window attention, rope scaling, or any other field not
        at its default.
    """
    common.check_hf_config(hf_config, cls.HF_FIELDS, cls.FAMILY)
    layer_types = getattr(hf_config, "layer_types", None) or []
    if hf_config.use_sliding_window or any(t != "full_attention" for t in layer_types):
      raise ValueError(f"qwen2: sliding-window attention is not supported "
                       f"(use_sliding_window={hf_config.use_sliding_window}, "
                       f"layer_types={sorted(set(layer_types))})")
    return cls(**cls._common_hf(hf_config, dtype), qkv_bias=True, o_bias=False,
               mlp_bias=False)
