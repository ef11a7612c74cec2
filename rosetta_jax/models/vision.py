"""Pieces shared by the vision families (ViT, DINOv2, the CLIP vision tower).

Every vision module has the signature::

    module.apply({"params": params}, pixels, sites=())
        -> (hidden [batch, prefix + patches, hidden_size] float32,
            {site: [batch, patches, width]},      # patch tokens: what is matched
            {site: [batch, prefix, width]})       # class (+ register) tokens, apart

``pixels`` is ``[batch, height, width, channels]`` (channels last, the JAX layout;
Hugging Face takes channels first), already normalised with the model's
``image_mean``/``image_std``. The patch grid is ``(height // patch, width // patch)``
(pixels past the last whole patch are dropped, as Hugging Face's strided
convolution drops them); patch tokens are in row-major grid order. The *prefix*
tokens are the class token and, for DINOv2 with registers, the register tokens:
they are returned in their own dict and never enter matching.

Position embeddings are learned on a square grid; any other grid interpolates them
bicubically exactly as Hugging Face does (``torch.nn.functional.interpolate``,
``align_corners=False``; ``antialias=True`` for DINOv2 with registers). The
interpolation weights are computed here in NumPy (``bicubic_matrix``) from the
static shapes, so the traced computation is one small matmul.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from rosetta_jax.models import base, common

Array = jax.Array

# The normalisation each family's Hugging Face image processor applies by default.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HALF = (0.5, 0.5, 0.5)
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def activation(name: str):
  """``common.activation`` plus CLIP's ``quick_gelu`` (x * sigmoid(1.702 x))."""
  if name == "quick_gelu":
    return lambda x: x * jax.nn.sigmoid(1.702 * x)
  return common.activation(name)


def layer_norm(eps: float, dtype: str, name: str) -> nn.LayerNorm:
  """A LayerNorm with the two-pass variance (E[(x - mean)^2]).

  Flax's default fast variance (E[x^2] - mean^2) cancels catastrophically in
  float32 when a channel's mean is large against its spread, as in the
  high-norm tokens of trained ViTs.
  """
  return nn.LayerNorm(epsilon=eps, dtype=dtype, use_fast_variance=False, name=name)


# ----------------------------------------------------------------------------
# Bicubic interpolation weights, as torch computes them
# ----------------------------------------------------------------------------


def _cubic(x: np.ndarray, a: float) -> np.ndarray:
  """Keys' cubic convolution kernel with parameter ``a`` at distances ``x``."""
  x = np.abs(x)
  near = ((a + 2) * x - (a + 3)) * x * x + 1
  far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
  return np.where(x < 1, near, np.where(x < 2, far, 0.0))


@functools.lru_cache(maxsize=256)
def bicubic_matrix(in_size: int, out_size: int, antialias: bool = False) -> np.ndarray:
  """[out_size, in_size] weights of torch's bicubic resampling along one axis.

  ``antialias=False`` is ``torch.nn.functional.interpolate(mode="bicubic",
  align_corners=False)``: source coordinate ``(i + 0.5) * in / out - 0.5``, Keys
  kernel with a = -0.75 on the 4 nearest samples, indices clamped to the edge.
  ``antialias=True`` is torch's antialiased variant (as Pillow): kernel with
  a = -0.5, widened by ``in / out`` when downsampling, taps outside the input
  dropped and the weights renormalised.

  Returns:
    A float64 matrix; resampling is ``M @ x`` along that axis.
  """
  if in_size < 1 or out_size < 1:
    raise ValueError(f"bicubic_matrix: sizes must be positive, got {in_size} -> {out_size}")
  scale = in_size / out_size
  m = np.zeros((out_size, in_size), np.float64)
  if not antialias:
    for i in range(out_size):
      real = scale * (i + 0.5) - 0.5
      x0 = math.floor(real)
      t = real - x0
      weights = _cubic(np.array([t + 1, t, 1 - t, 2 - t]), -0.75)
      for k, w in enumerate(weights):
        m[i, min(max(x0 - 1 + k, 0), in_size - 1)] += w
    return m
  support = 2.0 * scale if scale >= 1.0 else 2.0
  invscale = 1.0 / scale if scale >= 1.0 else 1.0
  for i in range(out_size):
    center = scale * (i + 0.5)
    lo = max(int(center - support + 0.5), 0)
    hi = min(int(center + support + 0.5), in_size)
    js = np.arange(lo, hi)
    w = _cubic((js - center + 0.5) * invscale, -0.5)
    m[i, lo:hi] = w / w.sum()
  return m


