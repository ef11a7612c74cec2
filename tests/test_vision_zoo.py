"""The vision zoo: classifiers and the MeanFlow generator, resumable bit-identically;
the generator's probe set stored with the run; recording generator vs discriminator."""

import dataclasses
import os

import jax
import numpy as np
import pytest

from rosetta_jax.data import images as I
from rosetta_jax.data import patch_grid as G
from rosetta_jax.image_recording import (check_same_grid, record_generated, record_images,
                                         study_grid)
from rosetta_jax.match import find_rosetta
from rosetta_jax.models import dit
from rosetta_jax.zoo import generator as gen_lib
from rosetta_jax.zoo import vision as Z

MICRO = Z.VisionZooConfig(
    widths=(8, 16), seeds=(0, 1), num_layers=1, patch_size=7,
    schedule=Z.Schedule(steps=6, batch_size=16, lr=3e-3, warmup=2, ckpt_every=3),
    generator=Z.GeneratorConfig(
        hidden_size=16, num_layers=1, num_heads=2, num_samples=12,
        schedule=Z.Schedule(steps=4, batch_size=8, lr=1e-3, warmup=1, weight_decay=0.0,
                            ckpt_every=2)))


@pytest.fixture(scope="module")
def train_images():
  return I.load_images("train").evenly(200)


def assert_same_tree(a, b):
  la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
  assert len(la) == len(lb)
  for x, y in zip(la, lb):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_classifiers_resume_bit_identically(tmp_path, train_images):
  full, _ = Z.train_classifiers(MICRO, 8, train_images, str(tmp_path / "full"), progress=False)
  part, _ = Z.train_classifiers(MICRO, 8, train_images, str(tmp_path / "part"), stop_after=4,
                                progress=False)  # killed after step 4: checkpoint at 3
  assert not os.path.exists(tmp_path / "part" / "final")
  resumed, _ = Z.train_classifiers(MICRO, 8, train_images, str(tmp_path / "part"),
                                   progress=False)
  assert_same_tree(resumed, full)
  # Seeds differ (init and batches), and training moved the weights.
  k = np.asarray(full["encoder"]["layers_0"]["fc1"]["kernel"])
  assert k.shape[0] == 2 and not np.allclose(k[0], k[1])


@pytest.mark.slow
def test_generator_resumes_bit_identically(tmp_path, train_images):
  g = MICRO.generator
  full, samples, summary = gen_lib.train_generator(g, train_images, str(tmp_path / "full"),
                                                   progress=False)
  gen_lib.train_generator(g, train_images, str(tmp_path / "part"), stop_after=3,
                          progress=False)
  resumed, samples2, _ = gen_lib.train_generator(g, train_images, str(tmp_path / "part"),
                                                 progress=False)
  assert_same_tree(resumed.params, full.params)
  np.testing.assert_array_equal(samples2.images.images, samples.images.images)
  assert isinstance(full, dit.GeneratorModel) and summary["num_samples"] == 12
  assert samples.images.images.shape == (12, 28, 28, 1)
  assert samples.images.labels.tolist() == [i % 10 for i in range(12)]
  # The stored probe set is what a re-run uses, even if generating would differ.
  path = tmp_path / "full" / gen_lib.SAMPLES
  stored = gen_lib.load_samples(str(path), g)
  np.testing.assert_array_equal(stored.noise, samples.noise)
  with pytest.raises(ValueError, match="another noise seed"):
    gen_lib.load_samples(str(path), dataclasses.replace(g, sample_seed=1))


def random_params(module, *inputs, seed=0):
  """Seeded NumPy parameters from ``eval_shape`` (no init to compile)."""
  rng = np.random.default_rng(seed)
  abstract = jax.eval_shape(module.init, jax.random.PRNGKey(0), *inputs)["params"]
  return jax.tree_util.tree_map(
      lambda l: (0.3 * rng.standard_normal(l.shape)).astype(np.float32), abstract)


def test_generator_recording_matches_the_generating_pass(tmp_path):
  # An untrained (random) generator and classifier: fast, and enough to check the
  # recorder: the rows are the generating pass's sites, on the discriminator's units.
  import jax.numpy as jnp
  cfg = gen_lib.dit_config(MICRO.generator)
  module = dit.DiT(cfg)
  z = jax.ShapeDtypeStruct((1, 28, 28, 1), jnp.float32)
  t = jax.ShapeDtypeStruct((1,), jnp.float32)
  y = jax.ShapeDtypeStruct((1,), jnp.int32)
  gen = dit.GeneratorModel("gen", module, random_params(module, z, t, t, y), cfg)
  noise = np.asarray(jax.random.normal(jax.random.PRNGKey(3), (7, 28, 28, 1)))
  labels = np.arange(7) % 10
  images, acts = gen.generate(noise, labels, sites=gen.mlp_sites())
  samples = gen_lib.Samples(gen_lib._image_set(dit.to_uint8(images), labels), noise)
  ccfg = MICRO.model_config(8)
  cls = Z.ViTClassifier(ccfg)
  disc = Z.as_vision_model("disc", ccfg, random_params(cls, z, seed=1))
  grid = study_grid([disc])
  assert gen.grid(28, 28) == (7, 7) and grid == (4, 4)
  sg = record_generated(gen, samples, None, str(tmp_path / "gen"), grid=grid, batch_size=3,
                        progress=False, commit_interval_s=0)
  sd = record_images(disc, samples.images, None, str(tmp_path / "disc"), grid=grid,
                     batch_size=3, progress=False, commit_interval_s=0)
  check_same_grid(sg, sd)
  assert sg.documents["doc_ids"] == sd.documents["doc_ids"] == list(samples.images.ids)
  np.testing.assert_array_equal(sg.documents["unit_offsets"], sd.documents["unit_offsets"])
  assert sg.total_units == 7 * 16
  ref = G.resample_numpy(np.asarray(acts["layer_0/mlp"]), (7, 7), grid).reshape(-1, 64)
  np.testing.assert_allclose(sg.site("layer_0/mlp").read(0, sg.total_units), ref, atol=1e-5)
  m = find_rosetta({s: sg.site(s) for s in sg.sites}, {s: sd.site(s) for s in sd.sites}, k=1)
  assert 0 < len(m) <= 32
  with pytest.raises(ValueError, match="not a generator"):
    record_generated(disc, samples, None, str(tmp_path / "x"))


