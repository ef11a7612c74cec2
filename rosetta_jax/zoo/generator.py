"""Trains the vision zoo's one-step generator with MeanFlow, and makes its probe set.

MeanFlow (Geng et al., "Mean Flows for One-step Generative Modeling", 2025):
with ``z_t = (1 - t) x + t e`` (data x, noise e) and the instantaneous velocity
``v = e - x``, the DiT learns the *average* velocity over [r, t],
``u(z_t, r, t) = 1 / (t - r) * integral_r^t v dt``. The identity
``u = v - (t - r) d/dt u`` gives the regression target

    u_target = v - (t - r) * (v . grad_z u + d_t u)      (stop-gradient)

whose total derivative is one forward-mode product, ``jax.jvp`` of the network
with tangents (v, 0, 1) for (z, r, t). A share ``flow_fraction`` of the pairs has
r = t (plain flow matching). Times are logit-normal (mean -0.4, std 1). The loss
is weighted adaptively, ``sg(1 / (|err|^2 + 1e-3)^p) * |err|^2`` (per image,
mean over pixels). One step from pure noise generates: ``x = z - u(z, 0, 1)``.

The probe set: ``num_samples`` images, classes in turn (0, 1, ..., 9, 0, ...),
from noise drawn with ``sample_seed``; stored in ``samples.npz`` (noise, labels,
uint8 images) so a resumed or re-run study records the generator and the
discriminators on the very images the generator made.
"""

from __future__ import annotations

import dataclasses
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from rosetta_jax.data import images as images_lib
from rosetta_jax.models import dit
from rosetta_jax.zoo import vision as zoo_lib

SAMPLES = "samples.npz"


@dataclasses.dataclass(frozen=True, eq=False)
class Samples:
  """The generator's probe set.

  Attributes:
    images: an ``ImageSet`` (``generated``): uint8 [N, 28, 28, 1], the class each
      image was generated for as its label, ids ``gen-NNNNN``.
    noise: [N, 28, 28, 1] float32, the noise each image was generated from (the
      generator's input when its activations are recorded).
  """
  images: images_lib.ImageSet
  noise: np.ndarray


def dit_config(g: zoo_lib.GeneratorConfig) -> dit.DiTConfig:
  return dit.DiTConfig(image_size=28, patch_size=g.patch_size, num_channels=1,
                       hidden_size=g.hidden_size, num_layers=g.num_layers,
                       num_heads=g.num_heads, intermediate_size=g.mlp_ratio * g.hidden_size,
                       num_classes=len(images_lib.CLASS_NAMES))


def _times(key, n):
  k1, k2 = jax.random.split(key)
  a = jax.nn.sigmoid(jax.random.normal(k1, (n,)) - 0.4)
  b = jax.nn.sigmoid(jax.random.normal(k2, (n,)) - 0.4)
  return jnp.minimum(a, b), jnp.maximum(a, b)


@functools.lru_cache(maxsize=8)
def generator_init(module: dit.DiT):
  def init(key):
    z = jnp.zeros((1, 28, 28, 1))
    return module.init(key, z, jnp.zeros((1,)), jnp.ones((1,)), jnp.zeros((1,), jnp.int32))[
        "params"]
  return init


@functools.lru_cache(maxsize=8)
def meanflow_loss(module: dit.DiT, g: zoo_lib.GeneratorConfig):
  """``loss(params, data, key)`` of one MeanFlow batch (see the module docstring)."""
  n = g.schedule.batch_size

  def loss(params, data, key):
    k_idx, k_t, k_flow, k_noise = jax.random.split(key, 4)
    idx = jax.random.randint(k_idx, (n,), 0, data["labels"].shape[0])
    x, y = data["x"][idx], data["labels"][idx]
    r, t = _times(k_t, n)
    r = jnp.where(jax.random.uniform(k_flow, (n,)) < g.flow_fraction, t, r)
    e = jax.random.normal(k_noise, x.shape)
    z = (1 - t)[:, None, None, None] * x + t[:, None, None, None] * e
    v = e - x
    fn = lambda z_, r_, t_: module.apply({"params": params}, z_, r_, t_, y)[0]
    u, dudt = jax.jvp(fn, (z, r, t), (v, jnp.zeros_like(r), jnp.ones_like(t)))
    target = jax.lax.stop_gradient(v - (t - r)[:, None, None, None] * dudt)
    sq = jnp.mean((u - target) ** 2, axis=(1, 2, 3))
    weight = jax.lax.stop_gradient(1.0 / (sq + 1e-3) ** g.adaptive_p)
    return jnp.mean(weight * sq)
  return loss


