"""Named meshes and PartitionSpecs, declared once.

Every sharded computation in rosetta_jax runs on a mesh with axes
``("data", "model")``:

* ``data`` splits the unit (token) axis: each device sees a slice of the units and
  partial results (Grams) are summed with ``psum``; in recording it splits the
  batch, and with ``fsdp`` it also splits each parameter's largest free dimension.
* ``model`` splits neurons (the matcher: A's neurons; the recorder: weights,
  tensor-parallel as declared per family in ``models/partition.py``).

The mesh is *global*: after ``rosetta_jax.distributed.initialize`` it spans every
process's devices (``jax.devices()``), ordered by process so that the ``model``
axis stays inside a process whenever it fits there (tensor-parallel collectives on
the fast intra-host links, ``data`` across hosts). With no mesh given,
``make_mesh()`` builds a 1 x 1 mesh over the first device, so the same
``shard_map`` code runs unchanged on one CPU, a GPU node and a pod slice.

Binaries spell a mesh ``--mesh=data:D,model:M`` (``parse_mesh``).
"""

from __future__ import annotations

import math
import re
from typing import Any

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

# Recording layouts.
BATCH = P("data", None)                 # tokens / mask / segments [batch, L]
SITE_ACTS = P("data", None, "model")    # a site's activations [batch, L, neurons]
UNIT_ROWS = P(None, "model")            # pooled [units, neurons] as the store write
                                        # needs them: all units, neurons may stay split


def parse_mesh(spec: str | None) -> tuple[int | None, int | None]:
  """(data, model) of a ``--mesh`` value.

  Accepted: ``""``/None (the no-sharding default, (None, None)), ``"data:4,model:2"``,
  either axis alone (``"model:8"``: data takes the remaining devices), and
  ``-1`` for "all remaining devices" (``"data:-1,model:2"``).

  Raises:
    ValueError: naming the bad part.
  """
  if spec is None or not spec.strip():
    return None, None
  out: dict[str, int | None] = {}
  for part in spec.split(","):
    m = re.fullmatch(r"\s*(data|model)\s*[:=]\s*(-1|\d+)\s*", part)
    if not m:
      raise ValueError(f"--mesh: bad entry {part!r} in {spec!r}; expected "
                       "'data:D,model:M' (D, M positive integers or -1)")
    axis, n = m.group(1), int(m.group(2))
    if axis in out:
      raise ValueError(f"--mesh: axis {axis!r} given twice in {spec!r}")
    if n == 0:
      raise ValueError(f"--mesh: axis {axis!r} has size 0 in {spec!r}")
    out[axis] = None if n == -1 else n
  if "data" in out and "model" in out and out["data"] is None and out["model"] is None:
    raise ValueError(f"--mesh: at most one axis may be -1 in {spec!r}")
  return out.get("data"), out.get("model", 1 if "data" in out else None)


def ordered_devices(devices=None) -> list:
  """Devices ordered by (process, id): consecutive devices share a host."""
  devices = list(jax.devices() if devices is None else devices)
  return sorted(devices, key=lambda d: (d.process_index, d.id))


