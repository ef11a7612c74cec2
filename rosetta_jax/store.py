"""A chunked, resumable on-disk activation store.

Layout of a store directory::

    manifest.json          header (model, sites, corpus, settings) + progress
    documents.json         doc ids, domains and per-document unit offsets
    moments-<units>.npz    per-site, per-neuron count/mean/M2/min/max (float64)
    sites/layer_0/mlp/     one zarr array per site, [total_units, neurons],
    ...                    chunked along units (tensorstore, zarr v2 driver)

Consistency: activations are written first (and awaited), then the moments file
(temp file + ``os.replace``), then ``manifest.json`` (temp file + ``os.replace``)
whose ``units_done`` and ``moments_file`` commit them. A process killed at any
point leaves the previous manifest in place; units at or beyond its
``units_done`` are never read (``SiteSource.num_units`` is ``units_done``) and are
rewritten on resume.

Readers: ``open_store(dir).site(name)`` is an ``ActivationSource`` for the
matcher (``num_units``, ``num_neurons``, ``read(start, stop)``, ``moments()``).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
from typing import Any, Mapping, Sequence

import numpy as np
import tensorstore as ts

FORMAT = "rosetta_jax.store/1"
MANIFEST = "manifest.json"
DOCUMENTS = "documents.json"
DTYPES = {"float32": "<f4", "bfloat16": "bfloat16"}
PROGRESS_KEYS = ("units_done", "moments_file", "complete")
CHUNK_BYTES = 1 << 20

try:  # The matcher's Moments; an equivalent fallback keeps this module standalone.
  from rosetta_jax.match.moments import Moments
except ImportError:  # pragma: no cover - only when the matcher is absent
  import dataclasses

  @dataclasses.dataclass(frozen=True)
  class Moments:  # type: ignore[no-redef]
    """Per-neuron count/mean/M2/min/max (float64); see ``match/moments.py``."""
    count: int
    mean: np.ndarray
    m2: np.ndarray
    min: np.ndarray
    max: np.ndarray

    @staticmethod
    def empty(num_neurons: int) -> "Moments":
      z = np.zeros(num_neurons, np.float64)
      return Moments(0, z, z.copy(), np.full(num_neurons, np.inf),
                     np.full(num_neurons, -np.inf))

    def merge(self, other: "Moments") -> "Moments":
      if other.count == 0:
        return self
      if self.count == 0:
        return other
      n = self.count + other.count
      delta = other.mean - self.mean
      frac = other.count / n
      return Moments(n, self.mean + delta * frac,
                     self.m2 + other.m2 + delta ** 2 * (self.count * frac),
                     np.minimum(self.min, other.min), np.maximum(self.max, other.max))

    @property
    def var(self) -> np.ndarray:
      return self.m2 / max(self.count, 1)


def chunk_moments(x: np.ndarray) -> Moments:
  """Moments of a [units, neurons] chunk, in float64 (two-pass within the chunk:
  float64 sum, then the float64 sum of squared deviations)."""
  x = np.asarray(x)
  if x.dtype not in (np.float32, np.float64):
    x = x.astype(np.float32)  # bfloat16 -> float32 is exact
  n = x.shape[0]
  if n == 0:
    return Moments.empty(x.shape[1])
  mean = np.add.reduce(x, axis=0, dtype=np.float64) / n
  d = x.astype(np.float64)
  d -= mean
  m2 = np.einsum("ij,ij->j", d, d)
  return Moments(int(n), mean, m2, x.min(axis=0).astype(np.float64),
                 x.max(axis=0).astype(np.float64))


def _atomic_write(path: str, data: bytes) -> None:
  """Writes ``data`` to ``path`` so that readers see the old or the new file, never
  a partial one (temp file in the same directory, fsync, ``os.replace``)."""
  tmp = f"{path}.tmp.{os.getpid()}"
  with open(tmp, "wb") as f:
    f.write(data)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def _read_json(path: str) -> dict:
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def _site_path(root: str, site: str) -> str:
  if ".." in site.split("/") or site.startswith("/"):
    raise ValueError(f"bad site name {site!r}")
  return os.path.join(root, "sites", *site.split("/"))


def _chunks(num_units: int, num_neurons: int, itemsize: int) -> list[int]:
  """[units, neurons] chunk shape: rows of up to 4096 neurons, ~1 MiB chunks.

  Small chunks keep the read-modify-write of the one partial chunk at each
  batch's edge cheap; readers fetch many chunks per call anyway."""
  cn = min(num_neurons, 4096)
  cu = max(16, min(1 << 16, CHUNK_BYTES // max(cn * itemsize, 1)))
  cu = 1 << (cu.bit_length() - 1)
  return [max(1, min(cu, num_units)), max(1, cn)]


def _open_array(root: str, site: str, *, create: bool = False, shape=None, dtype=None):
  spec: dict[str, Any] = {
      "driver": "zarr",
      "kvstore": {"driver": "file", "path": _site_path(root, site)},
  }
  if create:
    itemsize = 4 if dtype == "float32" else 2
    spec["metadata"] = {"shape": list(shape), "chunks": _chunks(shape[0], shape[1], itemsize),
                        "dtype": DTYPES[dtype], "compressor": None}
    return ts.open(spec, create=True, open=True).result()
  return ts.open(spec, open=True).result()


def documents_hash(doc_ids: Sequence[str], unit_offsets: Sequence[int]) -> str:
  """A hash of the document ids and their unit offsets (the unit layout)."""
  h = hashlib.sha256()
  for d in doc_ids:
    h.update(d.encode())
    h.update(b"\0")
  h.update(np.asarray(unit_offsets, dtype=np.int64).tobytes())
  return h.hexdigest()[:16]


# ----------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------


class SiteSource:
  """One site of a store as a matcher ``ActivationSource`` ([units, neurons]).

  Only committed units are visible: ``num_units`` is the manifest's ``units_done``.
  """

  def __init__(self, store: "Store", site: str):
    self.store = store
    self.site = site
    self.num_units = store.units_done
    self.num_neurons = int(store.manifest["sites"][site]["neurons"])
    self._array = None

  def _arr(self):
    if self._array is None:
      self._array = _open_array(self.store.path, self.site)
    return self._array

  def read(self, start: int, stop: int) -> np.ndarray:
    """Units ``[start, stop)`` as a [stop - start, num_neurons] float32 array."""
    if not 0 <= start <= stop <= self.num_units:
      raise IndexError(f"site {self.site!r}: units [{start}, {stop}) are outside the "
                       f"{self.num_units} committed units of {self.store.path}")
    return np.asarray(self._arr()[start:stop].read().result(), dtype=np.float32)

  def moments(self) -> Moments:
    """The per-neuron moments of the committed units (merged while recording)."""
    return self.store.moments()[self.site]


class Store:
  """A recorded activation store (read side). Open with ``open_store``."""

  def __init__(self, path: str):
    self.path = path
    mpath = os.path.join(path, MANIFEST)
    if not os.path.exists(mpath):
      raise FileNotFoundError(f"no activation store at {path} (missing {MANIFEST})")
    self.manifest = _read_json(mpath)
    if self.manifest.get("format") != FORMAT:
      raise ValueError(f"{mpath}: unknown store format {self.manifest.get('format')!r}")
    self._moments = None
    self._docs = None

  @property
  def sites(self) -> list[str]:
    return list(self.manifest["sites"])

  @property
  def units_done(self) -> int:
    return int(self.manifest["units_done"])

  @property
  def total_units(self) -> int:
    return int(self.manifest["total_units"])

  @property
  def complete(self) -> bool:
    return self.units_done == self.total_units

  def check_complete(self) -> None:
    """Raises if the recording has not finished."""
    if not self.complete:
      raise ValueError(f"store {self.path} is incomplete ({self.units_done} of "
                       f"{self.total_units} units); re-run the recording to resume it")

  def site(self, name: str) -> SiteSource:
    if name not in self.manifest["sites"]:
      raise KeyError(f"site {name!r} is not in store {self.path}; it has {self.sites}")
    return SiteSource(self, name)

  @property
  def documents(self) -> dict:
    """{"doc_ids": [D], "domains": [D], "unit_offsets": [D + 1] int64 array}."""
    if self._docs is None:
      d = _read_json(os.path.join(self.path, DOCUMENTS))
      d["unit_offsets"] = np.asarray(d["unit_offsets"], dtype=np.int64)
      self._docs = d
    return self._docs

  def moments(self) -> dict[str, Moments]:
    """{site: Moments} of the committed units."""
    if self._moments is None:
      self._moments = load_moments(self.path, self.manifest)
    return self._moments


def open_store(path: str) -> Store:
  """Opens a store directory for reading."""
  return Store(path)


def load_moments(path: str, manifest: Mapping) -> dict[str, Moments]:
  """The moments committed by ``manifest`` (empty moments before the first commit)."""
  sites = manifest["sites"]
  name = manifest.get("moments_file")
  if not name:
    return {s: Moments.empty(int(v["neurons"])) for s, v in sites.items()}
  with np.load(os.path.join(path, name)) as z:
    return {s: Moments(int(z[f"{s}/count"]), z[f"{s}/mean"], z[f"{s}/m2"],
                       z[f"{s}/min"], z[f"{s}/max"]) for s in sites}


def check_same_units(a: Store, b: Store) -> None:
  """Raises ValueError (naming the first differing document) unless two stores
  hold the same documents cut into the same units."""
  da, db = a.documents, b.documents
  if da["doc_ids"] != db["doc_ids"]:
    diff = next((i for i, (x, y) in enumerate(zip(da["doc_ids"], db["doc_ids"])) if x != y),
                min(len(da["doc_ids"]), len(db["doc_ids"])))
    raise ValueError(f"stores {a.path} and {b.path} hold different documents "
                     f"(first difference at document index {diff})")
  from rosetta_jax.data.align import check_unit_counts
  check_unit_counts(da["doc_ids"], np.diff(da["unit_offsets"]), np.diff(db["unit_offsets"]),
                    what=f"stores {a.path} and {b.path}")


# ----------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------


class StoreWriter:
  """Creates a store or reopens one to resume, appends units and commits.

  Args:
    path: the store directory.
    header: everything that defines the recording (model id and weights hash,
      sites {name: {"neurons": n}}, dtype, corpus hash, settings, total_units,
      documents hash). JSON-serialisable.
    documents: {"doc_ids", "domains", "unit_offsets"} written once at creation.

  Raises:
    ValueError: the directory holds a store whose header differs (names the
      differing fields).
  """

  def __init__(self, path: str, header: Mapping, documents: Mapping):
    self.path = path
    self.header = json.loads(json.dumps(dict(header)))
    if "dtype" not in self.header or self.header["dtype"] not in DTYPES:
      raise ValueError(f"store dtype must be one of {sorted(DTYPES)}, "
                       f"got {self.header.get('dtype')!r}")
    mpath = os.path.join(path, MANIFEST)
    if os.path.exists(mpath):
      old = _read_json(mpath)
      old_header = {k: v for k, v in old.items() if k not in PROGRESS_KEYS}
      new_header = {"format": FORMAT, **self.header}
      if old_header != new_header:
        diff = sorted(k for k in set(old_header) | set(new_header)
                      if old_header.get(k) != new_header.get(k))
        detail = "; ".join(f"{k}: stored {old_header.get(k)!r}, now {new_header.get(k)!r}"
                           for k in diff)
        raise ValueError(f"{path} holds a different recording ({detail}); "
                         "use a new directory or delete this one")
      self.manifest = old
    else:
      os.makedirs(path, exist_ok=True)
      # Leftovers of a run killed before its first manifest are ours to replace.
      ours = {DOCUMENTS, "sites"}
      foreign = [f for f in os.listdir(path) if f not in ours and ".tmp." not in f]
      if foreign:
        raise ValueError(f"{path} is not empty ({sorted(foreign)[:3]}...) and holds no "
                         "store manifest; refusing to record into it")
      shutil.rmtree(os.path.join(path, "sites"), ignore_errors=True)
      docs = {"doc_ids": list(documents["doc_ids"]), "domains": list(documents["domains"]),
              "unit_offsets": [int(x) for x in documents["unit_offsets"]]}
      _atomic_write(os.path.join(path, DOCUMENTS), json.dumps(docs).encode())
      self.manifest = {"format": FORMAT, **self.header, "units_done": 0,
                       "moments_file": None, "complete": False}
    total = int(self.header["total_units"])
    self.arrays = {}
    for site, info in self.header["sites"].items():
      shape = (total, int(info["neurons"]))
      if self.manifest["units_done"] > 0:
        # Resuming: keep the arrays exactly as written (their chunking may predate a
        # change of the default layout); only the shape must agree.
        arr = _open_array(path, site)
        if tuple(arr.shape) != shape:
          raise ValueError(f"{path}: site {site!r} holds an array of shape "
                           f"{tuple(arr.shape)}, expected {shape}; delete the store")
        self.arrays[site] = arr
      else:
        self.arrays[site] = _open_array(path, site, create=True, shape=shape,
                                        dtype=self.header["dtype"])
    self.moments = load_moments(path, self.manifest)
    if not os.path.exists(mpath):
      self._write_manifest()

  @property
  def units_done(self) -> int:
    return int(self.manifest["units_done"])

  def write(self, site: str, start: int, values: np.ndarray):
    """Starts writing ``values`` [u, neurons] at units [start, start + u); returns
    a future (await it before ``commit``)."""
    return self.arrays[site][start:start + values.shape[0]].write(values)

  def commit(self, units_done: int, moments: Mapping[str, Moments]) -> None:
    """Makes units [0, units_done) and their moments durable and visible."""
    name = f"moments-{units_done:012d}.npz"
    arrays = {}
    for s, m in moments.items():
      arrays.update({f"{s}/count": np.int64(m.count), f"{s}/mean": m.mean, f"{s}/m2": m.m2,
                     f"{s}/min": m.min, f"{s}/max": m.max})
    tmp = os.path.join(self.path, f"{name}.tmp.{os.getpid()}")
    with open(tmp, "wb") as f:
      np.savez(f, **arrays)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, os.path.join(self.path, name))
    self.manifest = {**self.manifest, "units_done": int(units_done), "moments_file": name,
                     "complete": int(units_done) == int(self.header["total_units"])}
    self.moments = dict(moments)
    self._write_manifest()
    for old in glob.glob(os.path.join(self.path, "moments-*.npz*")):
      if os.path.basename(old) != name:
        os.remove(old)

  def _write_manifest(self) -> None:
    _atomic_write(os.path.join(self.path, MANIFEST),
                  json.dumps(self.manifest, indent=1).encode())
