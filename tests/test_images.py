"""The embedded image set, its split and rebuild, model inputs, and the emoji set."""

import os

import jax
import numpy as np
import pytest

from rosetta_jax.data import build_images
from rosetta_jax.data import images as I


def test_embedded_set_and_split():
  held, train, every = I.load_images("heldout"), I.load_images("train"), I.load_images("all")
  assert held.images.shape == (10000, 28, 28, 1) and held.images.dtype == np.uint8
  assert len(train) == 5000 and len(every) == 15000
  assert np.bincount(held.labels).tolist() == [1000] * 10
  assert np.bincount(train.labels).tolist() == [500] * 10
  assert not set(held.ids) & set(train.ids)
  assert set(every.ids) == set(held.ids) | set(train.ids)
  assert held.ids[0] == "fmnist-test-00000" and held.domains[:3] == ["Ankle boot", "Pullover",
                                                                     "Trouser"]
  # Real photographs: varied, not blank, classes look different on average.
  assert held.images.std() > 50 and len(np.unique(held.images[:100].reshape(100, -1), axis=0)) == 100
  means = np.stack([held.images[held.labels == c].mean(0) for c in range(10)])
  assert np.abs(means[1] - means[8]).mean() > 20  # trouser vs bag
  assert os.path.getsize(I.DEFAULT_PATH) < 6_500_000  # a few MB in the package
  assert I.images_hash(held) == I.images_hash(I.load_images("heldout"))
  assert I.images_hash(held) != I.images_hash(held.subset(range(9999)))
  sub = held.evenly(10)
  assert len(sub) == 10 and sub.ids[0] == held.ids[0] and sub.ids[-1] == held.ids[-1]
  with pytest.raises(ValueError, match="unknown split 'test'"):
    I.load_images("test")


def test_rebuild_from_the_debian_package_matches_the_embedded_file():
  # Needs `apt-get install -y dataset-fashion-mnist` (.ci/run installs it).
  arrays, ours = build_images.build_arrays(), I._read(I.DEFAULT_PATH)
  assert sorted(ours) == sorted(arrays)
  for k in ours:
    np.testing.assert_array_equal(ours[k], arrays[k])


@pytest.mark.slow
def test_rebuilt_file_is_byte_identical(tmp_path):
  # xz at its extreme preset takes ~10 s on 2 cores.
  path = str(tmp_path / "x.npz.xz")
  build_images.write(build_images.build_arrays(), path)
  with open(path, "rb") as a, open(I.DEFAULT_PATH, "rb") as b:
    assert a.read() == b.read()


def test_rebuild_checks_the_source(tmp_path):
  with pytest.raises(FileNotFoundError, match="apt-get install -y dataset-fashion-mnist"):
    build_images.source_files(str(tmp_path))
  for f in build_images.FILES.values():
    (tmp_path / f).write_bytes(b"not the file")
  with pytest.raises(ValueError, match="SHA-256"):
    build_images.source_files(str(tmp_path))


def test_to_model_input():
  imgs = np.zeros((2, 28, 28, 1), np.uint8)
  imgs[0] = 51
  imgs[1, :, 14:] = 255
  mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 2.0)
  x = np.asarray(jax.jit(lambda a: I.to_model_input(a, (56, 42), mean, std))(imgs))
  assert x.shape == (2, 56, 42, 3)
  np.testing.assert_allclose(x[0], np.broadcast_to((0.2 - np.array(mean)) / np.array(std),
                                                   (56, 42, 3)), atol=1e-5)
  # A vertical edge stays vertical and keeps its sides' values.
  np.testing.assert_allclose(x[1, :, 0], np.broadcast_to(-np.array(mean) / np.array(std),
                                                         (56, 3)), atol=1e-5)
  np.testing.assert_allclose(x[1, :, -1], np.broadcast_to((1 - np.array(mean)) / np.array(std),
                                                          (56, 3)), atol=1e-5)
  assert np.all(np.diff(x[1, 0, :, 0]) >= -1e-6)
  with pytest.raises(ValueError, match="2 channels; the model takes 3"):
    I.to_model_input(np.zeros((1, 4, 4, 2), np.uint8), (4, 4), mean, std)


def test_emoji_probe_set(tmp_path):
  # Needs `apt-get install -y fonts-noto-color-emoji unicode-data` and Pillow.
  e = I.load_emoji(size=16, cache_dir=str(tmp_path))
  assert len(e) > 3500 and e.images.shape[1:] == (16, 16, 3)
  assert len(e.class_names) == 9 and "Component" not in e.class_names
  assert len(set(e.subclasses)) == 99
  assert np.bincount(e.labels).min() > 50
  # Colour: the channels differ (greyscale would make them equal).
  assert np.abs(e.images[..., 0].astype(int) - e.images[..., 2]).mean() > 10
  assert len(np.unique(e.images.reshape(len(e), -1), axis=0)) > 0.95 * len(e)
  again = I.load_emoji(size=16, cache_dir=str(tmp_path))  # from the cache
  np.testing.assert_array_equal(again.images, e.images)
  assert again.ids == e.ids
