"""The vision half of the study pipeline: the vision zoo, its probe images, its stores.

``studies.context.load_context`` takes this path when ``cfg.modality == "vision"``:

* ``train_models`` trains (or resumes, or loads) the vision zoo in ``workdir/zoo``
  (``zoo/vision.py``): ViT classifiers at every width and seed, and the one-step
  generator, whose generated images (``zoo/generator/samples.npz``, stored with
  the run, so a resumed run records on the very same images) are the probe set;
* ``record_models`` records every classifier on those images
  (``image_recording.record_images``) and the generator on the passes that made
  them (``record_generated``), all on one canonical grid (``study_grid``: the
  coarsest of their patch grids);
* the pairs: seeds within each width (``context.zoo_pairs``, the size axis across
  widths, as for text) and ``generator_pairs``, the generator against each
  discriminator.

Documents are images: each store's ``unit_offsets`` are 0, HW, 2HW, ... (one
block of grid cells per image), so ``pairs.doc_index`` gives every cell its
image, the permutation null deranges whole images (never cells within one) and
the bootstrap resamples images. ``probe_documents`` stands the images in for the
text pipeline's documents (id, no text, class as domain); ``unit_labels`` names
each unit by its image and cell (the unit's "text" is its cell).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from rosetta_jax import image_recording
from rosetta_jax import store as store_lib
from rosetta_jax.analysis import selectivity as sel
from rosetta_jax.data import corpus as corpus_lib
from rosetta_jax.data import patch_grid
from rosetta_jax.pairs import Pair
from rosetta_jax.zoo import vision as zoo_lib

GENERATOR = "dit-generator"


def train_models(cfg, zoo_dir: str, progress: bool = True) -> zoo_lib.VisionZoo:
  """The study's vision zoo (``cfg.vision_zoo``), its models' depths selected
  (``cfg.depths``)."""
  zoo = zoo_lib.train_vision_zoo(cfg.vision_zoo, zoo_dir, progress=progress)
  for m in zoo.classifiers + [zoo.generator]:
    m.select_depths(cfg.depths)
  return zoo


def canonical_grid(classifiers: Sequence, generator) -> tuple[int, int]:
  """The coarsest patch grid of the classifiers and the generator on the probe images."""
  grids = {m.name: image_recording.model_grid(m) for m in classifiers}
  grids[generator.name] = generator.grid(generator.config.image_size,
                                         generator.config.image_size)
  return patch_grid.canonical_grid(grids)


def generator_pairs(generator, classifiers: Sequence) -> list[Pair]:
  """The generator against each discriminator ("gen~vit-w8-s0"), by width then seed."""
  return [Pair(f"gen~{m.name}", generator, m) for m in classifiers]


def record_models(classifiers: Sequence, generator, samples, store_dir: Callable[[str], str],
                  batch_size: int, progress: bool = True) -> dict:
  """Records every model on the probe images, on one canonical grid; {name: Store}.

  ``store_dir(model name)`` is the store's directory. Re-running resumes (or
  reuses) each store; the stores are checked to share images and grid.
  """
  grid = canonical_grid(classifiers, generator)
  stores = {generator.name: image_recording.record_generated(
      generator, samples, generator.mlp_sites(), store_dir(generator.name), grid=grid,
      batch_size=batch_size, progress=progress)}
  for m in classifiers:
    stores[m.name] = image_recording.record_images(
        m, samples.images, m.mlp_sites(), store_dir(m.name), grid=grid,
        batch_size=batch_size, progress=progress)
  first = stores[generator.name]
  for s in stores.values():
    image_recording.check_same_grid(first, s)
  return stores


def probe_documents(samples) -> list[corpus_lib.Document]:
  """The probe images as the pipeline's documents (image id, no text, class)."""
  return [corpus_lib.Document(i, "", d) for i, d in zip(samples.images.ids,
                                                         samples.images.domains)]


def is_vision_store(store: store_lib.Store) -> bool:
  return store.manifest.get("modality") == "vision"


def unit_labels(store: store_lib.Store) -> tuple[sel.UnitLabels, np.ndarray]:
  """Each unit's image, class and cell ("r{i}c{j}", its unit text), and [T, 2] zero
  spans (cells have no byte span)."""
  grid = tuple(store.manifest["settings"]["grid"])
  docs = store.documents
  offs = np.asarray(docs["unit_offsets"])
  cells = [f"r{i}c{j}" for i in range(grid[0]) for j in range(grid[1])]
  texts = cells * (len(offs) - 1)
  return (sel.UnitLabels.build(offs, docs["domains"], texts),
          np.zeros((int(offs[-1]), 2), np.int64))
