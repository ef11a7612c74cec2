"""Named meshes and PartitionSpecs, declared once.

Every sharded computation in rosetta_jax runs on a mesh with axes
``("data", "model")``:

* ``data`` splits the unit (token) axis: each device sees a slice of the units and
  partial results (Grams) are summed with ``psum``.
* ``model`` splits neurons (the matcher: A's neurons; the recorder: weights).

With no mesh given, ``make_mesh()`` builds a 1 x 1 mesh over the first device, so
the same ``shard_map`` code runs unchanged on one CPU and on a pod slice.
"""

from __future__ import annotations

import math

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

AXES = ("data", "model")

# Matcher layouts: activations are [units, neurons].
ACTS_A = P("data", "model")   # A: units over data, neurons over model.
ACTS_B = P("data", None)      # B: units over data, replicated over model.
NEURONS_A = P("model")        # per-neuron vectors of A.
NEURONS_B = P(None)           # per-neuron vectors of B (replicated).
REPLICATED = P()


def make_mesh(data: int | None = None, model: int | None = None,
              devices=None) -> Mesh:
  """A ``("data", "model")`` mesh.

  Args:
    data: devices along the unit axis. None: all devices not used by ``model``
      (or 1 when neither is given).
    model: devices along the neuron axis. None: 1.
    devices: the devices to use (default ``jax.devices()``).

  Returns:
    A Mesh of shape (data, model). ``make_mesh()`` is the 1 x 1 no-sharding default.

  Raises:
    ValueError: if data * model exceeds the devices available.
  """
  devices = list(jax.devices() if devices is None else devices)
  if data is None and model is None:
    data, model = 1, 1
  elif data is None:
    data = max(1, len(devices) // model)
  elif model is None:
    model = 1
  if data * model > len(devices):
    raise ValueError(f"mesh {data} x {model} needs {data * model} devices, "
                     f"only {len(devices)} available")
  grid = np.array(devices[:data * model], dtype=object).reshape(data, model)
  return Mesh(grid, AXES)


def named(mesh: Mesh, spec: P) -> NamedSharding:
  """``NamedSharding`` of ``spec`` on ``mesh``."""
  return NamedSharding(mesh, spec)


def axis_size(mesh: Mesh, axis: str) -> int:
  """Number of devices along ``axis`` (1 if the mesh lacks it)."""
  return int(mesh.shape.get(axis, 1))


def mesh_devices(mesh: Mesh) -> int:
  return math.prod(mesh.shape.values())
