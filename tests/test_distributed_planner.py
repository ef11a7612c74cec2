"""The study planner (rosetta_jax/planner.py): its terms recomputed by hand."""

import math

import pytest

from rosetta_jax import planner
from rosetta_jax.match.plan import plan_match
from rosetta_jax.models import presets


def test_record_terms():
  gpu = planner.MACHINES["gpu-node-8"]
  cfg = presets.PRESETS["opt-30b"]
  c = planner.record_cost("opt-30b", 10_000_000, gpu, (1, 8), batch=32, seq_len=512)
  p = presets.num_params(cfg)
  assert c.params == p and c.neurons == 48 * 28672
  assert c.disk_bytes == 10_000_000 * 48 * 28672 * 2
  # Tensor parallel over 8: the split matrices /8, embeddings split over vocab, norms whole.
  assert p * 2 / 8 <= c.param_bytes_per_device < p * 2 / 8 * 1.02
  flops = 2 * 1e7 * p + 4 * 1e7 * 256 * 7168 * 48
  assert c.flops == pytest.approx(flops)
  moved = 2 * 48 * 2 * 7 / 8 * 1e7 * 7168 * 2
  assert c.moved_bytes_per_device == pytest.approx(moved)
  assert c.seconds == pytest.approx(max(flops / (8 * gpu.bf16_flops * gpu.mfu),
                                        moved / gpu.link_bw, c.disk_bytes / gpu.disk_bw))
  assert c.fits
  fs = planner.record_cost("opt-30b", 10_000_000, gpu, (2, 4), fsdp=True)
  tp = planner.record_cost("opt-30b", 10_000_000, gpu, (2, 4))
  assert fs.param_bytes_per_device < tp.param_bytes_per_device * 0.51
  assert fs.moved_bytes_per_device > tp.moved_bytes_per_device     # weights all-gathered
  with pytest.raises(ValueError, match="exceeds one host"):
    planner.record_cost("opt-30b", 10, gpu, (2, 8))


def test_study_plan_30b_32b_on_both_machines():
  for name in ("gpu-node-8", "tpu-v5p-64"):
    m = planner.MACHINES[name]
    p = planner.plan_study("opt-30b", "qwen2.5-32b", 10_000_000, name)
    mp = plan_match("opt-30b", "qwen2.5-32b", units=10_000_000, devices=m.devices,
                    device_flops=m.match_flops, device_bw=m.mem_bw, block_a=4096,
                    block_b=4096, chunk=1024, model_axis=m.devices_per_host)
    assert p.match.flops == mp.flops and p.match.neurons_b == 64 * 27648
    assert p.match_seconds >= mp.flops / (m.devices * m.match_flops)
    assert p.match_disk_bytes == 1e7 * (p.match.neurons_a + p.match_panels * p.match.neurons_b) * 2
    assert p.match_panels == math.ceil(p.match.neurons_a / (
        int(m.device_mem / 2 / (4 * p.match.neurons_b)) * m.devices_per_host))
    assert 0.05 < p.match.band_fraction < 0.15
    assert p.band_seconds == pytest.approx(p.match_seconds * p.match.band_fraction)
    assert p.seconds == pytest.approx(sum(c.seconds for c in p.models) + p.match_seconds)
    assert p.match_fits and all(c.fits for c in p.models)
    table = p.table()
    assert table.count("\n") == 5 and "record opt-30b" in table and "depth band" in table
  with pytest.raises(ValueError, match="must use all"):
    planner.plan_study("opt-30b", "qwen2.5-32b", 10, "gpu-node-8", match_mesh=(1, 4))
