"""Gemma 2 and Gemma 3 text decoders in Flax, as Hugging Face defines them.

Both are Llama-like decoders with Gemma's own pieces:

* RMSNorm scaled by ``(1 + w)`` (the weight is stored as an offset from 1), in
  float32; four norms per layer (before and after attention and MLP);
* GeGLU MLP: ``gelu_tanh(gate_proj x) * up_proj x`` (reusing ``llama.MLP``);
* embeddings multiplied by ``sqrt(hidden_size)`` (cast to the model dtype first);
  logits through the tied embedding;
* local sliding-window and global attention layers (``layer_types``): Gemma 2
  alternates them, Gemma 3 has five local layers per global one;
* attention scaled by ``query_pre_attn_scalar ** -0.5`` (not always head_dim);
* Gemma 2: attention and final-logit soft-capping ``c * tanh(x / c)``;
* Gemma 3: RMSNorms on queries and keys, and two rotary bases (``rope_theta`` for
  global layers, with optional linear scaling; ``rope_local_base_freq`` for local).

Site ``layer_{i}/mlp`` is ``gelu_tanh(gate_proj x) * up_proj x``, the input of
``down_proj``. Parameter names follow ``Gemma2ForCausalLM`` / ``Gemma3ForCausalLM``;
``Gemma3ForConditionalGeneration`` checkpoints (4B and up) load their text decoder.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from rosetta_jax.models import common, llama

SLIDING, FULL = "sliding_attention", "full_attention"


@dataclasses.dataclass(frozen=True)
class Gemma2Config(common.TransformerShape):
  """Shape and behaviour of a Gemma 2 decoder (defaults: gemma-2-2b).

  Attributes:
    vocab_size: number of token ids.
    hidden_size: width of the residual stream.
    num_layers: number of decoder layers.
    num_heads: query heads.
    num_kv_heads: key/value heads (divides num_heads).
    head_dim: width of a head (hidden_size need not be num_heads * head_dim).
    intermediate_size: MLP neurons per layer.
    hidden_act: MLP activation (Hugging Face ``hidden_activation``).
    rms_norm_eps: RMSNorm epsilon.
    query_pre_attn_scalar: attention logits are scaled by its inverse square root.
    sliding_window: keys a local layer's query sees (itself included).
    layer_types: per layer, ``"sliding_attention"`` or ``"full_attention"``.
    rotary_base: ``rope_theta`` of the global layers.
    rotary_linear_factor: linear rope scaling of the global layers (1 = none).
    local_rotary_base: rotary base of the local layers.
    local_rotary_linear_factor: linear rope scaling of the local layers.
    attn_logit_softcapping: attention soft-cap (None = none).
    final_logit_softcapping: logit soft-cap (None = none).
    qk_norm: RMSNorm on queries and keys (Gemma 3).
    attention_bias: biases on q/k/v/o.
    tie_word_embeddings: logits through the transposed input embedding.
    max_position_embeddings: longest trained sequence.
    dtype: computation and parameter dtype.
  """
  vocab_size: int = 256000
  hidden_size: int = 2304
  num_layers: int = 26
  num_heads: int = 8
  num_kv_heads: int = 4
  head_dim: int = 256
  intermediate_size: int = 9216
  hidden_act: str = "gelu_pytorch_tanh"
  rms_norm_eps: float = 1e-6
  query_pre_attn_scalar: float = 256.0
  sliding_window: int = 4096
  layer_types: tuple[str, ...] = ()
  rotary_base: float = 10000.0
  rotary_linear_factor: float = 1.0
  local_rotary_base: float = 10000.0
  local_rotary_linear_factor: float = 1.0
  attn_logit_softcapping: float | None = 50.0
  final_logit_softcapping: float | None = 30.0
  qk_norm: bool = False
  attention_bias: bool = False
  tie_word_embeddings: bool = True
  max_position_embeddings: int = 8192
  dtype: str = "float32"

  mlp_bias = False  # read by llama.MLP
  FAMILY = "gemma2"
  SLIDING_WINDOW_PATTERN = 2  # default layer_types: every 2nd layer global
  # Fields that do not change the forward pass: ``hidden_act`` is Gemma 1's name,
  # which Hugging Face's Gemma 2/3 ignore (they read ``hidden_activation``);
  # ``cache_implementation`` is a generation setting.
  HF_IGNORED = ("hidden_act", "cache_implementation")
  HF_FIELDS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
               "num_key_value_heads", "head_dim", "intermediate_size", "hidden_activation",
               "rms_norm_eps", "query_pre_attn_scalar", "sliding_window", "layer_types",
               "rope_parameters", "attn_logit_softcapping", "final_logit_softcapping",
               "attention_bias", "tie_word_embeddings", "max_position_embeddings")

  def __post_init__(self):
    if self.num_heads % self.num_kv_heads:
      raise ValueError(f"num_heads={self.num_heads} is not a multiple of "
                       f"num_kv_heads={self.num_kv_heads}")
    if not self.layer_types:
      p = self.SLIDING_WINDOW_PATTERN
      object.__setattr__(self, "layer_types", tuple(
          SLIDING if (i + 1) % p else FULL for i in range(self.num_layers)))
    object.__setattr__(self, "layer_types", tuple(self.layer_types))
    if len(self.layer_types) != self.num_layers or set(self.layer_types) - {SLIDING, FULL}:
      raise ValueError(f"{self.FAMILY}: layer_types must list {SLIDING!r} or {FULL!r} for "
                       f"each of the {self.num_layers} layers, got {self.layer_types}")

  @classmethod
  def _common_hf(cls, hf_config, dtype: str) -> dict:
    heads = hf_config.num_attention_heads
    return dict(
        vocab_size=hf_config.vocab_size, hidden_size=hf_config.hidden_size,
        num_layers=hf_config.num_hidden_layers, num_heads=heads,
        num_kv_heads=hf_config.num_key_value_heads or heads,
        head_dim=hf_config.head_dim or hf_config.hidden_size // heads,
        intermediate_size=hf_config.intermediate_size,
        hidden_act=hf_config.hidden_activation, rms_norm_eps=hf_config.rms_norm_eps,
        query_pre_attn_scalar=float(hf_config.query_pre_attn_scalar),
        sliding_window=hf_config.sliding_window,
        layer_types=tuple(hf_config.layer_types),
        final_logit_softcapping=hf_config.final_logit_softcapping,
        attention_bias=bool(hf_config.attention_bias),
        tie_word_embeddings=bool(hf_config.tie_word_embeddings),
        max_position_embeddings=hf_config.max_position_embeddings, dtype=dtype)

  @classmethod
  def from_hf(cls, hf_config, dtype: str = "float32") -> "Gemma2Config":
    """The config of a Hugging Face ``Gemma2Config``; fields in ``HF_FIELDS``.

    Raises:
      ValueError: for rope scaling, bidirectional attention, or any other field not
        at its default.
    """
    common.check_hf_config(hf_config, cls.HF_FIELDS + cls.HF_IGNORED, cls.FAMILY)
    theta, pct = common.rope_from_hf(hf_config, cls.FAMILY)
    if pct != 1.0:
      raise ValueError(f"{cls.FAMILY}: partial_rotary_factor={pct} is not supported")
    return cls(**cls._common_hf(hf_config, dtype), rotary_base=theta,
               local_rotary_base=theta,
               attn_logit_softcapping=hf_config.attn_logit_softcapping)

  def is_sliding(self, layer: int) -> bool:
    return self.layer_types[layer] == SLIDING


@dataclasses.dataclass(frozen=True)
class Gemma3Config(Gemma2Config):
  """A Gemma 3 text decoder (defaults: gemma-3-1b): q/k norms, two rotary bases,
  five local layers per global one, no soft-capping."""
  vocab_size: int = 262144
  hidden_size: int = 1152
  num_layers: int = 26
  num_heads: int = 4
  num_kv_heads: int = 1
  head_dim: int = 256
  intermediate_size: int = 6912
  sliding_window: int = 512
  rotary_base: float = 1000000.0
  local_rotary_base: float = 10000.0
  attn_logit_softcapping: float | None = None
  final_logit_softcapping: float | None = None
  qk_norm: bool = True
  max_position_embeddings: int = 32768

  FAMILY = "gemma3"
  SLIDING_WINDOW_PATTERN = 6
  # Hugging Face's Gemma 3 does not apply ``attn_logit_softcapping`` (left out, so a
  # config that sets it is refused); the pattern fields are folded into layer_types.
  HF_FIELDS = tuple(f for f in Gemma2Config.HF_FIELDS if f != "attn_logit_softcapping") + (
      "sliding_window_pattern", "_sliding_window_pattern")
  # Fields of the multimodal ``Gemma3Config`` around the text config: the image
  # tower and its tokens, which a text-only forward pass never uses.
  HF_MULTIMODAL_FIELDS = ("text_config", "vision_config", "mm_tokens_per_image",
                          "boi_token_index", "eoi_token_index", "image_token_index",
                          "tie_word_embeddings", "initializer_range")

  @classmethod
  def from_hf(cls, hf_config, dtype: str = "float32") -> "Gemma3Config":
    """The config of a Hugging Face ``Gemma3TextConfig`` (or the text config of a
    multimodal ``Gemma3Config``); fields in ``HF_FIELDS``.

    Raises:
      ValueError: for rope types other than default/linear, attention soft-capping,
        bidirectional attention, or any other field not at its default.
    """
    if hf_config.model_type == "gemma3":
      common.check_hf_config(hf_config, cls.HF_MULTIMODAL_FIELDS, "gemma3 (multimodal)")
      hf_config = hf_config.text_config
    common.check_hf_config(hf_config, cls.HF_FIELDS + cls.HF_IGNORED, cls.FAMILY)
    rope = dict(hf_config.rope_parameters or {})
    bases = {t: _gemma3_rope(rope, t) for t in (FULL, SLIDING)}
    return cls(**cls._common_hf(hf_config, dtype), rotary_base=bases[FULL][0],
               rotary_linear_factor=bases[FULL][1], local_rotary_base=bases[SLIDING][0],
               local_rotary_linear_factor=bases[SLIDING][1], attn_logit_softcapping=None)


def _gemma3_rope(rope: dict, layer_type: str) -> tuple[float, float]:
  """(theta, linear factor) of one layer type's ``rope_parameters`` entry."""
  params = dict(rope.get(layer_type) or {})
  kind = params.get("rope_type", "default")
  allowed = {"default": {"rope_type", "rope_theta"},
             "linear": {"rope_type", "rope_theta", "factor"}}
  if kind not in allowed:
    raise ValueError(f"gemma3: rope_parameters[{layer_type!r}].rope_type={kind!r} is not "
                     f"supported (only 'default' and 'linear'): {params}")
  extra = set(params) - allowed[kind]
  if extra:
    raise ValueError(f"gemma3: unsupported rope_parameters[{layer_type!r}] fields "
                     f"{sorted(extra)}")
  if "rope_theta" not in params:
    raise ValueError(f"gemma3: rope_parameters[{layer_type!r}] has no rope_theta: {rope}")
  return float(params["rope_theta"]), float(params.get("factor", 1.0))


