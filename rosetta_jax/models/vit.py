"""ViT (Hugging Face ``ViTModel``) in Flax.

Pre-norm layers: ``x += attn(LN x); x += fc2(act(fc1 LN x))``, then a final
LayerNorm. The module returns the last hidden states of every token (class token
first) in place of logits; site ``layer_{i}/mlp`` is ``act(fc1 x)`` over the patch
tokens (the input of ``output.dense`` in Hugging Face's names), the class token's
row apart (``models/vision.py``). Inputs of another size than ``image_size``
interpolate the position embeddings, as ``ViTModel(..., interpolate_pos_encoding=True)``.
The pooler and any classifier head are not part of the port.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from rosetta_jax.models import common, vision

IMAGE_MEAN, IMAGE_STD = vision.HALF, vision.HALF  # ViTImageProcessor's defaults


@dataclasses.dataclass(frozen=True)
class ViTConfig(common.TransformerShape):
  """Shape and behaviour of a ViT encoder (defaults: ViT-B/16).

  Attributes:
    hidden_size: width of the hidden states.
    num_layers: encoder layers.
    num_heads: attention heads (divide hidden_size).
    intermediate_size: MLP neurons per layer.
    image_size: side of the square training resolution (the position grid is
      ``image_size // patch_size`` squared).
    patch_size: side of a square patch, in pixels.
    num_channels: input channels.
    layer_norm_eps: LayerNorm epsilon.
    hidden_act: MLP activation (Hugging Face name).
    qkv_bias: whether query/key/value have biases.
    dtype: computation and parameter dtype.
  """
  hidden_size: int = 768
  num_layers: int = 12
  num_heads: int = 12
  intermediate_size: int = 3072
  image_size: int = 224
  patch_size: int = 16
  num_channels: int = 3
  layer_norm_eps: float = 1e-12
  hidden_act: str = "gelu"
  qkv_bias: bool = True
  dtype: str = "float32"

  # encoder_stride: the masked-image-modelling decoder; pooler_*: the pooler, which
  # the port leaves out.
  HF_FIELDS = ("hidden_size", "num_hidden_layers", "num_attention_heads",
               "intermediate_size", "image_size", "patch_size", "num_channels",
               "layer_norm_eps", "hidden_act", "qkv_bias", "encoder_stride",
               "pooler_output_size", "pooler_act")

  num_prefix_tokens = 1

  @property
  def num_positions(self) -> int:
    """Patch positions of the learned (square) grid."""
    return (self.image_size // self.patch_size) ** 2

  def abstract_input(self):
    """A one-image input shape for ``jax.eval_shape``."""
    p = self.patch_size
    return jax.ShapeDtypeStruct((1, p, p, self.num_channels), jnp.float32)

  @classmethod
  def from_hf(cls, hf_config, dtype: str = "float32") -> "ViTConfig":
    """The config of a Hugging Face ``ViTConfig``; fields in ``HF_FIELDS``.

    Raises:
      ValueError: a non-square image or patch size, or any other field not at its
        default.
    """
    common.check_hf_config(hf_config, cls.HF_FIELDS, "vit")
    return cls(hidden_size=hf_config.hidden_size, num_layers=hf_config.num_hidden_layers,
               num_heads=hf_config.num_attention_heads,
               intermediate_size=hf_config.intermediate_size,
               image_size=vision.square_size(hf_config.image_size, "image_size", "vit"),
               patch_size=vision.square_size(hf_config.patch_size, "patch_size", "vit"),
               num_channels=hf_config.num_channels, layer_norm_eps=hf_config.layer_norm_eps,
               hidden_act=hf_config.hidden_act, qkv_bias=hf_config.qkv_bias, dtype=dtype)


class ViT(nn.Module):
  """ViT encoder that records named sites.

  Call: ``apply({"params": p}, pixels [b, H, W, C], sites=(...))`` ->
  ``(hidden [b, 1 + P, hidden_size] float32, {site: [b, P, width]},
  {site: [b, 1, width]})`` with P = (H // patch) * (W // patch).
  """
  config: ViTConfig

  @nn.compact
  def __call__(self, pixels, sites: Sequence[str] = ()):
    cfg = self.config
    vision.check_pixels(pixels, cfg.num_channels, cfg.patch_size, "vit")
    rec = common.Recorder(common.check_sites(sites, cfg.num_layers))
    x, grid = vision.PatchEmbed(cfg.hidden_size, cfg.patch_size, dtype=cfg.dtype,
                                name="patch_embed")(pixels)
    init = nn.initializers.normal(0.02)
    cls = self.param("cls_token", init, (cfg.hidden_size,))
    pos = self.param("position_embeddings", init, (1 + cfg.num_positions, cfg.hidden_size))
    x = vision.prepend_class_token(x, cls, pos, grid)
    layer = lambda i: vision.EncoderLayer(
        cfg.num_heads, cfg.intermediate_size, cfg.hidden_act, cfg.layer_norm_eps,
        qkv_bias=cfg.qkv_bias, dtype=cfg.dtype, name=f"layers_{i}")
    x = rec.run_layers(layer, cfg.num_layers, x)
    x = vision.layer_norm(cfg.layer_norm_eps, cfg.dtype, "final_norm")(x)
    return (x.astype(jnp.float32), *vision.split_sites(rec, cfg.num_prefix_tokens))


# ----------------------------------------------------------------------------
# Hugging Face conversion (``ViTModel`` tensors, with or without ``vit.``)
# ----------------------------------------------------------------------------

HF_PREFIXES = ("vit.",)
HF_IGNORE = (r"pooler\..*", r"classifier\..*", r"embeddings\.mask_token")
_LAYER = {"attention.attention.query": "query", "attention.attention.key": "key",
          "attention.attention.value": "value",
          "attention.output.dense": "attention_output",
          "intermediate.dense": "fc1", "output.dense": "fc2",
          "layernorm_before": "norm1", "layernorm_after": "norm2"}

HF_RULES = (
    (r"embeddings\.cls_token", "cls_token", lambda a, m: {"cls_token": a.reshape(-1)}),
    (r"embeddings\.position_embeddings", "",
     lambda a, m: {"position_embeddings": a.reshape(a.shape[-2], a.shape[-1])}),
    (r"embeddings\.patch_embeddings\.projection\.(weight|bias)", "",
     lambda a, m: vision.convert_patch_projection("patch_embed/projection", a, m.group(1))),
    (r"encoder\.layer\.(\d+)\.(" + "|".join(k.replace(".", r"\.") for k in _LAYER)
     + r")\.(weight|bias)", "",
     lambda a, m: vision.convert_linear_or_norm(f"layers_{m.group(1)}/{_LAYER[m.group(2)]}",
                                               a, m.group(3))),
    (r"layernorm\.(weight|bias)", "",
     lambda a, m: vision.convert_linear_or_norm("final_norm", a, m.group(1))),
)


def convert_hf_tensor(config: ViTConfig, name: str, array):
  """One Hugging Face tensor -> {flax path: array}; see ``common.convert_by_rules``."""
  del config
  return common.convert_by_rules(HF_RULES, HF_IGNORE, HF_PREFIXES, name, array)
