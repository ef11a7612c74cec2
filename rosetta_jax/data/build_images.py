"""Rebuilds the embedded image set from the Debian package ``dataset-fashion-mnist``.

    apt-get install -y dataset-fashion-mnist
    python -m rosetta_jax.data.build_images           # writes data/images/

Fashion-MNIST (Zalando Research, MIT licence): 28 x 28 greyscale images of 10
clothing classes, 60,000 for training and 10,000 for testing. The embedded file
keeps

* ``heldout``: all 10,000 test images (what the studies record activations on);
* ``train``: the first ``TRAIN_PER_CLASS`` training images of each class, in file
  order (what the vision zoo trains on),

each with its index in the original file, so the selection is reproducible on
any machine. ``build_arrays`` returns exactly what ``images.load_images`` reads
back (a test checks the two agree when the package is installed).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import lzma
import os

import numpy as np
from absl import app, flags, logging

SOURCE_DIR = "/usr/share/datasets/fashion-mnist"
FILES = {
    "train_images": "train-images-idx3-ubyte.gz", "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz", "test_labels": "t10k-labels-idx1-ubyte.gz",
}
# SHA-256 of the files of dataset-fashion-mnist 0.0~git20200523.55506a9-1 (Debian 12).
SHA256 = {
    "train_images": "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
    "train_labels": "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
    "test_images": "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
    "test_labels": "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
}
TRAIN_PER_CLASS = 500
OUT_DIR = os.path.join(os.path.dirname(__file__), "images")
FILENAME = "fashion_mnist.npz.xz"

_FLAGS = flags.DEFINE_string("out_dir", OUT_DIR, f"Where to write {FILENAME}.")


def read_idx(path: str) -> np.ndarray:
  """An IDX file (gzipped) as a uint8 array: [N] labels or [N, rows, cols] images.

  Raises:
    ValueError: the magic number or the size does not match the header.
  """
  with gzip.open(path, "rb") as f:
    data = f.read()
  magic = int.from_bytes(data[:4], "big")
  if magic not in (2049, 2051):
    raise ValueError(f"{path}: not an IDX file of uint8 labels or images (magic {magic})")
  ndim = magic & 0xFF
  shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
  body = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
  if body.size != int(np.prod(shape)):
    raise ValueError(f"{path}: header says {shape}, body holds {body.size} bytes")
  return body.reshape(shape)


def source_files(source_dir: str = SOURCE_DIR, check: bool = True) -> dict[str, str]:
  """Paths of the four Debian files, checked against ``SHA256``.

  Raises:
    FileNotFoundError: the package is not installed (names the apt command).
    ValueError: a file's digest differs from the recorded one.
  """
  paths = {k: os.path.join(source_dir, f) for k, f in FILES.items()}
  for key, path in paths.items():
    if not os.path.exists(path):
      raise FileNotFoundError(f"{path} is missing: run `apt-get install -y "
                              "dataset-fashion-mnist`")
    if check:
      with open(path, "rb") as f:
        got = hashlib.sha256(f.read()).hexdigest()
      if got != SHA256[key]:
        raise ValueError(f"{path}: SHA-256 {got} != recorded {SHA256[key]}; another "
                         "package version (the embedded set would change)")
  return paths


def build_arrays(source_dir: str = SOURCE_DIR) -> dict[str, np.ndarray]:
  """The embedded set's arrays from the Debian files.

  Returns:
    {"images": [N, 28, 28] uint8, "labels": [N] uint8, "split": [N] uint8 (0 train,
    1 heldout), "source_index": [N] int32 (index in the original file)}; the train
    subset first (by index), then the 10,000 test images.
  """
  paths = source_files(source_dir)
  tr_x, tr_y = read_idx(paths["train_images"]), read_idx(paths["train_labels"])
  te_x, te_y = read_idx(paths["test_images"]), read_idx(paths["test_labels"])
  keep = np.sort(np.concatenate([np.flatnonzero(tr_y == c)[:TRAIN_PER_CLASS]
                                 for c in range(10)]))
  return {
      "images": np.concatenate([tr_x[keep], te_x]),
      "labels": np.concatenate([tr_y[keep], te_y]),
      "split": np.concatenate([np.zeros(len(keep), np.uint8), np.ones(len(te_y), np.uint8)]),
      "source_index": np.concatenate([keep, np.arange(len(te_y))]).astype(np.int32),
  }


def write(arrays: dict[str, np.ndarray], path: str) -> None:
  """An uncompressed ``.npz`` of ``arrays`` inside an xz stream (temp file + rename)."""
  buf = io.BytesIO()
  np.savez(buf, **arrays)
  tmp = path + ".tmp"
  with open(tmp, "wb") as f:
    f.write(lzma.compress(buf.getvalue(), preset=9 | lzma.PRESET_EXTREME))
  os.replace(tmp, path)


def main(argv):
  del argv
  os.makedirs(_FLAGS.value, exist_ok=True)
  arrays = build_arrays()
  path = os.path.join(_FLAGS.value, FILENAME)
  write(arrays, path)
  logging.info("wrote %d images (%d train, %d heldout) to %s (%d bytes)",
               len(arrays["labels"]), int((arrays["split"] == 0).sum()),
               int((arrays["split"] == 1).sum()), path, os.path.getsize(path))


if __name__ == "__main__":
  app.run(main)
