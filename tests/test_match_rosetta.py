"""Rosetta criteria: mutual pairs, sites and layers, depth bands, null, zoo."""

import json

import numpy as np
import pytest

from rosetta_jax.match import (document_permutation, find_rosetta, find_rosetta_zoo,
                               match, mutual_pairs)
from test_match_reference import corr, mutual


def _models(t=400, seed=0, layers_a=3, layers_b=3, n=12, planted=()):
  """Two models' {site: acts}; ``planted`` = [(layer_a, i, layer_b, j)] shared signals."""
  rng = np.random.default_rng(seed)
  acts_a = {f"layer_{l}/mlp": rng.normal(size=(t, n)).astype(np.float32) for l in range(layers_a)}
  acts_b = {f"layer_{l}/mlp": rng.normal(size=(t, n)).astype(np.float32) for l in range(layers_b)}
  for la, i, lb, j in planted:
    s = rng.normal(size=t).astype(np.float32) * 3
    acts_a[f"layer_{la}/mlp"][:, i] += s
    acts_b[f"layer_{lb}/mlp"][:, j] += s
  return acts_a, acts_b


def _cat(acts):
  return np.concatenate(list(acts.values()), axis=1)


@pytest.mark.parametrize("k", [1, 3])
def test_mutual_pairs_vs_reference(k):
  rng = np.random.default_rng(0)
  z = rng.normal(size=(300, 6))
  a = (rng.normal(size=(300, 30)) + z @ rng.normal(size=(6, 30))).astype(np.float32)
  b = (rng.normal(size=(300, 25)) + z @ rng.normal(size=(6, 25))).astype(np.float32)
  res = match(a, b, k=k, block_a=8, block_b=8, chunk=64)
  ia, jb, r = mutual_pairs(res, k=k)
  expected = mutual(corr(a, b), k)
  assert set(zip(ia.tolist(), jb.tolist())) == expected and len(expected) > 3
  assert (np.diff(ia) >= 0).all()
  np.testing.assert_allclose(r, corr(a, b)[ia, jb], atol=1e-5)
  r_cut = float(np.median(r))
  ia2, jb2, r2 = mutual_pairs(res, k=k, r_min=r_cut)
  assert (r2 >= r_cut).all() and set(zip(ia2, jb2)) <= set(zip(ia, jb))
  assert len(ia2) < len(ia)


def test_find_rosetta_across_layers_finds_planted():
  planted = [(0, 3, 2, 5), (1, 0, 0, 11), (2, 7, 2, 7)]
  acts_a, acts_b = _models(planted=planted)
  m = find_rosetta(acts_a, acts_b, r_min=0.5, model_a="pa", model_b="pb",
                   block_a=16, block_b=16, chunk=128)
  got = {(s, int(n), t, int(o)) for s, n, t, o in zip(m.site_a, m.neuron_a, m.site_b, m.neuron_b)}
  assert got == {(f"layer_{la}/mlp", i, f"layer_{lb}/mlp", j) for la, i, lb, j in planted}
  assert len(m) == 3 and (m.rank == 1).all() and (m.r > 0.8).all()
  recs = m.to_records()
  assert recs[0]["model_a"] == "pa" and recs[0]["model_b"] == "pb"
  json.dumps(m.to_dict())                    # JSON-friendly
  # Without r_min, the table is exactly the reference's best buddies.
  full = find_rosetta(acts_a, acts_b)
  ca, cb = _cat(acts_a), _cat(acts_b)
  ref = mutual(corr(ca, cb), 1)
  got = {(int(sa[-5]) * 12 + na, int(sb[-5]) * 12 + nb)
         for sa, na, sb, nb in zip(full.site_a, full.neuron_a, full.site_b, full.neuron_b)}
  assert got == ref


def _masked_reference(acts_a, acts_b, allowed, k=1):
  ca, cb = _cat(acts_a), _cat(acts_b)
  c = corr(ca, cb)
  la = np.repeat(np.arange(len(acts_a)), 12)
  lb = np.repeat(np.arange(len(acts_b)), 12)
  c[~allowed(la[:, None], lb[None, :])] = -np.inf
  return mutual(c, k)


