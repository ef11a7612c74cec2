"""The image recorder on tiny random vision models, and the unchanged matcher on it.

Two models with different patch grids (a ViT with 4-pixel patches: 7 x 7 on the
28-pixel images; a DINOv2 with 7-pixel patches: 4 x 4) are recorded on one
canonical 4 x 4 grid; a neuron-shuffled copy of the ViT checks that the matcher,
the image-permutation null and the image bootstrap work on image stores as they
do on text stores.
"""

import dataclasses

import jax
import numpy as np
import pytest

from rosetta_jax import store as S
from rosetta_jax.analysis import bootstrap
from rosetta_jax.data import images as I
from rosetta_jax.data import patch_grid as G
from rosetta_jax.image_recording import check_same_grid, record_images, study_grid
from rosetta_jax.match import find_rosetta
from rosetta_jax.models import dinov2, vision, vit

SETTINGS = dict(batch_size=5, progress=False, commit_interval_s=0)


def random_params(module, shape, seed):
  """Seeded NumPy parameters of ``module`` (no init to compile): norms and layer
  scales around 1, everything else small noise."""
  rng = np.random.default_rng(seed)
  abstract = jax.eval_shape(module.init, jax.random.PRNGKey(0),
                            jax.ShapeDtypeStruct(shape, np.float32))["params"]

  def fill(path, leaf):
    name = jax.tree_util.keystr(path)
    base = 1.0 if "scale" in name else 0.0
    return (base + 0.2 * rng.standard_normal(leaf.shape)).astype(np.float32)
  return jax.tree_util.tree_map_with_path(fill, abstract)


def make_vit(seed=0):
  cfg = vit.ViTConfig(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=48,
                      image_size=28, patch_size=4, num_channels=3)
  module = vit.ViT(cfg)
  params = random_params(module, (1, 28, 28, 3), seed)
  return vision.VisionModel("tiny-vit", module, params, cfg, image_size=(28, 28))


def make_dinov2(seed=1):
  cfg = dinov2.Dinov2Config(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64,
                            image_size=28, patch_size=7, num_register_tokens=2)
  module = dinov2.Dinov2(cfg)
  params = random_params(module, (1, 28, 28, 3), seed)
  return vision.VisionModel("tiny-dinov2", module, params, cfg, image_mean=vision.IMAGENET_MEAN,
                            image_std=vision.IMAGENET_STD, image_size=(28, 28))


def shuffled(model, seed=0):
  """``model`` with every layer's MLP neurons permuted; returns (copy, perms)."""
  rng = np.random.default_rng(seed)
  params = jax.tree_util.tree_map(lambda x: x, model.params)
  perms = []
  for i in range(model.num_layers):
    layer = dict(params[f"layers_{i}"])
    perm = rng.permutation(model.neurons_per_layer)
    fc1, fc2 = dict(layer["fc1"]), dict(layer["fc2"])
    fc1["kernel"], fc1["bias"] = fc1["kernel"][:, perm], fc1["bias"][perm]
    fc2["kernel"] = fc2["kernel"][perm, :]
    layer["fc1"], layer["fc2"] = fc1, fc2
    params[f"layers_{i}"] = layer
    perms.append(perm)
  return dataclasses.replace(model, name=model.name + "~shuffled", params=params), perms


@pytest.fixture(scope="module")
def rec(tmp_path_factory):
  root = tmp_path_factory.mktemp("record_images")
  imgs = I.load_images("heldout").evenly(12)
  a, b = make_vit(), make_dinov2()
  sh, perms = shuffled(a)
  grid = study_grid([a, b])
  stores = {m.name: record_images(m, imgs, m.mlp_sites(), str(root / m.name), grid=grid,
                                  **SETTINGS) for m in (a, b, sh)}
  return dict(root=root, images=imgs, a=a, b=b, sh=sh, perms=perms, grid=grid, stores=stores)


def read(store, site):
  return store.site(site).read(0, store.total_units)


def test_store_holds_area_averaged_patches(rec):
  a, imgs, grid, store = rec["a"], rec["images"], rec["grid"], rec["stores"]["tiny-vit"]
  assert grid == (4, 4) and a.grid(28, 28) == (7, 7)
  assert store.complete and store.total_units == 12 * 16
  docs = store.documents
  assert docs["doc_ids"] == list(imgs.ids) and docs["domains"] == imgs.domains
  assert docs["unit_offsets"].tolist() == list(range(0, 12 * 16 + 1, 16))
  assert store.manifest["settings"]["grid"] == [4, 4]
  assert store.manifest["settings"]["model_grid"] == [7, 7]
  # Reference: the plain forward pass on the preprocessed images, then the rule.
  x = np.asarray(I.to_model_input(imgs.images, (28, 28), a.image_mean, a.image_std))
  _, patches, prefix = a(x, sites=a.mlp_sites())
  for s in a.mlp_sites():
    ref = G.resample_numpy(np.asarray(patches[s]), (7, 7), grid).reshape(-1, 48)
    got = read(store, s)
    np.testing.assert_allclose(got, ref, atol=1e-5)
    m = store.site(s).moments()
    assert m.count == 12 * 16
    np.testing.assert_allclose(m.mean, ref.mean(0), atol=1e-6)
    assert prefix[s].shape == (12, 1, 48)  # the class token: returned, never stored
  # The DINOv2 (4 x 4 patches on 28 px, two registers) is recorded as is.
  b, sb = rec["b"], rec["stores"]["tiny-dinov2"]
  xb = np.asarray(I.to_model_input(imgs.images, (28, 28), b.image_mean, b.image_std))
  _, pb, _ = b(xb, sites=["layer_1/mlp"])
  np.testing.assert_allclose(read(sb, "layer_1/mlp"), np.asarray(pb["layer_1/mlp"]).reshape(-1, 64),
                             atol=1e-5)


