"""The match planner."""

import pytest

from rosetta_jax.match import plan_match
from rosetta_jax.match.plan import band_fraction


def test_counts_and_formulas():
  p = plan_match(4096, 8192, units=1000, devices=2, device_flops=1e12, device_bw=1e15,
                 block_a=1024, block_b=1024, chunk=256, input_bytes=4)
  assert p.neurons_a == 4096 and p.neurons_b == 8192
  gram = 2 * 1000 * 4096 * 8192
  assert gram < p.flops < 1.01 * gram
  assert p.bytes_read == 1000 * (4096 * 8 + 8192 * 4) * 4
  assert p.seconds == pytest.approx(p.flops / 2e12)
  assert p.peak_bytes_per_device == 1024 * 1024 * 4 + 2 * 256 * 2048 * 8 + (4096 + 8192) * 8
  assert p.fits and p.band_fraction is None


def test_memory_does_not_grow_with_na_nb():
  small = plan_match(10_000, 10_000, units=10)
  big = plan_match(1_000_000, 1_000_000, units=10)
  grow = big.peak_bytes_per_device - small.peak_bytes_per_device
  assert grow == (2_000_000 - 20_000) * 8          # only the top-k states grow
  assert big.flops / small.flops == pytest.approx(1e4, rel=1e-2)


def test_real_30b_presets_and_depth_band():
  p = plan_match("opt-30b", "opt-30b", units=10_000_000, devices=64, depth_band=0.05)
  assert p.neurons_a == 48 * 4 * 7168
  assert 3e19 < p.flops < 5e19
  assert p.fits and p.peak_bytes_per_device < 1e9
  assert 0.05 < p.band_fraction < 0.15 and p.band_flops == pytest.approx(p.flops * p.band_fraction)
  assert "saving" in p.summary()
  assert band_fraction(4, 4, 0.0) == pytest.approx(0.25)
  assert band_fraction(6, 12, 1.0) == 1.0
  with pytest.raises(ValueError, match="unknown preset"):
    plan_match("no-such-model", 10, units=5)
  with pytest.raises(ValueError, match="layer counts"):
    plan_match(100, 100, units=5, depth_band=0.1)


def test_compute_dtype_sets_the_default_rate():
  from rosetta_jax.match.plan import DEVICE_FLOPS
  f32 = plan_match("opt-30b", "opt-30b", units=10_000_000, devices=64)
  bf16 = plan_match("opt-30b", "opt-30b", units=10_000_000, devices=64, compute_dtype="bfloat16")
  assert f32.flops == bf16.flops
  assert f32.seconds / bf16.seconds == pytest.approx(DEVICE_FLOPS["bfloat16"] / DEVICE_FLOPS["float32"])
  assert 3 * 3600 < f32.seconds < 5 * 3600                  # full-precision float32 on 64 H100s
  given = plan_match(1000, 1000, units=100, device_flops=1e9, device_bw=1e30)
  assert given.seconds == pytest.approx(given.flops / 1e9)
  with pytest.raises(ValueError, match="compute_dtype"):
    plan_match(10, 10, units=5, compute_dtype="float16")
