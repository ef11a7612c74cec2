"""The image recorder: images -> canonical patch-grid cells -> an activation store.

``record_images(model, images, sites, store_dir, grid=...)`` is ``record`` for
vision models. It writes the same store (``store.py``) the text recorder writes,
so the matcher, the permutation null and the bootstrap read it unchanged:

* units are (image, cell) pairs of the canonical grid (``data/patch_grid.py``):
  T = images x H x W, image-major, cells row-major;
* a *document* is an image: ``documents.json`` holds the image ids, their class
  names as domains, and ``unit_offsets`` = 0, HW, 2HW, ... So the null's document
  permutation permutes whole images (never patches within one), and the
  bootstrap resamples images;
* class and register tokens are not recorded (they are not patches).

``record_generated(generator, samples, sites, store_dir, grid=...)`` records a
one-step generator (``models/dit.py``) on the passes that made its probe images,
into a store with the same units and documents as ``record_images`` of those
images, so generator neurons and discriminator neurons match unit for unit.

Each batch of ``batch_size`` images (the last one padded to the same shape) is
resized and normalised for the model (``images.to_model_input``), run through
the jitted forward pass, and every site's patch activations are area-averaged
onto the grid on the device; only ``[images x cells, neurons]`` rows reach the
host. Re-running the same call resumes after the last committed batch; the
batches are a fixed function of the images and settings, so a resumed store is
bit-for-bit an uninterrupted one. A different model, image set or setting in the
same directory is an error naming the differing fields.
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from rosetta_jax import store as store_lib
from rosetta_jax.data import images as images_lib
from rosetta_jax.data import patch_grid
from rosetta_jax.models import common
from rosetta_jax.recording import DTYPES, weights_fingerprint

RESIZE = "bilinear"


def model_grid(model, input_size: tuple[int, int] | None = None) -> tuple[int, int]:
  """The patch grid of ``model`` on ``input_size`` (default its native size).

  Raises:
    ValueError: the input does not tile into whole patches.
  """
  size = tuple(input_size or model.image_size)
  return patch_grid.input_grid(model.name, size, model.patch_size)


def study_grid(models: Sequence, input_sizes: Mapping[str, tuple[int, int]] | None = None,
               grid: tuple[int, int] | None = None) -> tuple[int, int]:
  """The canonical grid for recording ``models`` together (default the coarsest).

  Args:
    models: ``VisionModel``s.
    input_sizes: {model name: (height, width)} overriding a model's native size.
    grid: a requested canonical grid.

  Raises:
    ValueError: a model whose grid is coarser than the requested one, or whose
      input does not tile into patches.
  """
  input_sizes = input_sizes or {}
  return patch_grid.canonical_grid(
      {m.name: model_grid(m, input_sizes.get(m.name)) for m in models}, grid)


def preprocess_hash(size, mean, std) -> str:
  body = json.dumps({"size": list(size), "mean": list(mean), "std": list(std),
                     "resize": RESIZE})
  return hashlib.sha256(body.encode()).hexdigest()[:16]


@functools.lru_cache(maxsize=32)
def make_step(module, sites: tuple[str, ...], size: tuple[int, int], mean: tuple, std: tuple,
              mgrid: tuple[int, int], grid: tuple[int, int], channels: int, dtype: str):
  """The jitted step: uint8 images [b, h, w, c] -> {site: [b * H * W, neurons]}."""
  out_dtype = DTYPES[dtype]

  def step(params, images):
    x = images_lib.to_model_input(images, size, mean, std, channels)
    _, patches, _ = module.apply({"params": params}, x, sites=sites)
    out = {}
    for s in sites:
      cells = patch_grid.resample(patches[s], mgrid, grid)
      out[s] = cells.reshape(-1, cells.shape[-1]).astype(out_dtype)
    return out
  return jax.jit(step)


def check_same_grid(a: store_lib.Store, b: store_lib.Store) -> None:
  """Raises unless two image stores hold the same images on the same canonical grid."""
  store_lib.check_same_units(a, b)
  ga, gb = (s.manifest.get("settings", {}).get("grid") for s in (a, b))
  if ga != gb:
    raise ValueError(f"stores {a.path} and {b.path} use different canonical grids "
                     f"({ga} vs {gb}); record both on one grid")


def record_images(model, images: images_lib.ImageSet, sites: Sequence[str] | None,
                  store_dir: str, *, grid: tuple[int, int] | None = None,
                  input_size: tuple[int, int] | None = None, batch_size: int = 16,
                  dtype: str = "float32", progress: bool = True,
                  commit_interval_s: float = 5.0, overlap: bool = True,
                  batch_sharding=None) -> store_lib.Store:
  """Records canonical-grid activations of a vision ``model`` on ``images``.

  Args:
    model: a ``models.vision.VisionModel``.
    images: the ``ImageSet`` (uint8 [N, h, w, c]), recorded in its order.
    sites: site names (``model.mlp_sites()``); None = all MLP sites.
    store_dir: the store directory; an existing store of the same recording is
      resumed.
    grid: the canonical grid (``study_grid`` of all the models compared); None =
      the model's own patch grid.
    input_size: (height, width) the images are resized to; None = the model's
      native ``image_size``. Must tile into whole patches.
    batch_size: images per batch (a fixed shape).
    dtype: stored dtype, "float32" or "bfloat16".
    progress: show a tqdm bar.
    commit_interval_s: commit at most this often (0 = every batch).
    overlap: dispatch batch k + 1 before the host handles batch k.
    batch_sharding: optional ``jax.sharding.Sharding`` for the [batch, h, w, c] input.

  Returns:
    The finished ``Store``.

  Raises:
    ValueError: bad arguments, a grid finer than the model's, an input that does
      not tile into patches, a store of a different recording in ``store_dir``,
      non-finite activations (naming the site, neuron and image).
  """
  from rosetta_jax.models.vision import VisionModel
  if not isinstance(model, VisionModel):
    raise ValueError(f"model {model.name!r} is not a vision model; record text with "
                     "rosetta_jax.record")
  size = tuple(int(s) for s in (input_size or model.image_size))
  mgrid = model_grid(model, size)
  grid = tuple(int(g) for g in (grid or mgrid))
  sites = _check(model, images, sites, dtype, batch_size, mgrid, grid)
  mean, std = tuple(map(float, model.image_mean)), tuple(map(float, model.image_std))
  step = make_step(model.module, sites, size, mean, std, mgrid, grid,
                   model.config.num_channels, dtype)
  settings = {"grid": list(grid), "model_grid": list(mgrid), "input_size": list(size),
              "pooling": "area", "resize": RESIZE, "batch_size": batch_size}

  def batch(i0, i1):
    x = np.zeros((batch_size,) + images.images.shape[1:], np.uint8)
    x[:i1 - i0] = images.images[i0:i1]
    if batch_sharding is not None:
      x = jax.device_put(x, batch_sharding)
    return (x,)
  return _record_cells(model, images, sites, store_dir, grid, dtype, settings,
                       preprocess_hash(size, mean, std), batch, step, batch_size, progress,
                       commit_interval_s, overlap)


@functools.lru_cache(maxsize=32)
def make_generator_step(module, sites: tuple[str, ...], mgrid: tuple[int, int],
                        grid: tuple[int, int], dtype: str):
  """The jitted step of a generator: (noise, labels) -> {site: [b * H * W, neurons]},
  the sites of the one-step pass ``x = z - u(z, 0, 1)`` that makes the images."""
  out_dtype = DTYPES[dtype]

  def step(params, noise, labels):
    b = noise.shape[0]
    _, patches, _ = module.apply({"params": params}, noise, jnp.zeros((b,)), jnp.ones((b,)),
                                 labels, sites=sites)
    out = {}
    for s in sites:
      cells = patch_grid.resample(patches[s], mgrid, grid)
      out[s] = cells.reshape(-1, cells.shape[-1]).astype(out_dtype)
    return out
  return jax.jit(step)


def record_generated(generator, samples, sites: Sequence[str] | None, store_dir: str, *,
                     grid: tuple[int, int] | None = None, batch_size: int = 16,
                     dtype: str = "float32", progress: bool = True,
                     commit_interval_s: float = 5.0, overlap: bool = True
                     ) -> store_lib.Store:
  """Records a generator's activations on the passes that made its probe images.

  The units and documents are those ``record_images`` writes for
  ``samples.images`` on the same ``grid``, so the generator's store matches the
  discriminators' stores of the generated images unit for unit (what the study
  correlates: generator neurons while generating vs discriminator neurons seeing
  the result).

  Args:
    generator: a ``models.dit.GeneratorModel``.
    samples: its ``zoo.generator.Samples`` (images, labels and the noise).
    sites, store_dir, grid, batch_size, dtype, progress, commit_interval_s,
    overlap: as for ``record_images``; ``grid`` None = the generator's own grid.
  """
  from rosetta_jax.models.dit import GeneratorModel
  if not isinstance(generator, GeneratorModel):
    raise ValueError(f"model {generator.name!r} is not a generator")
  images = samples.images
  size = tuple(images.images.shape[1:3])
  mgrid = patch_grid.input_grid(generator.name, size, generator.patch_size)
  grid = tuple(int(g) for g in (grid or mgrid))
  sites = _check(generator, images, sites, dtype, batch_size, mgrid, grid)
  if samples.noise.shape[:3] != images.images.shape[:3]:
    raise ValueError(f"samples: noise {samples.noise.shape} does not match images "
                     f"{images.images.shape}")
  step = make_generator_step(generator.module, sites, mgrid, grid, dtype)
  settings = {"grid": list(grid), "model_grid": list(mgrid), "input_size": list(size),
              "pooling": "area", "generator": "one-step (r=0, t=1)",
              "batch_size": batch_size}

  def batch(i0, i1):
    z = np.zeros((batch_size,) + samples.noise.shape[1:], np.float32)
    y = np.zeros((batch_size,), np.int32)
    z[:i1 - i0], y[:i1 - i0] = samples.noise[i0:i1], images.labels[i0:i1]
    return z, y
  noise_hash = hashlib.sha256(np.ascontiguousarray(samples.noise).tobytes()).hexdigest()[:16]
  return _record_cells(generator, images, sites, store_dir, grid, dtype, settings, noise_hash,
                       batch, step, batch_size, progress, commit_interval_s, overlap)


def _check(model, images, sites, dtype, batch_size, mgrid, grid) -> tuple[str, ...]:
  if jax.process_count() > 1:   # several processes would write one store's chunks
    raise ValueError("image recording runs in one process; per-process shards exist for "
                     "text recording only (docs/scale.md)")
  if dtype not in DTYPES:
    raise ValueError(f"unknown dtype {dtype!r}; expected one of {sorted(DTYPES)}")
  if batch_size < 1:
    raise ValueError(f"batch_size must be positive, got {batch_size}")
  if not len(images):
    raise ValueError("no images to record")
  sites = tuple(model.mlp_sites() if sites is None else sites)
  if not sites:
    raise ValueError("no sites to record")
  patch_grid.check_grid(model.name, mgrid, grid)
  return common.check_sites(sites, model.num_layers)


def _record_cells(model, images, sites, store_dir, grid, dtype, settings, preprocess, batch,
                  step, batch_size, progress, commit_interval_s, overlap) -> store_lib.Store:
  """The shared loop: ``step(params, *batch(i0, i1))`` -> rows, into the store."""
  cells = grid[0] * grid[1]
  offsets = patch_grid.unit_offsets(len(images), grid)
  total = int(offsets[-1])
  if total >= np.iinfo(np.int32).max:
    raise ValueError(f"{total} units exceed int32; record the images in parts")
  widths = jax.eval_shape(lambda p, *x: step(p, *x), model.params, *batch(0, 0))
  header = {
      "model": {"name": model.name, "weights_hash": weights_fingerprint(model.params),
                "tokenizer": None, "preprocess": preprocess},
      "modality": "vision",
      "sites": {s: {"neurons": int(widths[s].shape[-1])} for s in sites},
      "dtype": dtype,
      "corpus_hash": images_lib.images_hash(images),
      "documents_hash": store_lib.documents_hash(list(images.ids), offsets),
      "num_docs": len(images),
      "total_units": total,
      "settings": settings,
  }
  writer = store_lib.StoreWriter(store_dir, header, {
      "doc_ids": list(images.ids), "domains": images.domains, "unit_offsets": offsets})
  done = writer.units_done
  starts = list(range(0, len(images), batch_size))
  ends = {0, total} | {min(i + batch_size, len(images)) * cells for i in starts}
  if done not in ends:
    raise ValueError(f"{store_dir}: units_done={done} is not a batch boundary of this "
                     "recording; the store is inconsistent, delete it")
  state = {"last_commit": time.monotonic(), "moments": dict(writer.moments)}
  bar = None
  if progress:
    from tqdm.auto import tqdm
    bar = tqdm(total=total, initial=done, unit="unit", unit_scale=True,
               desc=f"record {model.name}", dynamic_ncols=True)

  def finish(u0: int, u1: int, out) -> None:
    futures = []
    for s in sites:
      rows = np.asarray(out[s])[:u1 - u0]
      m = store_lib.chunk_moments(rows)
      if not (np.isfinite(m.min).all() and np.isfinite(m.max).all()):
        bad = int(np.flatnonzero(~(np.isfinite(m.min) & np.isfinite(m.max)))[0])
        image = images.ids[u0 // cells]
        raise ValueError(f"site {s!r}: neuron {bad} is NaN or inf in units [{u0}, {u1}) "
                         f"(from image {image!r})")
      state["moments"][s] = state["moments"][s].merge(m)
      futures.append(writer.write(s, u0, rows))
    for f in futures:
      f.result()
    now = time.monotonic()
    if now - state["last_commit"] >= commit_interval_s or u1 == total:
      writer.commit(u1, state["moments"])
      state["last_commit"] = now
    if bar is not None:
      bar.update(u1 - u0)

  pending = None
  try:
    for i0 in starts:
      i1 = min(i0 + batch_size, len(images))
      u0, u1 = i0 * cells, i1 * cells
      if u1 <= done:
        continue
      out = step(model.params, *batch(i0, i1))
      if overlap and pending is not None:
        finish(*pending)
      pending = (u0, u1, out)
      if not overlap:
        finish(*pending)
        pending = None
      del out
    if pending is not None:
      finish(*pending)
  finally:
    if bar is not None:
      bar.close()
  return store_lib.open_store(store_dir)