def test_matcher_null_and_bootstrap_run_unchanged(rec):
  a, sh, perms, stores = rec["a"], rec["sh"], rec["perms"], rec["stores"]
  sa, ssh = stores[a.name], stores[sh.name]
  check_same_grid(sa, ssh)
  acts_a = {s: read(sa, s) for s in a.mlp_sites()}
  acts_sh = {s: read(ssh, s) for s in sh.mlp_sites()}
  m = find_rosetta(acts_a, acts_sh, k=1)
  assert len(m) == a.num_neurons and (m.site_a == m.site_b).all()
  layer = np.array([int(s.split("_")[1].split("/")[0]) for s in m.site_a])
  inv = [np.argsort(p) for p in perms]
  assert all(inv[l][na] == nb for l, na, nb in zip(layer, m.neuron_a, m.neuron_b))
  assert m.r.min() > 1 - 1e-5
  # The null permutes whole images: each image's 16 cells move together.
  doc_index = np.repeat(np.arange(12), 16)
  null = find_rosetta(acts_a, acts_sh, k=1, null_permutation=0, doc_ids=doc_index)
  assert null.r.mean() < m.r.mean() - 0.2
  # The bootstrap resamples images; twins stay twins in every resample.
  s = "layer_0/mlp"
  res = bootstrap.doc_stats(sa.site(s), ssh.site(s), doc_index,
                            *_candidates(acts_a[s], acts_sh[s], 4), num_docs=12)
  weights = bootstrap.bootstrap_weights(12, 20, seed=0)
  counts = bootstrap.resample_counts(res, weights, k=1)
  assert (counts == a.neurons_per_layer).all()
  # The two different models share the grid and match through the same code.
  b = rec["b"]
  check_same_grid(sa, stores[b.name])
  mb = find_rosetta(acts_a, {s: read(stores[b.name], s) for s in b.mlp_sites()}, k=1)
  assert 0 < len(mb) <= min(a.num_neurons, b.num_neurons)


def _candidates(x, y, c):
  from rosetta_jax.match import match
  r = match(x, y, k=c)
  return r.a_to_b_idx, r.b_to_a_idx


def test_crash_then_resume_is_bit_identical(rec, tmp_path, monkeypatch):
  calls = {"n": 0}
  real_commit = S.StoreWriter.commit

  def failing_commit(self, units_done, moments):
    calls["n"] += 1
    if calls["n"] == 2:
      raise RuntimeError("simulated crash")
    real_commit(self, units_done, moments)

  monkeypatch.setattr(S.StoreWriter, "commit", failing_commit)
  path = str(tmp_path / "s")
  with pytest.raises(RuntimeError, match="simulated crash"):
    record_images(rec["a"], rec["images"], None, path, grid=rec["grid"], overlap=False,
                  **SETTINGS)
  monkeypatch.setattr(S.StoreWriter, "commit", real_commit)
  partial = S.open_store(path)
  assert 0 < partial.units_done < partial.total_units and partial.units_done % 16 == 0
  resumed = record_images(rec["a"], rec["images"], None, path, grid=rec["grid"], **SETTINGS)
  base = rec["stores"]["tiny-vit"]
  for s in base.sites:
    np.testing.assert_array_equal(read(resumed, s), read(base, s))
    np.testing.assert_array_equal(resumed.site(s).moments().m2, base.site(s).moments().m2)


def test_mismatches_are_clear_errors(rec, tmp_path):
  a, imgs, root = rec["a"], rec["images"], rec["root"]
  with pytest.raises(ValueError, match="corpus_hash"):
    record_images(a, imgs.subset(range(11)), None, str(root / "tiny-vit"), grid=rec["grid"],
                  **SETTINGS)
  with pytest.raises(ValueError, match="settings"):
    record_images(a, imgs, None, str(root / "tiny-vit"), grid=(2, 2), **SETTINGS)
  with pytest.raises(ValueError, match=r"'tiny-dinov2' has a 4x4 patch grid, coarser than the "
                                       r"canonical 7x7"):
    record_images(rec["b"], imgs, None, str(tmp_path / "x"), grid=(7, 7), **SETTINGS)
  with pytest.raises(ValueError, match="30x30 input does not tile into whole 4x4 patches"):
    record_images(a, imgs, None, str(tmp_path / "y"), input_size=(30, 30), **SETTINGS)
  from rosetta_jax.models.base import Model
  with pytest.raises(ValueError, match="not a vision model"):
    record_images(Model("text", a.module, a.params, a.config), imgs, None, str(tmp_path / "z"))
  # 16 cells per image as 2 x 8 instead of 4 x 4: same unit counts, other cells.
  wide = record_images(a, imgs, ["layer_0/mlp"], str(tmp_path / "wide"), grid=(2, 8),
                       input_size=(28, 32), **SETTINGS)
  assert wide.total_units == rec["stores"]["tiny-vit"].total_units
  S.check_same_units(wide, rec["stores"]["tiny-vit"])  # the text check cannot tell ...
  with pytest.raises(ValueError, match=r"different canonical grids \(\[2, 8\] vs \[4, 4\]\)"):
    check_same_grid(wide, rec["stores"]["tiny-vit"])  # ... the grid check does