def make_mesh(data: int | None = None, model: int | None = None,
              devices=None) -> Mesh:
  """A ``("data", "model")`` mesh over all processes' devices.

  Args:
    data: devices along the unit axis. None: all devices not used by ``model``
      (or 1 when neither is given).
    model: devices along the neuron axis. None: 1.
    devices: the devices to use (default ``jax.devices()``, every process's).

  Returns:
    A Mesh of shape (data, model). ``make_mesh()`` is the 1 x 1 no-sharding default.
    The ``model`` axis runs over consecutive devices of one process where it fits.

  Raises:
    ValueError: if data * model exceeds the devices available, or (several
      processes) the mesh leaves some process without a device.
  """
  devices = ordered_devices(devices)
  if data is None and model is None:
    data, model = 1, 1
  elif data is None:
    data = max(1, len(devices) // model)
  elif model is None:
    model = 1
  if data < 1 or model < 1:
    raise ValueError(f"mesh {data} x {model}: sizes must be positive")
  if data * model > len(devices):
    raise ValueError(f"mesh {data} x {model} needs {data * model} devices, "
                     f"only {len(devices)} available")
  used = devices[:data * model]
  nproc = len({d.process_index for d in devices})
  if nproc > 1 and len({d.process_index for d in used}) < nproc:
    raise ValueError(f"mesh {data} x {model} uses {len(used)} of {len(devices)} devices "
                     f"and leaves some of the {nproc} processes without one; every "
                     "process must hold part of a global mesh")
  grid = np.array(used, dtype=object).reshape(data, model)
  return Mesh(grid, AXES)


def mesh_from_flag(spec: str | None, devices=None) -> Mesh:
  """``make_mesh`` of a ``--mesh`` value (``parse_mesh``); "" is the 1 x 1 default."""
  return make_mesh(*parse_mesh(spec), devices=devices)


def local_mesh(data: int | None = None, model: int | None = None) -> Mesh:
  """A ``("data", "model")`` mesh over this process's devices only (per-process
  recording: each process runs its own documents through its own copy)."""
  return make_mesh(data, model, devices=jax.local_devices())


def named(mesh: Mesh, spec: P) -> NamedSharding:
  """``NamedSharding`` of ``spec`` on ``mesh``."""
  return NamedSharding(mesh, spec)


def axis_size(mesh: Mesh, axis: str) -> int:
  """Number of devices along ``axis`` (1 if the mesh lacks it)."""
  return int(mesh.shape.get(axis, 1))


def mesh_devices(mesh: Mesh) -> int:
  return math.prod(mesh.shape.values())


def spans_processes(mesh: Mesh) -> bool:
  """True when ``mesh`` holds devices of more than one process."""
  return len({d.process_index for d in mesh.devices.flat}) > 1


def describe_mesh(mesh: Mesh) -> dict:
  """A JSON-able account of a mesh: shape, platform, processes (for config.json)."""
  devs = list(mesh.devices.flat)
  return {"shape": {k: int(v) for k, v in mesh.shape.items()},
          "platform": devs[0].platform, "devices": len(devs),
          "processes": len({d.process_index for d in devs})}


# ----------------------------------------------------------------------------
# Parameters: tensor-parallel rules per family (models/partition.py), optionally
# fully sharded over ``data`` as well.


def _fsdp(spec: P, shape: tuple[int, ...], mesh: Mesh) -> P:
  """``spec`` with the largest still-unsplit dimension that ``data`` divides split
  over ``data`` (ZeRO-3 / FSDP style: the weights of a model larger than one device
  spread over all of them; XLA all-gathers each layer's weights where it is used)."""
  nd = axis_size(mesh, "data")
  entries = list(spec) + [None] * (len(shape) - len(spec))
  if nd <= 1 or not shape:
    return P(*entries)
  free = [i for i, (dim, ax) in enumerate(zip(shape, entries)) if ax is None and dim % nd == 0]
  if not free:
    return P(*entries)
  i = max(free, key=lambda j: (shape[j], -j))
  entries[i] = "data"
  return P(*entries)


def param_specs(family: str, abstract_params, mesh: Mesh, config=None, *,
                fsdp: bool = False) -> dict[str, P]:
  """{path: PartitionSpec} of every parameter on ``mesh``.

  Args:
    family: a family name with rules in ``models.partition.RULES`` (every
      family of ``models/`` has them).
    abstract_params: the parameter pytree (arrays or ``jax.ShapeDtypeStruct``).
    mesh: a ``("data", "model")`` mesh.
    config: the family config (head counts keep attention splits on whole heads).
    fsdp: also split each parameter over ``data`` (for models larger than one
      device's memory); False: parameters replicated over ``data``.

  Dimensions an axis does not divide evenly stay replicated along it.
  """
  from rosetta_jax.models import partition  # pylint: disable=g-import-not-at-top
  out = {}
  for path, leaf in partition.flat_paths(abstract_params).items():
    spec = partition.param_spec(family, path, leaf.shape, mesh, config)
    out[path] = _fsdp(spec, tuple(leaf.shape), mesh) if fsdp else spec
  return out


def param_shardings(family: str, abstract_params, mesh: Mesh, config=None, *,
                    fsdp: bool = False) -> dict[str, NamedSharding]:
  """{path: NamedSharding} of ``param_specs``."""
  return {p: NamedSharding(mesh, s)
          for p, s in param_specs(family, abstract_params, mesh, config, fsdp=fsdp).items()}


def param_bytes_per_device(family: str, abstract_params, mesh: Mesh, config=None, *,
                           fsdp: bool = False) -> int:
  """Bytes of parameters the busiest device holds under ``param_specs``."""
  from rosetta_jax.models import partition  # pylint: disable=g-import-not-at-top
  specs = param_specs(family, abstract_params, mesh, config, fsdp=fsdp)
  total = 0
  for path, leaf in partition.flat_paths(abstract_params).items():
    split = math.prod(axis_size(mesh, a) for a in specs[path] if a is not None)
    total += math.prod(leaf.shape) * np.dtype(leaf.dtype).itemsize // split
  return int(total)


def shard_params(family: str, params, mesh: Mesh, config=None, *, fsdp: bool = False):
  """Places a parameter pytree on ``mesh`` by ``param_specs`` (one jit with
  ``out_shardings``: XLA moves each leaf straight to its shards)."""
  from rosetta_jax.models import partition  # pylint: disable=g-import-not-at-top
  specs = param_specs(family, params, mesh, config, fsdp=fsdp)
  leaves, tree = jax.tree_util.tree_flatten_with_path(params)
  paths = list(partition.flat_paths(params))
  shardings = [NamedSharding(mesh, specs[p]) for p in paths]
  flat = jax.jit(lambda xs: xs, out_shardings=shardings)([x for _, x in leaves])
  return jax.tree_util.tree_unflatten(tree, flat)


# ----------------------------------------------------------------------------
# Host side.


def put(x, mesh: Mesh, spec: P):
  """Places a host array, the same on every process, on ``mesh`` with ``spec``.

  On a mesh that spans processes each process transfers only the shards its own
  devices hold (``jax.make_array_from_callback``); ``jax.device_put`` would first
  all-gather the whole array to check that every process passed the same one.
  """
  sharding = NamedSharding(mesh, spec)
  if spans_processes(mesh) and not isinstance(x, jax.Array):
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])
  return jax.device_put(x, sharding)


def to_host(x: Any) -> np.ndarray:
  """A (global) array as one numpy array on every process.

  Arrays whose shards all live in this process are read directly; an array that
  spans other processes' devices is all-gathered first
  (``multihost_utils.process_allgather``), a collective every process must call
  in the same order.
  """
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(x)


def is_primary() -> bool:
  """True in the process that writes config, results and report (process 0)."""
  return jax.process_index() == 0
