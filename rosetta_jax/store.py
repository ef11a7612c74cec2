"""A chunked, resumable, checksummed on-disk activation store.

Layout of a store directory::

    manifest.json          header (model, sites, corpus, settings), layout, progress
    documents.json         doc ids, domains and per-document unit offsets
    state-<units>.npz      per site: moments (count/mean/M2/min/max, float64) and
                           the CRC32C of every chunk row of committed units
    sites/layer_0/mlp/     one zarr array per site, [total_units, neurons],
    ...                    chunked along units (tensorstore, zarr v2 driver)

Consistency: activations are written first (and awaited), then the state file
(moments and checksums), then ``manifest.json``, whose ``units_done``,
``state_file`` and ``state_sha256`` commit them; every file is written to a
temporary name and renamed (``rosetta_jax.io``). A process killed at any point
leaves the previous manifest in place; units at or beyond its ``units_done`` are
never read (``SiteSource.num_units`` is ``units_done``) and are rewritten on resume.

Integrity (``checksums.py`` has the arithmetic): a *chunk row* is the ``cu``
units of one zarr chunk row across all of a site's neurons (``layout``). The
writer takes the CRC32C of every chunk row from the values it writes, in memory;
the state file keeps them, and the manifest keeps the state file's SHA-256. A
reader checks each chunk row against its CRC the first time it reads it, so a
deleted, truncated or altered chunk file is an error (``StoreDamagedError``)
naming the store, site, chunk and file, never data. The arrays' fill value is
NaN (activations are finite), so a missing chunk cannot pass for zeros either.
``Store.verify()`` checks everything: each chunk file's presence and size, every
checksum, the documents against their hash, and the moments against the data.

Readers: ``open_store(dir).site(name)`` is an ``ActivationSource`` for the
matcher (``num_units``, ``num_neurons``, ``read(start, stop)``, ``moments()``).
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import io
import os
import shutil
import time
from typing import Any, Mapping, Sequence

import numpy as np
import tensorstore as ts

from rosetta_jax import io as rio
from rosetta_jax import checksums
from rosetta_jax.match.moments import Moments

FORMAT = "rosetta_jax.store/2"
OLD_FORMATS = ("rosetta_jax.store/1",)
MANIFEST = "manifest.json"
DOCUMENTS = "documents.json"
DTYPES = {"float32": "<f4", "bfloat16": "bfloat16"}
ITEMSIZE = {"float32": 4, "bfloat16": 2}
PROGRESS_KEYS = ("units_done", "state_file", "state_sha256", "complete")
CREATION_KEYS = ("layout", "checksum")   # fixed at creation, not part of the header
CHUNK_BYTES = 1 << 20
REMEDY = "delete the store directory and re-record it"


class StoreDamagedError(ValueError):
  """A store's files do not hold what was committed (missing, truncated or altered
  chunks, a damaged state or documents file). The message names the store, the
  site, the chunk and the file, and the remedy."""


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


def _open_array(root: str, site: str, *, create: bool = False, shape=None, dtype=None,
                chunks=None):
  spec: dict[str, Any] = {
      "driver": "zarr",
      "kvstore": {"driver": "file", "path": _site_path(root, site)},
  }
  if create:
    # fill_value NaN: a chunk that is missing reads as NaN, never as plausible zeros.
    spec["metadata"] = {"shape": list(shape), "chunks": list(chunks), "dtype": DTYPES[dtype],
                        "compressor": None, "fill_value": "NaN"}
    return ts.open(spec, create=True, open=True).result()
  try:
    return ts.open(spec, open=True).result()
  except ValueError as e:
    meta = os.path.join(_site_path(root, site), ".zarray")
    raise StoreDamagedError(f"store {root}: site {site!r}: its array metadata {meta} is "
                            f"missing or unreadable ({e}); {REMEDY}") from e


def documents_hash(doc_ids: Sequence[str], unit_offsets: Sequence[int]) -> str:
  """A hash of the document ids and their unit offsets (the unit layout)."""
  h = hashlib.sha256()
  for d in doc_ids:
    h.update(d.encode())
    h.update(b"\0")
  h.update(np.asarray(unit_offsets, dtype=np.int64).tobytes())
  return h.hexdigest()[:16]


def _state_arrays(moments: Mapping[str, Moments], crcs: Mapping[str, np.ndarray]) -> dict:
  arrays = {}
  for s, m in moments.items():
    arrays.update({f"{s}/count": np.int64(m.count), f"{s}/mean": m.mean, f"{s}/m2": m.m2,
                   f"{s}/min": m.min, f"{s}/max": m.max,
                   f"{s}/crc": np.asarray(crcs[s], np.uint32)})
  return arrays


def load_state(path: str, manifest: Mapping) -> tuple[dict[str, Moments], dict[str, np.ndarray]]:
  """The moments and chunk-row CRCs committed by ``manifest`` (empty before the
  first commit). The state file must hash to the manifest's ``state_sha256``."""
  sites = manifest["sites"]
  name = manifest.get("state_file")
  if not name:
    return ({s: Moments.empty(int(v["neurons"])) for s, v in sites.items()},
            {s: np.zeros(0, np.uint32) for s in sites})
  fpath = os.path.join(path, name)
  try:
    with open(fpath, "rb") as f:
      data = f.read()
  except FileNotFoundError as e:
    raise StoreDamagedError(f"store {path}: the state file {name} named by {MANIFEST} is "
                            f"missing; {REMEDY}") from e
  if hashlib.sha256(data).hexdigest() != manifest.get("state_sha256"):
    raise StoreDamagedError(f"store {path}: the state file {fpath} (moments and chunk "
                            f"checksums, {len(data)} bytes) does not match the SHA-256 "
                            f"committed in {MANIFEST}: it is damaged; {REMEDY}")
  with np.load(io.BytesIO(data)) as z:
    moments = {s: Moments(int(z[f"{s}/count"]), z[f"{s}/mean"], z[f"{s}/m2"],
                          z[f"{s}/min"], z[f"{s}/max"]) for s in sites}
    crcs = {s: np.asarray(z[f"{s}/crc"], np.uint32) for s in sites}
  return moments, crcs


