"""The CLIP vision tower (Hugging Face ``CLIPVisionModel``) in Flax.

Patch embedding without bias, a class embedding, learned positions, a LayerNorm
*before* the layers (``pre_layrnorm``), pre-norm layers with ``quick_gelu`` MLPs
(``x * sigmoid(1.702 x)``; other activations as configured). The module returns
the last layer's hidden states, as ``CLIPVisionModel``'s ``last_hidden_state``
(no final norm: ``post_layernorm`` only normalises the pooled class token, which
the port leaves out, as it does the projection of ``CLIPModel``).

Loads ``CLIPVisionModel`` directories (``model_type`` ``clip_vision_model``) and the
vision tower of full ``CLIPModel`` checkpoints (``model_type`` ``clip``; the text
tower and projections are skipped).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from rosetta_jax.models import common, vision

IMAGE_MEAN, IMAGE_STD = vision.OPENAI_CLIP_MEAN, vision.OPENAI_CLIP_STD  # CLIPImageProcessor


@dataclasses.dataclass(frozen=True)
class CLIPVisionConfig(common.TransformerShape):
  """Shape and behaviour of a CLIP vision tower (defaults: ViT-B/32).

  Attributes:
    hidden_size: width of the hidden states.
    num_layers: encoder layers.
    num_heads: attention heads (divide hidden_size).
    intermediate_size: MLP neurons per layer.
    image_size: side of the square training resolution.
    patch_size: side of a square patch, in pixels.
    num_channels: input channels.
    layer_norm_eps: LayerNorm epsilon.
    hidden_act: MLP activation (``quick_gelu`` or a Hugging Face name).
    dtype: computation and parameter dtype.
  """
  hidden_size: int = 768
  num_layers: int = 12
  num_heads: int = 12
  intermediate_size: int = 3072
  image_size: int = 224
  patch_size: int = 32
  num_channels: int = 3
  layer_norm_eps: float = 1e-5
  hidden_act: str = "quick_gelu"
  dtype: str = "float32"

  # projection_dim: CLIPModel's projection, outside the tower; initializer_factor:
  # initialisation only.
  HF_FIELDS = ("hidden_size", "num_hidden_layers", "num_attention_heads",
               "intermediate_size", "image_size", "patch_size", "num_channels",
               "layer_norm_eps", "hidden_act", "projection_dim", "initializer_factor")

  num_prefix_tokens = 1

  @property
  def num_positions(self) -> int:
    return (self.image_size // self.patch_size) ** 2

  def abstract_input(self):
    p = self.patch_size
    return jax.ShapeDtypeStruct((1, p, p, self.num_channels), jnp.float32)

  @classmethod
  def from_hf(cls, hf_config, dtype: str = "float32") -> "CLIPVisionConfig":
    """The config of a ``CLIPVisionConfig``, or of a ``CLIPConfig``'s vision tower.

    Raises:
      ValueError: a non-square image or patch size, an unknown activation, or a
        field outside ``HF_FIELDS`` not at its default.
    """
    if hf_config.model_type == "clip":
      hf_config = hf_config.vision_config
    family = "clip_vision_model"
    common.check_hf_config(hf_config, cls.HF_FIELDS, family)
    vision.activation(hf_config.hidden_act)  # unknown activation: an error now
    return cls(hidden_size=hf_config.hidden_size, num_layers=hf_config.num_hidden_layers,
               num_heads=hf_config.num_attention_heads,
               intermediate_size=hf_config.intermediate_size,
               image_size=vision.square_size(hf_config.image_size, "image_size", family),
               patch_size=vision.square_size(hf_config.patch_size, "patch_size", family),
               num_channels=hf_config.num_channels, layer_norm_eps=hf_config.layer_norm_eps,
               hidden_act=hf_config.hidden_act, dtype=dtype)


class CLIPVision(nn.Module):
  """CLIP vision tower that records named sites.

  Call: ``apply({"params": p}, pixels [b, H, W, C], sites=(...))`` ->
  ``(hidden [b, 1 + P, hidden_size] float32, {site: [b, P, width]},
  {site: [b, 1, width]})`` with P = (H // patch) * (W // patch).
  """
  config: CLIPVisionConfig

  @nn.compact
  def __call__(self, pixels, sites: Sequence[str] = ()):
    cfg = self.config
    vision.check_pixels(pixels, cfg.num_channels, cfg.patch_size, "clip_vision_model")
    rec = common.Recorder(common.check_sites(sites, cfg.num_layers))
    x, grid = vision.PatchEmbed(cfg.hidden_size, cfg.patch_size, use_bias=False,
                                dtype=cfg.dtype, name="patch_embed")(pixels)
    init = nn.initializers.normal(0.02)
    cls = self.param("cls_token", init, (cfg.hidden_size,))
    pos = self.param("position_embeddings", init, (1 + cfg.num_positions, cfg.hidden_size))
    x = vision.prepend_class_token(x, cls, pos, grid)
    x = vision.layer_norm(cfg.layer_norm_eps, cfg.dtype, "pre_norm")(x)
    layer = lambda i: vision.EncoderLayer(
        cfg.num_heads, cfg.intermediate_size, cfg.hidden_act, cfg.layer_norm_eps,
        dtype=cfg.dtype, name=f"layers_{i}")
    x = rec.run_layers(layer, cfg.num_layers, x)
    return (x.astype(jnp.float32), *vision.split_sites(rec, cfg.num_prefix_tokens))


# ----------------------------------------------------------------------------
# Hugging Face conversion (``CLIPVisionModel`` / ``CLIPModel`` tensors)
# ----------------------------------------------------------------------------

HF_PREFIXES = ("vision_model.",)
HF_IGNORE = (r"post_layernorm\..*", r"text_model\..*", r"visual_projection\..*",
             r"text_projection\..*", r"logit_scale", r"embeddings\.position_ids")
_LAYER = {"self_attn.q_proj": "query", "self_attn.k_proj": "key",
          "self_attn.v_proj": "value", "self_attn.out_proj": "attention_output",
          "mlp.fc1": "fc1", "mlp.fc2": "fc2", "layer_norm1": "norm1",
          "layer_norm2": "norm2"}

HF_RULES = (
    (r"embeddings\.class_embedding", "cls_token", None),
    (r"embeddings\.position_embedding\.weight", "position_embeddings", None),
    (r"embeddings\.patch_embedding\.weight", "",
     lambda a, m: vision.convert_patch_projection("patch_embed/projection", a, "weight")),
    (r"encoder\.layers\.(\d+)\.(" + "|".join(k.replace(".", r"\.") for k in _LAYER)
     + r")\.(weight|bias)", "",
     lambda a, m: vision.convert_linear_or_norm(f"layers_{m.group(1)}/{_LAYER[m.group(2)]}",
                                               a, m.group(3))),
    (r"pre_layrnorm\.(weight|bias)", "",
     lambda a, m: vision.convert_linear_or_norm("pre_norm", a, m.group(1))),
)


def convert_hf_tensor(config: CLIPVisionConfig, name: str, array):
  """One Hugging Face tensor -> {flax path: array}; see ``common.convert_by_rules``."""
  del config
  return common.convert_by_rules(HF_RULES, HF_IGNORE, HF_PREFIXES, name, array)
