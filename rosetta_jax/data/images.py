"""The embedded, class-labelled image set, its split, and the optional emoji set.

``load_images("heldout")`` returns the 10,000 Fashion-MNIST test images the
vision studies record activations on; ``load_images("train")`` the 5,000-image
training subset (500 per class) the vision zoo trains on. The split is
Fashion-MNIST's own train/test split, identical on every machine. Image ids are
``fmnist-train-NNNNN`` / ``fmnist-test-NNNNN`` (the index in the original file);
an image's *domain* is its class name, so the per-domain analyses of the text
studies read classes.

``load_emoji()`` draws about 3,600 colour emoji (9 groups, 99 subgroups) from the
Debian packages ``fonts-noto-color-emoji`` and ``unicode-data`` with Pillow, as
an optional colour probe set; their domain is the Unicode emoji group.

``to_model_input`` turns uint8 images into a model's normalised input
(bilinear resize, greyscale replicated to RGB), inside ``jax.jit``.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import lzma
import os
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

DEFAULT_PATH = os.path.join(os.path.dirname(__file__), "images", "fashion_mnist.npz.xz")
CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
               "Sneaker", "Bag", "Ankle boot")
SPLITS = ("train", "heldout", "all")
EMOJI_FONT = "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"
EMOJI_TEST = "/usr/share/unicode/emoji/emoji-test.txt"
EMOJI_PACKAGES = "fonts-noto-color-emoji unicode-data"
_EMOJI_PX = 109  # the one bitmap size of Noto Color Emoji's CBDT strikes


@dataclasses.dataclass(frozen=True, eq=False)
class ImageSet:
  """Images with ids and class labels.

  Attributes:
    name: the set's name (``fashion_mnist``, ``emoji``).
    ids: N stable image ids.
    images: [N, height, width, channels] uint8.
    labels: [N] int class index.
    class_names: the class name of each label.
    subclasses: optional finer labels (emoji subgroups), N strings, or None.
  """
  name: str
  ids: tuple[str, ...]
  images: np.ndarray
  labels: np.ndarray
  class_names: tuple[str, ...]
  subclasses: tuple[str, ...] | None = None

  def __post_init__(self):
    n = len(self.ids)
    if self.images.ndim != 4 or self.images.dtype != np.uint8:
      raise ValueError(f"{self.name}: images must be [N, H, W, C] uint8, got "
                       f"{self.images.dtype}{list(self.images.shape)}")
    if self.images.shape[0] != n or len(self.labels) != n:
      raise ValueError(f"{self.name}: {n} ids, {self.images.shape[0]} images, "
                       f"{len(self.labels)} labels")
    if len(set(self.ids)) != n:
      raise ValueError(f"{self.name}: image ids are not unique")

  def __len__(self) -> int:
    return len(self.ids)

  @property
  def domains(self) -> list[str]:
    """The class name of each image (the store's per-document domain)."""
    return [self.class_names[int(c)] for c in self.labels]

  def subset(self, indices: Sequence[int]) -> "ImageSet":
    """The images at ``indices``, in that order."""
    idx = np.asarray(indices, np.int64)
    return ImageSet(self.name, tuple(self.ids[i] for i in idx), self.images[idx],
                    self.labels[idx], self.class_names,
                    None if self.subclasses is None else
                    tuple(self.subclasses[i] for i in idx))

  def evenly(self, n: int) -> "ImageSet":
    """``n`` images evenly spaced over the set (all when n >= len or n <= 0)."""
    if n <= 0 or n >= len(self):
      return self
    return self.subset(np.linspace(0, len(self) - 1, n).round().astype(np.int64))


@functools.lru_cache(maxsize=4)
def _read(path: str) -> dict[str, np.ndarray]:
  if not os.path.exists(path):
    raise FileNotFoundError(f"image set not found: {path} (rebuild it with "
                            "`python -m rosetta_jax.data.build_images`)")
  with open(path, "rb") as f:
    raw = lzma.decompress(f.read())
  with np.load(io.BytesIO(raw)) as z:
    out = {k: z[k] for k in z.files}
  for a in out.values():
    a.setflags(write=False)
  return out


def load_images(split: str = "heldout", path: str | None = None) -> ImageSet:
  """Loads a split of the embedded Fashion-MNIST set.

  Args:
    split: "train" (500 training images per class), "heldout" (the 10,000 test
      images) or "all".
    path: another file written by ``build_images.write``; default the embedded one.

  Returns:
    An ``ImageSet`` of [N, 28, 28, 1] images, ordered train then test, by index.
  """
  if split not in SPLITS:
    raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
  z = _read(path or DEFAULT_PATH)
  keep = np.ones(len(z["labels"]), bool) if split == "all" else \
      z["split"] == (1 if split == "heldout" else 0)
  kind = np.where(z["split"][keep] == 1, "test", "train")
  ids = tuple(f"fmnist-{k}-{int(i):05d}" for k, i in zip(kind, z["source_index"][keep]))
  return ImageSet("fashion_mnist", ids, z["images"][keep][..., None],
                  z["labels"][keep].astype(np.int64), CLASS_NAMES)


def images_hash(images: ImageSet) -> str:
  """A content hash of an image set (ids, labels, class names, pixels), for manifests."""
  h = hashlib.sha256()
  for i in images.ids:
    h.update(i.encode())
    h.update(b"\0")
  h.update(np.asarray(images.labels, np.int64).tobytes())
  h.update("\0".join(images.class_names).encode())
  h.update(str(images.images.shape).encode())
  h.update(np.ascontiguousarray(images.images).tobytes())
  return h.hexdigest()[:16]


# ----------------------------------------------------------------------------
# Model inputs
# ----------------------------------------------------------------------------


def to_model_input(images, size: tuple[int, int], mean: Sequence[float],
                   std: Sequence[float], channels: int = 3):
  """uint8 images -> a model's input [b, h, w, channels] float32 (jit-able).

  Pixels are scaled to [0, 1], resized to ``size`` with bilinear interpolation
  (half-pixel centres; antialiased when shrinking: ``jax.image.resize``), a single
  channel is replicated to ``channels``, then ``(x - mean) / std`` per channel.
  """
  x = jnp.asarray(images).astype(jnp.float32) / 255.0
  b, h, w, c = x.shape
  if (h, w) != tuple(size):
    x = jax.image.resize(x, (b, size[0], size[1], c), "linear", antialias=True)
  if c == 1 and channels != 1:
    x = jnp.broadcast_to(x, x.shape[:3] + (channels,))
  elif c != channels:
    raise ValueError(f"images have {c} channels; the model takes {channels}")
  mean = jnp.asarray(mean, jnp.float32)
  std = jnp.asarray(std, jnp.float32)
  return (x - mean) / std


# ----------------------------------------------------------------------------
# The emoji probe set (optional Debian packages)
# ----------------------------------------------------------------------------


def emoji_sequences(path: str = EMOJI_TEST, skip_groups: Sequence[str] = ("Component",)
                    ) -> list[tuple[str, str, str, str]]:
  """(emoji, name, group, subgroup) of every fully-qualified emoji in emoji-test.txt.

  The ``Component`` group (skin-tone and hair swatches) is skipped by default.
  """
  out, group, sub = [], None, None
  with open(path, encoding="utf-8") as f:
    for line in f:
      if line.startswith("# group:"):
        group = line.split(":", 1)[1].strip()
      elif line.startswith("# subgroup:"):
        sub = line.split(":", 1)[1].strip()
      elif "; fully-qualified" in line and group not in skip_groups:
        cps, rest = line.split(";", 1)
        text = "".join(chr(int(c, 16)) for c in cps.split())
        name = rest.split("#", 1)[1].strip().split(" ", 2)[-1]
        out.append((text, name, group, sub))
  return out


def _render_emoji(seqs, size: int, background: int) -> np.ndarray:
  from PIL import Image, ImageDraw, ImageFont
  font = ImageFont.truetype(EMOJI_FONT, _EMOJI_PX)
  canvas = int(_EMOJI_PX * 1.5)
  out = np.empty((len(seqs), size, size, 3), np.uint8)
  for i, (text, *_rest) in enumerate(seqs):
    im = Image.new("RGBA", (canvas, canvas), (0, 0, 0, 0))
    ImageDraw.Draw(im).text((0, 0), text, font=font, embedded_color=True)
    box = im.getbbox()
    if box is None:
      raise ValueError(f"emoji {text!r} renders blank with {EMOJI_FONT}")
    glyph = im.crop(box)
    side = max(glyph.size)
    square = Image.new("RGBA", (side, side), (background,) * 3 + (255,))
    square.alpha_composite(glyph, ((side - glyph.size[0]) // 2, (side - glyph.size[1]) // 2))
    out[i] = np.asarray(square.convert("RGB").resize((size, size), Image.Resampling.BOX))
  return out


def load_emoji(size: int = 32, background: int = 255, cache_dir: str | None = None
               ) -> ImageSet:
  """The colour emoji probe set: every fully-qualified emoji outside ``Component``.

  Each emoji is drawn with Noto Color Emoji at its native 109 px, cropped to its
  ink, centred on a square of the ``background`` grey, and area-averaged down to
  ``size`` x ``size`` RGB. Classes are the Unicode emoji groups (9), subclasses the
  subgroups (99). Drawn once and cached in ``$ROSETTA_JAX_CACHE/images``.

  Raises:
    FileNotFoundError: the Debian packages are missing (names the apt command).
    ImportError: Pillow is missing.
  """
  for f in (EMOJI_FONT, EMOJI_TEST):
    if not os.path.exists(f):
      raise FileNotFoundError(f"{f} is missing: the emoji set needs "
                              f"`apt-get install -y {EMOJI_PACKAGES}`")
  seqs = emoji_sequences()
  groups = tuple(dict.fromkeys(g for _, _, g, _ in seqs))
  h = hashlib.sha256()
  for f in (EMOJI_FONT, EMOJI_TEST):
    h.update(str(os.path.getsize(f)).encode() + str(os.path.getmtime(f)).encode())
  h.update(f"{size}/{background}".encode())
  root = cache_dir or os.path.join(
      os.path.expanduser(os.environ.get("ROSETTA_JAX_CACHE") or "~/.cache/rosetta_jax"),
      "images")
  path = os.path.join(root, f"emoji-{h.hexdigest()[:12]}.npy")
  if os.path.exists(path):
    pixels = np.load(path)
  else:
    pixels = _render_emoji(seqs, size, background)
    os.makedirs(root, exist_ok=True)
    tmp = f"{path}.tmp.{os.getpid()}.npy"
    np.save(tmp, pixels)
    os.replace(tmp, path)
  ids = tuple(f"emoji-{'-'.join(f'{ord(c):x}' for c in text)}" for text, *_ in seqs)
  labels = np.asarray([groups.index(g) for _, _, g, _ in seqs], np.int64)
  return ImageSet("emoji", ids, pixels, labels, groups,
                  tuple(s for _, _, _, s in seqs))
