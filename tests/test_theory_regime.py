"""The regime map: the grid agrees with the variants' own local exponent; the PNG is written."""

import numpy as np
import pytest

from theory import regime
from theory import variants as V


def test_beta_grid_matches_local_beta_and_saturation(tmp_path):
  th = V.get("allocation").init
  n, alphas, ratios = 200.0, [0.8, 1.2], [0.7, 4.0, 16.0]
  g = regime.beta_grid("allocation", th, n, alphas, ratios)
  assert g.shape == (2, 3)
  size = V.feature_axis(16.0 * n, n)
  for i, a in enumerate(alphas):
    assert g[i, 0] == pytest.approx(0.0, abs=1e-6)     # F < N: every feature has a neuron
    for j in (1, 2):
      want = float(V.local_beta("allocation", th, n, a, ratios[j] * n, size))
      assert g[i, j] == pytest.approx(want, rel=1e-4)
  path = regime.plot({"allocation": g}, alphas, ratios,
                     [{"alpha": 1.0, "ratio": 4.0, "beta": 0.9, "label": "x"}],
                     str(tmp_path / "map.png"), n)
  with open(path, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
