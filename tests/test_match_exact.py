"""The matcher is exact at any representable scale (rosetta_jax/match/prep.py):
r within 1e-5 of a float64 NumPy reference for offsets up to 1e8 times the
spread and scales 1e-20..1e20, for float64, float32, integer, bool and list
inputs, in memory, streamed, sharded and sketched; bad inputs are clear errors."""

import jax.numpy as jnp
import numpy as np
import pytest

from rosetta_jax.match import Moments, SketchConfig, match
from rosetta_jax.sharding import make_mesh

T, N = 1024, 12


def planted(seed=0, t=T, n=N):
  """float64 a, b [t, n] with b's column j a noisy copy of a's column perm[j];
  the matching pair's r (~0.7) clears every other (~0.1) by far."""
  rng = np.random.default_rng(seed)
  z = rng.normal(size=(t, n))
  perm = rng.permutation(n)
  a = z + 0.6 * rng.normal(size=(t, n))
  b = z[:, perm] + 0.6 * rng.normal(size=(t, n))
  return a, b, perm


def ref_r(a, b):
  """float64 Pearson r [Na, Nb] of the data exactly as given (two-pass centring)."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  za, zb = a - a.mean(0), b - b.mean(0)
  za /= np.sqrt((za * za).sum(0))
  zb /= np.sqrt((zb * zb).sum(0))
  return za.T @ zb


def check(res, r, perm=None, excluded_a=(), excluded_b=()):
  """Returned r within 1e-5 of the reference r of the returned pair, and each
  neuron's returned partner is its reference best (to 1e-5); with ``perm``,
  the planted partners themselves."""
  np.testing.assert_array_equal(res.excluded_a, excluded_a)
  np.testing.assert_array_equal(res.excluded_b, excluded_b)
  for idx, got, rr in ((res.a_to_b_idx[:, 0], res.a_to_b_r[:, 0], r),
                       (res.b_to_a_idx[:, 0], res.b_to_a_r[:, 0], r.T)):
    ok = idx >= 0
    rows = np.flatnonzero(ok)
    want = rr[rows, idx[ok]]
    assert np.max(np.abs(got[ok] - want)) <= 1e-5
    best = np.nanmax(np.where(np.isfinite(rr), rr, -np.inf), axis=1)[rows]
    assert np.all(want >= best - 1e-5)
  if perm is not None:
    np.testing.assert_array_equal(res.b_to_a_idx[:, 0], perm)
    np.testing.assert_array_equal(res.a_to_b_idx[perm, 0], np.arange(len(perm)))


@pytest.mark.parametrize("offset", [1e4, 1e6, 1e7, 1e8])
@pytest.mark.parametrize("spread", [1.0, 1e-3])
def test_float64_offsets(offset, spread):
  a, b, perm = planted()
  a, b = spread * (offset + a), spread * (offset - 3 + b)
  check(match(a, b, k=1), ref_r(a, b), perm)


@pytest.mark.parametrize("scale", [1e-25, 1e-20, 1e-10, 1e10, 1e18, 1e20])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_scales(scale, dtype):
  a, b, perm = planted(1)
  a, b = (a * scale).astype(dtype), ((b + 5) * scale).astype(dtype)
  check(match(a, b, k=1), ref_r(a, b), perm)


@pytest.mark.parametrize("offset,spread", [(1e4, 1.0), (1e6, 1.0), (1e8, 64.0)])
def test_float32_offsets_keep_the_fast_path(offset, spread, monkeypatch):
  """float32 data goes to the kernel as it is (no host copy) and is centred
  there with the float64 mean in two float32 parts: exact for the float32 data
  as given, where centring on the float32 mean (off by up to half its ulp)
  errs by ~1e-3 in r already at 1e6."""
  from rosetta_jax.match import correlate as cor
  from rosetta_jax.match import hostpass
  monkeypatch.setattr(hostpass, "standardize",
                      lambda *x, **k: pytest.fail("float32 input standardised on the host"))
  a, b, perm = planted(2)
  a, b = (offset + spread * a).astype(np.float32), (offset + spread * b).astype(np.float32)
  r = ref_r(a, b)
  check(match(a, b, k=1), r, perm)
  # The test can fail: without the remainder ``lo`` the same kernel is off.
  real = cor.scales
  monkeypatch.setattr(cor, "scales", lambda m: (lambda mu, lo, s, e: (mu, 0 * lo, s, e))(*real(m)))
  res = match(a, b, k=1)
  err = np.abs(res.a_to_b_r[:, 0] - r[np.arange(N), res.a_to_b_idx[:, 0]]).max()
  assert err > 1e-4 if offset >= 1e6 else err < 1e-5


@pytest.mark.parametrize("dtype,base", [(np.int64, 2 ** 40 + 3 * 2 ** 31),
                                        (np.int64, 2 ** 62), (np.uint64, 2 ** 63 + 7),
                                        (np.int32, -2 ** 30), (np.int16, 0), (np.uint8, 100)])
def test_integers_are_centred_exactly(dtype, base):
  a, b, perm = planted(3)
  scale = 1000 if np.iinfo(dtype).bits > 16 else 10

  def ints(x):          # base + nonnegative offsets, built without overflow
    v = np.round(x * scale).astype(np.int64)
    v -= v.min()
    if dtype == np.uint64:
      return np.uint64(base) + v.astype(np.uint64)
    return (np.int64(base) + v).astype(dtype)

  ia, ib = ints(a), ints(b)
  # The reference on exact offsets from each column's minimum (float64 loses
  # units at 2**62, the offsets do not).
  off = lambda x: (x.astype(np.uint64) - x.min(0).astype(np.uint64)).astype(np.float64) \
      if dtype == np.uint64 else (x.astype(np.int64) - x.min(0).astype(np.int64)).astype(np.float64)
  r = ref_r(off(ia), off(ib))
  check(match(ia, ib, k=1), r, perm)


def test_bool_list_and_jax_inputs():
  a, b, perm = planted(4)
  check(match(a > 0.3, b > 0.3, k=1), ref_r(a > 0.3, b > 0.3))
  check(match(a.tolist(), b.tolist(), k=1), ref_r(a, b), perm)
  ia = np.round(a * 100).astype(np.int32) + 10 ** 9
  ib = np.round(b * 100).astype(np.int32)
  check(match(jnp.asarray(ia), jnp.asarray(ib), k=1), ref_r(ia, ib), perm)
  fa, fb = (a + 1e5).astype(np.float32), (b + 1e5).astype(np.float32)
  check(match(jnp.asarray(fa), jnp.asarray(fb), k=1), ref_r(fa, fb), perm)


def test_constant_is_decided_in_the_data_s_own_precision():
  """Constant neurons are all-equal ones, at 1e-25 and 1e20 alike; a neuron that
  varies by one unit in the last place of 1e8 (float64) is not constant."""
  a, b, _ = planted(5)
  for scale in (1e-25, 1.0, 1e20):
    x, y = a * scale, b * scale
    x[:, 2] = 0.1 * scale
    y[:, 5] = 3.0 * scale
    res = match(x, y, k=1)
    np.testing.assert_array_equal(res.excluded_a, [2])
    np.testing.assert_array_equal(res.excluded_b, [5])
  x = np.full((T, 3), 1e8)
  x[::2, 1] = np.nextafter(1e8, np.inf)
  x[:, 2] = np.linspace(0, 1, T)
  res = match(x, x, k=1)
  np.testing.assert_array_equal(res.excluded_a, [0])
  assert res.a_to_b_idx[1, 0] == 1 and abs(res.a_to_b_r[1, 0] - 1) < 1e-6


def test_streamed_sharded_and_sketched_routes_are_exact():
  """A float64 source (standardised chunk by chunk on the host), a float32
  source at offset 1e6 (centred in the streaming kernel), a (2, 4) mesh, and
  sketch-and-rescore (host route) at offset 1e8 / 1e6."""

  class Src:
    def __init__(self, x):
      self.x, (self.num_units, self.num_neurons) = x, x.shape

    def read(self, s, e):
      return self.x[s:e]

  a, b, perm = planted(6)
  a64, b64 = 1e8 + a, 1e8 + b
  r64 = ref_r(a64, b64)
  check(match(Src(a64), Src(b64), k=1, chunk=100), r64, perm)
  check(match(Src(a64), b64, k=1, chunk=256, block_a=5), r64, perm)
  check(match(a64, b64, k=1, mesh=make_mesh(2, 4)), r64, perm)
  a32, b32 = (1e6 + a).astype(np.float32), (1e6 + b).astype(np.float32)
  r32 = ref_r(a32, b32)
  check(match(Src(a32), Src(b32), k=1, chunk=100), r32, perm)
  cfg = SketchConfig(width=128, candidates=4, margin=None)
  check(match(a64, b64, k=1, sketch=cfg), r64, perm)
  check(match(a32, b32, k=1, sketch=cfg), r32, perm)


def test_device_sketch_route_centres_at_large_offsets(monkeypatch):
  from rosetta_jax.match import sketch as sk_mod
  monkeypatch.setattr(sk_mod, "DEVICE_ROUTE_ON_CPU", True)
  a, b, perm = planted(7)
  a32, b32 = (1e6 + a).astype(np.float32), (1e6 + b).astype(np.float32)
  cfg = SketchConfig(width=128, candidates=4, margin=None)
  check(match(jnp.asarray(a32), jnp.asarray(b32), k=1, sketch=cfg), ref_r(a32, b32), perm)


def test_moments_at_extreme_scales():
  """Host and device moments of float32 data at 1e20 and 1e-25 (float32
  squares would overflow / underflow) and of int64 near 2**62."""
  rng = np.random.default_rng(8)
  for scale in (1e-25, 1e20):
    x = (rng.normal(3, 1, size=(3000, 5)) * scale).astype(np.float32)
    ref = Moments.from_array(x)
    for m in (Moments.from_host(x), Moments.from_device(x, chunk=512)):
      np.testing.assert_allclose(m.mean, ref.mean, rtol=1e-6)
      np.testing.assert_allclose(m.m2, ref.m2, rtol=1e-5)
      assert not m.constant.any()
  xi = 2 ** 62 + rng.integers(0, 50, size=(3000, 4))
  xi[:, 1] = 2 ** 62 + 3
  m = Moments.from_host(xi)
  d = (xi - 2 ** 62).astype(np.float64)
  np.testing.assert_allclose(m.m2, ((d - d.mean(0)) ** 2).sum(0), rtol=1e-12)
  np.testing.assert_array_equal(m.constant, [False, True, False, False])


def test_bad_inputs_are_clear_errors():
  a, b, _ = planted(9)
  with pytest.raises(TypeError, match=r"k must be a positive integer, got 1.5"):
    match(a, b, k=1.5)
  with pytest.raises(TypeError, match="k must be a positive integer, got True"):
    match(a, b, k=True)
  with pytest.raises(ValueError, match="k must be a positive integer, got 0"):
    match(a, b, k=0)
  with pytest.raises(ValueError, match="k must be a positive integer, got -2"):
    match(a, b, k=-2, sketch=SketchConfig(width=64))
  assert match(a, b, k=np.int64(2)).k == 2
  with pytest.raises(ValueError, match=r"site 'a': no neurons \(shape \(1024, 0\)\)"):
    match(a[:, :0], b)
  with pytest.raises(ValueError, match=r"site 'b': no neurons"):
    match(a, b[:, :0], sketch=SketchConfig(width=64))
  with pytest.raises(TypeError, match="site 'a': complex128 activations are not supported"):
    match(a + 1j, b)
  with pytest.raises(TypeError, match=r"site 'x': <U1 activations"):
    match(np.full((4, 2), "a"), b[:4], names=("x", "y"))
  with pytest.raises(ValueError, match="site 'a': the list is not a rectangular"):
    match([[1.0, 2.0], [3.0]], b[:2])
  with pytest.raises(ValueError, match=r"site 'b': .* \[units, neurons\] array, got shape \(1024,\)"):
    match(a, b[:, 0])
  with pytest.raises(TypeError, match="site 'a': expected a .* got str"):
    match("acts", b)


class _Src:
  """A minimal ``ActivationSource`` over an array (streamed reads)."""

  def __init__(self, x):
    self.x, (self.num_units, self.num_neurons) = x, x.shape

  def read(self, s, e):
    return self.x[s:e]


def test_property_random_offsets_scales_dtypes_and_routes():
  """A property test over the promised range: 24 seeded draws of offset (up to
  1e8 times the spread), scale (1e-20..1e20), dtype (float64, int64, float32
  within its own range) and route (in memory, streamed, sketch-and-rescore);
  every returned r within 1e-5 of the float64 reference and every planted
  partner found."""
  rng = np.random.default_rng(2024)
  cfg = SketchConfig(width=128, candidates=4, margin=None)
  for case in range(24):
    a, b, perm = planted(100 + case)
    dtype = (np.float64, np.int64, np.float32)[case % 3]
    route = ("memory", "stream", "sketch")[(case // 3) % 3]
    if dtype == np.int64:                       # spread 1000 units, base up to 1e11
      base = int(10 ** rng.uniform(0, 11)) * (1 if rng.random() < 0.5 else -1)
      x, y = base + np.round(1000 * a).astype(np.int64), base + np.round(1000 * b).astype(np.int64)
    else:
      rel = 10 ** rng.uniform(0, 8 if dtype == np.float64 else 6)   # offset / spread
      scale = 10 ** rng.uniform(-20, 20)
      sign = 1 if rng.random() < 0.5 else -1
      x = (scale * (sign * rel + a)).astype(dtype)
      y = (scale * (sign * rel * 0.5 + b)).astype(dtype)
    r = ref_r(x, y)
    if route == "memory":
      res = match(x, y, k=1)
    elif route == "stream":
      res = match(_Src(x), _Src(y), k=1, chunk=300)
    else:
      res = match(x, y, k=1, sketch=cfg)
    check(res, r, perm)


def _doc_ref(x, y, doc, cand_a, cand_b, d):
  """float64 per-document sums of z = (x - mean) / sd (two-pass, exact data)."""
  def z(v):
    v = np.asarray(v, np.float64)
    c = v - v.mean(0)
    return c / np.sqrt((c * c).mean(0))
  za, zb = z(x), z(y)
  seg = lambda v: np.stack([v[doc == i].sum(0) for i in range(d)])
  return {"sa": seg(za), "saa": seg(za * za), "sb": seg(zb), "sbb": seg(zb * zb),
          "sab": seg(za[:, :, None] * zb[:, cand_a]), "sba": seg(zb[:, :, None] * za[:, cand_b])}


@pytest.mark.parametrize("dtype,offset,scale", [
    (np.float64, 1e8, 1.0), (np.float64, 1e8, 1e-3), (np.float64, 1e4, 1e-20),
    (np.float64, 1e6, 1e20), (np.int64, 2.0 ** 40, 1000.0), (np.float32, 1e6, 1.0)])
def test_bootstrap_doc_sums_centre_in_the_data_s_own_precision(dtype, offset, scale):
  """The document bootstrap's per-document sums (``hostpass.doc_sums``, the host
  path of ``analysis.bootstrap.doc_stats``) against float64 NumPy: centred in
  float64 for float64 and integer data and in two float32 steps for float32, so
  a large offset leaves the sums (and the resampled counts) as at offset 0. A
  float32 mean alone is off by up to 4 at 1e8: sums off by ~4 per unit."""
  from rosetta_jax.analysis import bootstrap
  a, b, _ = planted(11)
  if dtype == np.int64:
    x = np.int64(offset) + np.round(scale * a).astype(np.int64)
    y = np.int64(offset) + np.round(scale * b).astype(np.int64)
  else:
    x, y = (scale * (offset + a)).astype(dtype), (scale * (offset - 7 + b)).astype(dtype)
  doc = np.repeat(np.arange(16), T // 16)          # runs of 64 units: the host path
  rng = np.random.default_rng(12)
  cand_a, cand_b = rng.integers(0, N, size=(N, 3)), rng.integers(0, N, size=(N, 3))
  got = bootstrap.doc_stats(_Src(x), _Src(y), doc, cand_a, cand_b, num_docs=16)
  ref = _doc_ref(x, y, doc, cand_a, cand_b, 16)
  for k, want in ref.items():
    np.testing.assert_allclose(getattr(got, k), want, rtol=1e-5, atol=1e-4, err_msg=k)
  # The same resampled counts as the same data without its offset.
  base = bootstrap.doc_stats(_Src(a), _Src(b), doc, cand_a, cand_b, num_docs=16)
  w = bootstrap.bootstrap_weights(16, 50, 0)
  if dtype == np.float64:       # the same values, shifted: the same resampled counts
    np.testing.assert_array_equal(bootstrap.resample_counts(got, w),
                                  bootstrap.resample_counts(base, w))