def make_samples(model: dit.GeneratorModel, g: zoo_lib.GeneratorConfig,
                 batch: int = 250) -> Samples:
  """Generates the probe set (one step per image, classes in turn)."""
  n = g.num_samples
  noise = np.asarray(jax.random.normal(jax.random.PRNGKey(g.sample_seed), (n, 28, 28, 1)),
                     np.float32)
  labels = np.arange(n) % len(images_lib.CLASS_NAMES)
  out = [np.asarray(model.generate(noise[i:i + batch], labels[i:i + batch])[0])
         for i in range(0, n, batch)]
  pixels = dit.to_uint8(np.concatenate(out))
  return Samples(_image_set(pixels, labels), noise)


def _image_set(pixels, labels) -> images_lib.ImageSet:
  return images_lib.ImageSet("generated", tuple(f"gen-{i:05d}" for i in range(len(labels))),
                             pixels, np.asarray(labels, np.int64), images_lib.CLASS_NAMES)


def save_samples(samples: Samples, path: str) -> None:
  tmp = f"{path}.tmp.npz"
  np.savez(tmp, images=samples.images.images, labels=samples.images.labels,
           noise=samples.noise)
  os.replace(tmp, path)


def load_samples(path: str, g: zoo_lib.GeneratorConfig) -> Samples:
  """The stored probe set; raises if it does not match the config's count/seed."""
  with np.load(path) as z:
    images, labels, noise = z["images"], z["labels"], z["noise"]
  want = np.asarray(jax.random.normal(jax.random.PRNGKey(g.sample_seed), (1, 28, 28, 1)))
  if len(labels) != g.num_samples or not np.array_equal(noise[:1], want):
    raise ValueError(f"{path} holds {len(labels)} samples of another noise seed than the "
                     f"config's {g.num_samples} (sample_seed={g.sample_seed}); delete it")
  return Samples(_image_set(images, labels), noise)


def train_generator(g: zoo_lib.GeneratorConfig, train: images_lib.ImageSet, run_dir: str,
                    stop_after: int | None = None, progress: bool = True):
  """Trains (or resumes, or loads) the generator; generates or loads its probe set.

  Returns:
    (``dit.GeneratorModel``, ``Samples``, summary dict), or with ``stop_after``
    before the end (params, None, {}).
  """
  cfg = dit_config(g)
  module = dit.DiT(cfg)
  data = {"x": zoo_lib.scaled(train.images), "labels": jnp.asarray(train.labels, jnp.int32)}

  params, _ = zoo_lib.train_seeds(generator_init(module), meanflow_loss(module, g), (g.seed,),
                                  g.schedule, data,
                                  run_dir, stop_after, progress, desc="generator (MeanFlow)")
  if stop_after is not None and stop_after < g.schedule.steps:
    return params, None, {}
  model = dit.GeneratorModel("dit-generator", module,
                             jax.tree_util.tree_map(lambda x: x[0], params), cfg)
  path = os.path.join(run_dir, SAMPLES)
  if os.path.exists(path):
    samples = load_samples(path, g)
  else:
    samples = make_samples(model, g)
    save_samples(samples, path)
  px = samples.images.images.astype(np.float64)
  summary = {"num_samples": len(px), "pixel_mean": float(px.mean()),
             "pixel_std": float(px.std()),
             "train_pixel_mean": float(train.images.mean()),
             "train_pixel_std": float(train.images.astype(np.float64).std())}
  return model, samples, summary
