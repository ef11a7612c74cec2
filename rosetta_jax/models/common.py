"""Pieces shared by every model family: attention, rotary embeddings, masks, sites.

A *site* is a named place in the forward pass whose activations can be recorded:

* ``layer_{i}/mlp``: the input of layer i's MLP down-projection, i.e. the neurons
  (``act(fc1 x)``, or ``act(gate x) * (up x)`` for gated MLPs).
* ``layer_{i}/resid``: the residual stream leaving layer i.

Every family's forward pass has the signature::

    module.apply({"params": params}, tokens, attention_mask=None, sites=())
        -> (logits [batch, seq, vocab] (or hidden states for encoders),
            {site: [batch, seq, width]})

Recording is configuration, not surgery: asking for fewer sites costs nothing.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from rosetta_jax.analysis import stats

Array = jax.Array

SITE_KINDS = ("mlp", "resid")


def mlp_site(layer: int) -> str:
  """Name of the MLP-neuron site of ``layer``."""
  return f"layer_{layer}/mlp"


def resid_site(layer: int) -> str:
  """Name of the residual-stream site leaving ``layer``."""
  return f"layer_{layer}/resid"


def check_sites(sites: Sequence[str], num_layers: int) -> tuple[str, ...]:
  """Validates site names; returns them as a tuple.

  Raises:
    ValueError: naming the first site that is malformed or out of range.
  """
  out = []
  for s in sites:
    try:
      layer, kind = stats.parse_site(s)
    except ValueError:
      kind = None
    if kind not in SITE_KINDS:
      raise ValueError(
          f"unknown site {s!r}: sites are 'layer_{{i}}/mlp' or 'layer_{{i}}/resid'")
    if layer >= num_layers:
      raise ValueError(f"site {s!r} is out of range: the model has {num_layers} layers")
    out.append(s)
  return tuple(out)


class TransformerShape:
  """Shape properties shared by every family's frozen config dataclass.

  Needs the fields ``hidden_size``, ``num_heads``, ``intermediate_size`` and
  ``num_layers``; a family with its own head size overrides ``head_dim``.
  """

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_heads

  @property
  def neurons_per_layer(self) -> int:
    """MLP neurons per layer: the width of a ``layer_{i}/mlp`` site."""
    return self.intermediate_size

  @property
  def num_neurons(self) -> int:
    return self.intermediate_size * self.num_layers

  def __post_init__(self):
    if self.hidden_size % self.num_heads:
      raise ValueError(f"hidden_size={self.hidden_size} is not divisible by "
                       f"num_heads={self.num_heads}")


# ----------------------------------------------------------------------------
# Activations
# ----------------------------------------------------------------------------

ACTIVATIONS: Mapping[str, Callable[[Array], Array]] = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_fast": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
}


def activation(name: str) -> Callable[[Array], Array]:
  """The activation function called ``name`` in Hugging Face configs."""
  try:
    return ACTIVATIONS[name]
  except KeyError:
    raise ValueError(
        f"unsupported activation {name!r}; supported: {sorted(ACTIVATIONS)}") from None


# ----------------------------------------------------------------------------
# Rotary position embedding (non-interleaved, "rotate half", as in GPT-NeoX/Llama)
# ----------------------------------------------------------------------------


def rotary_tables(positions: Array, rotary_dim: int, base: float,
                  linear_factor: float = 1.0) -> tuple[Array, Array]:
  """cos/sin tables for ``positions``.

  Args:
    positions: [batch, seq] integer positions.
    rotary_dim: number of leading head dims that rotate (even).
    base: the rotary base (``rope_theta``).
    linear_factor: "linear" rope scaling (frequencies divided by it, as Hugging
      Face's ``rope_type="linear"``); 1 = default rope.

  Returns:
    (cos, sin), each [batch, seq, rotary_dim], float32.
  """
  inv_freq = 1.0 / (base ** (np.arange(0, rotary_dim, 2, dtype=np.float32) / rotary_dim))
  if linear_factor != 1.0:
    inv_freq = inv_freq / np.float32(linear_factor)
  freqs = positions.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq)
  emb = jnp.concatenate([freqs, freqs], axis=-1)
  return jnp.cos(emb), jnp.sin(emb)


def apply_rotary(x: Array, cos: Array, sin: Array) -> Array:
  """Rotates the first ``cos.shape[-1]`` dims of ``x`` [batch, seq, heads, head_dim]."""
  rot = cos.shape[-1]
  x_rot, x_pass = x[..., :rot], x[..., rot:]
  half = rot // 2
  rotated = jnp.concatenate([-x_rot[..., half:], x_rot[..., :half]], axis=-1)
  cos = cos[:, :, None, :].astype(x.dtype)
  sin = sin[:, :, None, :].astype(x.dtype)
  return jnp.concatenate([x_rot * cos + rotated * sin, x_pass], axis=-1)


# ----------------------------------------------------------------------------
# Attention
# ----------------------------------------------------------------------------


def attention_bias(attention_mask: Array | None, seq_len: int, causal: bool,
                   window: int | None = None) -> Array:
  """Additive attention bias [batch or 1, 1, q, k] from a padding mask.

  Args:
    attention_mask: [batch, seq] with 1 for real tokens and 0 for padding, or None.
    seq_len: the sequence length.
    causal: whether queries may only attend to earlier keys.
    window: sliding-window attention: query i sees keys j with i - window < j
      (its last ``window`` positions, itself included, as Hugging Face's
      ``sliding_window``); None = no window.
  """
  allowed = jnp.ones((1, 1, seq_len, seq_len), dtype=bool)
  if causal:
    allowed = jnp.tril(allowed)
  if window is not None:
    q = jnp.arange(seq_len)[:, None]
    k = jnp.arange(seq_len)[None, :]
    allowed = allowed & (k > q - window)[None, None]
  if attention_mask is not None:
    allowed = allowed & attention_mask.astype(bool)[:, None, None, :]
  return jnp.where(allowed, 0.0, jnp.finfo(jnp.float32).min)


def dot_product_attention(q: Array, k: Array, v: Array, bias: Array,
                          scale: float, softcap: float | None = None) -> Array:
  """Softmax attention in float32.

  Args:
    q: [batch, seq, heads, head_dim].
    k, v: [batch, seq, kv_heads, head_dim]; kv_heads divides heads (grouped queries).
    bias: additive bias broadcastable to [batch, heads, q, k].
    scale: multiplier of the logits.
    softcap: logit soft-capping ``c * tanh(logits / c)`` before the bias (Gemma 2);
      None = none.

  Returns:
    [batch, seq, heads, head_dim] in q's dtype.
  """
  heads, kv_heads = q.shape[2], k.shape[2]
  if heads != kv_heads:
    k = jnp.repeat(k, heads // kv_heads, axis=2)
    v = jnp.repeat(v, heads // kv_heads, axis=2)
  logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)
  logits = logits * scale
  if softcap is not None:
    logits = softcap * jnp.tanh(logits / softcap)
  logits = logits + bias
  probs = jax.nn.softmax(logits, axis=-1)
  out = jnp.einsum("bhqk,bkhd->bqhd", probs.astype(v.dtype), v)
  return out


def default_positions(tokens: Array) -> Array:
  """Positions 0..seq-1 for every row (right padding keeps these correct)."""
  return jnp.broadcast_to(jnp.arange(tokens.shape[1])[None, :], tokens.shape)


@dataclasses.dataclass(frozen=True)
class Recorder:
  """Collects the requested sites during one forward pass (plain Python, traced)."""
  sites: tuple[str, ...]
  out: dict[str, Array] = dataclasses.field(default_factory=dict)

  def __call__(self, site: str, value: Array) -> None:
    if site in self.sites:
      self.out[site] = value

  def run_layers(self, make_layer: Callable[[int], nn.Module], num_layers: int, x: Array,
                 *args) -> Array:
    """Applies ``make_layer(i)(x, *args) -> (x, neurons)`` for every layer, recording
    ``layer_{i}/mlp`` (the neurons) and ``layer_{i}/resid`` (the output) when asked.

    Call it from a family's ``nn.compact`` method: the layers become its children.
    """
    for i in range(num_layers):
      x, neurons = make_layer(i)(x, *args)
      self(mlp_site(i), neurons)
      self(resid_site(i), x)
    return x


class Dense(nn.Dense):
  """nn.Dense whose default initialiser is a small normal, as in GPT-style models."""
  kernel_init: Callable[..., Any] = nn.initializers.normal(0.02)


class RMSNorm(nn.Module):
  """Root-mean-square norm (Llama/Qwen2), computed in float32.

  ``x / sqrt(mean(x^2) + eps) * scale``; the parameter is called ``scale``.
  """
  epsilon: float = 1e-6
  dtype: Any = "float32"

  @nn.compact
  def __call__(self, x):
    scale = self.param("scale", nn.initializers.ones, (x.shape[-1],))
    x32 = x.astype(jnp.float32)
    x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.epsilon)
    return (x32.astype(self.dtype) * scale.astype(self.dtype))


def unembed(x: Array, embedding: Array) -> Array:
  """Logits from a tied input embedding: x [b, s, d] @ embedding[vocab, d].T."""
  return x @ embedding.T.astype(x.dtype)


# ----------------------------------------------------------------------------
# Hugging Face config checking and weight renaming (shared by every family)
# ----------------------------------------------------------------------------

# Fields that never change the forward pass of an inference model (dropouts,
# initialisers, generation and bookkeeping fields).
HARMLESS_HF_FIELDS = frozenset({
    "_name_or_path", "_model_name_or_path", "architectures", "transformers_version", "dtype", "torch_dtype",
    "model_type", "id2label", "label2id", "problem_type", "return_dict",
    "output_attentions", "output_hidden_states", "chunk_size_feed_forward",
    "use_cache", "bos_token_id", "eos_token_id", "pad_token_id", "sep_token_id",
    "unk_token_id", "mask_token_id", "cls_token_id",
    "decoder_start_token_id", "initializer_range", "init_std", "gradient_checkpointing",
    "attention_dropout", "hidden_dropout", "dropout", "attention_probs_dropout_prob",
    "hidden_dropout_prob", "classifier_dropout", "activation_dropout", "layerdrop",
    "resid_pdrop", "embd_pdrop", "attn_pdrop", "summary_type", "summary_use_proj",
    "summary_activation", "summary_proj_to_labels", "summary_first_dropout",
    "tokenizer_class", "prefix", "task_specific_params", "finetuning_task",
    "_attn_implementation_autoset", "quantization_config", "use_bfloat16",
    "tie_encoder_decoder", "max_length", "min_length",
})

_MISSING = object()


def check_hf_config(hf_config, honoured: Sequence[str], family: str) -> None:
  """Raises if ``hf_config`` sets a field the port does not implement.

  A field is accepted when it is honoured by the port (``honoured``), harmless for
  inference (``HARMLESS_HF_FIELDS``), or equal to the default of the Hugging Face
  config class. Anything else would make a silently wrong port.

  Raises:
    ValueError: naming the field, its value and its default.
  """
  defaults = type(hf_config)().to_dict()
  honoured = set(honoured)
  for key, value in hf_config.to_dict().items():
    if key in honoured or key in HARMLESS_HF_FIELDS:
      continue
    default = defaults.get(key, _MISSING)
    if default is _MISSING:
      raise ValueError(
          f"{family}: config field {key!r}={value!r} is unknown to this port; "
          f"honoured fields: {sorted(honoured)}")
    if value != default:
      raise ValueError(
          f"{family}: config field {key!r}={value!r} is not supported (only the "
          f"default {default!r}); honoured fields: {sorted(honoured)}")


def rope_from_hf(hf_config, family: str) -> tuple[float, float]:
  """(rope_theta, partial_rotary_factor) of a config with default rotary embeddings.

  Raises:
    ValueError: for any rope scaling type other than ``default``.
  """
  rope = dict(getattr(hf_config, "rope_parameters", None) or {})
  rope_type = rope.get("rope_type", "default")
  if rope_type != "default":
    raise ValueError(f"{family}: rope_parameters.rope_type={rope_type!r} is not "
                     f"supported (only 'default'): {rope}")
  extra = set(rope) - {"rope_type", "rope_theta", "partial_rotary_factor"}
  if extra:
    raise ValueError(f"{family}: unsupported rope_parameters fields {sorted(extra)}")
  theta = rope.get("rope_theta", getattr(hf_config, "rope_theta", 10000.0))
  return float(theta), float(rope.get("partial_rotary_factor", 1.0))


# A conversion rule: (regex over the Hugging Face tensor name, Flax path template
# using the regex groups, transform). Transforms: None (as is), "T" (a torch Linear
# weight [out, in] -> a Flax kernel [in, out]).
Rule = tuple[str, str, Any]


def convert_by_rules(rules: Sequence[Rule], ignore: Sequence[str], prefixes: Sequence[str],
                     name: str, array: np.ndarray) -> dict[str, np.ndarray]:
  """Maps one Hugging Face tensor to Flax parameters by regex rules.

  Args:
    rules: conversion rules, first match wins. A transform may also be a callable
      ``(array, match) -> {path: array}`` for tensors that split into several.
    ignore: regexes of tensors that carry no parameters (buffers, unused heads).
    prefixes: model prefixes to strip first (e.g. ``"gpt_neox."``).
    name: the tensor's name in the checkpoint.
    array: the tensor, Hugging Face layout.

  Returns:
    {"a/b/kernel": array in Flax layout}; empty for ignored tensors.

  Raises:
    KeyError: naming the tensor when no rule matches.
  """
  stripped = name
  for p in prefixes:
    if stripped.startswith(p):
      stripped = stripped[len(p):]
      break
  for pattern in ignore:
    if re.fullmatch(pattern, stripped):
      return {}
  for pattern, template, transform in rules:
    m = re.fullmatch(pattern, stripped)
    if not m:
      continue
    if callable(transform):
      return transform(array, m)
    path = template.format(*m.groups())
    if transform == "T":
      array = array.T
    return {path: array}
  raise KeyError(f"checkpoint tensor {name!r} has no conversion rule")
