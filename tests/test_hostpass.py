"""The sketch route's host passes and candidate search against plain NumPy."""

import ml_dtypes
import numpy as np
import pytest

from rosetta_jax.match import hostpass, match
from rosetta_jax.match.sketch import _candidates_host, bucket_plan


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def threads(request, monkeypatch):
  monkeypatch.setattr(hostpass, "num_threads", lambda: request.param)
  hostpass._pool.cache_clear()
  yield request.param
  hostpass._pool.cache_clear()


@pytest.mark.parametrize("dtype", [np.float32, np.float16, ml_dtypes.bfloat16])
def test_fold_matches_reference(threads, dtype, monkeypatch):
  """Bucket sums equal the definition, with tiles that do not divide the width
  and a short last chunk whose padding rows wrap around with sign 0."""
  monkeypatch.setattr(hostpass, "TILE_BYTES", 3000)         # several odd-sized tiles
  rng = np.random.default_rng(0)
  t, n, w = 700, 13, 96
  x = rng.normal(size=(t, n)).astype(dtype)
  gather, sign = bucket_plan(t, w, seed=3)                  # 768 slots, 68 padding
  ref = np.zeros((w, n))
  for pos, (row, sg) in enumerate(zip(gather, sign)):
    if row < t:
      ref[pos % w] += sg * x[row].astype(np.float64)
  out = np.zeros((w, n))
  hostpass.fold(x[:480], gather[:480], sign[:480], out)    # five groups
  hostpass.fold(x[480:], gather[480:] - 480, sign[480:], out)   # 220 rows, 288 slots
  np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("dtype", [np.float32, np.float16, ml_dtypes.bfloat16])
def test_rescore_matches_float64(threads, dtype, monkeypatch):
  """Centred cross products of dense slots and pairs, tiles not dividing T,
  float16 inputs centred in float32."""
  monkeypatch.setattr(hostpass, "TILE_BYTES", 5000)
  rng = np.random.default_rng(1)
  t, na, nb = 301, 11, 17
  xa = rng.normal(3.0, 1.0, (t, na)).astype(dtype)
  xb = rng.normal(-2.0, 2.0, (t, nb)).astype(dtype)
  cand = rng.integers(0, nb, (na, 3))
  cand[0] = [5, 5, 5]                                      # repeated candidates
  pa, pb = rng.integers(0, na, 40), rng.integers(0, nb, 40)
  xa64, xb64 = xa.astype(np.float64), xb.astype(np.float64)
  mu_a, mu_b = xa64.mean(0), xb64.mean(0)
  dense, pairs = hostpass.rescore(xa, xb, mu_a, mu_b, cand, pa, pb)
  za, zb = xa64 - mu_a, xb64 - mu_b
  ref_dense = np.stack([(za * zb[:, cand[:, s]]).sum(0) for s in range(3)], axis=1)
  ref_pairs = (za[:, pa] * zb[:, pb]).sum(0)
  # Float32 products summed over 301 units: errors relative to the sums' scale.
  scale = np.abs(za).sum(0).max() * np.abs(zb).max()
  np.testing.assert_allclose(dense, ref_dense, rtol=0, atol=1e-6 * scale)
  np.testing.assert_allclose(pairs, ref_pairs, rtol=0, atol=1e-6 * scale)
  _, none = hostpass.rescore(xa, xb, mu_a, mu_b, cand, pa[:0], pb[:0])
  assert none.shape == (0,)


@pytest.mark.parametrize("na,nb,c", [(50, 37, 4), (6, 40, 8), (40, 3, 5)])
def test_candidate_search_matches_match_on_the_sketch(na, nb, c, monkeypatch):
  """The host candidate search gives match(k=c)'s lists on the same sketch
  columns, blockwise (several A blocks), with constant columns excluded and
  fewer neurons than candidates on one side."""
  from rosetta_jax.match import sketch as sk
  monkeypatch.setattr(sk, "CAND_BLOCK_BYTES", 4 * nb * 16)   # 16 A neurons per block
  rng = np.random.default_rng(2)
  y_a = rng.normal(size=(64, na)).astype(np.float32)
  y_b = rng.normal(size=(64, nb)).astype(np.float32)
  y_a[:, 1] = 0.0
  y_b[:, 2] = 0.0
  ia, ra, ib, rb = _candidates_host(y_a, y_b, c)
  ref = match(y_a, y_b, k=c)
  for got_i, got_r, want_i, want_r in ((ia, ra, ref.a_to_b_idx, ref.a_to_b_r),
                                       (ib, rb, ref.b_to_a_idx, ref.b_to_a_r)):
    assert got_i.shape == want_i.shape == got_r.shape
    np.testing.assert_array_equal(got_i, want_i)
    np.testing.assert_allclose(got_r, want_r, atol=1e-5)      # nan where idx is -1
  assert (ia[1] == -1).all() and not (ib == 1).any() and not (ia == 2).any()