def interpolate_positions(pos: Array, grid: tuple[int, int], antialias: bool = False) -> Array:
  """Patch position embeddings [n * n, d] learned on a square n x n grid, resampled
  bicubically onto ``grid`` (gh, gw) -> [gh * gw, d] (unchanged when equal)."""
  n = math.isqrt(pos.shape[0])
  if n * n != pos.shape[0]:
    raise ValueError(f"position embeddings hold {pos.shape[0]} patches, not a square grid")
  gh, gw = grid
  if (gh, gw) == (n, n):
    return pos
  wh = jnp.asarray(bicubic_matrix(n, gh, antialias), jnp.float32)
  ww = jnp.asarray(bicubic_matrix(n, gw, antialias), jnp.float32)
  table = pos.astype(jnp.float32).reshape(n, n, -1)
  out = jnp.einsum("hi,wj,ijd->hwd", wh, ww, table, precision=jax.lax.Precision.HIGHEST)
  return out.reshape(gh * gw, -1).astype(pos.dtype)


# ----------------------------------------------------------------------------
# Modules
# ----------------------------------------------------------------------------


def square_size(value, field: str, family: str) -> int:
  """An ``image_size``/``patch_size`` config value (int or a square pair) as an int.

  Raises:
    ValueError: for a non-square pair (the position grid would not be square).
  """
  if isinstance(value, (list, tuple)):
    if len(value) != 2 or value[0] != value[1]:
      raise ValueError(f"{family}: config field {field!r}={value!r} is not square; "
                       "only square sizes are supported")
    value = value[0]
  return int(value)


def prepend_class_token(patches: Array, cls: Array, pos: Array, grid: tuple[int, int],
                        antialias: bool = False) -> Array:
  """[cls, patches] + position embeddings, interpolated onto ``grid``.

  Args:
    patches: [b, gh * gw, d] patch embeddings.
    cls: [d] class token.
    pos: [1 + n * n, d] position embeddings (class position first).
    grid: the input's patch grid.
    antialias: interpolate with torch's antialiased bicubic kernel.
  """
  b, _, d = patches.shape
  pos = jnp.concatenate([pos[:1], interpolate_positions(pos[1:], grid, antialias)])
  x = jnp.concatenate([jnp.broadcast_to(cls.reshape(1, 1, d), (b, 1, d)).astype(patches.dtype),
                       patches], axis=1)
  return x + pos[None].astype(x.dtype)


def check_pixels(pixels, num_channels: int, patch_size: int, family: str) -> None:
  """Raises unless ``pixels`` is [batch, height, width, num_channels] with room for
  at least one patch."""
  if pixels.ndim != 4 or pixels.shape[-1] != num_channels:
    raise ValueError(
        f"{family}: pixels must be [batch, height, width, {num_channels}] (channels last), "
        f"got shape {tuple(pixels.shape)}")
  if pixels.shape[1] < patch_size or pixels.shape[2] < patch_size:
    raise ValueError(f"{family}: a {pixels.shape[1]}x{pixels.shape[2]} image is smaller "
                     f"than one {patch_size}x{patch_size} patch")


class PatchEmbed(nn.Module):
  """Non-overlapping patches -> [batch, gh * gw, hidden] (a strided convolution)."""
  hidden_size: int
  patch_size: int
  use_bias: bool = True
  dtype: Any = "float32"

  @nn.compact
  def __call__(self, pixels):
    p = self.patch_size
    x = nn.Conv(self.hidden_size, (p, p), strides=(p, p), padding="VALID",
                use_bias=self.use_bias, dtype=self.dtype, name="projection")(
                    pixels.astype(self.dtype))
    b, gh, gw, d = x.shape
    return x.reshape(b, gh * gw, d), (gh, gw)


class EncoderLayer(nn.Module):
  """The pre-norm layer every vision family shares.

  ``x += ls1 * attn(norm1 x); x += ls2 * mlp(norm2 x)``, with the layer scales
  ``ls`` only for DINOv2. The MLP is ``fc2(act(fc1 h))``, or for a SwiGLU MLP
  ``down(silu(gate h) * up h)``; the neurons (site ``layer_{i}/mlp``) are the
  input of ``fc2``/``down``. Parameter names (``query``, ``attention_output``,
  ``fc1``...) are the ones ``partition.py``'s rules split.

  Returns (new x [b, s, d], neurons [b, s, intermediate]).
  """
  num_heads: int
  intermediate_size: int
  hidden_act: str
  layer_norm_eps: float
  qkv_bias: bool = True
  layer_scale: bool = False
  swiglu: bool = False
  dtype: Any = "float32"

  @nn.compact
  def __call__(self, x):
    b, s, d = x.shape
    hd = d // self.num_heads
    dense = lambda n, name, bias=True: common.Dense(n, use_bias=bias, dtype=self.dtype,
                                                    name=name)
    h = layer_norm(self.layer_norm_eps, self.dtype, "norm1")(x)
    q, k, v = (dense(d, n, self.qkv_bias)(h).reshape(b, s, self.num_heads, hd)
               for n in ("query", "key", "value"))
    a = common.dot_product_attention(q, k, v, jnp.zeros((), jnp.float32), hd ** -0.5)
    a = dense(d, "attention_output")(a.reshape(b, s, d))
    if self.layer_scale:
      a = a * self.param("layer_scale1", nn.initializers.ones, (d,)).astype(a.dtype)
    x = x + a
    h = layer_norm(self.layer_norm_eps, self.dtype, "norm2")(x)
    if self.swiglu:
      neurons = jax.nn.silu(dense(self.intermediate_size, "gate")(h)) * \
          dense(self.intermediate_size, "up")(h)
      y = dense(d, "down")(neurons)
    else:
      neurons = activation(self.hidden_act)(dense(self.intermediate_size, "fc1")(h))
      y = dense(d, "fc2")(neurons)
    if self.layer_scale:
      y = y * self.param("layer_scale2", nn.initializers.ones, (d,)).astype(y.dtype)
    return x + y, neurons


