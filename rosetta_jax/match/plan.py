"""Planner: flops, bytes, memory and time of a match before anything runs.

``plan_match("opt-30b", "opt-30b", units=10_000_000, devices=64)`` answers "how
long, and does it fit?" for the exact kernel in ``correlate.py`` (and its
streaming driver), from the neuron counts of real presets.

Cost model (exact kernel, float32 Grams):
  flops      = 2 T Na Nb (the Gram) [+ 3 T (Na nbB + Nb nbA) standardisation]
  bytes read = T (Na ceil(Nb/bb) + Nb ceil(Na/ba)) * input bytes
               (each block pair streams its two column blocks over all units)
  memory/dev = ba bb 4 (Gram) + 2 tc (ba + bb) (4 + input bytes) (a chunk, raw
               and standardised) + (Na / model + Nb) k 8 (top-k states)
  time       = max(flops / (devices device_flops), bytes / (devices device_bw))
A relative-depth band ``w`` keeps only layer pairs with |depth_a - depth_b| <= w:
its flops are the allowed fraction of the layer grid, reported as a saving.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from rosetta_jax.analysis import stats


@dataclasses.dataclass(frozen=True)
class MatchPlan:
  """Estimated cost of matching two models (see the module docstring)."""
  neurons_a: int
  neurons_b: int
  units: int
  devices: int
  flops: float
  bytes_read: float
  peak_bytes_per_device: float
  seconds: float
  fits: bool
  band_fraction: float | None = None
  band_flops: float | None = None
  band_seconds: float | None = None

  def summary(self) -> str:
    lines = [f"match {self.neurons_a:,} x {self.neurons_b:,} neurons over {self.units:,} units "
             f"on {self.devices} device(s)",
             f"  flops {self.flops:.3e}, bytes read {self.bytes_read:.3e}, "
             f"peak memory/device {self.peak_bytes_per_device / 2**30:.2f} GiB "
             f"({'fits' if self.fits else 'DOES NOT FIT'}), est. {_fmt(self.seconds)}"]
    if self.band_fraction is not None:
      lines.append(f"  depth band: {self.band_fraction:.1%} of layer pairs, flops "
                   f"{self.band_flops:.3e} ({1 / self.band_fraction:.1f}x saving), "
                   f"est. {_fmt(self.band_seconds)}")
    return "\n".join(lines)


def _fmt(s: float) -> str:
  return f"{s:.1f} s" if s < 3600 else f"{s / 3600:.1f} h"


def _resolve(preset):
  """(total neurons, layers or None) of a preset name, a config, or an int."""
  if isinstance(preset, bool):
    raise TypeError("preset must be a name, a config or a neuron count")
  if isinstance(preset, int):
    if preset < 1:
      raise ValueError(f"neuron count must be positive, got {preset}")
    return preset, None
  if isinstance(preset, str):
    from rosetta_jax.models.presets import PRESETS   # lazy: models are optional here
    if preset not in PRESETS:
      raise ValueError(f"unknown preset {preset!r}; known: {', '.join(sorted(PRESETS))}")
    preset = PRESETS[preset]
  layers = getattr(preset, "num_layers", None)
  per = getattr(preset, "neurons_per_layer", None)
  if layers is None or per is None:
    raise ValueError(f"preset {preset!r} has no num_layers / neurons_per_layer")
  return int(layers) * int(per), int(layers)


def band_fraction(layers_a: int, layers_b: int, width: float) -> float:
  """Fraction of (layer_a, layer_b) pairs with |relative depth difference| <= width.

  Relative depths as in ``analysis.stats.relative_depth``.
  """
  da = stats.relative_depth(np.arange(layers_a), layers_a)
  db = stats.relative_depth(np.arange(layers_b), layers_b)
  ok = int((np.abs(da[:, None] - db[None, :]) <= width + 1e-12).sum())
  return ok / (layers_a * layers_b)


# Sustained Gram rate of one H100 by matmul operand dtype. float32: the exact
# kernel measured at 0.80 of a full-precision float32 matmul (52 TFLOP/s) at
# T=65536, N=4096 (BUILD_NOTES, Matcher on an H100). bfloat16: the workplace's
# measured ~790 TFLOP/s bf16 matmul at the same 0.8 efficiency (an assumption:
# the kernel's bfloat16 mode has not been timed on a GPU).
DEVICE_FLOPS = {"float32": 0.80 * 52e12, "bfloat16": 0.80 * 790e12}


def plan_match(preset_a, preset_b, units: int, devices: int = 1, *,
               compute_dtype: str = "float32", device_flops: float | None = None,
               device_bw: float = 3.35e12,
               device_mem: float = 80e9, block_a: int = 2048, block_b: int = 2048,
               chunk: int = 2048, k: int = 1, input_bytes: int = 2,
               model_axis: int = 1, depth_band: float | None = None) -> MatchPlan:
  """Plans an exact match of two presets.

  Args:
    preset_a, preset_b: preset names (``rosetta_jax.models.presets.PRESETS``),
      configs with ``num_layers`` and ``neurons_per_layer``, or neuron counts.
    units: T, the number of units matched over.
    devices: devices in the mesh (data x model).
    compute_dtype: the kernel's matmul operands, "float32" (exact, the default)
      or "bfloat16"; picks the default ``device_flops``.
    device_flops: sustained Gram flop/s of one device (default: an H100's, from
      ``DEVICE_FLOPS``: ~42e12 in float32, which runs at full precision, not
      TF32; 2-core CPU here: ~2.5e11 measured).
    device_bw: bytes/s each device can read its inputs at.
    device_mem: bytes of memory per device.
    block_a, block_b, chunk: kernel block sizes.
    k: neighbours kept.
    input_bytes: bytes per stored activation (2: bfloat16 store, 4: float32).
    model_axis: devices on the mesh's ``model`` axis (A's neurons split).
    depth_band: relative-depth band width, if any (needs layer counts).

  Returns:
    A ``MatchPlan``; ``plan.summary()`` is a readable report.
  """
  if device_flops is None:
    if compute_dtype not in DEVICE_FLOPS:
      raise ValueError(f"compute_dtype must be one of {sorted(DEVICE_FLOPS)}, got "
                       f"{compute_dtype!r}")
    device_flops = DEVICE_FLOPS[compute_dtype]
  na, la = _resolve(preset_a)
  nb, lb = _resolve(preset_b)
  if devices % model_axis:
    raise ValueError(f"model_axis={model_axis} must divide devices={devices}")
  nbb, nab = math.ceil(nb / block_b), math.ceil(na / block_a)
  gram = 2.0 * units * na * nb
  flops = gram + 3.0 * units * (na * nbb + nb * nab)
  bytes_read = float(units) * (na * nbb + nb * nab) * input_bytes
  ba = min(block_a, math.ceil(na / model_axis))
  bb = min(block_b, nb)
  peak = (ba * bb * 4 + 2 * chunk * (ba + bb) * (4 + input_bytes)
          + (math.ceil(na / model_axis) + nb) * k * 8)
  seconds = max(flops / (devices * device_flops), bytes_read / (devices * device_bw))
  frac = band_flops = band_seconds = None
  if depth_band is not None:
    if la is None or lb is None:
      raise ValueError("depth_band needs presets with layer counts, not bare neuron counts")
    frac = band_fraction(la, lb, depth_band)
    band_flops = flops * frac
    band_seconds = seconds * frac
  return MatchPlan(na, nb, int(units), int(devices), flops, bytes_read, float(peak),
                   seconds, peak <= device_mem, frac, band_flops, band_seconds)
