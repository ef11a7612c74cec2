"""A small class-conditional diffusion transformer (DiT) for one-step generation.

The generator of the vision zoo (``zoo/generator.py`` trains it with MeanFlow).
It predicts the *average velocity* ``u(z, r, t)`` of the flow between times r and t
(``z_t = (1 - t) x + t * noise``), so one step from pure noise generates an image:
``x = z - u(z, r=0, t=1)``.

Architecture (DiT, Peebles & Xie 2023, with adaLN-Zero): patches of the noisy
image plus learned positions; a conditioning vector
``c = emb(t) + emb(t - r) + emb(label)``; pre-norm layers whose LayerNorms are
modulated by ``c`` (shift, scale) and whose residual branches are gated by it
(zero-initialised, so each layer starts as the identity):

    x += gate1 * attn(modulate(LN x, shift1, scale1))
    x += gate2 * fc2(act(fc1 modulate(LN x, shift2, scale2)))

then a modulated LayerNorm and a zero-initialised linear map back to pixels, F;
the velocity is ``u = (z - F) / max(t, t_min)`` (``x_param``), so a one-step
sample is F itself.
Site ``layer_{i}/mlp`` is ``act(fc1 h)`` over the patch tokens (there are no
class tokens: the prefix dict is empty), so the generator's neurons are recorded
and matched like a discriminator's.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from rosetta_jax.models import base, common, vision


@dataclasses.dataclass(frozen=True)
class DiTConfig(common.TransformerShape):
  """Shape of a DiT generator.

  Attributes:
    image_size: side of the square images it generates.
    patch_size: side of a square patch (``image_size`` must be a multiple).
    num_channels: image channels.
    hidden_size: width of the hidden states.
    num_layers: transformer layers.
    num_heads: attention heads (divide hidden_size).
    intermediate_size: MLP neurons per layer.
    num_classes: class labels it is conditioned on.
    hidden_act: MLP activation.
    frequency_dim: size of the sinusoidal time features.
    x_param: the network's output F is an image and ``u = (z - F) / max(t, t_min)``
      (else F is u itself). Any u can be written so; this one makes the one-step
      sample ``z - u(z, 0, 1)`` the output F, a smooth image, instead of asking
      the network to reproduce the input noise exactly to cancel it.
    t_min: the floor of t in that division.
    dtype: computation and parameter dtype.
  """
  image_size: int = 28
  patch_size: int = 4
  num_channels: int = 1
  hidden_size: int = 64
  num_layers: int = 4
  num_heads: int = 4
  intermediate_size: int = 256
  num_classes: int = 10
  hidden_act: str = "gelu"
  frequency_dim: int = 64
  x_param: bool = True
  t_min: float = 0.05
  dtype: str = "float32"

  num_prefix_tokens = 0

  def __post_init__(self):
    super().__post_init__()
    if self.image_size % self.patch_size:
      raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size "
                       f"{self.patch_size}")

  @property
  def grid(self) -> tuple[int, int]:
    return (self.image_size // self.patch_size,) * 2


def timestep_features(t, dim: int):
  """Sinusoidal features [b, dim] of times t [b] in [0, 1] (scaled by 1000, as DiT)."""
  half = dim // 2
  freqs = jnp.exp(-math.log(10000.0) * jnp.arange(half, dtype=jnp.float32) / half)
  args = 1000.0 * t.astype(jnp.float32)[:, None] * freqs[None]
  return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


class TimeEmbed(nn.Module):
  hidden_size: int
  frequency_dim: int
  dtype: str = "float32"

  @nn.compact
  def __call__(self, t):
    h = common.Dense(self.hidden_size, dtype=self.dtype, name="fc1")(
        timestep_features(t, self.frequency_dim))
    return common.Dense(self.hidden_size, dtype=self.dtype, name="fc2")(jax.nn.silu(h))


def _modulate(x, shift, scale):
  return x * (1 + scale[:, None]) + shift[:, None]


class DiTLayer(nn.Module):
  config: DiTConfig

  @nn.compact
  def __call__(self, x, c):
    """Returns (new x [b, P, d], neurons [b, P, intermediate])."""
    cfg = self.config
    b, s, d = x.shape
    hd = d // cfg.num_heads
    mod = nn.Dense(6 * d, kernel_init=nn.initializers.zeros, dtype=cfg.dtype,
                   name="adaln")(jax.nn.silu(c))
    shift1, scale1, gate1, shift2, scale2, gate2 = jnp.split(mod, 6, axis=-1)
    norm = lambda name: nn.LayerNorm(1e-6, use_scale=False, use_bias=False,
                                     use_fast_variance=False, dtype=cfg.dtype, name=name)
    dense = lambda n, name: common.Dense(n, dtype=cfg.dtype, name=name)
    h = _modulate(norm("norm1")(x), shift1, scale1)
    q, k, v = (dense(d, n)(h).reshape(b, s, cfg.num_heads, hd) for n in ("query", "key", "value"))
    a = common.dot_product_attention(q, k, v, jnp.zeros((), jnp.float32), hd ** -0.5)
    x = x + gate1[:, None] * dense(d, "attention_output")(a.reshape(b, s, d))
    h = _modulate(norm("norm2")(x), shift2, scale2)
    neurons = vision.activation(cfg.hidden_act)(dense(cfg.intermediate_size, "fc1")(h))
    return x + gate2[:, None] * dense(d, "fc2")(neurons), neurons


class DiT(nn.Module):
  """The DiT that records named sites.

  Call: ``apply({"params": p}, z [b, H, W, C], r [b], t [b], labels [b] int,
  sites=(...))`` -> ``(u [b, H, W, C] average velocity, {site: [b, P, width]}, {})``.
  """
  config: DiTConfig

  @nn.compact
  def __call__(self, z, r, t, labels, sites: Sequence[str] = ()):
    cfg = self.config
    vision.check_pixels(z, cfg.num_channels, cfg.patch_size, "dit")
    if z.shape[1:3] != (cfg.image_size, cfg.image_size):
      raise ValueError(f"dit: generates {cfg.image_size}x{cfg.image_size} images, got "
                       f"{z.shape[1]}x{z.shape[2]}")
    rec = common.Recorder(common.check_sites(sites, cfg.num_layers))
    x, (gh, gw) = vision.PatchEmbed(cfg.hidden_size, cfg.patch_size, dtype=cfg.dtype,
                                    name="patch_embed")(z)
    pos = self.param("position_embeddings", nn.initializers.normal(0.02),
                     (gh * gw, cfg.hidden_size))
    x = x + pos[None].astype(x.dtype)
    temb = lambda name: TimeEmbed(cfg.hidden_size, cfg.frequency_dim, cfg.dtype, name=name)
    c = (temb("time")(t) + temb("interval")(t - r)
         + nn.Embed(cfg.num_classes, cfg.hidden_size, dtype=cfg.dtype,
                    embedding_init=nn.initializers.normal(0.02), name="label")(labels))
    x = rec.run_layers(lambda i: DiTLayer(cfg, name=f"layers_{i}"), cfg.num_layers, x, c)
    shift, scale = jnp.split(nn.Dense(2 * cfg.hidden_size, kernel_init=nn.initializers.zeros,
                                      dtype=cfg.dtype, name="final_adaln")(jax.nn.silu(c)), 2, -1)
    x = _modulate(nn.LayerNorm(1e-6, use_scale=False, use_bias=False, use_fast_variance=False,
                               dtype=cfg.dtype, name="final_norm")(x), shift, scale)
    p, ch = cfg.patch_size, cfg.num_channels
    out = nn.Dense(p * p * ch, kernel_init=nn.initializers.zeros, dtype=cfg.dtype,
                   name="to_pixels")(x)
    b = z.shape[0]
    out = out.reshape(b, gh, gw, p, p, ch).transpose(0, 1, 3, 2, 4, 5)
    out = out.reshape(b, gh * p, gw * p, ch).astype(jnp.float32)
    if cfg.x_param:
      out = (z - out) / jnp.maximum(t, cfg.t_min)[:, None, None, None]
    return out, rec.out, {}


@dataclasses.dataclass(eq=False)
class GeneratorModel(base.Model):
  """A trained one-step generator: ``generate(noise, labels)`` -> images and sites.

  Images are in [-1, 1] (the training scale); ``to_uint8`` maps them to pixels.
  """
  causal: bool = False

  @property
  def patch_size(self) -> int:
    return self.config.patch_size

  @property
  def num_prefix_tokens(self) -> int:
    return 0

  def grid(self, height: int, width: int) -> tuple[int, int]:
    return height // self.patch_size, width // self.patch_size

  @functools.cached_property
  def _generate(self):
    def gen(params, z, labels, sites):
      b = z.shape[0]
      u, acts, _ = self.module.apply({"params": params}, z, jnp.zeros((b,)), jnp.ones((b,)),
                                     labels, sites=sites)
      return z - u, acts
    return jax.jit(gen, static_argnums=(3,))

  def generate(self, noise, labels, sites: Sequence[str] = ()):
    """One step from noise [b, H, W, C] with class ``labels`` [b].

    Returns:
      (images [b, H, W, C] in about [-1, 1], {site: [b, patches, width]}): the
      sites are those of the pass that made the images.
    """
    sites = common.check_sites(tuple(sites), self.num_layers)
    return self._generate(self.params, jnp.asarray(noise, jnp.float32),
                          jnp.asarray(labels, jnp.int32), sites)

  __call__ = generate


def to_uint8(images) -> np.ndarray:
  """Images in [-1, 1] -> uint8 pixels (clipped, rounded)."""
  x = (np.asarray(images, np.float32) + 1.0) * 127.5
  return np.clip(np.round(x), 0, 255).astype(np.uint8)