# ----------------------------------------------------------------------------
# Blocks
# ----------------------------------------------------------------------------


class RMSNorm(nn.Module):
  """Gemma's RMSNorm: ``x / sqrt(mean(x^2) + eps) * (1 + scale)``, in float32.

  The parameter ``scale`` is Hugging Face's ``weight``, an offset from 1.
  """
  epsilon: float = 1e-6
  dtype: Any = "float32"

  @nn.compact
  def __call__(self, x):
    scale = self.param("scale", nn.initializers.zeros, (x.shape[-1],))
    x32 = x.astype(jnp.float32)
    x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.epsilon)
    return (x32 * (1.0 + scale.astype(jnp.float32))).astype(self.dtype)


class Attention(nn.Module):
  config: Gemma2Config

  @nn.compact
  def __call__(self, x, bias, cos, sin):
    cfg = self.config
    b, s, _ = x.shape
    dense = lambda n, name: common.Dense(n, use_bias=cfg.attention_bias, dtype=cfg.dtype,
                                         name=name)
    q = dense(cfg.num_heads * cfg.head_dim, "q_proj")(x).reshape(
        b, s, cfg.num_heads, cfg.head_dim)
    k = dense(cfg.num_kv_heads * cfg.head_dim, "k_proj")(x).reshape(
        b, s, cfg.num_kv_heads, cfg.head_dim)
    v = dense(cfg.num_kv_heads * cfg.head_dim, "v_proj")(x).reshape(
        b, s, cfg.num_kv_heads, cfg.head_dim)
    if cfg.qk_norm:
      q = RMSNorm(cfg.rms_norm_eps, cfg.dtype, name="q_norm")(q)
      k = RMSNorm(cfg.rms_norm_eps, cfg.dtype, name="k_norm")(k)
    q = common.apply_rotary(q, cos, sin)
    k = common.apply_rotary(k, cos, sin)
    out = common.dot_product_attention(q, k, v, bias, cfg.query_pre_attn_scalar ** -0.5,
                                       softcap=cfg.attn_logit_softcapping)
    return dense(cfg.hidden_size, "o_proj")(out.reshape(b, s, cfg.num_heads * cfg.head_dim))


