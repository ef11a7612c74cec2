"""OPT in Flax: learned positions (offset 2), ReLU MLP, pre- or post-LayerNorm.

Site ``layer_{i}/mlp`` is ``relu(fc1 x)``, the input of ``fc2``. As in Hugging Face,
positions count real tokens only (``cumsum(mask) - 1``), so left padding is exact.
OPT-350m's projections (``word_embed_proj_dim != hidden_size``) and post-norm layers
(``do_layer_norm_before=False``) are supported.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from rosetta_jax.models import common

POSITION_OFFSET = 2  # OPT's learned positions start at row 2


@dataclasses.dataclass(frozen=True)
class OPTConfig(common.TransformerShape):
  """Shape and behaviour of an OPT decoder (defaults: OPT-125m).

  Attributes:
    vocab_size: number of token ids.
    hidden_size: width of the residual stream.
    num_layers: decoder layers.
    num_heads: attention heads (divide hidden_size).
    intermediate_size: MLP neurons per layer (``ffn_dim``).
    max_position_embeddings: learned positions (the table has 2 more rows).
    word_embed_proj_dim: width of the token embedding (projected in and out when
      it differs from hidden_size).
    do_layer_norm_before: pre-norm (True) or post-norm (OPT-350m) layers.
    final_layer_norm: a LayerNorm after the last layer (pre-norm models).
    enable_bias: biases on every projection.
    layer_norm_affine: LayerNorms with scale and bias.
    hidden_act: MLP activation (Hugging Face name).
    tie_word_embeddings: logits through the transposed token embedding.
    dtype: computation and parameter dtype.
  """
  vocab_size: int = 50272
  hidden_size: int = 768
  num_layers: int = 12
  num_heads: int = 12
  intermediate_size: int = 3072
  max_position_embeddings: int = 2048
  word_embed_proj_dim: int = 768
  do_layer_norm_before: bool = True
  final_layer_norm: bool = True
  enable_bias: bool = True
  layer_norm_affine: bool = True
  hidden_act: str = "relu"
  tie_word_embeddings: bool = True
  dtype: str = "float32"

  HF_FIELDS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
               "ffn_dim", "max_position_embeddings", "word_embed_proj_dim",
               "do_layer_norm_before", "_remove_final_layer_norm", "enable_bias",
               "layer_norm_elementwise_affine", "activation_function",
               "tie_word_embeddings")

  @classmethod
  def from_hf(cls, hf_config, dtype: str = "float32") -> "OPTConfig":
    """The config of a Hugging Face ``OPTConfig``; fields in ``HF_FIELDS``.

    Raises:
      ValueError: for any other field not at its default.
    """
    common.check_hf_config(hf_config, cls.HF_FIELDS, "opt")
    pre = bool(hf_config.do_layer_norm_before)
    return cls(vocab_size=hf_config.vocab_size, hidden_size=hf_config.hidden_size,
               num_layers=hf_config.num_hidden_layers,
               num_heads=hf_config.num_attention_heads,
               intermediate_size=hf_config.ffn_dim,
               max_position_embeddings=hf_config.max_position_embeddings,
               word_embed_proj_dim=hf_config.word_embed_proj_dim,
               do_layer_norm_before=pre,
               final_layer_norm=pre and not hf_config._remove_final_layer_norm,
               enable_bias=hf_config.enable_bias,
               layer_norm_affine=hf_config.layer_norm_elementwise_affine,
               hidden_act=hf_config.activation_function,
               tie_word_embeddings=bool(hf_config.tie_word_embeddings), dtype=dtype)


def _ln(cfg: OPTConfig, name: str) -> nn.LayerNorm:
  return nn.LayerNorm(epsilon=1e-5, use_scale=cfg.layer_norm_affine,
                      use_bias=cfg.layer_norm_affine, dtype=cfg.dtype, name=name)


class Attention(nn.Module):
  config: OPTConfig

  @nn.compact
  def __call__(self, x, bias):
    cfg = self.config
    b, s, d = x.shape
    dense = lambda name: common.Dense(d, use_bias=cfg.enable_bias, dtype=cfg.dtype, name=name)
    heads = lambda y: y.reshape(b, s, cfg.num_heads, cfg.head_dim)
    q, k, v = (heads(dense(n)(x)) for n in ("q_proj", "k_proj", "v_proj"))
    out = common.dot_product_attention(q, k, v, bias, cfg.head_dim ** -0.5)
    return dense("out_proj")(out.reshape(b, s, d))


class Layer(nn.Module):
  config: OPTConfig

  @nn.compact
  def __call__(self, x, bias):
    """Returns (new residual [b, s, d], neurons [b, s, intermediate])."""
    cfg = self.config
    pre = cfg.do_layer_norm_before
    attn_ln, mlp_ln = _ln(cfg, "self_attn_layer_norm"), _ln(cfg, "final_layer_norm")
    a = Attention(cfg, name="self_attn")(attn_ln(x) if pre else x, bias)
    x = x + a if pre else attn_ln(x + a)
    h = mlp_ln(x) if pre else x
    neurons = common.activation(cfg.hidden_act)(
        common.Dense(cfg.intermediate_size, use_bias=cfg.enable_bias, dtype=cfg.dtype,
                     name="fc1")(h))
    m = common.Dense(cfg.hidden_size, use_bias=cfg.enable_bias, dtype=cfg.dtype,
                     name="fc2")(neurons)
    return (x + m if pre else mlp_ln(x + m)), neurons


def mask_positions(tokens, attention_mask):
  """OPT's positions: ``cumsum(mask) * mask - 1`` (pads get -1), or 0..s-1 unmasked."""
  if attention_mask is None:
    return common.default_positions(tokens)
  m = attention_mask.astype(jnp.int32)
  return jnp.cumsum(m, axis=1) * m - 1


