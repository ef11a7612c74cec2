"""Alignment of vision models on one canonical patch grid.

Models with different patch sizes or input resolutions see the same image as
different patch grids (a ViT-S/14 at 224 px: 16 x 16; a ViT/4 at 28 px: 7 x 7).
To compare their neurons unit by unit, every model's patch activations are
resampled onto one *canonical grid* of H x W cells, and a unit is one (image,
cell): T = images x H x W units, image-major, cells in row-major order.

The rule (area averaging). Every model sees the whole image (resized to its
input), so its ``h x w`` patches tile the image's unit square: patch (a, b)
covers rows [a / h, (a + 1) / h) and columns [b / w, (b + 1) / w). Canonical
cell (i, j) covers [i / H, (i + 1) / H) x [j / W, (j + 1) / W). A cell's value
is the area-weighted mean of the patches it overlaps:

    cell(i, j) = sum_ab  overlap(i, a) / (1/H) * overlap(j, b) / (1/W) * patch(a, b)

(separable: ``area_matrix(h, H) @ patches @ area_matrix(w, W).T``), computed
exactly in integer arithmetic. When H divides h this is the plain mean of
(h / H) x (w / W) blocks; equal grids are the identity.

The default canonical grid is the coarsest: ``(min h, min w)`` over the models.
Area averaging only coarsens: a canonical grid finer than some model's grid (in
either direction) is an error naming the model, as is a model whose input does
not tile into whole patches (pixels it never sees).
"""

from __future__ import annotations

import functools
from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

Grid = tuple[int, int]


@functools.lru_cache(maxsize=256)
def area_matrix(src: int, dst: int) -> np.ndarray:
  """[dst, src] float64 weights: row i is the share of canonical cell i covered by
  each source cell (rows sum to 1). Requires dst <= src.

  Source cell a spans [a * dst, (a + 1) * dst) and cell i spans [i * src, (i + 1) * src)
  in units of 1 / (src * dst), so overlaps are exact integers.
  """
  if not 1 <= dst <= src:
    raise ValueError(f"area averaging maps {src} cells onto 1..{src} cells, not {dst}")
  m = np.zeros((dst, src), np.float64)
  for i in range(dst):
    lo, hi = i * src, (i + 1) * src
    for a in range(src):
      overlap = min(hi, (a + 1) * dst) - max(lo, a * dst)
      if overlap > 0:
        m[i, a] = overlap / src
  return m


def canonical_grid(grids: Mapping[str, Grid], grid: Grid | None = None) -> Grid:
  """The canonical grid for models with patch ``grids`` ({model name: (h, w)}).

  Args:
    grids: each model's patch grid on its input.
    grid: a requested canonical grid; None = the coarsest, ``(min h, min w)``.

  Raises:
    ValueError: no models, a non-positive grid, or a requested grid finer than a
      model's (names the model and both grids).
  """
  if not grids:
    raise ValueError("canonical_grid: no models")
  if grid is None:
    grid = (min(g[0] for g in grids.values()), min(g[1] for g in grids.values()))
  grid = (int(grid[0]), int(grid[1]))
  if min(grid) < 1:
    raise ValueError(f"canonical grid {grid} must be positive")
  for name, g in grids.items():
    check_grid(name, g, grid)
  return grid


def check_grid(model: str, model_grid: Grid, grid: Grid) -> None:
  """Raises unless ``grid`` is at most as fine as ``model_grid`` in both directions."""
  if grid[0] > model_grid[0] or grid[1] > model_grid[1]:
    raise ValueError(
        f"model {model!r} has a {model_grid[0]}x{model_grid[1]} patch grid, coarser than "
        f"the canonical {grid[0]}x{grid[1]} grid: area averaging only coarsens; use a "
        f"canonical grid of at most {model_grid[0]}x{model_grid[1]}")


def input_grid(model: str, size: Grid, patch_size: int) -> Grid:
  """The patch grid of a ``size`` (height, width) input.

  Raises:
    ValueError: the input does not tile into whole patches (the model would drop
      the remaining pixels, so its grid would not cover the image).
  """
  h, w = size
  if h % patch_size or w % patch_size or h < patch_size or w < patch_size:
    raise ValueError(f"model {model!r}: a {h}x{w} input does not tile into whole "
                     f"{patch_size}x{patch_size} patches; use a multiple of {patch_size}")
  return h // patch_size, w // patch_size


def resample(acts, model_grid: Grid, grid: Grid):
  """Patch activations [b, h * w, n] (row-major) -> canonical cells [b, H * W, n].

  Usable inside ``jax.jit`` (the weights are constants of the static grids).
  """
  h, w = model_grid
  if acts.shape[1] != h * w:
    raise ValueError(f"activations hold {acts.shape[1]} patches, not a {h}x{w} grid")
  if (h, w) == tuple(grid):
    return acts
  mh = jnp.asarray(area_matrix(h, grid[0]), jnp.float32)
  mw = jnp.asarray(area_matrix(w, grid[1]), jnp.float32)
  x = acts.reshape(acts.shape[0], h, w, acts.shape[-1]).astype(jnp.float32)
  out = jnp.einsum("Hh,Ww,bhwn->bHWn", mh, mw, x, precision=jax.lax.Precision.HIGHEST)
  return out.reshape(acts.shape[0], grid[0] * grid[1], acts.shape[-1])


def resample_numpy(acts: np.ndarray, model_grid: Grid, grid: Grid) -> np.ndarray:
  """``resample`` in float64 NumPy (the reference the tests check against)."""
  h, w = model_grid
  x = np.asarray(acts, np.float64).reshape(acts.shape[0], h, w, acts.shape[-1])
  out = np.einsum("Hh,Ww,bhwn->bHWn", area_matrix(h, grid[0]), area_matrix(w, grid[1]), x)
  return out.reshape(acts.shape[0], grid[0] * grid[1], acts.shape[-1])


def unit_offsets(num_images: int, grid: Grid) -> np.ndarray:
  """[images + 1] first unit of each image: every image holds H * W units."""
  return np.arange(num_images + 1, dtype=np.int64) * (grid[0] * grid[1])


def cell_of_unit(units: Sequence[int] | np.ndarray, grid: Grid) -> tuple[np.ndarray, ...]:
  """(image, row, column) of global unit indices."""
  u = np.asarray(units, np.int64)
  cells = grid[0] * grid[1]
  return u // cells, (u % cells) // grid[1], u % grid[1]
