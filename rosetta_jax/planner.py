"""Planner for a whole study: recording and matching a named pair on a named machine.

``plan_study("opt-30b", "qwen2.5-32b", units=10_000_000, machine=MACHINES["gpu-node-8"])``
answers, before anything runs: how much parameter and activation memory each device
holds, how many flops, how many bytes go to disk and between devices, and how long
recording both models and matching them takes, for the layouts of ``sharding.py``.

Cost model (per model unless stated; T units, t = T * tokens_per_unit tokens):

Recording (each process records its documents on its own ``record_mesh``, data x
model devices; every process's copy of the model is tensor-parallel on ``model``
and, with ``fsdp``, fully sharded on ``data``):
  parameters/device  the busiest device's bytes under ``sharding.param_specs``
  activations/device working set of one layer for the device's rows, B_l x L tokens
                     (B_l = batch / data): residual and norms 3 d, the MLP's
                     intermediate 2 ff / M (its input and gate), attention scores
                     heads / M x L; plus the recorded sites, pooled, all layers:
                     layers x B_l L x ff / M x 4 bytes (what the step returns)
  flops              2 t P (the matmuls) + 4 t L/2 d layers (attention, mean context)
  disk               T x neurons x store bytes
  between devices    tensor parallel: two all-reduces of [tokens, d] per layer,
                     2 (M - 1) / M of the data each (ring); fsdp: every step
                     all-gathers each device's weights, (D - 1) / D of P / M bytes
  wall time          the largest of compute (flops / (devices x flop/s x mfu)),
                     interconnect and disk, each at the machine's rates

Matching (the exact kernel on the global ``match_mesh``, ``match/plan.py`` for its
flops, bytes read and memory): units over ``data`` (every panel's partial Gram
[block, Nb] is all-reduced over ``data``: 2 (D - 1) / D x Na Nb 4 / M bytes per
device in all) and A's neurons over ``model``. The activations stream from the
stores: A once, B once per panel of A neurons (panel = what one pass's Grams hold
in device memory: half of it), so the disk term is T (Na + panels Nb) x store
bytes, and the device holds the panel's Gram slice [panel / M, Nb] plus one chunk.

Rates are the machine's nominal figures (``Machine``), not measurements; the
matcher's float32 rate on an H100 is the measured one of ``match/plan.py``.
"""

from __future__ import annotations

import dataclasses
import math

from rosetta_jax.match import plan as match_plan


@dataclasses.dataclass(frozen=True)
class Machine:
  """A machine: ``hosts`` x ``devices_per_host`` accelerators and their rates.

  Attributes:
    name: label.
    hosts, devices_per_host: the processes (one per host) and their devices.
    device_mem: bytes of memory per device.
    bf16_flops: peak bfloat16 matmul flop/s of one device (recording).
    mfu: fraction of ``bf16_flops`` a forward pass sustains (an assumption).
    match_flops: sustained float32 (full-precision) Gram flop/s of one device.
    mem_bw: device memory bandwidth, bytes/s.
    link_bw: bytes/s each device sends to its peers (NVLink, ICI).
    disk_bw: bytes/s one host reads or writes its store at.
    source: where the figures come from.
  """
  name: str
  hosts: int
  devices_per_host: int
  device_mem: float
  bf16_flops: float
  mfu: float
  match_flops: float
  mem_bw: float
  link_bw: float
  disk_bw: float
  source: str

  @property
  def devices(self) -> int:
    return self.hosts * self.devices_per_host


MACHINES = {
    "gpu-node-8": Machine(
        "8 x H100 SXM 80 GB, one host", 1, 8, 80e9, 989e12, 0.4,
        match_plan.DEVICE_FLOPS["float32"], 3.35e12, 450e9, 10e9,
        "NVIDIA H100 SXM datasheet (989 TFLOP/s dense bf16, 3.35 TB/s HBM3, NVLink 900 "
        "GB/s bidirectional); float32 Gram rate measured (match/plan.py); 10 GB/s NVMe "
        "and 40% MFU assumed"),
    "tpu-v5p-64": Machine(
        "TPU v5p-64: 32 chips, 8 hosts x 4", 8, 4, 95e9, 459e12, 0.4,
        459e12 / 6 * 0.8, 2.76e12, 600e9, 2e9,
        "Cloud TPU v5p spec (459 TFLOP/s bf16, 95 GB HBM, 2.76 TB/s, ICI 4800 Gbps); "
        "float32 at HIGHEST precision taken as 6 bfloat16 passes at 0.8; 2 GB/s per "
        "host persistent disk and 40% MFU assumed"),
}


@dataclasses.dataclass(frozen=True)
class ModelCost:
  """Recording one model (see the module docstring)."""
  preset: str
  params: int
  neurons: int
  param_bytes_per_device: float
  act_bytes_per_device: float
  flops: float
  disk_bytes: float
  moved_bytes_per_device: float
  seconds: float
  fits: bool


