"""Mergeable float64 moments."""

import numpy as np
import pytest

from rosetta_jax.match import Moments


def test_from_array_matches_numpy_float64():
  rng = np.random.default_rng(0)
  x = (rng.normal(size=(1001, 7)) * 0.01 + 1e4).astype(np.float32)   # big offset
  m = Moments.from_array(x, chunk=97)
  x64 = x.astype(np.float64)
  assert m.count == 1001
  np.testing.assert_allclose(m.mean, x64.mean(0), rtol=1e-14)
  np.testing.assert_allclose(m.m2, ((x64 - x64.mean(0)) ** 2).sum(0), rtol=1e-9)
  np.testing.assert_array_equal(m.min, x64.min(0))
  np.testing.assert_array_equal(m.max, x64.max(0))


def test_merge_is_order_free_and_equals_whole():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(500, 5))
  parts = [Moments.from_array(x[s:e]) for s, e in ((0, 3), (3, 200), (200, 500))]
  left = parts[0].merge(parts[1]).merge(parts[2])
  right = parts[2].merge(parts[0].merge(parts[1]))
  whole = Moments.from_array(x)
  for m in (left, right):
    np.testing.assert_allclose(m.mean, whole.mean, rtol=1e-12)
    np.testing.assert_allclose(m.m2, whole.m2, rtol=1e-12)
  assert Moments.empty(5).merge(whole) is whole


def test_concat_constant_and_nonfinite():
  x = np.arange(12.0).reshape(4, 3)
  x[:, 1] = 2.0
  m = Moments.concat([Moments.from_array(x), Moments.from_array(x[:, :1])])
  assert m.num_neurons == 4
  np.testing.assert_array_equal(m.constant, [False, True, False, False])
  assert m.first_nonfinite() is None
  x[2, 2] = np.nan
  with pytest.raises(ValueError, match=r"'model:layer_0/mlp'.*neuron 2"):
    Moments.from_array(x).check_finite("model:layer_0/mlp")
  with pytest.raises(ValueError, match="different unit counts"):
    Moments.concat([Moments.from_array(x), Moments.from_array(x[:2])])
  with pytest.raises(ValueError, match="cannot merge"):
    Moments.from_array(x).merge(Moments.from_array(x[:, :2]))


@pytest.mark.parametrize("offset,scale", [(0.0, 1.0), (1e4, 1e-2), (1e6, 1.0)])
def test_from_device_compensated_matches_float64(offset, scale):
  rng = np.random.default_rng(2)
  x = (rng.normal(size=(5001, 6)) * scale + offset).astype(np.float32)
  x[:, 3] = 2.0
  ref, dev = Moments.from_array(x), Moments.from_device(x, chunk=512)
  assert dev.count == 5001
  np.testing.assert_allclose(dev.mean, ref.mean, rtol=0, atol=1e-8 * scale)
  np.testing.assert_allclose(dev.m2, ref.m2, rtol=1e-6, atol=1e-9)
  np.testing.assert_array_equal(dev.min, ref.min)
  np.testing.assert_array_equal(dev.constant, ref.constant)


@pytest.mark.parametrize("offset,scale", [(0.0, 1.0), (1e4, 1e-2), (1e6, 1.0)])
@pytest.mark.parametrize("threads", [1, 2])
def test_from_host_tiles_match_float64(offset, scale, threads, monkeypatch):
  """The tiled host pass (tiles of 41 units, 1 or 2 thread spans) agrees with
  the float64 reference, at large offsets too."""
  from rosetta_jax.match import hostpass
  monkeypatch.setattr(hostpass, "TILE_BYTES", 12 * 6 * 41)
  monkeypatch.setattr(hostpass, "num_threads", lambda: threads)
  hostpass._pool.cache_clear()
  rng = np.random.default_rng(3)
  x = (rng.normal(size=(5001, 6)) * scale + offset).astype(np.float32)
  x[:, 3] = 2.0
  ref, host = Moments.from_array(x), Moments.from_host(x)
  assert host.count == 5001
  np.testing.assert_allclose(host.mean, ref.mean, rtol=0, atol=1e-8 * scale)
  np.testing.assert_allclose(host.m2, ref.m2, rtol=1e-6, atol=1e-9)
  np.testing.assert_array_equal(host.min, ref.min)
  np.testing.assert_array_equal(host.max, ref.max)
  np.testing.assert_array_equal(host.constant, ref.constant)
  hostpass._pool.cache_clear()


def test_from_host_float16_and_nonfinite():
  rng = np.random.default_rng(4)
  x = rng.normal(size=(300, 5)).astype(np.float16)
  ref, host = Moments.from_array(x), Moments.from_host(x)
  np.testing.assert_allclose(host.mean, ref.mean, atol=1e-6)
  np.testing.assert_allclose(host.m2, ref.m2, rtol=1e-5)
  x = x.astype(np.float32)
  x[17, 2] = np.inf
  with pytest.raises(ValueError, match="neuron 2"):
    Moments.from_host(x).check_finite("m:layer_0/mlp")
  with pytest.raises(ValueError, match="shape"):
    Moments.from_host(x[0])


def test_array_sources_on_the_host_use_the_host_pass(monkeypatch):
  """numpy arrays and jax arrays on a CPU take ``from_host``; its moments are
  the ones ``match`` uses (r = 1 for a neuron and its own copy)."""
  import jax.numpy as jnp
  from rosetta_jax.match import match
  from rosetta_jax.match.sources import ArraySource

  def no_device(*a, **k):
    raise AssertionError("from_device called for a host array")

  monkeypatch.setattr(Moments, "from_device", staticmethod(no_device))
  x = np.random.default_rng(5).normal(size=(400, 7)).astype(np.float32)
  for arr in (x, jnp.asarray(x)):
    m = ArraySource(arr).moments()
    np.testing.assert_allclose(m.m2, Moments.from_array(x).m2, rtol=1e-6)
  res = match(x, x[:, ::-1].copy(), k=1)
  np.testing.assert_array_equal(res.a_to_b_idx[:, 0], np.arange(7)[::-1])
  np.testing.assert_allclose(res.a_to_b_r[:, 0], 1.0, atol=1e-6)