class Layer(nn.Module):
  config: Gemma2Config
  sliding: bool

  @nn.compact
  def __call__(self, x, global_attn, local_attn):
    """``global_attn`` / ``local_attn``: (bias, cos, sin) of each layer type."""
    cfg = self.config
    bias, cos, sin = local_attn if self.sliding else global_attn
    norm = lambda name: RMSNorm(cfg.rms_norm_eps, cfg.dtype, name=name)
    a = Attention(cfg, name="self_attn")(norm("input_layernorm")(x), bias, cos, sin)
    x = x + norm("post_attention_layernorm")(a)
    m, neurons = llama.MLP(cfg, name="mlp")(norm("pre_feedforward_layernorm")(x))
    return x + norm("post_feedforward_layernorm")(m), neurons


class Gemma(nn.Module):
  """Gemma 2 / Gemma 3 causal LM that records named sites.

  Call: ``apply({"params": p}, tokens [b, s] int32, attention_mask [b, s] or None,
  sites=(...))`` -> ``(logits [b, s, vocab] float32, {site: [b, s, width]})``.
  """
  config: Gemma2Config

  @nn.compact
  def __call__(self, tokens, attention_mask=None, sites: Sequence[str] = (),
               positions=None):
    cfg = self.config
    rec = common.Recorder(common.check_sites(sites, cfg.num_layers))
    if positions is None:
      positions = common.default_positions(tokens)
    embed = nn.Embed(cfg.vocab_size, cfg.hidden_size, dtype=cfg.dtype,
                     embedding_init=nn.initializers.normal(0.02), name="embed_tokens")
    # Hugging Face casts the normaliser to the weights' dtype before multiplying.
    x = embed(tokens) * jnp.asarray(cfg.hidden_size ** 0.5, dtype=cfg.dtype)
    seq = tokens.shape[1]
    global_attn = (common.attention_bias(attention_mask, seq, causal=True),
                   *common.rotary_tables(positions, cfg.head_dim, cfg.rotary_base,
                                         cfg.rotary_linear_factor))
    local_attn = (common.attention_bias(attention_mask, seq, causal=True,
                                        window=cfg.sliding_window),
                  *common.rotary_tables(positions, cfg.head_dim, cfg.local_rotary_base,
                                        cfg.local_rotary_linear_factor))
    x = rec.run_layers(lambda i: Layer(cfg, cfg.is_sliding(i), name=f"layers_{i}"),
                       cfg.num_layers, x, global_attn, local_attn)
    x = RMSNorm(cfg.rms_norm_eps, cfg.dtype, name="norm")(x)
    if cfg.tie_word_embeddings:
      logits = common.unembed(x, embed.embedding)
    else:
      logits = common.Dense(cfg.vocab_size, use_bias=False, dtype=cfg.dtype,
                            name="lm_head")(x)
    logits = logits.astype(jnp.float32)
    if cfg.final_logit_softcapping is not None:
      cap = cfg.final_logit_softcapping
      logits = cap * jnp.tanh(logits / cap)
    return logits, rec.out


