"""Llama (SmolLM2 and similar) in Flax: RMSNorm, rotary, grouped-query attention,
gated SiLU MLP. Qwen2 (``qwen2.py``) reuses these blocks with q/k/v biases.

Site ``layer_{i}/mlp`` is ``act(gate_proj x) * up_proj x``, the input of
``down_proj``. Parameter names follow Hugging Face's ``LlamaForCausalLM``.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from rosetta_jax.models import common


@dataclasses.dataclass(frozen=True)
class LlamaConfig(common.TransformerShape):
  """Shape and behaviour of a Llama-style decoder.

  Attributes:
    vocab_size: number of token ids.
    hidden_size: width of the residual stream.
    num_layers: number of decoder layers.
    num_heads: query heads.
    num_kv_heads: key/value heads (grouped-query attention; divides num_heads).
    head_dim: width of a head (Llama allows hidden_size != num_heads * head_dim).
    intermediate_size: MLP neurons per layer.
    rotary_base: ``rope_theta``.
    rotary_pct: fraction of each head's dims that rotate.
    rms_norm_eps: RMSNorm epsilon.
    qkv_bias: biases on the q/k/v projections (Qwen2: True).
    o_bias: bias on the attention output projection.
    mlp_bias: biases on gate/up/down.
    hidden_act: MLP activation (Hugging Face name).
    tie_word_embeddings: logits through the transposed input embedding.
    max_position_embeddings: longest trained sequence.
    dtype: computation and parameter dtype.
  """
  vocab_size: int = 32000
  hidden_size: int = 576
  num_layers: int = 30
  num_heads: int = 9
  num_kv_heads: int = 3
  head_dim: int = 64
  intermediate_size: int = 1536
  rotary_base: float = 10000.0
  rotary_pct: float = 1.0
  rms_norm_eps: float = 1e-5
  qkv_bias: bool = False
  o_bias: bool = False
  mlp_bias: bool = False
  hidden_act: str = "silu"
  tie_word_embeddings: bool = False
  max_position_embeddings: int = 2048
  dtype: str = "float32"

  FAMILY = "llama"
  HF_FIELDS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
               "num_key_value_heads", "head_dim", "intermediate_size", "rope_parameters",
               "rms_norm_eps", "attention_bias", "mlp_bias", "hidden_act",
               "tie_word_embeddings", "max_position_embeddings", "pretraining_tp")

  def __post_init__(self):
    if self.num_heads % self.num_kv_heads:
      raise ValueError(f"num_heads={self.num_heads} is not a multiple of "
                       f"num_kv_heads={self.num_kv_heads}")

  @classmethod
  def _common_hf(cls, hf_config, dtype: str) -> dict:
    theta, pct = common.rope_from_hf(hf_config, cls.FAMILY)
    heads = hf_config.num_attention_heads
    kv = getattr(hf_config, "num_key_value_heads", None) or heads
    head_dim = getattr(hf_config, "head_dim", None) or hf_config.hidden_size // heads
    return dict(vocab_size=hf_config.vocab_size, hidden_size=hf_config.hidden_size,
                num_layers=hf_config.num_hidden_layers, num_heads=heads, num_kv_heads=kv,
                head_dim=head_dim, intermediate_size=hf_config.intermediate_size,
                rotary_base=theta, rotary_pct=pct, rms_norm_eps=hf_config.rms_norm_eps,
                hidden_act=hf_config.hidden_act,
                tie_word_embeddings=bool(hf_config.tie_word_embeddings),
                max_position_embeddings=hf_config.max_position_embeddings, dtype=dtype)

  @classmethod
  def from_hf(cls, hf_config, dtype: str = "float32") -> "LlamaConfig":
    """The config of a Hugging Face ``LlamaConfig``; fields in ``HF_FIELDS``.

    Raises:
      ValueError: for any other field not at its default (e.g. rope scaling).
    """
    common.check_hf_config(hf_config, cls.HF_FIELDS, cls.FAMILY)
    return cls(**cls._common_hf(hf_config, dtype), qkv_bias=hf_config.attention_bias,
               o_bias=hf_config.attention_bias, mlp_bias=hf_config.mlp_bias)


class Attention(nn.Module):
  config: LlamaConfig

  @nn.compact
  def __call__(self, x, bias, cos, sin):
    cfg = self.config
    b, s, _ = x.shape
    dense = lambda n, name, use_bias: common.Dense(n, use_bias=use_bias, dtype=cfg.dtype,
                                                   name=name)
    q = dense(cfg.num_heads * cfg.head_dim, "q_proj", cfg.qkv_bias)(x)
    k = dense(cfg.num_kv_heads * cfg.head_dim, "k_proj", cfg.qkv_bias)(x)
    v = dense(cfg.num_kv_heads * cfg.head_dim, "v_proj", cfg.qkv_bias)(x)
    q = common.apply_rotary(q.reshape(b, s, cfg.num_heads, cfg.head_dim), cos, sin)
    k = common.apply_rotary(k.reshape(b, s, cfg.num_kv_heads, cfg.head_dim), cos, sin)
    v = v.reshape(b, s, cfg.num_kv_heads, cfg.head_dim)
    out = common.dot_product_attention(q, k, v, bias, cfg.head_dim ** -0.5)
    return dense(cfg.hidden_size, "o_proj", cfg.o_bias)(
        out.reshape(b, s, cfg.num_heads * cfg.head_dim))


class MLP(nn.Module):
  config: LlamaConfig

  @nn.compact
  def __call__(self, x):
    """Returns (output [b, s, hidden], neurons act(gate x) * up x [b, s, intermediate])."""
    cfg = self.config
    dense = lambda n, name: common.Dense(n, use_bias=cfg.mlp_bias, dtype=cfg.dtype, name=name)
    gate = dense(cfg.intermediate_size, "gate_proj")(x)
    up = dense(cfg.intermediate_size, "up_proj")(x)
    neurons = common.activation(cfg.hidden_act)(gate) * up
    return dense(cfg.hidden_size, "down_proj")(neurons), neurons


class Layer(nn.Module):
  config: LlamaConfig

  @nn.compact
  def __call__(self, x, bias, cos, sin):
    cfg = self.config
    norm = lambda name: common.RMSNorm(cfg.rms_norm_eps, cfg.dtype, name=name)
    x = x + Attention(cfg, name="self_attn")(norm("input_layernorm")(x), bias, cos, sin)
    m, neurons = MLP(cfg, name="mlp")(norm("post_attention_layernorm")(x))
    return x + m, neurons


class Llama(nn.Module):
  """Llama-style causal LM that records named sites.

  Call: ``apply({"params": p}, tokens [b, s] int32, attention_mask [b, s] or None,
  sites=(...))`` -> ``(logits [b, s, vocab] float32, {site: [b, s, width]})``.
  """
  config: LlamaConfig

  @nn.compact
  def __call__(self, tokens, attention_mask=None, sites: Sequence[str] = (),
               positions=None):
    cfg = self.config
    rec = common.Recorder(common.check_sites(sites, cfg.num_layers))
    if positions is None:
      positions = common.default_positions(tokens)
    embed = nn.Embed(cfg.vocab_size, cfg.hidden_size, dtype=cfg.dtype,
                     embedding_init=nn.initializers.normal(0.02), name="embed_tokens")
    x = embed(tokens)
    bias = common.attention_bias(attention_mask, tokens.shape[1], causal=True)
    rot = int(cfg.head_dim * cfg.rotary_pct)
    cos, sin = common.rotary_tables(positions, rot, cfg.rotary_base)
    x = rec.run_layers(lambda i: Layer(cfg, name=f"layers_{i}"), cfg.num_layers,
                       x, bias, cos, sin)
    x = common.RMSNorm(cfg.rms_norm_eps, cfg.dtype, name="norm")(x)
    if cfg.tie_word_embeddings:
      logits = common.unembed(x, embed.embedding)
    else:
      logits = common.Dense(cfg.vocab_size, use_bias=False, dtype=cfg.dtype,
                            name="lm_head")(x)
    return logits.astype(jnp.float32), rec.out


# ----------------------------------------------------------------------------
# Hugging Face conversion (``LlamaForCausalLM`` / ``Qwen2ForCausalLM`` tensors)
# ----------------------------------------------------------------------------

HF_PREFIXES = ("model.",)
HF_IGNORE = (r"layers\.\d+\.self_attn\.rotary_emb\.inv_freq", r"rotary_emb\.inv_freq")
HF_RULES = (
    (r"embed_tokens\.weight", "embed_tokens/embedding", None),
    (r"lm_head\.weight", "lm_head/kernel", "T"),
    (r"norm\.weight", "norm/scale", None),
    (r"layers\.(\d+)\.(input_layernorm|post_attention_layernorm)\.weight",
     "layers_{0}/{1}/scale", None),
    (r"layers\.(\d+)\.(self_attn|mlp)\.(\w+)\.weight", "layers_{0}/{1}/{2}/kernel", "T"),
    (r"layers\.(\d+)\.(self_attn|mlp)\.(\w+)\.bias", "layers_{0}/{1}/{2}/bias", None),
)


def convert_hf_tensor(config: LlamaConfig, name: str, array):
  """One Hugging Face tensor -> {flax path: array}; see ``common.convert_by_rules``."""
  if config.tie_word_embeddings and name == "lm_head.weight":
    return {}
  return common.convert_by_rules(HF_RULES, HF_IGNORE, HF_PREFIXES, name, array)