def test_meanflow_target_is_the_average_velocity():
  # On a linear "network" u = a z + b t + c r the jvp total derivative is exact:
  # d/dt u(z_t, r, t) along dz/dt = v equals a v + b.
  import jax.numpy as jnp
  a, b, c = 0.7, -0.3, 0.2
  fn = lambda z, r, t: a * z + b * t[:, None] + c * r[:, None]
  z, v = jnp.ones((2, 3)), jnp.arange(6.0).reshape(2, 3)
  r, t = jnp.array([0.1, 0.2]), jnp.array([0.5, 0.9])
  _, dudt = jax.jvp(fn, (z, r, t), (v, jnp.zeros(2), jnp.ones(2)))
  np.testing.assert_allclose(dudt, a * v + b, atol=1e-6)


@pytest.mark.slow
def test_zoo_end_to_end_and_generator_recording(tmp_path, train_images):
  zoo_dir = str(tmp_path / "zoo")
  zoo = Z.train_vision_zoo(MICRO, zoo_dir, train=train_images,
                           heldout=I.load_images("heldout").evenly(50), progress=False)
  names = [m.name for m in zoo.classifiers]
  assert names == ["vit-w8-s0", "vit-w8-s1", "vit-w16-s0", "vit-w16-s1"]
  assert [m.neurons_per_layer for m in zoo.classifiers] == [32, 32, 64, 64]
  assert set(zoo.summary["accuracy"]) == set(names)
  assert all(0 <= v <= 1 for v in zoo.summary["accuracy"].values())
  # Re-running loads everything (the final checkpoints and the stored samples).
  mtime = os.path.getmtime(os.path.join(zoo_dir, "generator", gen_lib.SAMPLES))
  again = Z.train_vision_zoo(MICRO, zoo_dir, train=train_images,
                             heldout=I.load_images("heldout").evenly(50), progress=False)
  assert_same_tree(again.classifiers[3].params, zoo.classifiers[3].params)
  assert os.path.getmtime(os.path.join(zoo_dir, "generator", gen_lib.SAMPLES)) == mtime
  with pytest.raises(ValueError, match="different config"):
    Z.train_vision_zoo(dataclasses.replace(MICRO, seeds=(0, 2)), zoo_dir, train=train_images,
                       progress=False)

  # Generator vs a discriminator on the generated images, one 4 x 4 grid.
  gen, samples, disc = zoo.generator, zoo.samples, zoo.classifiers[2]
  assert gen.grid(28, 28) == (7, 7) and disc.grid(28, 28) == (4, 4)
  grid = study_grid([disc])
  sg = record_generated(gen, samples, None, str(tmp_path / "gen"), grid=grid, batch_size=5,
                        progress=False, commit_interval_s=0)
  sd = record_images(disc, samples.images, None, str(tmp_path / "disc"), grid=grid,
                     batch_size=5, progress=False, commit_interval_s=0)
  check_same_grid(sg, sd)
  assert sg.documents["doc_ids"] == list(samples.images.ids) and sg.total_units == 12 * 16
  # The stored rows are the sites of the pass that made each image, area-averaged.
  images, acts = gen.generate(samples.noise, samples.images.labels, sites=gen.mlp_sites())
  np.testing.assert_array_equal(dit.to_uint8(images), samples.images.images)
  ref = G.resample_numpy(np.asarray(acts["layer_0/mlp"]), (7, 7), grid).reshape(-1, 64)
  np.testing.assert_allclose(sg.site("layer_0/mlp").read(0, sg.total_units), ref, atol=1e-5)
  m = find_rosetta({s: sg.site(s) for s in sg.sites}, {s: sd.site(s) for s in sd.sites}, k=1)
  assert 0 < len(m) <= 64


@pytest.mark.slow
def test_classifiers_learn(tmp_path, train_images):
  cfg = dataclasses.replace(MICRO, widths=(16,), seeds=(0, 1), num_layers=1,
                            schedule=Z.Schedule(steps=60, batch_size=32, lr=3e-3, warmup=5,
                                                ckpt_every=60))
  params, losses = Z.train_classifiers(cfg, 16, I.load_images("train"), str(tmp_path / "w"),
                                       progress=False)
  held = I.load_images("heldout").evenly(500)
  module = Z.ViTClassifier(cfg.model_config(16))
  acc = [Z.accuracy(module, jax.tree_util.tree_map(lambda x: x[i], params),
                    Z.scaled(held.images), held.labels) for i in range(2)]
  assert min(acc) > 0.3, acc  # chance is 0.1
  assert np.mean(losses[-1][1]) < np.mean(losses[0][1])
