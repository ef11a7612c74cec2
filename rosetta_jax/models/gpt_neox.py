"""GPT-NeoX (Pythia) in Flax: parallel residual, partial rotary, GELU MLP, LayerNorm.

The same module serves the embedded zoo (trained here) and the real Pythia
checkpoints (converted from Hugging Face by ``models/hf.py``). Parameter names follow
Hugging Face's ``GPTNeoXForCausalLM`` so conversion is a rename plus a transpose.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from rosetta_jax.models import common


@dataclasses.dataclass(frozen=True)
class GPTNeoXConfig(common.TransformerShape):
  """Shape and behaviour of a GPT-NeoX model.

  Attributes:
    vocab_size: number of token ids.
    hidden_size: width of the residual stream.
    num_layers: number of transformer layers.
    num_heads: attention heads (hidden_size must divide evenly).
    intermediate_size: MLP neurons per layer.
    rotary_pct: fraction of each head's dims that rotate (Pythia: 0.25).
    rotary_base: rotary base (``rope_theta``).
    max_position_embeddings: longest sequence the model was trained for.
    layer_norm_eps: LayerNorm epsilon.
    use_parallel_residual: x + attn(ln1 x) + mlp(ln2 x) (True) or sequential.
    attention_bias: biases on the qkv and output projections.
    hidden_act: MLP activation (Hugging Face name).
    tie_word_embeddings: share the input embedding with the output projection.
    dtype: computation dtype; parameters keep their own dtype.
  """
  vocab_size: int = 50304
  hidden_size: int = 512
  num_layers: int = 6
  num_heads: int = 8
  intermediate_size: int = 2048
  rotary_pct: float = 0.25
  rotary_base: float = 10000.0
  max_position_embeddings: int = 2048
  layer_norm_eps: float = 1e-5
  use_parallel_residual: bool = True
  attention_bias: bool = True
  hidden_act: str = "gelu"
  tie_word_embeddings: bool = False
  dtype: str = "float32"

  HF_FIELDS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
               "intermediate_size", "hidden_act", "max_position_embeddings",
               "layer_norm_eps", "tie_word_embeddings", "use_parallel_residual",
               "rope_parameters", "rotary_pct", "rotary_emb_base", "attention_bias")

  @classmethod
  def from_hf(cls, hf_config, dtype: str = "float32") -> "GPTNeoXConfig":
    """The config of a Hugging Face ``GPTNeoXConfig``; fields in ``HF_FIELDS``.

    Raises:
      ValueError: for any other field that is not at its Hugging Face default.
    """
    common.check_hf_config(hf_config, cls.HF_FIELDS, "gpt_neox")
    theta, pct = common.rope_from_hf(hf_config, "gpt_neox")
    return cls(vocab_size=hf_config.vocab_size, hidden_size=hf_config.hidden_size,
               num_layers=hf_config.num_hidden_layers,
               num_heads=hf_config.num_attention_heads,
               intermediate_size=hf_config.intermediate_size, rotary_pct=pct,
               rotary_base=theta, max_position_embeddings=hf_config.max_position_embeddings,
               layer_norm_eps=hf_config.layer_norm_eps,
               use_parallel_residual=hf_config.use_parallel_residual,
               attention_bias=hf_config.attention_bias, hidden_act=hf_config.hidden_act,
               tie_word_embeddings=hf_config.tie_word_embeddings, dtype=dtype)


class Attention(nn.Module):
  config: GPTNeoXConfig

  @nn.compact
  def __call__(self, x, bias, cos, sin):
    cfg = self.config
    b, s, _ = x.shape
    qkv = common.Dense(3 * cfg.hidden_size, use_bias=cfg.attention_bias,
                       dtype=cfg.dtype, name="query_key_value")(x)
    # Hugging Face lays qkv out per head: [heads, 3 * head_dim].
    qkv = qkv.reshape(b, s, cfg.num_heads, 3 * cfg.head_dim)
    q, k, v = jnp.split(qkv, 3, axis=-1)
    q = common.apply_rotary(q, cos, sin)
    k = common.apply_rotary(k, cos, sin)
    out = common.dot_product_attention(q, k, v, bias, cfg.head_dim ** -0.5)
    return common.Dense(cfg.hidden_size, use_bias=cfg.attention_bias, dtype=cfg.dtype,
                        name="dense")(out.reshape(b, s, cfg.hidden_size))


class MLP(nn.Module):
  config: GPTNeoXConfig

  @nn.compact
  def __call__(self, x):
    """Returns (output [b, s, hidden], neurons [b, s, intermediate])."""
    cfg = self.config
    h = common.Dense(cfg.intermediate_size, dtype=cfg.dtype, name="dense_h_to_4h")(x)
    neurons = common.activation(cfg.hidden_act)(h)
    out = common.Dense(cfg.hidden_size, dtype=cfg.dtype, name="dense_4h_to_h")(neurons)
    return out, neurons


class Layer(nn.Module):
  config: GPTNeoXConfig

  @nn.compact
  def __call__(self, x, bias, cos, sin):
    cfg = self.config
    ln = lambda name: nn.LayerNorm(epsilon=cfg.layer_norm_eps, dtype=cfg.dtype, name=name)
    attn = Attention(cfg, name="attention")
    mlp = MLP(cfg, name="mlp")
    if cfg.use_parallel_residual:
      a = attn(ln("input_layernorm")(x), bias, cos, sin)
      m, neurons = mlp(ln("post_attention_layernorm")(x))
      return x + a + m, neurons
    x = x + attn(ln("input_layernorm")(x), bias, cos, sin)
    m, neurons = mlp(ln("post_attention_layernorm")(x))
    return x + m, neurons


class GPTNeoX(nn.Module):
  """GPT-NeoX causal language model that records named sites.

  Call: ``apply({"params": p}, tokens [b, s] int32, attention_mask [b, s] or None,
  sites=("layer_0/mlp", ...))`` -> ``(logits [b, s, vocab] float32,
  {site: [b, s, intermediate_size or hidden_size]})``.
  """
  config: GPTNeoXConfig

  @nn.compact
  def __call__(self, tokens, attention_mask=None, sites: Sequence[str] = (),
               positions=None):
    cfg = self.config
    sites = common.check_sites(sites, cfg.num_layers)
    rec = common.Recorder(sites)
    if positions is None:
      positions = common.default_positions(tokens)
    x = nn.Embed(cfg.vocab_size, cfg.hidden_size, dtype=cfg.dtype,
                 embedding_init=nn.initializers.normal(0.02), name="embed_in")(tokens)
    bias = common.attention_bias(attention_mask, tokens.shape[1], causal=True)
    rot = int(cfg.head_dim * cfg.rotary_pct)
    cos, sin = common.rotary_tables(positions, rot, cfg.rotary_base)
    x = rec.run_layers(lambda i: Layer(cfg, name=f"layers_{i}"), cfg.num_layers,
                       x, bias, cos, sin)
    x = nn.LayerNorm(epsilon=cfg.layer_norm_eps, dtype=cfg.dtype, name="final_layer_norm")(x)
    if cfg.tie_word_embeddings:
      emb = self.variables["params"]["embed_in"]["embedding"]
      logits = x @ emb.T.astype(x.dtype)
    else:
      logits = common.Dense(cfg.vocab_size, use_bias=False, dtype=cfg.dtype,
                            name="embed_out")(x)
    return logits.astype(jnp.float32), rec.out


# ----------------------------------------------------------------------------
# Hugging Face conversion (``GPTNeoXForCausalLM`` / ``GPTNeoXModel`` tensors)
# ----------------------------------------------------------------------------

HF_PREFIXES = ("gpt_neox.",)
HF_IGNORE = (r"layers\.\d+\.attention\.(rotary_emb\.inv_freq|bias|masked_bias)",
             r"rotary_emb\.inv_freq")
HF_RULES = (
    (r"embed_in\.weight", "embed_in/embedding", None),
    (r"(?:embed_out|lm_head)\.weight", "embed_out/kernel", "T"),
    (r"final_layer_norm\.weight", "final_layer_norm/scale", None),
    (r"final_layer_norm\.bias", "final_layer_norm/bias", None),
    (r"layers\.(\d+)\.(input_layernorm|post_attention_layernorm)\.weight",
     "layers_{0}/{1}/scale", None),
    (r"layers\.(\d+)\.(input_layernorm|post_attention_layernorm)\.bias",
     "layers_{0}/{1}/bias", None),
    (r"layers\.(\d+)\.(attention|mlp)\.(\w+)\.weight", "layers_{0}/{1}/{2}/kernel", "T"),
    (r"layers\.(\d+)\.(attention|mlp)\.(\w+)\.bias", "layers_{0}/{1}/{2}/bias", None),
)


def convert_hf_tensor(config: GPTNeoXConfig, name: str, array):
  """One Hugging Face tensor -> {flax path: array}; see ``common.convert_by_rules``."""
  if config.tie_word_embeddings and name.split(".")[0] in ("lm_head", "embed_out"):
    return {}
  return common.convert_by_rules(HF_RULES, HF_IGNORE, HF_PREFIXES, name, array)