class OPT(nn.Module):
  """OPT causal LM that records named sites.

  Call: ``apply({"params": p}, tokens [b, s] int32, attention_mask [b, s] or None,
  sites=(...))`` -> ``(logits [b, s, vocab] float32, {site: [b, s, width]})``.
  """
  config: OPTConfig

  @nn.compact
  def __call__(self, tokens, attention_mask=None, sites: Sequence[str] = (),
               positions=None):
    cfg = self.config
    rec = common.Recorder(common.check_sites(sites, cfg.num_layers))
    if positions is None:
      positions = mask_positions(tokens, attention_mask)
    embed = nn.Embed(cfg.vocab_size, cfg.word_embed_proj_dim, dtype=cfg.dtype,
                     embedding_init=nn.initializers.normal(0.02), name="embed_tokens")
    x = embed(tokens)
    projected = cfg.word_embed_proj_dim != cfg.hidden_size
    if projected:
      x = common.Dense(cfg.hidden_size, use_bias=False, dtype=cfg.dtype, name="project_in")(x)
    x = x + nn.Embed(cfg.max_position_embeddings + POSITION_OFFSET, cfg.hidden_size,
                     dtype=cfg.dtype, embedding_init=nn.initializers.normal(0.02),
                     name="embed_positions")(positions + POSITION_OFFSET)
    bias = common.attention_bias(attention_mask, tokens.shape[1], causal=True)
    x = rec.run_layers(lambda i: Layer(cfg, name=f"layers_{i}"), cfg.num_layers,
                       x, bias)
    if cfg.final_layer_norm:
      x = _ln(cfg, "final_layer_norm")(x)
    if projected:
      x = common.Dense(cfg.word_embed_proj_dim, use_bias=False, dtype=cfg.dtype,
                       name="project_out")(x)
    if cfg.tie_word_embeddings:
      logits = common.unembed(x, embed.embedding)
    else:
      logits = common.Dense(cfg.vocab_size, use_bias=False, dtype=cfg.dtype,
                            name="lm_head")(x)
    return logits.astype(jnp.float32), rec.out


# ----------------------------------------------------------------------------
# Hugging Face conversion (``OPTForCausalLM`` / ``OPTModel`` tensors)
# ----------------------------------------------------------------------------

HF_PREFIXES = ("model.decoder.", "decoder.")
HF_IGNORE = ()
HF_RULES = (
    (r"(embed_tokens|embed_positions)\.weight", "{0}/embedding", None),
    (r"(project_in|project_out|lm_head)\.weight", "{0}/kernel", "T"),
    (r"final_layer_norm\.weight", "final_layer_norm/scale", None),
    (r"final_layer_norm\.bias", "final_layer_norm/bias", None),
    (r"layers\.(\d+)\.(self_attn_layer_norm|final_layer_norm)\.weight",
     "layers_{0}/{1}/scale", None),
    (r"layers\.(\d+)\.(self_attn_layer_norm|final_layer_norm)\.bias",
     "layers_{0}/{1}/bias", None),
    (r"layers\.(\d+)\.self_attn\.(\w+)\.weight", "layers_{0}/self_attn/{1}/kernel", "T"),
    (r"layers\.(\d+)\.self_attn\.(\w+)\.bias", "layers_{0}/self_attn/{1}/bias", None),
    (r"layers\.(\d+)\.(fc1|fc2)\.weight", "layers_{0}/{1}/kernel", "T"),
    (r"layers\.(\d+)\.(fc1|fc2)\.bias", "layers_{0}/{1}/bias", None),
)


def convert_hf_tensor(config: OPTConfig, name: str, array):
  """One Hugging Face tensor -> {flax path: array}; see ``common.convert_by_rules``."""
  if config.tie_word_embeddings and name == "lm_head.weight":
    return {}
  return common.convert_by_rules(HF_RULES, HF_IGNORE, HF_PREFIXES, name, array)
