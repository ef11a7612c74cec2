"""DINOv2 (Hugging Face ``Dinov2Model`` and ``Dinov2WithRegistersModel``) in Flax.

Pre-norm layers with layer scale: ``x += ls1 * attn(norm1 x);
x += ls2 * mlp(norm2 x)``, then a final LayerNorm. The MLP is ``fc2(gelu(fc1 h))``
or, for the giant models, SwiGLU ``down(silu(gate h) * up h)`` (Hugging Face's
fused ``weights_in`` is split into gate and up). Position embeddings are learned
on a square grid (37 x 37 for the 518-pixel checkpoints) and interpolated onto
the input's grid: bicubic for ``Dinov2Model``, antialiased bicubic for the
registers model, as Hugging Face does.

Tokens: class token, then ``num_register_tokens`` register tokens (without position
embeddings), then the patches. Site ``layer_{i}/mlp`` covers the patch tokens;
class and register rows come apart (``models/vision.py``).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from rosetta_jax.models import common, vision

IMAGE_MEAN, IMAGE_STD = vision.IMAGENET_MEAN, vision.IMAGENET_STD  # BitImageProcessor


@dataclasses.dataclass(frozen=True)
class Dinov2Config(common.TransformerShape):
  """Shape and behaviour of a DINOv2 encoder (defaults: ViT-S/14).

  Attributes:
    hidden_size: width of the hidden states.
    num_layers: encoder layers.
    num_heads: attention heads (divide hidden_size).
    intermediate_size: MLP neurons per layer (``hidden_size * mlp_ratio``, or
      for SwiGLU two thirds of it rounded up to a multiple of 8).
    image_size: side of the square resolution the position grid was learned at.
    patch_size: side of a square patch, in pixels.
    num_channels: input channels.
    layer_norm_eps: LayerNorm epsilon.
    hidden_act: MLP activation (Hugging Face name; unused by SwiGLU).
    qkv_bias: whether query/key/value have biases.
    swiglu: SwiGLU MLP (``use_swiglu_ffn``).
    num_register_tokens: register tokens (0 for ``Dinov2Model``).
    antialias_positions: interpolate positions with the antialiased kernel
      (``Dinov2WithRegistersModel``).
    dtype: computation and parameter dtype.
  """
  hidden_size: int = 384
  num_layers: int = 12
  num_heads: int = 6
  intermediate_size: int = 1536
  image_size: int = 518
  patch_size: int = 14
  num_channels: int = 3
  layer_norm_eps: float = 1e-6
  hidden_act: str = "gelu"
  qkv_bias: bool = True
  swiglu: bool = False
  num_register_tokens: int = 0
  antialias_positions: bool = False
  dtype: str = "float32"

  # layerscale_value only initialises the (stored) scales; drop_path_rate is
  # training-only; use_mask_token and the backbone fields (stage_names,
  # out_features, out_indices, apply_layernorm, reshape_hidden_states) do not
  # change Dinov2Model's forward pass without a mask.
  HF_FIELDS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "mlp_ratio",
               "image_size", "patch_size", "num_channels", "layer_norm_eps", "hidden_act",
               "qkv_bias", "use_swiglu_ffn", "num_register_tokens", "layerscale_value",
               "drop_path_rate", "use_mask_token", "stage_names", "out_features",
               "out_indices", "apply_layernorm", "reshape_hidden_states")

  @property
  def num_prefix_tokens(self) -> int:
    """Class token plus register tokens."""
    return 1 + self.num_register_tokens

  @property
  def num_positions(self) -> int:
    return (self.image_size // self.patch_size) ** 2

  def abstract_input(self):
    p = self.patch_size
    return jax.ShapeDtypeStruct((1, p, p, self.num_channels), jnp.float32)

  @classmethod
  def from_hf(cls, hf_config, dtype: str = "float32") -> "Dinov2Config":
    """The config of a Hugging Face ``Dinov2Config`` or ``Dinov2WithRegistersConfig``.

    Raises:
      ValueError: a non-square image or patch size, or a field outside
        ``HF_FIELDS`` not at its default.
    """
    family = hf_config.model_type
    common.check_hf_config(hf_config, cls.HF_FIELDS, family)
    d = hf_config.hidden_size
    inter = int(d * hf_config.mlp_ratio)
    if hf_config.use_swiglu_ffn:
      inter = (int(inter * 2 / 3) + 7) // 8 * 8
    return cls(hidden_size=d, num_layers=hf_config.num_hidden_layers,
               num_heads=hf_config.num_attention_heads, intermediate_size=inter,
               image_size=vision.square_size(hf_config.image_size, "image_size", family),
               patch_size=vision.square_size(hf_config.patch_size, "patch_size", family),
               num_channels=hf_config.num_channels, layer_norm_eps=hf_config.layer_norm_eps,
               hidden_act=hf_config.hidden_act, qkv_bias=hf_config.qkv_bias,
               swiglu=bool(hf_config.use_swiglu_ffn),
               num_register_tokens=int(getattr(hf_config, "num_register_tokens", 0)),
               antialias_positions=family == "dinov2_with_registers", dtype=dtype)


class Dinov2(nn.Module):
  """DINOv2 encoder that records named sites.

  Call: ``apply({"params": p}, pixels [b, H, W, C], sites=(...))`` ->
  ``(hidden [b, 1 + R + P, hidden_size] float32, {site: [b, P, width]},
  {site: [b, 1 + R, width]})``; R register tokens, P = (H // patch) * (W // patch).
  """
  config: Dinov2Config

  @nn.compact
  def __call__(self, pixels, sites: Sequence[str] = ()):
    cfg = self.config
    vision.check_pixels(pixels, cfg.num_channels, cfg.patch_size, "dinov2")
    rec = common.Recorder(common.check_sites(sites, cfg.num_layers))
    x, grid = vision.PatchEmbed(cfg.hidden_size, cfg.patch_size, dtype=cfg.dtype,
                                name="patch_embed")(pixels)
    init = nn.initializers.normal(0.02)
    cls = self.param("cls_token", init, (cfg.hidden_size,))
    pos = self.param("position_embeddings", init, (1 + cfg.num_positions, cfg.hidden_size))
    x = vision.prepend_class_token(x, cls, pos, grid, cfg.antialias_positions)
    if cfg.num_register_tokens:
      reg = self.param("register_tokens", nn.initializers.zeros,
                       (cfg.num_register_tokens, cfg.hidden_size)).astype(x.dtype)
      reg = jnp.broadcast_to(reg[None], (x.shape[0],) + reg.shape)
      x = jnp.concatenate([x[:, :1], reg, x[:, 1:]], axis=1)
    layer = lambda i: vision.EncoderLayer(
        cfg.num_heads, cfg.intermediate_size, cfg.hidden_act, cfg.layer_norm_eps,
        qkv_bias=cfg.qkv_bias, layer_scale=True, swiglu=cfg.swiglu, dtype=cfg.dtype,
        name=f"layers_{i}")
    x = rec.run_layers(layer, cfg.num_layers, x)
    x = vision.layer_norm(cfg.layer_norm_eps, cfg.dtype, "final_norm")(x)
    return (x.astype(jnp.float32), *vision.split_sites(rec, cfg.num_prefix_tokens))


# ----------------------------------------------------------------------------
# Hugging Face conversion (``Dinov2Model`` tensors, with or without the prefix)
# ----------------------------------------------------------------------------

HF_PREFIXES = ("dinov2.", "dinov2_with_registers.")
HF_IGNORE = (r"classifier\..*", r"embeddings\.mask_token")
_LAYER = {"attention.attention.query": "query", "attention.attention.key": "key",
          "attention.attention.value": "value",
          "attention.output.dense": "attention_output", "mlp.fc1": "fc1", "mlp.fc2": "fc2",
          "mlp.weights_out": "down", "norm1": "norm1", "norm2": "norm2"}


def _weights_in(array, m):
  """SwiGLU's fused [2n, d] input projection -> gate (first half) and up."""
  path = f"layers_{m.group(1)}"
  gate, up = (array[:array.shape[0] // 2], array[array.shape[0] // 2:])
  if m.group(2) == "bias":
    return {f"{path}/gate/bias": gate, f"{path}/up/bias": up}
  return {f"{path}/gate/kernel": gate.T, f"{path}/up/kernel": up.T}


HF_RULES = (
    (r"embeddings\.cls_token", "", lambda a, m: {"cls_token": a.reshape(-1)}),
    (r"embeddings\.register_tokens", "",
     lambda a, m: {"register_tokens": a.reshape(a.shape[-2], a.shape[-1])}),
    (r"embeddings\.position_embeddings", "",
     lambda a, m: {"position_embeddings": a.reshape(a.shape[-2], a.shape[-1])}),
    (r"embeddings\.patch_embeddings\.projection\.(weight|bias)", "",
     lambda a, m: vision.convert_patch_projection("patch_embed/projection", a, m.group(1))),
    (r"encoder\.layer\.(\d+)\.layer_scale([12])\.lambda1", "layers_{0}/layer_scale{1}", None),
    (r"encoder\.layer\.(\d+)\.mlp\.weights_in\.(weight|bias)", "", _weights_in),
    (r"encoder\.layer\.(\d+)\.(" + "|".join(k.replace(".", r"\.") for k in _LAYER)
     + r")\.(weight|bias)", "",
     lambda a, m: vision.convert_linear_or_norm(f"layers_{m.group(1)}/{_LAYER[m.group(2)]}",
                                               a, m.group(3))),
    (r"layernorm\.(weight|bias)", "",
     lambda a, m: vision.convert_linear_or_norm("final_norm", a, m.group(1))),
)


def convert_hf_tensor(config: Dinov2Config, name: str, array):
  """One Hugging Face tensor -> {flax path: array}; see ``common.convert_by_rules``."""
  del config
  return common.convert_by_rules(HF_RULES, HF_IGNORE, HF_PREFIXES, name, array)