def _pairs(m, n=12):
  return {(int(sa.split("_")[1].split("/")[0]) * n + na, int(sb.split("_")[1].split("/")[0]) * n + nb)
          for sa, na, sb, nb in zip(m.site_a, m.neuron_a, m.site_b, m.neuron_b)}


def test_within_layer_and_depth_band_match_masked_reference():
  acts_a, acts_b = _models(layers_a=4, layers_b=2, seed=1,
                           planted=[(0, 1, 1, 1), (3, 2, 1, 4), (1, 5, 0, 6)])
  wl = find_rosetta(acts_a, acts_b, within_layer=True, k=2)
  assert _pairs(wl) == _masked_reference(acts_a, acts_b, lambda i, j: i == j, k=2)
  # depths: A (l + .5) / 4 = .125 .375 .625 .875; B (l + .5) / 2 = .25 .75
  band = find_rosetta(acts_a, acts_b, depth_band=0.2)
  da, db = (np.arange(4) + 0.5) / 4, (np.arange(2) + 0.5) / 2
  ref = _masked_reference(acts_a, acts_b, lambda i, j: np.abs(da[i] - db[j]) <= 0.2)
  assert _pairs(band) == ref
  assert (3 * 12 + 2, 12 + 4) in ref and (0 * 12 + 1, 12 + 1) not in ref   # band excludes
  with pytest.raises(ValueError, match="not both"):
    find_rosetta(acts_a, acts_b, within_layer=True, depth_band=0.1)
  with pytest.raises(ValueError, match="layer index"):
    find_rosetta({"emb": acts_a["layer_0/mlp"]}, acts_b, within_layer=True)


def test_permutation_null_moves_documents():
  doc_ids = np.repeat(np.arange(20), 20)            # 20 documents of 20 units
  order = document_permutation(400, 7, doc_ids)
  assert sorted(order) == list(range(400))
  blocks = order.reshape(20, 20)
  assert (np.diff(blocks, axis=1) == 1).all()        # documents move whole
  assert (blocks[:, 0] // 20 != np.arange(20)).all()  # a derangement
  np.testing.assert_array_equal(document_permutation(4, [1, 0, 3, 2]), [1, 0, 3, 2])
  with pytest.raises(ValueError, match="contiguous"):
    document_permutation(4, 0, np.array([0, 1, 0, 1]))
  planted = [(l, i, l, i) for l in range(3) for i in range(12)]
  acts_a, acts_b = _models(planted=planted, seed=2)
  real = find_rosetta(acts_a, acts_b, r_min=0.5)
  null = find_rosetta(acts_a, acts_b, r_min=0.5, null_permutation=3, doc_ids=doc_ids)
  assert len(real) == 36 and len(null) == 0


def test_errors_name_model_site_neuron():
  acts_a, acts_b = _models()
  acts_b["layer_1/mlp"][5, 4] = np.inf
  with pytest.raises(ValueError, match=r"'pb:layer_1/mlp'.*neuron 4"):
    find_rosetta(acts_a, acts_b, model_b="pb")
  acts_a, acts_b = _models()
  acts_b["layer_2/mlp"] = acts_b["layer_2/mlp"][:-1]
  with pytest.raises(ValueError, match="mismatched unit counts"):
    find_rosetta(acts_a, acts_b)


def test_zoo_anchor_buddies_in_every_model():
  rng = np.random.default_rng(3)
  t = 400
  shared = rng.normal(size=(t, 3)) * 3
  acts = {}
  for m in ("x", "y", "z"):
    a = rng.normal(size=(t, 10))
    a[:, [2, 5]] += shared[:, :2]                 # in all three models
    if m != "z":
      a[:, 8] += shared[:, 2]                     # only in x and y
    acts[m] = {"layer_0/mlp": a.astype(np.float32)}
  zoo = find_rosetta_zoo(acts, "x", r_min=0.5)
  assert sorted(set(zoo.neuron_a.tolist())) == [2, 5]
  assert sorted(set(zoo.model_b.tolist())) == ["y", "z"] and len(zoo) == 4
  with pytest.raises(ValueError, match="anchor"):
    find_rosetta_zoo(acts, "w")
