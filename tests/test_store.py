"""The chunked activation store (rosetta_jax/store.py), without a model."""

import json
import os

import ml_dtypes
import numpy as np
import pytest

from rosetta_jax import store as S


DOCS = {"doc_ids": ["x", "y"], "domains": ["code", "prose"], "unit_offsets": [0, 40, 100]}


def header(total=100, neurons=(("a/mlp", 6), ("b/mlp", 3)), dtype="float32", corpus="c1",
           docs=DOCS):
  return {"model": {"name": "m", "weights_hash": "w"},
          "sites": {s: {"neurons": n} for s, n in neurons}, "dtype": dtype,
          "corpus_hash": corpus,
          "documents_hash": S.documents_hash(docs["doc_ids"], docs["unit_offsets"]),
          "num_docs": 2, "total_units": total, "settings": {"pooling": "mean"}}


def write_batches(w, data, bounds, commit_upto=None):
  """Writes data[site] in the given [u0, u1) batches, committing after each."""
  moments = dict(w.moments)
  for u0, u1 in bounds:
    for s, x in data.items():
      w.write(s, u0, x[u0:u1]).result()
      moments[s] = moments[s].merge(S.chunk_moments(x[u0:u1]))
    if commit_upto is None or u1 <= commit_upto:
      w.commit(u1, moments)
  return moments


def test_roundtrip_moments_and_documents(tmp_path):
  rng = np.random.default_rng(0)
  data = {"a/mlp": rng.normal(3, 2, (100, 6)).astype(np.float32),
          "b/mlp": rng.gamma(2, size=(100, 3)).astype(np.float32)}
  w = S.StoreWriter(str(tmp_path), header(), DOCS)
  write_batches(w, data, [(0, 30), (30, 31), (31, 77), (77, 100)])
  st = S.open_store(str(tmp_path))
  assert st.complete and st.sites == ["a/mlp", "b/mlp"]
  assert st.documents["doc_ids"] == ["x", "y"] and st.documents["domains"] == ["code", "prose"]
  np.testing.assert_array_equal(st.documents["unit_offsets"], [0, 40, 100])
  for s, x in data.items():
    src = st.site(s)
    assert (src.num_units, src.num_neurons) == x.shape
    np.testing.assert_array_equal(src.read(0, 100), x)
    np.testing.assert_array_equal(src.read(13, 58), x[13:58])
    m = src.moments()
    assert m.count == 100
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(m.mean, x64.mean(0), rtol=1e-6)
    np.testing.assert_allclose(m.var, x64.var(0), rtol=1e-6)
    np.testing.assert_array_equal(m.min, x64.min(0))
    np.testing.assert_array_equal(m.max, x64.max(0))
  assert [f for f in os.listdir(tmp_path) if f.startswith("state-")] == [
      "state-000000000100.npz"]


def test_uncommitted_units_are_invisible(tmp_path):
  x = np.arange(100 * 6, dtype=np.float32).reshape(100, 6)
  data = {"a/mlp": x, "b/mlp": x[:, :3].copy()}
  w = S.StoreWriter(str(tmp_path), header(), DOCS)
  # Batches past unit 50 are written but never committed (a crash before commit).
  write_batches(w, data, [(0, 25), (25, 50), (50, 75)], commit_upto=50)
  st = S.open_store(str(tmp_path))
  assert st.units_done == 50 and not st.complete
  src = st.site("a/mlp")
  assert src.num_units == 50
  assert src.moments().count == 50
  np.testing.assert_allclose(src.moments().mean, x[:50].mean(0), rtol=1e-12)
  with pytest.raises(IndexError, match="outside the 50 committed units"):
    src.read(40, 60)
  with pytest.raises(ValueError, match="incomplete"):
    st.check_complete()
  # Resuming reopens the same recording with its committed moments.
  w2 = S.StoreWriter(str(tmp_path), header(), DOCS)
  assert w2.units_done == 50 and w2.moments["a/mlp"].count == 50


def test_bfloat16_store(tmp_path):
  x = np.random.default_rng(2).normal(size=(100, 6)).astype(ml_dtypes.bfloat16)
  w = S.StoreWriter(str(tmp_path), header(neurons=(("a/mlp", 6),), dtype="bfloat16"), DOCS)
  write_batches(w, {"a/mlp": x}, [(0, 64), (64, 100)])
  src = S.open_store(str(tmp_path)).site("a/mlp")
  got = src.read(0, 100)
  assert got.dtype == np.float32
  np.testing.assert_array_equal(got, x.astype(np.float32))
  np.testing.assert_allclose(src.moments().var, got.astype(np.float64).var(0), rtol=1e-6)