@dataclasses.dataclass(frozen=True)
class StudyPlan:
  """Recording both models and matching them on one machine."""
  machine: str
  units: int
  record_mesh: tuple[int, int]
  match_mesh: tuple[int, int]
  models: tuple[ModelCost, ModelCost]
  match: match_plan.MatchPlan
  match_moved_bytes_per_device: float
  match_disk_bytes: float
  match_panels: int
  match_seconds: float
  depth_band: float | None
  band_seconds: float | None
  match_bytes_per_device: float = 0.0
  match_fits: bool = True

  @property
  def seconds(self) -> float:
    return sum(m.seconds for m in self.models) + self.match_seconds

  def rows(self) -> list[dict]:
    """One row per stage, the columns of ``table``."""
    out = []
    for m in self.models:
      out.append({"stage": f"record {m.preset}", "mesh": _mesh(self.record_mesh),
                  "params/device": m.param_bytes_per_device,
                  "activations/device": m.act_bytes_per_device, "flops": m.flops,
                  "disk": m.disk_bytes, "moved/device": m.moved_bytes_per_device,
                  "seconds": m.seconds, "fits": m.fits})
    out.append({"stage": f"match {self.models[0].preset} x {self.models[1].preset}",
                "mesh": _mesh(self.match_mesh), "params/device": 0.0,
                "activations/device": self.match_bytes_per_device,
                "flops": self.match.flops, "disk": self.match_disk_bytes,
                "moved/device": self.match_moved_bytes_per_device,
                "seconds": self.match_seconds, "fits": self.match_fits})
    if self.band_seconds is not None:
      out.append({"stage": f"  with depth band {self.depth_band:g}", "mesh": "",
                  "params/device": 0.0, "activations/device": self.match_bytes_per_device,
                  "flops": self.match.band_flops,
                  "disk": self.match_disk_bytes * self.match.band_fraction,
                  "moved/device": self.match_moved_bytes_per_device * self.match.band_fraction,
                  "seconds": self.band_seconds, "fits": self.match_fits})
    return out

  def table(self) -> str:
    """A markdown table of ``rows``."""
    head = ("| stage | mesh | params / device | activations / device | flops | disk | "
            "moved / device | wall time |\n|---|---|---:|---:|---:|---:|---:|---:|")
    lines = [head]
    for r in self.rows():
      lines.append(f"| {r['stage']} | {r['mesh']} | {_gb(r['params/device'])} | "
                   f"{_gb(r['activations/device'])}{'' if r['fits'] else ' (does not fit)'} | "
                   f"{r['flops']:.2e} | {_tb(r['disk'])} | {_gb(r['moved/device'])} | "
                   f"{_time(r['seconds'])} |")
    return "\n".join(lines)


def _mesh(m) -> str:
  return f"data:{m[0]},model:{m[1]}"


def _gb(x: float) -> str:
  return f"{x / 1e9:,.2f} GB"


def _tb(x: float) -> str:
  return f"{x / 1e12:,.2f} TB"


def _time(s: float) -> str:
  if s < 3600:
    return f"{s / 60:.1f} min"
  if s < 72 * 3600:
    return f"{s / 3600:.1f} h"
  return f"{s / 86400:.1f} days"