# ----------------------------------------------------------------------------
# Hugging Face conversion (``Gemma2ForCausalLM`` / ``Gemma3ForCausalLM`` tensors;
# the text decoder of ``Gemma3ForConditionalGeneration``)
# ----------------------------------------------------------------------------

# Longest first: a multimodal checkpoint's decoder sits under model.language_model.
# (transformers >= 4.52) or language_model.model. (earlier saves).
HF_PREFIXES = ("model.language_model.", "language_model.model.", "language_model.", "model.")
HF_IGNORE = (r"(model\.)?vision_tower\..*", r"(model\.)?multi_modal_projector\..*",
             r"rotary_emb\..*")
_NORMS = ("input_layernorm|post_attention_layernorm|pre_feedforward_layernorm|"
          "post_feedforward_layernorm")
HF_RULES = (
    (r"embed_tokens\.weight", "embed_tokens/embedding", None),
    (r"lm_head\.weight", "lm_head/kernel", "T"),
    (r"norm\.weight", "norm/scale", None),
    (rf"layers\.(\d+)\.({_NORMS})\.weight", "layers_{0}/{1}/scale", None),
    (r"layers\.(\d+)\.self_attn\.(q_norm|k_norm)\.weight", "layers_{0}/self_attn/{1}/scale",
     None),
    (r"layers\.(\d+)\.(self_attn|mlp)\.(\w+)\.weight", "layers_{0}/{1}/{2}/kernel", "T"),
    (r"layers\.(\d+)\.self_attn\.(\w+)\.bias", "layers_{0}/self_attn/{1}/bias", None),
)


def convert_hf_tensor(config: Gemma2Config, name: str, array):
  """One Hugging Face tensor -> {flax path: array}; see ``common.convert_by_rules``."""
  if config.tie_word_embeddings and name in ("lm_head.weight", "language_model.lm_head.weight"):
    return {}
  return common.convert_by_rules(HF_RULES, HF_IGNORE, HF_PREFIXES, name, array)


