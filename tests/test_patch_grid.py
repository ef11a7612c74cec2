"""Canonical patch grid: the area-averaging rule, its errors, and its unit layout."""

import math

import jax
import numpy as np
import pytest

from rosetta_jax.data import patch_grid as G


def _supersampled(x, dst):
  """Reference: replicate each of the src cells lcm/src times, average blocks of lcm/dst."""
  src = x.shape[0]
  fine = np.repeat(x, math.lcm(src, dst) // src, axis=0)
  return fine.reshape(dst, -1, *x.shape[1:]).mean(1)


@pytest.mark.parametrize("src,dst", [(16, 7), (7, 4), (16, 16), (12, 4), (5, 1), (37, 16)])
def test_area_matrix_is_exact_area_averaging(src, dst):
  m = G.area_matrix(src, dst)
  assert m.shape == (dst, src)
  np.testing.assert_allclose(m.sum(1), 1.0, atol=1e-12)
  x = np.random.default_rng(0).normal(size=(src, 3))
  np.testing.assert_allclose(m @ x, _supersampled(x, dst), atol=1e-12)
  if src % dst == 0:  # plain block means
    np.testing.assert_allclose(m @ x, x.reshape(dst, src // dst, 3).mean(1), atol=1e-12)


def test_resample_on_device_matches_numpy():
  rng = np.random.default_rng(1)
  acts = rng.normal(size=(3, 16 * 12, 5)).astype(np.float32)
  got = np.asarray(jax.jit(lambda a: G.resample(a, (16, 12), (7, 4)))(acts))
  ref = G.resample_numpy(acts, (16, 12), (7, 4))
  assert got.shape == (3, 28, 5)
  np.testing.assert_allclose(got, ref, atol=1e-5)
  # Separable rule, row-major cells: cell (i, j) of image b.
  x = acts.reshape(3, 16, 12, 5).astype(np.float64)
  cell = np.einsum("h,w,bhwn->bn", G.area_matrix(16, 7)[2], G.area_matrix(12, 4)[3], x)
  np.testing.assert_allclose(got[:, 2 * 4 + 3], cell, atol=1e-5)
  assert G.resample(acts, (16, 12), (16, 12)) is acts
  with pytest.raises(ValueError, match="hold 192 patches, not a 10x10 grid"):
    G.resample(acts, (10, 10), (5, 5))


def test_canonical_grid_and_errors():
  grids = {"dinov2": (16, 16), "vit-p4": (7, 7), "wide": (9, 12)}
  assert G.canonical_grid(grids) == (7, 7)
  assert G.canonical_grid(grids, (4, 2)) == (4, 2)
  with pytest.raises(ValueError, match=r"'vit-p4' has a 7x7 patch grid, coarser than the "
                                       r"canonical 8x8"):
    G.canonical_grid(grids, (8, 8))
  with pytest.raises(ValueError, match="no models"):
    G.canonical_grid({})
  assert G.input_grid("m", (224, 168), 14) == (16, 12)
  with pytest.raises(ValueError, match=r"'m': a 30x28 input does not tile into whole 4x4"):
    G.input_grid("m", (30, 28), 4)
  with pytest.raises(ValueError, match="1..4 cells, not 5"):
    G.area_matrix(4, 5)


def test_unit_layout():
  offs = G.unit_offsets(3, (2, 4))
  assert offs.tolist() == [0, 8, 16, 24]
  img, row, col = G.cell_of_unit([0, 7, 13], (2, 4))
  assert img.tolist() == [0, 0, 1] and row.tolist() == [0, 1, 1] and col.tolist() == [0, 3, 1]
