"""Sketch-and-rescore: candidates from a CountSketch, exact r on rescoring."""

import numpy as np
import pytest

from rosetta_jax.match import SketchConfig, match, match_sketched, mutual_pairs
from rosetta_jax.match.sketch import bucket_plan


def test_bucket_plan_is_balanced_and_signed():
  gather, sign = bucket_plan(1000, 64, seed=1)
  assert len(gather) == 1024 and sorted(gather.tolist()) == list(range(1024))
  groups = gather.reshape(-1, 64)
  assert ((groups // 64) == np.arange(16)[:, None]).all()    # each group stays local
  assert set(np.unique(sign[gather < 1000])) == {-1.0, 1.0}
  assert (sign[gather >= 1000] == 0).all()


def _sparse_pair(t=8000, n=120, planted=60, seed=0):
  rng = np.random.default_rng(seed)
  z = (rng.random((t, 100)) < 0.03) * rng.exponential(1.0, (t, 100))
  a = z @ rng.normal(size=(100, n)) * 0.3 + rng.normal(size=(t, n)) * 0.5
  b = z @ rng.normal(size=(100, n)) * 0.3 + rng.normal(size=(t, n)) * 0.5
  a[:, :planted] += 3 * z[:, :planted]
  b[:, :planted] += 3 * z[:, :planted]
  return np.maximum(a, 0).astype(np.float32), np.maximum(b, 0).astype(np.float32)


def test_sketch_recovers_planted_pairs_with_exact_r():
  a, b = _sparse_pair()
  a[:, 70] = 0.0                                  # a constant neuron stays excluded
  exact = match(a, b, k=2)
  sk = match(a, b, k=2, sketch=SketchConfig(width=512, candidates=6, chunk=2048))
  np.testing.assert_array_equal(sk.excluded_a, [70])
  assert (sk.a_to_b_idx[70] == -1).all() and not (sk.b_to_a_idx == 70).any()
  same = sk.a_to_b_idx == exact.a_to_b_idx
  assert same[:60, 0].all()                       # planted neurons: exact best neighbour
  np.testing.assert_allclose(sk.a_to_b_r[same], exact.a_to_b_r[same], atol=1e-5)
  e = set(zip(*mutual_pairs(exact)[:2]))
  s = set(zip(*mutual_pairs(sk)[:2]))
  assert len(e & s) >= 0.9 * len(e) and {(i, i) for i in range(60)} <= s


def test_sketch_rejects_bad_k():
  a, b = _sparse_pair(t=500, n=10, planted=5)
  with pytest.raises(ValueError, match="candidates"):
    match_sketched(a, b, k=5, sketch=SketchConfig(width=64, candidates=4))


def test_extra_pairs_margin_and_dedup():
  from rosetta_jax.match.sketch import _extra_pairs
  cand_a = np.array([[1, 0, 2], [0, 2, -1]])
  r_a = np.array([[0.9, 0.85, 0.1], [0.5, 0.45, np.nan]])
  cand_b = np.array([[1, 0, -1], [0, 1, -1], [1, 0, -1]])
  r_b = np.array([[0.5, 0.3, np.nan], [0.9, 0.2, np.nan], [0.45, 0.1, np.nan]])
  ia, jb = _extra_pairs(cand_a, r_a, cand_b, r_b, k=1, margin=0.1)
  # A slots >= 1 within 0.1 of the best: (0, 0), (1, 2); B's first slots: (1, 0)
  # and (0, 1) are A's dense slots (dropped), (1, 2) a duplicate; B slots >= 1
  # within 0.1 of their best: none.
  assert list(zip(ia.tolist(), jb.tolist())) == [(0, 0), (1, 2)]
  ia, jb = _extra_pairs(cand_a, r_a, cand_b, r_b, k=1, margin=None)
  # Every candidate: adds A's (0, 2) and B's (1, 1) (B's (0, 0), (0, 2): duplicates).
  assert list(zip(ia.tolist(), jb.tolist())) == [(0, 0), (0, 2), (1, 1), (1, 2)]


@pytest.mark.parametrize("margin", [None, 0.0])
def test_sketch_lists_exact_among_rescored(margin):
  """With every candidate rescored (margin None) each neuron's list is the exact
  top-k of its candidates; any margin keeps the planted pairs exact."""
  a, b = _sparse_pair(t=4000, n=80, planted=40, seed=3)
  exact = match(a, b, k=1)
  sk = match(a, b, k=1, sketch=SketchConfig(width=256, candidates=4, chunk=1024,
                                            margin=margin))
  np.testing.assert_array_equal(sk.a_to_b_idx[:40, 0], exact.a_to_b_idx[:40, 0])
  np.testing.assert_allclose(sk.a_to_b_r[:40], exact.a_to_b_r[:40], atol=1e-5)
  same = sk.b_to_a_idx == exact.b_to_a_idx
  np.testing.assert_allclose(sk.b_to_a_r[same], exact.b_to_a_r[same], atol=1e-5)
  if margin is None:
    assert same.mean() >= 0.9


def test_device_resident_path_matches_host_path(monkeypatch):
  """jax-array inputs sketch and rescore on the device; same result as the host
  path, with steps that do not divide T (loop plus remainder step)."""
  import jax.numpy as jnp
  from rosetta_jax.match import sketch as sk_mod
  a, b = _sparse_pair(t=3001, n=90, planted=45, seed=5)
  a[:, 7] = 1.5                                   # constant: excluded on both paths
  cfg = SketchConfig(width=256, candidates=4, chunk=1024, margin=None)
  calls = []
  real = sk_mod._rescore_device
  monkeypatch.setattr(sk_mod, "_rescore_device",
                      lambda *x, **kw: calls.append(1) or real(*x, **kw))
  monkeypatch.setattr(sk_mod, "DEVICE_ROUTE_ON_CPU", True)
  monkeypatch.setattr(sk_mod, "FOLD_UNITS", 512)
  monkeypatch.setattr(sk_mod, "RESCORE_UNITS", 700)
  host = match(a, b, k=2, sketch=cfg)
  assert not calls                                # numpy inputs: host path
  dev = match(jnp.asarray(a), jnp.asarray(b), k=2, sketch=cfg)
  assert calls                                    # jax arrays: device path
  np.testing.assert_array_equal(dev.a_to_b_idx, host.a_to_b_idx)
  np.testing.assert_array_equal(dev.b_to_a_idx, host.b_to_a_idx)
  np.testing.assert_allclose(dev.a_to_b_r, host.a_to_b_r, atol=1e-5)
  np.testing.assert_array_equal(dev.excluded_a, [7])
  exact = match(a, b, k=2)
  same = dev.a_to_b_idx == exact.a_to_b_idx
  assert same[:45, 0].all() and not (dev.b_to_a_idx == 7).any()
  np.testing.assert_allclose(dev.a_to_b_r[same], exact.a_to_b_r[same], atol=1e-5)


def test_device_path_with_fewer_units_than_a_step(monkeypatch):
  """T below the device rescoring step (no full step: only the remainder)."""
  import jax.numpy as jnp
  from rosetta_jax.match import sketch as sk_mod
  monkeypatch.setattr(sk_mod, "DEVICE_ROUTE_ON_CPU", True)
  a, b = _sparse_pair(t=1500, n=40, planted=20, seed=7)
  assert a.shape[0] < sk_mod.RESCORE_UNITS
  cfg = SketchConfig(width=128, candidates=3, margin=None)
  dev = match(jnp.asarray(a), jnp.asarray(b), k=1, sketch=cfg)
  host = match(a, b, k=1, sketch=cfg)
  np.testing.assert_array_equal(dev.a_to_b_idx, host.a_to_b_idx)
  np.testing.assert_allclose(dev.a_to_b_r, host.a_to_b_r, atol=1e-5)


def test_jax_arrays_on_cpu_take_the_host_route(monkeypatch):
  import jax.numpy as jnp
  from rosetta_jax.match import sketch as sk_mod
  monkeypatch.setattr(sk_mod, "_rescore_device", lambda *a, **k: pytest.fail("device route"))
  a, b = _sparse_pair(t=1000, n=20, planted=10, seed=8)
  res = match(jnp.asarray(a), jnp.asarray(b), k=1, sketch=SketchConfig(width=128, candidates=3))
  assert (res.a_to_b_idx[:10, 0] == np.arange(10)).all()


def test_sketch_progress_bars_and_result_unchanged(capsys):
  """progress=True shows the two host passes' bars and changes nothing."""
  a, b = _sparse_pair(t=3000, n=30, planted=15, seed=9)
  cfg = SketchConfig(width=128, candidates=3, chunk=1024)
  quiet = match(a, b, k=1, sketch=cfg)
  loud = match(a, b, k=1, sketch=cfg, progress=True, names=("m1", "m2"))
  err = capsys.readouterr().err
  assert "sketch m1 ~ m2" in err and "rescore m1 ~ m2" in err and "3/3" in err
  np.testing.assert_array_equal(loud.a_to_b_idx, quiet.a_to_b_idx)
  np.testing.assert_array_equal(loud.a_to_b_r, quiet.a_to_b_r)


def test_accelerator_backend_keeps_the_exact_candidate_search(monkeypatch):
  """With a non-CPU default backend, numpy inputs still take the host passes but
  the candidate search stays the exact kernel (the host search's transposed
  top_k is the pattern a GPU miscompiled); on a CPU the host search runs."""
  import jax
  from rosetta_jax.match import sketch as sk_mod
  calls = []
  real = sk_mod._candidates_host
  monkeypatch.setattr(sk_mod, "_candidates_host",
                      lambda *x, **kw: calls.append(1) or real(*x, **kw))
  a, b = _sparse_pair(t=2000, n=30, planted=15, seed=4)
  cfg = SketchConfig(width=128, candidates=3, margin=None)
  on_cpu = match(a, b, k=1, sketch=cfg)
  assert calls
  calls.clear()
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  other = match(a, b, k=1, sketch=cfg)
  assert not calls
  np.testing.assert_array_equal(other.a_to_b_idx, on_cpu.a_to_b_idx)
  np.testing.assert_allclose(other.a_to_b_r, on_cpu.a_to_b_r, atol=1e-6)
