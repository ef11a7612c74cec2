"""Exactness of the matcher against a float64 NumPy reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rosetta_jax.match import match
from rosetta_jax.sharding import make_mesh
from test_match_reference import corr, topk


def _data(t, na, nb, seed=0, shared=4):
  rng = np.random.default_rng(seed)
  z = rng.normal(size=(t, shared))
  a = rng.normal(size=(t, na)) + z @ rng.normal(size=(shared, na))
  b = rng.normal(size=(t, nb)) + z @ rng.normal(size=(shared, nb))
  # Offsets and scales far from standardised, as real activations are.
  a = a * rng.uniform(0.1, 5, na) + rng.uniform(-3, 3, na)
  b = b * rng.uniform(0.1, 5, nb) + rng.uniform(-3, 3, nb)
  return a.astype(np.float32), b.astype(np.float32)


def _check(res, a, b, k):
  c = corr(a, b)
  ai, ar = topk(c, k)
  bi, br = topk(c.T, k)
  np.testing.assert_array_equal(res.a_to_b_idx, ai)
  np.testing.assert_array_equal(res.b_to_a_idx, bi)
  np.testing.assert_allclose(res.a_to_b_r, ar, atol=1e-5, equal_nan=True)
  np.testing.assert_allclose(res.b_to_a_r, br, atol=1e-5, equal_nan=True)


@pytest.mark.parametrize("t,na,nb,k,blocks", [
    (300, 50, 40, 1, dict(block_a=16, block_b=16, chunk=64)),     # nothing divides
    (257, 33, 71, 3, dict(block_a=8, block_b=32, chunk=100)),
    (128, 20, 20, 2, dict()),                                       # one block
])
def test_exact_vs_numpy(t, na, nb, k, blocks):
  a, b = _data(t, na, nb)
  res = match(a, b, k=k, **blocks)
  assert res.a_to_b_idx.dtype == np.int32 and res.a_to_b_r.dtype == np.float32
  assert res.a_to_b_idx.shape == (na, k) and res.b_to_a_idx.shape == (nb, k)
  assert res.num_units == t
  _check(res, a, b, k)


def test_jax_arrays_in():
  a, b = _data(300, 50, 40)
  res = match(jnp.asarray(a), jnp.asarray(b), k=1, block_a=16, block_b=16, chunk=64)
  _check(res, a, b, 1)


def test_ties_lowest_index_wins():
  a, b = _data(300, 50, 40, seed=1)
  b[:, 37] = b[:, 5]          # exact duplicates in different B blocks
  b[:, 21] = b[:, 5]
  a[:, 44] = a[:, 3]          # and in A, for B's lists
  a[:, 12] = a[:, 3]
  for mesh in (None, make_mesh(data=2, model=4)):
    res = match(a, b, k=3, block_a=16, block_b=16, chunk=64, mesh=mesh)
    _check(res, a, b, 3)
    rows = np.flatnonzero(np.isin(res.a_to_b_idx, [5, 21, 37]).any(1))
    assert rows.size > 0
    for i in rows:   # the three copies appear together, in index order
      pos = [list(res.a_to_b_idx[i]).index(j) for j in (5, 21, 37)
             if j in res.a_to_b_idx[i]]
      assert pos == sorted(pos)
    assert res.b_to_a_idx[:, 0].tolist().count(44) == 0


def test_constant_columns_excluded():
  a, b = _data(200, 30, 25, seed=2)
  a[:, [4, 17]] = 3.5
  b[:, 0] = 0.0
  res = match(a, b, k=2, block_a=8, block_b=8, chunk=64)
  np.testing.assert_array_equal(res.excluded_a, [4, 17])
  np.testing.assert_array_equal(res.excluded_b, [0])
  assert (res.a_to_b_idx[[4, 17]] == -1).all() and np.isnan(res.a_to_b_r[[4, 17]]).all()
  assert (res.b_to_a_idx[0] == -1).all()
  assert not np.isin(res.b_to_a_idx, [4, 17]).any()
  assert not np.isin(res.a_to_b_idx, [0]).any()
  _check(res, a, b, 2)


def test_k_larger_than_valid_neighbours():
  a, b = _data(100, 6, 3, seed=3)
  b[:, 1] = 1.0
  res = match(a, b, k=4)
  assert (res.a_to_b_idx[:, 2:] == -1).all() and np.isnan(res.a_to_b_r[:, 2:]).all()
  _check(res, a, b, 4)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_names_site_and_neuron(bad):
  a, b = _data(50, 10, 12)
  b[7, 9] = bad
  with pytest.raises(ValueError, match=r"pythia-b:layer_2/mlp.*neuron 9"):
    match(a, b, names=("pythia-a:layer_1/mlp", "pythia-b:layer_2/mlp"))


def test_mismatched_units():
  a, b = _data(50, 10, 12)
  with pytest.raises(ValueError, match="mismatched unit counts.*50.*49"):
    match(a, b[:49])
  with pytest.raises(ValueError, match="k must be"):
    match(a, b, k=0)


@pytest.mark.parametrize("data,model", [(8, 1), (2, 4), (1, 8)])
def test_sharded_equals_single_device(data, model):
  assert len(jax.devices()) >= 8
  a, b = _data(301, 45, 37, seed=4)
  b[:, 30] = b[:, 2]
  a[:, 7] = -1.0
  one = match(a, b, k=2, block_a=8, block_b=16, chunk=32)
  many = match(a, b, k=2, block_a=8, block_b=16, chunk=32,
               mesh=make_mesh(data=data, model=model))
  np.testing.assert_array_equal(many.a_to_b_idx, one.a_to_b_idx)
  np.testing.assert_array_equal(many.b_to_a_idx, one.b_to_a_idx)
  np.testing.assert_allclose(many.a_to_b_r, one.a_to_b_r, atol=1e-6, equal_nan=True)
  np.testing.assert_allclose(many.b_to_a_r, one.b_to_a_r, atol=1e-6, equal_nan=True)
  _check(many, a, b, 2)


def test_bfloat16_compute_close():
  a, b = _data(400, 30, 30, seed=5)
  res = match(a, b, k=1, compute_dtype=jnp.bfloat16)
  c = corr(a, b)
  _, ar = topk(c, 1)
  np.testing.assert_allclose(res.a_to_b_r, ar, atol=2e-2)


class _Source:
  """A minimal ActivationSource that counts its reads."""

  def __init__(self, x):
    self.x, self.reads = x, []
    self.num_units, self.num_neurons = x.shape

  def read(self, start, stop):
    self.reads.append(stop - start)
    return self.x[start:stop]


@pytest.mark.parametrize("mesh_shape", [None, (2, 4)])
def test_streaming_source_equals_arrays(mesh_shape):
  a, b = _data(301, 45, 37, seed=6)
  a[:, 3] = 2.0
  sa, sb = _Source(a), _Source(b)
  mesh = None if mesh_shape is None else make_mesh(*mesh_shape)
  res = match(sa, sb, k=2, block_a=16, chunk=40, mesh=mesh)
  assert max(sa.reads) <= 80 and max(sb.reads) <= 80     # never all units at once
  np.testing.assert_array_equal(res.excluded_a, [3])
  _check(res, a, b, 2)


def test_streaming_progress_bar_counts_a_neurons(capsys):
  a, b = _data(120, 45, 37, seed=7)
  res = match(_Source(a), _Source(b), k=1, block_a=16, chunk=40, names=("x", "y"),
              progress=True)
  err = capsys.readouterr().err
  assert "match x ~ y" in err and "100%" in err and "45.0/45.0" in err
  _check(res, a, b, 1)


def test_make_mesh_shapes_and_errors():
  assert dict(make_mesh().shape) == {"data": 1, "model": 1}
  assert dict(make_mesh(model=4).shape) == {"data": 2, "model": 4}
  with pytest.raises(ValueError, match="needs 16 devices"):
    make_mesh(data=16)


@pytest.mark.parametrize("k", [1, 3])
def test_merge_topk_cols_vs_numpy(k):
  """The column merge (no transpose) keeps the k best per column, running list
  first on ties, and ids offset + row for the block's entries."""
  from rosetta_jax.match.correlate import merge_topk_cols
  rng = np.random.default_rng(k)
  m, n = 37, 11
  block = rng.integers(0, 6, (m, n)).astype(np.float32) / 5    # many exact ties
  block[:, 3] = -np.inf                                       # an all-invalid column
  vals = np.sort(rng.integers(0, 6, (n, k)).astype(np.float32) / 5, axis=1)[:, ::-1].copy()
  idx = np.tile(np.arange(k, dtype=np.int32), (n, 1))          # running ids 0..k-1
  offset = 100
  v, i = merge_topk_cols(vals, idx, block, offset, k)
  v, i = np.asarray(v), np.asarray(i)
  for c in range(n):
    cand = np.concatenate([vals[c], block[:, c]])
    ids = np.concatenate([idx[c], offset + np.arange(m)])
    order = np.argsort(-cand, kind="stable")[:k]              # stable: earlier wins ties
    np.testing.assert_array_equal(v[c], cand[order])
    finite = np.isfinite(cand[order])
    np.testing.assert_array_equal(i[c][finite], ids[order][finite])