def record_cost(preset: str, units: int, machine: Machine, mesh: tuple[int, int], *,
                batch: int = 32, seq_len: int = 512, tokens_per_unit: float = 1.0,
                param_bytes: int = 2, act_bytes: int = 2, store_bytes: int = 2,
                fsdp: bool = False) -> ModelCost:
  """The cost of recording ``preset`` over ``units`` units (module docstring).

  Args:
    preset: a ``models.presets.PRESETS`` name.
    units: T.
    machine: the ``Machine``.
    mesh: (data, model) of each process's recording mesh (within one host).
    batch, seq_len: windows per step (global over the process's mesh) and tokens each.
    tokens_per_unit: tokens per unit (1 for one tokenizer; more when canonical
      spans join tokens of several tokenizers).
    param_bytes, act_bytes, store_bytes: bytes per parameter, activation, stored value.
    fsdp: parameters also sharded over ``data``.
  """
  from jax.sharding import AbstractMesh  # pylint: disable=g-import-not-at-top
  from rosetta_jax import sharding  # pylint: disable=g-import-not-at-top
  from rosetta_jax.models import presets  # pylint: disable=g-import-not-at-top
  from rosetta_jax.models.registry import family_of_config  # pylint: disable=g-import-not-at-top
  d, m = mesh
  if d * m > machine.devices_per_host:
    raise ValueError(f"record mesh {d} x {m} exceeds one host's {machine.devices_per_host} "
                     "devices (each process records with its own devices)")
  cfg = presets.PRESETS[preset]
  shapes = presets.param_shapes(cfg)
  fam = family_of_config(cfg).name
  amesh = AbstractMesh((d, m), sharding.AXES)
  p_dev = sharding.param_bytes_per_device(fam, shapes, amesh, cfg, fsdp=fsdp) * param_bytes / 4
  params = presets.num_params(cfg)
  layers, hidden, ff = cfg.num_layers, cfg.hidden_size, cfg.neurons_per_layer
  heads = cfg.num_heads
  rows = max(1, batch // d) * seq_len
  act = (rows * (3 * hidden + 2 * ff / m) * act_bytes
         + max(1, batch // d) * heads / m * seq_len * seq_len * 4
         + layers * rows * ff / m * 4)
  tokens = units * tokens_per_unit
  flops = 2.0 * tokens * params + 4.0 * tokens * (seq_len / 2) * hidden * layers
  disk = float(units) * layers * ff * store_bytes
  devices = machine.hosts * d * m
  tok_dev = tokens / (machine.hosts * d)
  moved = 2 * layers * 2 * (m - 1) / m * tok_dev * hidden * act_bytes
  if fsdp and d > 1:
    steps = tokens / (machine.hosts * batch * seq_len)
    moved += steps * (d - 1) / d * params * param_bytes / m
  seconds = max(flops / (devices * machine.bf16_flops * machine.mfu),
                moved / machine.link_bw, disk / (machine.hosts * machine.disk_bw))
  fits = p_dev + act <= machine.device_mem
  return ModelCost(preset, int(params), int(layers * ff), float(p_dev), float(act), flops,
                   disk, float(moved), float(seconds), bool(fits))


def plan_study(preset_a: str, preset_b: str, units: int, machine: Machine | str, *,
               record_mesh: tuple[int, int] | None = None,
               match_mesh: tuple[int, int] | None = None, depth_band: float | None = 0.05,
               store_bytes: int = 2, block: int = 4096, **record_kw) -> StudyPlan:
  """Plans recording ``preset_a`` and ``preset_b`` over ``units`` and matching them.

  Args:
    preset_a, preset_b: preset names.
    units: T.
    machine: a ``Machine`` or a ``MACHINES`` key.
    record_mesh: (data, model) per process (default: model over one host's devices).
    match_mesh: (data, model) of the global matching mesh (default: data over the
      hosts, model over each host's devices).
    depth_band: also plan the relative-depth-band match (None: skip).
    store_bytes: bytes per stored activation.
    block: the kernel's neuron block.
    **record_kw: passed to ``record_cost``.
  """
  if isinstance(machine, str):
    machine = MACHINES[machine]
  record_mesh = record_mesh or (1, machine.devices_per_host)
  match_mesh = match_mesh or (machine.hosts, machine.devices_per_host)
  d, m = match_mesh
  if d * m != machine.devices:
    raise ValueError(f"match mesh {d} x {m} must use all {machine.devices} devices")
  costs = tuple(record_cost(p, units, machine, record_mesh, store_bytes=store_bytes,
                            **record_kw) for p in (preset_a, preset_b))
  mp = match_plan.plan_match(preset_a, preset_b, units=units, devices=machine.devices,
                             device_flops=machine.match_flops, device_bw=machine.mem_bw,
                             device_mem=machine.device_mem, block_a=block, block_b=block,
                             chunk=1024, input_bytes=store_bytes, model_axis=m,
                             depth_band=depth_band)
  na, nb = mp.neurons_a, mp.neurons_b
  # A panel's Grams [panel / m, Nb] float32 take at most half a device's memory.
  panel = max(m, int(machine.device_mem / 2 / (4 * nb)) * m)
  panels = math.ceil(na / panel)
  disk = float(units) * (na + panels * nb) * store_bytes
  tc = math.ceil(units / d) if units < 1024 * d else 1024
  match_mem = max(mp.peak_bytes_per_device,
                  (panel // m) * nb * 4 + 2 * tc * (panel // m + nb) * (4 + store_bytes))
  moved = 2 * (d - 1) / d * na * nb * 4 / m
  seconds = max(mp.seconds, disk / (machine.hosts * machine.disk_bw), moved / machine.link_bw)
  band = None
  if depth_band is not None:
    band = seconds * mp.band_fraction
  return StudyPlan(machine.name, int(units), tuple(record_mesh), tuple(match_mesh), costs, mp,
                   float(moved), disk, panels, float(seconds), depth_band, band,
                   float(match_mem), bool(match_mem <= machine.device_mem))


def main(argv=None) -> None:
  import argparse  # pylint: disable=g-import-not-at-top
  ap = argparse.ArgumentParser(description="Plan recording and matching a preset pair.")
  ap.add_argument("preset_a")
  ap.add_argument("preset_b")
  ap.add_argument("--units", type=int, default=10_000_000)
  ap.add_argument("--machine", default="gpu-node-8", choices=sorted(MACHINES))
  args = ap.parse_args(argv)
  p = plan_study(args.preset_a, args.preset_b, args.units, args.machine)
  print(f"{p.machine}, {p.units:,} units, total {_time(p.seconds)}")
  print(p.table())


if __name__ == "__main__":
  main()
