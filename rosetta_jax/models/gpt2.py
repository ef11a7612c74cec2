"""GPT-2 in Flax: learned positions, pre-LayerNorm, GELU (tanh) MLP, tied unembedding.

Site ``layer_{i}/mlp`` is ``gelu(c_fc x)``, the input of ``mlp.c_proj``. Hugging Face
stores GPT-2's projections as ``Conv1D`` (already ``[in, out]``) and fuses q/k/v in
``c_attn``; the converter splits it into ``q_proj``/``k_proj``/``v_proj`` so that
tensor parallelism can split heads.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from rosetta_jax.models import common


@dataclasses.dataclass(frozen=True)
class GPT2Config(common.TransformerShape):
  """Shape and behaviour of GPT-2 (defaults: GPT-2 small).

  Attributes:
    vocab_size: number of token ids.
    hidden_size: width of the residual stream (``n_embd``).
    num_layers: layers (``n_layer``).
    num_heads: attention heads (``n_head``).
    intermediate_size: MLP neurons per layer (``n_inner``, default 4 * n_embd).
    max_position_embeddings: learned positions (``n_positions``).
    layer_norm_eps: LayerNorm epsilon.
    hidden_act: MLP activation (Hugging Face name).
    scale_attn_weights: divide attention logits by sqrt(head_dim).
    dtype: computation and parameter dtype.
  """
  vocab_size: int = 50257
  hidden_size: int = 768
  num_layers: int = 12
  num_heads: int = 12
  intermediate_size: int = 3072
  max_position_embeddings: int = 1024
  layer_norm_eps: float = 1e-5
  hidden_act: str = "gelu_new"
  scale_attn_weights: bool = True
  dtype: str = "float32"

  # reorder_and_upcast_attn only changes the order of float16 operations.
  HF_FIELDS = ("vocab_size", "n_embd", "n_layer", "n_head", "n_inner", "n_positions",
               "layer_norm_epsilon", "activation_function", "scale_attn_weights",
               "reorder_and_upcast_attn", "tie_word_embeddings")

  @classmethod
  def from_hf(cls, hf_config, dtype: str = "float32") -> "GPT2Config":
    """The config of a Hugging Face ``GPT2Config``; fields in ``HF_FIELDS``.

    Raises:
      ValueError: for untied embeddings, per-layer attention scaling, cross
        attention, or any other field not at its default.
    """
    common.check_hf_config(hf_config, cls.HF_FIELDS, "gpt2")
    if not hf_config.tie_word_embeddings:
      raise ValueError("gpt2: tie_word_embeddings=False is not supported")
    d = hf_config.n_embd
    return cls(vocab_size=hf_config.vocab_size, hidden_size=d,
               num_layers=hf_config.n_layer, num_heads=hf_config.n_head,
               intermediate_size=hf_config.n_inner or 4 * d,
               max_position_embeddings=hf_config.n_positions,
               layer_norm_eps=hf_config.layer_norm_epsilon,
               hidden_act=hf_config.activation_function,
               scale_attn_weights=hf_config.scale_attn_weights, dtype=dtype)


class Attention(nn.Module):
  config: GPT2Config

  @nn.compact
  def __call__(self, x, bias):
    cfg = self.config
    b, s, d = x.shape
    dense = lambda name: common.Dense(d, dtype=cfg.dtype, name=name)
    heads = lambda y: y.reshape(b, s, cfg.num_heads, cfg.head_dim)
    q, k, v = (heads(dense(n)(x)) for n in ("q_proj", "k_proj", "v_proj"))
    scale = cfg.head_dim ** -0.5 if cfg.scale_attn_weights else 1.0
    out = common.dot_product_attention(q, k, v, bias, scale)
    return dense("c_proj")(out.reshape(b, s, d))


class MLP(nn.Module):
  config: GPT2Config

  @nn.compact
  def __call__(self, x):
    """Returns (output [b, s, hidden], neurons [b, s, intermediate])."""
    cfg = self.config
    neurons = common.activation(cfg.hidden_act)(
        common.Dense(cfg.intermediate_size, dtype=cfg.dtype, name="c_fc")(x))
    return common.Dense(cfg.hidden_size, dtype=cfg.dtype, name="c_proj")(neurons), neurons


class Block(nn.Module):
  config: GPT2Config

  @nn.compact
  def __call__(self, x, bias):
    cfg = self.config
    ln = lambda name: nn.LayerNorm(epsilon=cfg.layer_norm_eps, dtype=cfg.dtype, name=name)
    x = x + Attention(cfg, name="attn")(ln("ln_1")(x), bias)
    m, neurons = MLP(cfg, name="mlp")(ln("ln_2")(x))
    return x + m, neurons


class GPT2(nn.Module):
  """GPT-2 causal LM that records named sites.

  Call: ``apply({"params": p}, tokens [b, s] int32, attention_mask [b, s] or None,
  sites=(...))`` -> ``(logits [b, s, vocab] float32, {site: [b, s, width]})``.
  """
  config: GPT2Config

  @nn.compact
  def __call__(self, tokens, attention_mask=None, sites: Sequence[str] = (),
               positions=None):
    cfg = self.config
    rec = common.Recorder(common.check_sites(sites, cfg.num_layers))
    if positions is None:
      positions = common.default_positions(tokens)
    wte = nn.Embed(cfg.vocab_size, cfg.hidden_size, dtype=cfg.dtype,
                   embedding_init=nn.initializers.normal(0.02), name="wte")
    x = wte(tokens) + nn.Embed(cfg.max_position_embeddings, cfg.hidden_size,
                               dtype=cfg.dtype, embedding_init=nn.initializers.normal(0.01),
                               name="wpe")(positions)
    bias = common.attention_bias(attention_mask, tokens.shape[1], causal=True)
    x = rec.run_layers(lambda i: Block(cfg, name=f"h_{i}"), cfg.num_layers,
                       x, bias)
    x = nn.LayerNorm(epsilon=cfg.layer_norm_eps, dtype=cfg.dtype, name="ln_f")(x)
    return common.unembed(x, wte.embedding).astype(jnp.float32), rec.out


# ----------------------------------------------------------------------------
# Hugging Face conversion (``GPT2LMHeadModel`` / ``GPT2Model`` tensors)
# ----------------------------------------------------------------------------

HF_PREFIXES = ("transformer.",)
HF_IGNORE = (r"lm_head\.weight", r"h\.\d+\.attn\.(bias|masked_bias)")


def _split_qkv(array, m):
  """c_attn [d, 3d] (weight) or [3d] (bias) -> q_proj, k_proj, v_proj."""
  layer, kind = m.group(1), m.group(2)
  parts = _np_split3(array)
  leaf = "kernel" if kind == "weight" else "bias"
  return {f"h_{layer}/attn/{n}/{leaf}": p
          for n, p in zip(("q_proj", "k_proj", "v_proj"), parts)}


def _np_split3(array):
  n = array.shape[-1] // 3
  return [array[..., i * n:(i + 1) * n] for i in range(3)]


HF_RULES = (
    (r"(wte|wpe)\.weight", "{0}/embedding", None),
    (r"(ln_f)\.weight", "{0}/scale", None),
    (r"(ln_f)\.bias", "{0}/bias", None),
    (r"h\.(\d+)\.attn\.c_attn\.(weight|bias)", "", _split_qkv),
    (r"h\.(\d+)\.(ln_1|ln_2)\.weight", "h_{0}/{1}/scale", None),
    (r"h\.(\d+)\.(ln_1|ln_2)\.bias", "h_{0}/{1}/bias", None),
    # Conv1D weights are already [in, out]: no transpose.
    (r"h\.(\d+)\.(attn|mlp)\.(c_proj|c_fc)\.weight", "h_{0}/{1}/{2}/kernel", None),
    (r"h\.(\d+)\.(attn|mlp)\.(c_proj|c_fc)\.bias", "h_{0}/{1}/{2}/bias", None),
)


def convert_hf_tensor(config: GPT2Config, name: str, array):
  """One Hugging Face tensor -> {flax path: array}; see ``common.convert_by_rules``."""
  del config
  return common.convert_by_rules(HF_RULES, HF_IGNORE, HF_PREFIXES, name, array)
