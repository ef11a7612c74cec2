"""Document-bootstrap re-matching equals brute-force matching of the resampled data."""
import numpy as np
import pytest

from rosetta_jax.match import match, mutual_pairs
from rosetta_jax.analysis import bootstrap


@pytest.fixture(autouse=True, params=["host", "xla"])
def stats_path(request, monkeypatch):
  """Every test runs on both ``doc_stats`` paths: the host pass (documents in
  runs of units) and the XLA segment sums (any document order)."""
  monkeypatch.setattr(bootstrap, "HOST_MIN_RUN", 1 if request.param == "host" else 10**9)
  return request.param


def brute_mutual_count(a, b, k=1):
  na = a.shape[1]
  c = np.corrcoef(a.T.astype(np.float64), b.T.astype(np.float64))[:na, na:]
  c = np.nan_to_num(c, nan=-np.inf)
  top_a = np.argsort(-c, axis=1, kind="stable")[:, :k]
  top_b = np.argsort(-c.T, axis=1, kind="stable")[:, :k]
  return sum(i in top_b[j] for i in range(na) for j in top_a[i])


def data(seed=0, docs=12, per=9, na=10, nb=13):
  rng = np.random.default_rng(seed)
  t = docs * per
  shared = rng.normal(size=(t, 6))
  a = np.concatenate([shared, rng.normal(size=(t, na - 6))], 1) + 0.6 * rng.normal(size=(t, na))
  b = np.concatenate([shared[:, ::-1], rng.normal(size=(t, nb - 6))], 1) + 0.6 * rng.normal(size=(t, nb))
  b[:, -1] = 2.0                                    # a constant neuron
  return a.astype(np.float32), b.astype(np.float32), np.repeat(np.arange(docs), per)


def test_unit_weights_reproduce_full_data_count():
  a, b, doc = data()
  res = match(a, b, k=4)
  stats = bootstrap.doc_stats(a, b, doc, res.a_to_b_idx, res.b_to_a_idx)
  for k in (1, 2):
    got = bootstrap.resample_counts(stats, np.ones((1, 12)), k=k)
    assert got[0] == len(mutual_pairs(res, k=k)[0]) == brute_mutual_count(a, b, k)


def test_resamples_equal_brute_force_on_expanded_data():
  a, b, doc = data(seed=1)
  nb = b.shape[1]
  # Every neuron a candidate: the candidate search is then exact.
  cand_a = np.tile(np.arange(nb), (a.shape[1], 1))
  cand_b = np.tile(np.arange(a.shape[1]), (nb, 1))
  stats = bootstrap.doc_stats(a, b, doc, cand_a, cand_b, chunk=17)
  w = bootstrap.bootstrap_weights(12, 6, seed=3)
  got = bootstrap.resample_counts(stats, w, k=1)
  for row, g in zip(w, got):
    idx = np.concatenate([np.flatnonzero(doc == d) for d in range(12) for _ in range(int(row[d]))])
    assert g == brute_mutual_count(a[idx], b[idx]), row


def brute_mutual_sets(a, b):
  na = a.shape[1]
  c = np.nan_to_num(np.corrcoef(a.T.astype(np.float64), b.T.astype(np.float64))[:na, na:],
                    nan=-np.inf)
  top_a, top_b = np.argmax(c, axis=1), np.argmax(c, axis=0)
  pairs = [(i, top_a[i]) for i in range(na) if top_b[top_a[i]] == i and np.isfinite(c[i, top_a[i]])]
  return {i for i, _ in pairs}, {j for _, j in pairs}


def test_resample_masks_equal_brute_force_pair_members():
  a, b, doc = data(seed=2)
  nb = b.shape[1]
  cand_a = np.tile(np.arange(nb), (a.shape[1], 1))
  cand_b = np.tile(np.arange(a.shape[1]), (nb, 1))
  stats = bootstrap.doc_stats(a, b, doc, cand_a, cand_b)
  w = bootstrap.bootstrap_weights(12, 5, seed=4)
  counts, in_a, in_b = bootstrap.resample_counts(stats, w, k=1, return_masks=True)
  assert in_a.shape == (5, a.shape[1]) and in_b.shape == (5, nb)
  for row, cnt, ma, mb in zip(w, counts, in_a, in_b):
    idx = np.concatenate([np.flatnonzero(doc == d) for d in range(12) for _ in range(int(row[d]))])
    sa, sb = brute_mutual_sets(a[idx], b[idx])
    assert set(np.flatnonzero(ma)) == sa and set(np.flatnonzero(mb)) == sb
    assert cnt == ma.sum() == mb.sum()
    assert not mb[-1]                               # the constant neuron is never a partner


def test_weights_shape_and_seed():
  w = bootstrap.bootstrap_weights(7, 5, seed=0)
  assert w.shape == (5, 7) and np.all(w.sum(1) == 7)
  assert np.array_equal(w, bootstrap.bootstrap_weights(7, 5, seed=0))


@pytest.mark.parametrize("threads", [1, 2])
def test_host_and_xla_stats_agree(threads, monkeypatch):
  """The host pass equals the XLA segment sums: documents that recur in two
  runs, steps that split documents, missing (-1) candidates, a constant neuron."""
  from rosetta_jax.match import hostpass
  monkeypatch.setattr(hostpass, "num_threads", lambda: threads)
  monkeypatch.setattr(hostpass, "TILE_BYTES", 4 * 2 * 23 * 5)      # 5-unit tiles
  monkeypatch.setattr(bootstrap, "HOST_CHUNK_BYTES", 4 * 13 * 40)  # 40-unit steps
  hostpass._pool.cache_clear()
  a, b, _ = data(seed=3, docs=12, per=9)
  doc = np.concatenate([np.repeat(np.arange(6), 9), np.repeat(np.arange(6), 9)])
  rng = np.random.default_rng(3)
  cand_a, cand_b = rng.integers(0, 13, (10, 3)), rng.integers(0, 10, (13, 3))
  cand_a[2, 1:] = -1
  monkeypatch.setattr(bootstrap, "HOST_MIN_RUN", 1)
  host = bootstrap.doc_stats(a, b, doc, cand_a, cand_b, num_docs=7)
  monkeypatch.setattr(bootstrap, "HOST_MIN_RUN", 10**9)
  ref = bootstrap.doc_stats(a, b, doc, cand_a, cand_b, num_docs=7)
  for name in ("n", "sa", "saa", "sb", "sbb", "sab", "sba"):
    np.testing.assert_allclose(getattr(host, name), getattr(ref, name), rtol=1e-5,
                               atol=1e-5, err_msg=name)
  assert host.n[6] == 0 and host.n[:6].tolist() == [18] * 6
  hostpass._pool.cache_clear()