def split_sites(rec: common.Recorder, prefix: int) -> tuple[dict, dict]:
  """The recorded [b, prefix + patches, n] sites cut into patch and prefix tokens."""
  patches = {s: v[:, prefix:] for s, v in rec.out.items()}
  prefixes = {s: v[:, :prefix] for s, v in rec.out.items()}
  return patches, prefixes


# ----------------------------------------------------------------------------
# The model handle
# ----------------------------------------------------------------------------


@dataclasses.dataclass(eq=False)
class VisionModel(base.Model):
  """A ready-to-run vision encoder (``base.Model`` with an image interface).

  Attributes (beyond ``base.Model``'s):
    image_mean, image_std: per-channel normalisation of [0, 1] pixels the model
      expects (from ``preprocessor_config.json`` when present, else the
      family's Hugging Face default).
    image_size: (height, width) of the model's native input.
  """
  causal: bool = False
  image_mean: tuple = HALF
  image_std: tuple = HALF
  image_size: tuple = (224, 224)

  @property
  def patch_size(self) -> int:
    return self.config.patch_size

  @property
  def num_prefix_tokens(self) -> int:
    """Class token plus register tokens: the rows before the patch tokens."""
    return self.config.num_prefix_tokens

  def grid(self, height: int, width: int) -> tuple[int, int]:
    """The patch grid (rows, columns) of a ``height`` x ``width`` input."""
    return height // self.patch_size, width // self.patch_size

  @functools.cached_property
  def _apply(self):
    def fwd(params, pixels, sites):
      return self.module.apply({"params": params}, pixels, sites=sites)
    return jax.jit(fwd, static_argnums=(2,))

  def __call__(self, pixels, sites: Sequence[str] = ()):
    """Runs the jitted forward pass.

    Args:
      pixels: [batch, height, width, channels] float, normalised.
      sites: site names (``layer_{i}/mlp``, ``layer_{i}/resid``).

    Returns:
      (hidden [batch, prefix + patches, hidden_size],
       {site: [batch, patches, width]}, {site: [batch, prefix, width]}).
    """
    sites = common.check_sites(tuple(sites), self.num_layers)
    return self._apply(self.params, jnp.asarray(pixels, jnp.float32), sites)


def image_processor_stats(model_dir, family_mean, family_std, family_size):
  """(mean, std, (height, width)) from ``preprocessor_config.json`` or the defaults.

  Reads ``image_mean``, ``image_std`` and the input size: ``crop_size`` when the
  processor centre-crops, else ``size`` (``height``/``width``, ``shortest_edge`` or
  an int). Without the file: the family's defaults.
  """
  import json
  from pathlib import Path
  path = Path(model_dir) / "preprocessor_config.json"
  if not path.exists():
    return tuple(family_mean), tuple(family_std), tuple(family_size)
  cfg = json.loads(path.read_text())
  mean = tuple(float(x) for x in cfg.get("image_mean", family_mean))
  std = tuple(float(x) for x in cfg.get("image_std", family_std))
  crop = cfg.get("crop_size") if cfg.get("do_center_crop", False) else None
  size = crop if crop is not None else cfg.get("size")
  if isinstance(size, dict) and "height" in size and "width" in size:
    size = (int(size["height"]), int(size["width"]))
  elif isinstance(size, dict) and "shortest_edge" in size:
    size = (int(size["shortest_edge"]),) * 2
  elif isinstance(size, int):
    size = (size, size)
  else:
    size = tuple(family_size)
  return mean, std, size


# ----------------------------------------------------------------------------
# Hugging Face tensor conversion helpers
# ----------------------------------------------------------------------------


def convert_linear_or_norm(path: str, array, kind: str) -> dict:
  """A torch Linear ([out, in] weight -> Flax kernel [in, out]) or LayerNorm (1-D
  weight -> ``scale``) tensor; ``kind`` is ``"weight"`` or ``"bias"``."""
  if kind == "bias":
    return {f"{path}/bias": array}
  if array.ndim == 2:
    return {f"{path}/kernel": array.T}
  return {f"{path}/scale": array}


def convert_patch_projection(path: str, array, kind: str) -> dict:
  """The patch convolution: torch [out, in, kh, kw] -> Flax [kh, kw, in, out]."""
  if kind == "bias":
    return {f"{path}/bias": array}
  return {f"{path}/kernel": array.transpose(2, 3, 1, 0)}
