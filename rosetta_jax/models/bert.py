"""BERT encoder (MiniLM, sentence-transformers models) in Flax.

Post-norm layers: ``x = LN(x + attn(x)); x = LN(x + output(act(intermediate x)))``.
The module returns the last hidden states in place of logits (``Model.causal`` is
False); site ``layer_{i}/mlp`` is ``act(intermediate x)``, the input of the output
dense. Token type ids are all 0 (single-segment text).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from rosetta_jax.models import common


@dataclasses.dataclass(frozen=True)
class BertConfig(common.TransformerShape):
  """Shape and behaviour of a BERT encoder (defaults: all-MiniLM-L6-v2).

  Attributes:
    vocab_size: number of token ids.
    hidden_size: width of the hidden states.
    num_layers: number of encoder layers.
    num_heads: attention heads (divide hidden_size).
    intermediate_size: MLP neurons per layer.
    max_position_embeddings: number of learned positions.
    type_vocab_size: number of token types (segment embeddings).
    layer_norm_eps: LayerNorm epsilon.
    hidden_act: MLP activation (Hugging Face name).
    dtype: computation and parameter dtype.
  """
  vocab_size: int = 30522
  hidden_size: int = 384
  num_layers: int = 6
  num_heads: int = 12
  intermediate_size: int = 1536
  max_position_embeddings: int = 512
  type_vocab_size: int = 2
  layer_norm_eps: float = 1e-12
  hidden_act: str = "gelu"
  dtype: str = "float32"

  HF_FIELDS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
               "intermediate_size", "max_position_embeddings", "type_vocab_size",
               "layer_norm_eps", "hidden_act", "position_embedding_type",
               "tie_word_embeddings")  # tied MLM head: not used by the encoder

  @classmethod
  def from_hf(cls, hf_config, dtype: str = "float32") -> "BertConfig":
    """The config of a Hugging Face ``BertConfig``; fields in ``HF_FIELDS``.

    Raises:
      ValueError: for relative position embeddings, decoder/cross-attention use, or
        any other field not at its default.
    """
    common.check_hf_config(hf_config, cls.HF_FIELDS, "bert")
    pos = getattr(hf_config, "position_embedding_type", "absolute")
    if pos != "absolute":
      raise ValueError(f"bert: position_embedding_type={pos!r} is not supported "
                       f"(only 'absolute')")
    return cls(vocab_size=hf_config.vocab_size, hidden_size=hf_config.hidden_size,
               num_layers=hf_config.num_hidden_layers,
               num_heads=hf_config.num_attention_heads,
               intermediate_size=hf_config.intermediate_size,
               max_position_embeddings=hf_config.max_position_embeddings,
               type_vocab_size=hf_config.type_vocab_size,
               layer_norm_eps=hf_config.layer_norm_eps, hidden_act=hf_config.hidden_act,
               dtype=dtype)


class Layer(nn.Module):
  config: BertConfig

  @nn.compact
  def __call__(self, x, bias):
    """Returns (new hidden states [b, s, d], neurons [b, s, intermediate])."""
    cfg = self.config
    b, s, d = x.shape
    dense = lambda n, name: common.Dense(n, dtype=cfg.dtype, name=name)
    ln = lambda name: nn.LayerNorm(epsilon=cfg.layer_norm_eps, dtype=cfg.dtype, name=name)
    heads = lambda y: y.reshape(b, s, cfg.num_heads, cfg.head_dim)
    q, k, v = (heads(dense(d, n)(x)) for n in ("query", "key", "value"))
    a = common.dot_product_attention(q, k, v, bias, cfg.head_dim ** -0.5)
    x = ln("attention_norm")(x + dense(d, "attention_output")(a.reshape(b, s, d)))
    neurons = common.activation(cfg.hidden_act)(dense(cfg.intermediate_size,
                                                       "intermediate")(x))
    return ln("output_norm")(x + dense(d, "output")(neurons)), neurons


class Bert(nn.Module):
  """BERT encoder that records named sites.

  Call: ``apply({"params": p}, tokens [b, s] int32, attention_mask [b, s] or None,
  sites=(...))`` -> ``(hidden [b, s, hidden_size] float32, {site: [b, s, width]})``.
  """
  config: BertConfig

  @nn.compact
  def __call__(self, tokens, attention_mask=None, sites: Sequence[str] = (),
               positions=None, token_types=None):
    cfg = self.config
    rec = common.Recorder(common.check_sites(sites, cfg.num_layers))
    if positions is None:
      positions = common.default_positions(tokens)
    if token_types is None:
      token_types = jnp.zeros_like(tokens)
    embed = lambda n, name: nn.Embed(n, cfg.hidden_size, dtype=cfg.dtype, name=name,
                                     embedding_init=nn.initializers.normal(0.02))
    x = (embed(cfg.vocab_size, "word_embeddings")(tokens)
         + embed(cfg.max_position_embeddings, "position_embeddings")(positions)
         + embed(cfg.type_vocab_size, "token_type_embeddings")(token_types))
    x = nn.LayerNorm(epsilon=cfg.layer_norm_eps, dtype=cfg.dtype, name="embeddings_norm")(x)
    bias = common.attention_bias(attention_mask, tokens.shape[1], causal=False)
    x = rec.run_layers(lambda i: Layer(cfg, name=f"layers_{i}"), cfg.num_layers,
                       x, bias)
    return x.astype(jnp.float32), rec.out


# ----------------------------------------------------------------------------
# Hugging Face conversion (``BertModel`` tensors, with or without ``bert.``)
# ----------------------------------------------------------------------------

HF_PREFIXES = ("bert.",)
HF_IGNORE = (r"pooler\..*", r"cls\..*", r"embeddings\.position_ids",
             r"embeddings\.token_type_ids")
_NORM = {"weight": "scale", "gamma": "scale", "bias": "bias", "beta": "bias"}
_LAYER = {"attention.self.query": "query", "attention.self.key": "key",
          "attention.self.value": "value", "attention.output.dense": "attention_output",
          "intermediate.dense": "intermediate", "output.dense": "output"}
_LAYER_NORM = {"attention.output.LayerNorm": "attention_norm",
               "output.LayerNorm": "output_norm"}


def _dense(array, m):
  path = f"layers_{m.group(1)}/{_LAYER[m.group(2)]}"
  return {f"{path}/kernel": array.T} if m.group(3) == "weight" else {f"{path}/bias": array}


def _norm(prefix_fn):
  def f(array, m):
    return {f"{prefix_fn(m)}/{_NORM[m.groups()[-1]]}": array}
  return f


HF_RULES = (
    (r"embeddings\.(word_embeddings|position_embeddings|token_type_embeddings)\.weight",
     "{0}/embedding", None),
    (r"embeddings\.LayerNorm\.(weight|bias|gamma|beta)",
     "", _norm(lambda m: "embeddings_norm")),
    (r"encoder\.layer\.(\d+)\.(attention\.self\.query|attention\.self\.key|"
     r"attention\.self\.value|attention\.output\.dense|intermediate\.dense|output\.dense)"
     r"\.(weight|bias)", "", _dense),
    (r"encoder\.layer\.(\d+)\.(attention\.output\.LayerNorm|output\.LayerNorm)"
     r"\.(weight|bias|gamma|beta)",
     "", _norm(lambda m: f"layers_{m.group(1)}/{_LAYER_NORM[m.group(2)]}")),
)


def convert_hf_tensor(config: BertConfig, name: str, array):
  """One Hugging Face tensor -> {flax path: array}; see ``common.convert_by_rules``."""
  del config
  return common.convert_by_rules(HF_RULES, HF_IGNORE, HF_PREFIXES, name, array)