def test_mismatched_header_raises(tmp_path):
  S.StoreWriter(str(tmp_path), header(), DOCS)
  with pytest.raises(ValueError, match="corpus_hash: stored 'c1', now 'c2'"):
    S.StoreWriter(str(tmp_path), header(corpus="c2"), DOCS)
  with pytest.raises(ValueError, match="dtype"):
    S.StoreWriter(str(tmp_path), header(dtype="bfloat16"), DOCS)
  with pytest.raises(ValueError, match="sites"):
    S.StoreWriter(str(tmp_path), header(neurons=(("a/mlp", 6),)), DOCS)


def test_refuses_foreign_directory_and_bad_input(tmp_path):
  (tmp_path / "notes.txt").write_text("mine")
  with pytest.raises(ValueError, match="not empty"):
    S.StoreWriter(str(tmp_path), header(), DOCS)
  with pytest.raises(FileNotFoundError, match="no activation store"):
    S.open_store(str(tmp_path / "nothing"))
  with pytest.raises(ValueError, match="dtype must be one of"):
    S.StoreWriter(str(tmp_path / "s"), header(dtype="float16"), DOCS)


def test_check_same_units(tmp_path):
  S.StoreWriter(str(tmp_path / "a"), header(), DOCS)
  docs_b = {**DOCS, "unit_offsets": [0, 41, 100]}
  S.StoreWriter(str(tmp_path / "b"), header(docs=docs_b), docs_b)
  S.StoreWriter(str(tmp_path / "c"), header(), DOCS)
  a, b, c = (S.open_store(str(tmp_path / k)) for k in "abc")
  S.check_same_units(a, c)
  with pytest.raises(ValueError, match="document 'x'.*different unit counts"):
    S.check_same_units(a, b)


def test_site_source_is_an_activation_source(tmp_path):
  """The duck-typed protocol the matcher streams from (match/sources.py)."""
  w = S.StoreWriter(str(tmp_path), header(), DOCS)
  data = {"a/mlp": np.ones((100, 6), np.float32), "b/mlp": np.zeros((100, 3), np.float32)}
  write_batches(w, data, [(0, 100)])
  src = S.open_store(str(tmp_path)).site("b/mlp")
  assert isinstance(src.num_units, int) and isinstance(src.num_neurons, int)
  assert src.read(5, 9).shape == (4, 3)
  m = src.moments()
  for f in ("count", "mean", "m2", "min", "max"):
    assert hasattr(m, f)
  merged = m.merge(m)
  assert merged.count == 200
  with pytest.raises(KeyError, match="not in store"):
    S.open_store(str(tmp_path)).site("c/mlp")
  # The manifest on disk is plain JSON with the progress fields.
  man = json.loads((tmp_path / "manifest.json").read_text())
  assert man["units_done"] == 100 and man["complete"] is True


def test_matcher_streams_from_store(tmp_path):
  """rj.match on two store sites equals rj.match on the same arrays in memory."""
  from rosetta_jax.match import match
  from rosetta_jax.match.sources import ActivationSource
  rng = np.random.default_rng(3)
  a = rng.normal(size=(100, 6)).astype(np.float32)
  b = a[:, ::-1][:, :3] + 0.1 * rng.normal(size=(100, 3)).astype(np.float32)
  w = S.StoreWriter(str(tmp_path), header(), DOCS)
  write_batches(w, {"a/mlp": a, "b/mlp": b}, [(0, 37), (37, 100)])
  st = S.open_store(str(tmp_path))
  assert isinstance(st.site("a/mlp"), ActivationSource)
  got = match(st.site("a/mlp"), st.site("b/mlp"), k=1, chunk=16)
  ref = match(a, b, k=1, chunk=16)
  assert got.num_units == 100
  np.testing.assert_array_equal(got.a_to_b_idx, ref.a_to_b_idx)
  np.testing.assert_array_equal(got.b_to_a_idx, ref.b_to_a_idx)
  np.testing.assert_allclose(got.a_to_b_r, ref.a_to_b_r, rtol=1e-6)
  np.testing.assert_allclose(got.b_to_a_r, ref.b_to_a_r, rtol=1e-6)
  np.testing.assert_array_equal(got.b_to_a_idx[:, 0], [5, 4, 3])  # b_j ~ a_{5-j}