# ----------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------


class SiteSource:
  """One site of a store as a matcher ``ActivationSource`` ([units, neurons]).

  Only committed units are visible: ``num_units`` is the manifest's ``units_done``.
  Every chunk row is checked against its committed CRC32C the first time this
  ``Store`` reads it (``StoreDamagedError`` if it differs).
  """

  def __init__(self, store: "Store", site: str):
    self.store = store
    self.site = site
    self.num_units = store.units_done
    self.num_neurons = int(store.manifest["sites"][site]["neurons"])
    self.chunk_units, self.chunk_neurons = store.layout(site)
    self._array = None

  def _arr(self):
    if self._array is None:
      self._array = self.store._array(self.site)
    return self._array

  def read(self, start: int, stop: int) -> np.ndarray:
    """Units ``[start, stop)`` as a [stop - start, num_neurons] float32 array."""
    if not 0 <= start <= stop <= self.num_units:
      raise IndexError(f"site {self.site!r}: units [{start}, {stop}) are outside the "
                       f"{self.num_units} committed units of {self.store.path}")
    if start == stop:
      return np.zeros((0, self.num_neurons), np.float32)
    cu = self.chunk_units
    r0, r1 = start // cu, -(-stop // cu)
    todo = ~self.store._verified(self.site)[r0:r1]
    if not todo.any():
      return np.asarray(self._fetch(start, stop), dtype=np.float32)
    # Some rows unverified: read whole chunk rows [r0, r1), check them, then slice.
    lo, hi = r0 * cu, min(r1 * cu, self.num_units)
    x = self._fetch(lo, hi)
    self.store._check_rows(self.site, x, r0, todo)
    return np.asarray(x[start - lo:stop - lo], dtype=np.float32)

  def _fetch(self, start: int, stop: int) -> np.ndarray:
    try:
      return np.ascontiguousarray(self._arr()[start:stop].read().result())
    except ValueError as e:    # tensorstore: a truncated or unreadable chunk file
      cu = self.chunk_units
      self.store._raise_damaged(self.site, start // cu, -(-stop // cu), cause=str(e))

  def moments(self) -> Moments:
    """The per-neuron moments of the committed units (merged while recording)."""
    return self.store.moments()[self.site]


@dataclasses.dataclass(frozen=True)
class VerifyReport:
  """What ``Store.verify`` checked: sites, chunk rows and files, bytes, seconds."""
  path: str
  sites: int
  chunk_rows: int
  chunk_files: int
  bytes: int
  seconds: float


class Store:
  """A recorded activation store (read side). Open with ``open_store``."""

  def __init__(self, path: str, manifest: Mapping | None = None):
    """Reads ``path``'s manifest (or takes ``manifest``, the writer's own)."""
    self.path = path
    mpath = os.path.join(path, MANIFEST)
    if manifest is not None:
      self.manifest = dict(manifest)
    elif not os.path.exists(mpath):
      raise FileNotFoundError(f"no activation store at {path} (missing {MANIFEST})")
    else:
      try:
        self.manifest = rio.read_json(mpath, "the store manifest")
      except ValueError as e:
        raise StoreDamagedError(f"{e}; {REMEDY}") from e
    fmt = self.manifest.get("format")
    if fmt in OLD_FORMATS:
      raise ValueError(f"{mpath}: store format {fmt!r} predates chunk checksums (this "
                       f"version reads {FORMAT!r} only); {REMEDY}")
    if fmt != FORMAT:
      raise ValueError(f"{mpath}: unknown store format {fmt!r}")
    self._state = None
    self._docs = None
    self._arrays: dict[str, Any] = {}
    self._checked: dict[str, np.ndarray] = {}

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

  @property
  def fingerprint(self) -> str:
    """A content id of the committed recording: the header and the SHA-256 of the
    state file (which holds every chunk's checksum). Equal fingerprints mean the
    same committed data; it does not look at the chunk files (``verify`` does)."""
    body = rio.canonical_json({k: v for k, v in self.manifest.items() if k != "complete"})
    return hashlib.sha256(body.encode()).hexdigest()[:16]

  def check_complete(self) -> None:
    """Raises if the recording has not finished."""
    if not self.complete:
      raise ValueError(f"store {self.path} is incomplete ({self.units_done} of "
                       f"{self.total_units} units); re-run the recording to resume it")

  def site(self, name: str) -> SiteSource:
    if name not in self.manifest["sites"]:
      raise KeyError(f"site {name!r} is not in store {self.path}; it has {self.sites}")
    return SiteSource(self, name)

  def layout(self, site: str) -> tuple[int, int]:
    """(units, neurons) of one chunk of ``site``'s array."""
    cu, cn = self.manifest["layout"][site]["chunks"]
    return int(cu), int(cn)

  @property
  def documents(self) -> dict:
    """{"doc_ids": [D], "domains": [D], "unit_offsets": [D + 1] int64 array}."""
    if self._docs is None:
      dpath = os.path.join(self.path, DOCUMENTS)
      try:
        d = rio.read_json(dpath, "the store's document list")
      except (ValueError, FileNotFoundError) as e:
        raise StoreDamagedError(f"store {self.path}: {e}; {REMEDY}") from e
      d["unit_offsets"] = np.asarray(d["unit_offsets"], dtype=np.int64)
      if documents_hash(d["doc_ids"], d["unit_offsets"]) != self.manifest["documents_hash"]:
        raise StoreDamagedError(f"store {self.path}: {dpath} does not match the "
                                f"documents_hash of {MANIFEST}; {REMEDY}")
      self._docs = d
    return self._docs

  def _state_loaded(self):
    if self._state is None:
      self._state = load_state(self.path, self.manifest)
      for s, crc in self._state[1].items():
        want = checksums.num_rows(self.units_done, self.layout(s)[0])
        if len(crc) != want:
          raise StoreDamagedError(f"store {self.path}: site {s!r}: the state file holds "
                                  f"{len(crc)} chunk checksums, {want} expected for "
                                  f"{self.units_done} units; {REMEDY}")
    return self._state

  def moments(self) -> dict[str, Moments]:
    """{site: Moments} of the committed units."""
    return self._state_loaded()[0]

  def checksums(self, site: str) -> np.ndarray:
    """[rows] uint32 CRC32C of each chunk row of ``site``'s committed units."""
    return self._state_loaded()[1][site]

  # Integrity -----------------------------------------------------------------

  def _array(self, site: str):
    if site not in self._arrays:
      arr = _open_array(self.path, site)
      n = int(self.manifest["sites"][site]["neurons"])
      want = ((self.total_units, n), tuple(self.layout(site)), np.dtype(DTYPES[self.manifest["dtype"]]))
      got = (tuple(arr.shape), tuple(arr.chunk_layout.read_chunk.shape), np.dtype(arr.dtype.numpy_dtype))
      if got != want:
        raise StoreDamagedError(f"store {self.path}: site {site!r}: the array on disk is "
                                f"(shape, chunks, dtype) {got}, the manifest says {want}; "
                                f"{REMEDY}")
      self._arrays[site] = arr
    return self._arrays[site]

  def _verified(self, site: str) -> np.ndarray:
    """[rows] bool: chunk rows of ``site`` already checked by this Store."""
    if site not in self._checked:
      self._checked[site] = np.zeros(len(self.checksums(site)), bool)
    return self._checked[site]

  def _check_rows(self, site: str, x: np.ndarray, r0: int, todo=None) -> None:
    """Checks chunk rows r0.. held in ``x`` (whole rows of committed units) against
    their CRCs; marks them verified, or raises naming the first bad chunk row."""
    cu = self.layout(site)[0]
    crc = self.checksums(site)
    n_rows = -(-x.shape[0] // cu)
    got = checksums.row_crcs(x, cu)
    bad = np.flatnonzero((got != crc[r0:r0 + n_rows]) & (True if todo is None else todo))
    if bad.size:
      self._raise_damaged(site, r0 + int(bad[0]), r0 + int(bad[0]) + 1)
    self._verified(site)[r0:r0 + n_rows] = True

  def _chunk_files(self, site: str, row: int) -> list[str]:
    n = int(self.manifest["sites"][site]["neurons"])
    cn = self.layout(site)[1]
    return [os.path.join(_site_path(self.path, site), f"{row}.{c}") for c in range(-(-n // cn))]

  def _file_problems(self, site: str, row: int) -> list[str]:
    """What is wrong with the files of one chunk row (missing, wrong size)."""
    cu, cn = self.layout(site)
    size = cu * cn * ITEMSIZE[self.manifest["dtype"]]
    out = []
    for f in self._chunk_files(site, row):
      rel = os.path.relpath(f, self.path)
      if not os.path.exists(f):
        out.append(f"chunk file {rel} is missing")
      elif os.path.getsize(f) != size:
        out.append(f"chunk file {rel} holds {os.path.getsize(f)} bytes, not {size} "
                   "(truncated or overwritten)")
    return out

  def _raise_damaged(self, site: str, r0: int, r1: int, cause: str | None = None):
    cu = self.layout(site)[0]
    problems, row = [], r0
    for r in range(r0, max(r1, r0 + 1)):
      p = self._file_problems(site, r)
      if p:
        problems, row = p, r
        break
    u0, u1 = row * cu, min((row + 1) * cu, self.units_done)
    what = "; ".join(problems) if problems else (
        f"its contents differ from the checksum committed in {MANIFEST}" if cause is None
        else f"it could not be read ({cause})")
    raise StoreDamagedError(f"store {self.path}: site {site!r}: chunk row {row} (units "
                            f"[{u0}, {u1})) is damaged: {what}; {REMEDY}")

  def check_files(self) -> None:
    """Checks, without reading data, that every chunk file of the committed units
    exists with its full size: a stat per file, so it is cheap enough to run on
    every use of a store whose data is not read (cached results). ``verify``
    also checks the contents.

    Raises:
      StoreDamagedError: naming the site, chunk row, units and file.
    """
    for site in self.sites:
      cu = self.layout(site)[0]
      for row in range(checksums.num_rows(self.units_done, cu)):
        problems = self._file_problems(site, row)
        if problems:
          u0, u1 = row * cu, min((row + 1) * cu, self.units_done)
          raise StoreDamagedError(f"store {self.path}: site {site!r}: chunk row {row} "
                                  f"(units [{u0}, {u1})) is damaged: "
                                  f"{'; '.join(problems)}; {REMEDY}")

  def verify(self, progress: bool = False) -> VerifyReport:
    """Checks the whole store against what was committed.

    Checks the manifest, the state file's SHA-256, the documents against their
    hash, each site's array metadata, that every chunk file of committed units
    exists with its full size, every chunk row's CRC32C, and the stored moments
    against moments recomputed from the data (count, min and max exactly; mean
    to 1e-7 of the data's magnitude, M2 to 1e-5).

    Returns:
      A ``VerifyReport``.

    Raises:
      StoreDamagedError: listing every problem found (up to 20), each naming the
        site, chunk row, units and file.
    """
    t0 = time.perf_counter()
    problems: list[str] = []
    self._state_loaded()
    _ = self.documents
    rows = files = nbytes = 0
    bar = None
    if progress:
      from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top
      bar = tqdm(total=self.units_done * len(self.sites), desc=f"verify {self.path}"[-60:],
                 unit="unit", unit_scale=True)
    for site in self.sites:
      arr = self._array(site)
      cu = self.layout(site)[0]
      crc = self.checksums(site)
      step = max(1, (64 << 20) // max(1, cu * int(self.manifest["sites"][site]["neurons"]) * 4))
      mom = Moments.empty(int(self.manifest["sites"][site]["neurons"]))
      for r0 in range(0, len(crc), step):
        r1 = min(r0 + step, len(crc))
        bad_files = {r: p for r in range(r0, r1) for p in [self._file_problems(site, r)] if p}
        files += (r1 - r0) * len(self._chunk_files(site, r0))
        u0, u1 = r0 * cu, min(r1 * cu, self.units_done)
        try:
          x = np.ascontiguousarray(arr[u0:u1].read().result())
        except ValueError as e:
          x = None
          problems.append(f"site {site!r}: units [{u0}, {u1}) could not be read ({e})")
        if x is not None:
          nbytes += x.nbytes
          got = checksums.row_crcs(x, cu)
          for r in np.flatnonzero(got != crc[r0:r1]):
            r = r0 + int(r)
            detail = "; ".join(bad_files.get(r, [])) or "contents differ from the checksum"
            problems.append(f"site {site!r}: chunk row {r} (units [{r * cu}, "
                            f"{min((r + 1) * cu, self.units_done)})): {detail}")
          self._verified(site)[r0:r1] = got == crc[r0:r1]
          mom = mom.merge(Moments.from_host(x))
        for r, p in bad_files.items():   # files wrong even where the CRC happens to match
          if not any(f"chunk row {r} " in q for q in problems):
            problems.append(f"site {site!r}: chunk row {r}: {'; '.join(p)}")
        rows += r1 - r0
        if bar is not None:
          bar.update(u1 - u0)
      problems += _compare_moments(site, self.moments()[site], mom)
    if bar is not None:
      bar.close()
    if problems:
      more = f" (and {len(problems) - 20} more)" if len(problems) > 20 else ""
      raise StoreDamagedError(f"store {self.path} is damaged: " + " | ".join(problems[:20])
                              + more + f"; {REMEDY}")
    return VerifyReport(self.path, len(self.sites), rows, files, nbytes,
                        time.perf_counter() - t0)


def _compare_moments(site: str, stored: Moments, data: Moments) -> list[str]:
  """Differences between committed moments and moments recomputed from the data."""
  if stored.count != data.count:
    return [f"site {site!r}: the moments cover {stored.count} units, the data {data.count}"]
  if data.count == 0:
    return []
  out = []
  for f in ("min", "max"):
    bad = np.flatnonzero(getattr(stored, f) != getattr(data, f))
    if bad.size:
      out.append(f"site {site!r}: stored {f} of neuron {int(bad[0])} is "
                 f"{getattr(stored, f)[bad[0]]!r}, the data's {getattr(data, f)[bad[0]]!r}")
  # Recomputed by the tiled host pass (compensated float32 tiles): agreement to
  # ~1e-12 of the scale on the mean and ~1e-7 on M2; damage is far larger.
  scale = np.maximum(np.abs(data.max), np.abs(data.min))
  spread = data.max - data.min
  bad = np.flatnonzero(np.abs(stored.mean - data.mean) > 1e-7 * scale)
  bad_m2 = np.flatnonzero(np.abs(stored.m2 - data.m2)
                          > 1e-5 * data.m2 + 1e-9 * data.count * spread ** 2)
  for name, b in (("mean", bad), ("M2", bad_m2)):
    if b.size:
      out.append(f"site {site!r}: stored {name} of {b.size} neurons (first: {int(b[0])}) "
                 "differs from the data's")
  return out


def open_store(path: str, verify: bool = False, progress: bool = False) -> Store:
  """Opens a store directory for reading; with ``verify``, checks all of it first
  (``Store.verify``: raises ``StoreDamagedError``)."""
  store = Store(path)
  if verify:
    store.verify(progress=progress)
  return store


def find_stores(root: str) -> list[str]:
  """The activation stores under ``root`` (directories holding a store manifest,
  or a damaged one beside a document list), sorted; never looks inside a store."""
  out = []
  for d, subdirs, files in os.walk(root):
    if MANIFEST not in files:
      continue
    try:
      fmt = rio.read_json(os.path.join(d, MANIFEST)).get("format", "")
    except (ValueError, AttributeError):
      fmt = "rosetta_jax.store/?" if DOCUMENTS in files else ""
    if isinstance(fmt, str) and fmt.startswith("rosetta_jax.store/"):
      out.append(d)
      subdirs[:] = []
  return sorted(out)


def verify_stores(root: str, progress: bool = False) -> list[VerifyReport]:
  """``Store.verify`` of every store under ``root`` (``find_stores``), in order.

  Raises:
    StoreDamagedError: for the first damaged store (its problems named).
  """
  return [Store(p).verify(progress=progress) for p in find_stores(root)]


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

  Units are written in order (``write`` at the units written so far), so each
  chunk row's CRC32C is taken from the values in memory as they go out.

  Args:
    path: the store directory.
    header: everything that defines the recording (model id and weights hash,
      sites {name: {"neurons": n}}, dtype, corpus hash, settings, total_units,
      documents hash). JSON-serialisable.
    documents: {"doc_ids", "domains", "unit_offsets"} written once at creation.

  Raises:
    ValueError: the directory holds a store whose header differs (names the
      differing fields), or ``documents`` do not hash to the header's
      ``documents_hash``.
    StoreDamagedError: resuming a store whose committed files are damaged.
  """

  def __init__(self, path: str, header: Mapping, documents: Mapping):
    self.path = path
    self.header = rio.json_roundtrip(dict(header))
    if "dtype" not in self.header or self.header["dtype"] not in DTYPES:
      raise ValueError(f"store dtype must be one of {sorted(DTYPES)}, "
                       f"got {self.header.get('dtype')!r}")
    docs = {"doc_ids": list(documents["doc_ids"]), "domains": list(documents["domains"]),
            "unit_offsets": [int(x) for x in documents["unit_offsets"]]}
    got = documents_hash(docs["doc_ids"], docs["unit_offsets"])
    if self.header.get("documents_hash") != got:
      raise ValueError(f"header documents_hash {self.header.get('documents_hash')!r} is "
                       f"not the hash of the documents given ({got!r})")
    total = int(self.header["total_units"])
    mpath = os.path.join(path, MANIFEST)
    if os.path.exists(mpath):
      old = Store(path).manifest           # format and readability checks
      skip = PROGRESS_KEYS + CREATION_KEYS
      old_header = {k: v for k, v in old.items() if k not in skip}
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
      foreign = [f for f in os.listdir(path) if f not in ours and rio.TMP_MARK not in f]
      if foreign:
        raise ValueError(f"{path} is not empty ({sorted(foreign)[:3]}...) and holds no "
                         "store manifest; refusing to record into it")
      shutil.rmtree(os.path.join(path, "sites"), ignore_errors=True)
      rio.atomic_write_json(os.path.join(path, DOCUMENTS), docs, indent=None)
      layout = {s: {"chunks": _chunks(total, int(v["neurons"]),
                                      ITEMSIZE[self.header["dtype"]])}
                for s, v in self.header["sites"].items()}
      self.manifest = {"format": FORMAT, **self.header, "layout": layout,
                       "checksum": checksums.ALGORITHM, "units_done": 0,
                       "state_file": None, "state_sha256": None, "complete": False}
    store = Store(path, self.manifest)    # the read side's checks, on our manifest
    self.arrays = {}
    for site, info in self.header["sites"].items():
      shape = (total, int(info["neurons"]))
      if self.manifest["units_done"] > 0:
        self.arrays[site] = store._array(site)     # shape, chunks and dtype must agree
      else:
        self.arrays[site] = _open_array(path, site, create=True, shape=shape,
                                        dtype=self.header["dtype"],
                                        chunks=self.manifest["layout"][site]["chunks"])
    self.moments, crcs = store._state_loaded()
    self._crc = {s: checksums.RowHasher(store.layout(s)[0], total, crcs[s], self.units_done)
                 for s in self.header["sites"]}
    self._dtype = np.dtype(DTYPES[self.header["dtype"]])
    if self.units_done > 0:
      # The chunk row at the resume point gets rewritten around its committed
      # part: check that part first, so damage cannot be sealed with a new CRC.
      for s in self.header["sites"]:
        cu = store.layout(s)[0]
        r = (self.units_done - 1) // cu
        SiteSource(store, s).read(r * cu, self.units_done)
    if not os.path.exists(mpath):
      self._write_manifest()

  @property
  def units_done(self) -> int:
    return int(self.manifest["units_done"])

  def write(self, site: str, start: int, values: np.ndarray):
    """Starts writing ``values`` [u, neurons] at units [start, start + u), which must
    follow the units written so far; returns a future (await it before ``commit``)."""
    values = np.ascontiguousarray(values, dtype=self._dtype)
    self._crc[site].update(start, values, site)
    return self.arrays[site][start:start + values.shape[0]].write(values)

  def commit(self, units_done: int, moments: Mapping[str, Moments]) -> None:
    """Makes units [0, units_done) and their moments durable and visible."""
    for s, h in self._crc.items():
      if h.position != units_done:
        raise ValueError(f"{self.path}: site {s!r} holds {h.position} written units, "
                         f"cannot commit {units_done}")
    name = f"state-{units_done:012d}.npz"
    buf = io.BytesIO()
    np.savez(buf, **_state_arrays(moments, {s: h.crcs() for s, h in self._crc.items()}))
    data = buf.getvalue()
    rio.atomic_write_bytes(os.path.join(self.path, name), data)
    self.manifest = {**self.manifest, "units_done": int(units_done), "state_file": name,
                     "state_sha256": hashlib.sha256(data).hexdigest(),
                     "complete": int(units_done) == int(self.header["total_units"])}
    self.moments = dict(moments)
    self._write_manifest()
    for old in glob.glob(os.path.join(self.path, "state-*.npz*")):
      if os.path.basename(old) != name:
        os.remove(old)

  def _write_manifest(self) -> None:
    rio.atomic_write_json(os.path.join(self.path, MANIFEST), self.manifest)