# ----------------------------------------------------------------------------
# GGUF (llama.cpp's ``gemma2`` / ``gemma3`` architectures)
# ----------------------------------------------------------------------------

# Metadata keys under ``<arch>.`` that the port reads (via transformers' table or
# below). Any other key under the architecture's prefix is refused.
GGUF_KEYS = {
    "gemma2": ("context_length", "block_count", "feed_forward_length", "embedding_length",
               "rope.dimension_count", "rope.freq_base", "attention.key_length",
               "attention.value_length", "attention.head_count", "attention.head_count_kv",
               "attention.layer_norm_rms_epsilon", "attention.sliding_window", "vocab_size",
               "attn_logit_softcapping", "final_logit_softcapping"),
    "gemma3": ("context_length", "block_count", "feed_forward_length", "embedding_length",
               "rope.dimension_count", "rope.freq_base", "attention.key_length",
               "attention.value_length", "attention.head_count", "attention.head_count_kv",
               "attention.layer_norm_rms_epsilon", "attention.sliding_window", "vocab_size",
               "rope.scaling.type", "rope.scaling.factor"),
}
# llama.cpp's "27B" models (by layer count) scale attention by hidden/heads.
_GGUF_27B_LAYERS = {"gemma2": 46, "gemma3": 62}


def gguf_config(config: dict, metadata: dict, path) -> dict:
  """Adds to transformers' GGUF config what llama.cpp reads from a Gemma file.

  transformers' GGUF table (its reader) leaves these at the config class defaults;
  llama.cpp (which wrote the file) reads them, and so does the port:

  * Gemma 2: ``attn_logit_softcapping`` / ``final_logit_softcapping`` (llama.cpp's
    defaults, 50 and 30, when absent: the same as transformers');
  * Gemma 3: ``rope.scaling.type = linear`` and its factor, on the global layers
    (the 4B-27B files), where transformers' GGUF reader drops the scaling;
  * ``query_pre_attn_scalar``: ``hidden / heads`` for the 27B models (46 / 62
    layers), the head size otherwise, as llama.cpp computes it; transformers' GGUF
    reader keeps its default 256, which is the head size of every other size.

  Layer types are llama.cpp's fixed patterns (every 2nd / 6th layer global), the
  defaults of the transformers configs; the local rotary base is 10000 in both.

  Raises:
    ValueError: naming the file and the key, for an unknown key under the
      architecture's prefix, a rope scaling other than linear, or head sizes that
      disagree.
  """
  arch = metadata["general.architecture"]
  known = set(GGUF_KEYS[arch])
  for key in metadata:
    if key.startswith(arch + ".") and key[len(arch) + 1:] not in known:
      raise ValueError(f"{path}: GGUF metadata key {key!r} is not supported by the "
                       f"{arch} port; supported: {sorted(known)}")
  get = lambda k, default=None: metadata.get(f"{arch}.{k}", default)
  out = dict(config)
  head_dim = get("attention.key_length")
  for k in ("attention.value_length", "rope.dimension_count"):
    if get(k) is not None and get(k) != head_dim:
      raise ValueError(f"{path}: {arch}.{k}={get(k)} differs from "
                       f"{arch}.attention.key_length={head_dim}; the port needs them equal")
  if arch == "gemma2":
    out["attn_logit_softcapping"] = float(get("attn_logit_softcapping", 50.0))
    out["final_logit_softcapping"] = float(get("final_logit_softcapping", 30.0))
  else:
    kind = get("rope.scaling.type")
    if kind not in (None, "none", "linear"):
      raise ValueError(f"{path}: {arch}.rope.scaling.type={kind!r} is not supported "
                       "(only linear)")
    rope = {"full_attention": {"rope_type": "default",
                               "rope_theta": float(get("rope.freq_base", 1000000.0))},
            "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}}
    if kind == "linear" and float(get("rope.scaling.factor", 1.0)) != 1.0:
      rope["full_attention"].update(rope_type="linear",
                                    factor=float(get("rope.scaling.factor")))
    out.pop("rope_theta", None)
    out["rope_parameters"] = rope
  if head_dim is None:
    raise ValueError(f"{path}: GGUF metadata lacks {arch}.attention.key_length (head size)")
  big = get("block_count") == _GGUF_27B_LAYERS[arch]
  out["query_pre_attn_scalar"] = (get("embedding_length") // get("attention.head_count")
                                  if big else head_dim)
  return out