def test_accelerator_defaults_reach_the_kernel(monkeypatch):
  """``match`` without block or chunk sizes uses the CPU defaults on a CPU and the
  accelerator ones (shorter chunks, larger blocks) on any other backend."""
  from rosetta_jax.match import api
  from rosetta_jax.match import correlate as cor
  seen = []
  real = cor.correlate_topk
  monkeypatch.setattr(cor, "correlate_topk",
                      lambda *args, **kw: seen.append((kw["ba"], kw["tc"])) or real(*args, **kw))
  a, b = _data(3000, 3000, 5, seed=12)
  want = lambda block, chunk: (cor.split_axis(3000, 1, block)[0], cor.split_axis(3000, 1, chunk)[0])
  cpu = match(a, b, k=1)
  monkeypatch.setattr(api.jax, "default_backend", lambda: "gpu")
  accel = match(a, b, k=1)
  assert seen == [want(api.DEFAULT_BLOCK, api.DEFAULT_CHUNK), want(api.ACCEL_BLOCK, api.ACCEL_CHUNK)]
  assert seen[0] != seen[1]                        # the sizes differ at this shape
  np.testing.assert_array_equal(accel.a_to_b_idx, cpu.a_to_b_idx)
  np.testing.assert_allclose(accel.a_to_b_r, cpu.a_to_b_r, atol=1e-5)


def test_precision_reaches_every_gram_dot(monkeypatch):
  """``precision`` is passed to the Gram dots of the in-memory, streaming and
  sketch routes; None means full float32 (Precision.HIGHEST) there."""
  from jax import lax
  from rosetta_jax.match import SketchConfig, correlate
  seen = []
  real = correlate.gram_dot
  monkeypatch.setattr(correlate, "gram_dot", lambda za, zb, p=None: seen.append(p) or real(za, zb, p))
  a, b = _data(300, 20, 24, seed=11)
  alg = lax.DotAlgorithmPreset.F32_F32_F32
  ref = match(a, b, k=1)
  assert seen and seen[-1] is None
  for src in ((a, b), (_Source(a), _Source(b))):
    seen.clear()
    res = match(*src, k=1, precision=alg, chunk=64)
    assert seen and all(p == alg for p in seen)
    np.testing.assert_array_equal(res.a_to_b_idx, ref.a_to_b_idx)
  seen.clear()
  match(a, b, k=1, precision=alg, sketch=SketchConfig(width=64, candidates=3))
  assert seen and all(p == alg for p in seen)
