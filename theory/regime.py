"""The regime map: the predicted local exponent over alpha and F / N.

``beta_grid`` evaluates a variant's local exponent ``d log R / d log N`` at a fixed
N over a grid of alpha and F / N (the feature count enters as a traced value
under one static feature axis, so the grid compiles once). ``plot`` draws it as
a matplotlib PNG with the measured configurations placed on it.
"""

from __future__ import annotations

import io

import jax
import jax.numpy as jnp
import numpy as np

from rosetta_jax import io as io_lib
from theory import variants as V


def beta_grid(name: str, theta: dict, n: float, alphas, ratios) -> np.ndarray:
  """[len(alphas), len(ratios)] local beta of variant ``name`` at N = n, F = ratio * n."""
  alphas = np.asarray(alphas, float)
  ratios = np.asarray(ratios, float)
  size = V.feature_axis(float(ratios.max()) * n, n)

  def one(alpha, f):
    def log_r(log_n):
      return jnp.log(V._rosetta(name, theta, jnp.exp(log_n), alpha, f, size))  # pylint: disable=protected-access
    return jax.grad(log_r)(jnp.log(jnp.float32(n)))

  fn = jax.jit(jax.vmap(jax.vmap(one, in_axes=(None, 0)), in_axes=(0, None)))
  return np.asarray(fn(jnp.asarray(alphas, jnp.float32), jnp.asarray(ratios * n, jnp.float32)))


def plot(grids: dict, alphas, ratios, points: list[dict], path: str, n: float) -> str:
  """Writes the map(s) as one PNG.

  Args:
    grids: {title: [A, R] beta grid}.
    points: measured configurations, each ``alpha``, ``ratio`` (F / N), ``beta``, ``label``.
    path: the PNG to write.
  """
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, axes = plt.subplots(1, len(grids), figsize=(5.2 * len(grids), 4.4), squeeze=False)
  for ax, (title, g) in zip(axes[0], grids.items()):
    mesh = ax.pcolormesh(ratios, alphas, g, shading="nearest", cmap="RdBu_r", vmin=0.0, vmax=2.0)
    cs = ax.contour(ratios, alphas, g, levels=[0.8, 1.0, 1.2], colors="k", linewidths=0.8)
    ax.clabel(cs, fmt="%.1f", fontsize=7)
    for p in points:
      ax.scatter(p["ratio"], p["alpha"], c=[p["beta"]], cmap="RdBu_r", vmin=0.0, vmax=2.0,
                 edgecolors="k", s=60, marker=p.get("marker", "o"), zorder=3)
      ax.annotate(p["label"], (p["ratio"], p["alpha"]), fontsize=6, xytext=(-6, 7),
                  textcoords="offset points")
    ax.text(0.02, 0.02, "measured zoo sizes N (labels), coloured by measured beta:\n"
            "circles: tokens rule, squares: words rule", transform=ax.transAxes, fontsize=7,
            va="bottom", bbox={"fc": "white", "alpha": 0.8, "lw": 0})
    ax.set_xscale("log")
    ax.set_xlabel("F / N (features per neuron)")
    ax.set_ylabel("alpha (utility exponent)")
    ax.set_title(title, fontsize=9)
    fig.colorbar(mesh, ax=ax, label=f"local beta at N = {n:g}")
  fig.tight_layout()
  buf = io.BytesIO()                    # rendered whole, then renamed into place
  fig.savefig(buf, format="png", dpi=110)
  plt.close(fig)
  io_lib.atomic_write_bytes(path, buf.getvalue())
  return path
