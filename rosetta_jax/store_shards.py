"""An activation store recorded by several processes, one shard each.

Layout of a sharded store directory::

    manifest.json                 committed last, once every shard is complete:
                                  format, the shared header, the whole corpus's
                                  hashes and the fingerprint of every shard
    shards/00000-of-00002/        an ordinary store (``store.py``) of process 0's
    shards/00001-of-00002/        documents, process 1's, ...

Documents are split into contiguous ranges, balanced by text length
(``split_documents``), so the shards laid end to end hold the corpus in its own
order. Each process writes only its own shard directory (no two processes ever
write one chunk), with the single-process store's commits, checksums and resume:
a killed process re-run with the same command resumes its own shard. The top
manifest is written by one process after every shard reports complete; until then
the directory is not a store (``open_store`` raises, naming the missing shards).

``ShardedStore`` reads like a ``Store``: ``site(name)`` is an ``ActivationSource``
over all units (reads that cross a shard boundary are stitched), the moments are
the shards' merged (Chan), ``documents`` are concatenated.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
from typing import Mapping, Sequence

import numpy as np

from rosetta_jax import io as rio
from rosetta_jax import store as store_lib
from rosetta_jax.match.moments import Moments

FORMAT = "rosetta_jax.store.sharded/1"
SHARDS = "shards"
SHARED_KEYS = ("model", "sites", "dtype", "settings")  # equal in every shard
_CALLS = itertools.count()


def shard_name(index: int, count: int) -> str:
  return f"{index:05d}-of-{count:05d}"


def shard_dir(store_dir: str, index: int, count: int) -> str:
  return os.path.join(store_dir, SHARDS, shard_name(index, count))


def split_documents(docs: Sequence, count: int) -> list[tuple[int, int]]:
  """``count`` contiguous [start, stop) document ranges, balanced by UTF-8 length.

  Deterministic in the documents alone, so every process (and every re-run)
  computes the same split. Every range holds at least one document.

  Raises:
    ValueError: fewer documents than processes.
  """
  if count < 1:
    raise ValueError(f"need at least one process, got {count}")
  if len(docs) < count:
    raise ValueError(f"{len(docs)} documents cannot be split over {count} processes")
  sizes = np.array([max(1, len(d.text.encode())) for d in docs], np.float64)
  cum = np.concatenate([[0.0], np.cumsum(sizes)])
  cuts = [0]
  for i in range(1, count):
    c = int(np.searchsorted(cum, cum[-1] * i / count, side="left"))
    cuts.append(min(max(c, cuts[-1] + 1), len(docs) - (count - i)))
  cuts.append(len(docs))
  return [(cuts[i], cuts[i + 1]) for i in range(count)]


def is_sharded(path: str) -> bool:
  """True when ``path`` holds a committed sharded store manifest."""
  mpath = os.path.join(path, store_lib.MANIFEST)
  if not os.path.exists(mpath):
    return False
  try:
    return rio.read_json(mpath, "the store manifest").get("format") == FORMAT
  except ValueError:
    return False


def _other_layouts(store_dir: str, count: int) -> list[str]:
  root = os.path.join(store_dir, SHARDS)
  if not os.path.isdir(root):
    return []
  return sorted(n for n in os.listdir(root)
                if re.fullmatch(r"\d{5}-of-\d{5}", n) and not n.endswith(f"-of-{count:05d}"))


def check_layout(store_dir: str, count: int) -> None:
  """Raises if ``store_dir`` holds a single-process store or shards of another count."""
  mpath = os.path.join(store_dir, store_lib.MANIFEST)
  if os.path.exists(mpath) and not is_sharded(store_dir):
    raise ValueError(f"{store_dir} holds a single-process store; a {count}-process "
                     "recording needs a new directory")
  other = _other_layouts(store_dir, count)
  if other:
    raise ValueError(f"{store_dir} holds shards of a recording by another number of "
                     f"processes ({other[0]}); re-run with that many, or use a new "
                     "directory")


def commit(store_dir: str, count: int, full_header: Mapping) -> "ShardedStore":
  """Writes the top manifest once all ``count`` shards are complete.

  Args:
    store_dir: the sharded store directory.
    count: number of shards (processes).
    full_header: {"corpus_hash", "doc_ids"} of the whole corpus: the shards laid
      end to end must hold exactly these documents, in this order.

  Raises:
    ValueError: a shard missing or incomplete (naming it), shards of different
      recordings, or shards that do not add up to the corpus.
  """
  shards, missing = [], []
  for i in range(count):
    d = shard_dir(store_dir, i, count)
    try:
      s = store_lib.Store(d)
    except FileNotFoundError:
      missing.append(f"{shard_name(i, count)} (not started)")
      continue
    if not s.complete:
      missing.append(f"{shard_name(i, count)} ({s.units_done} of {s.total_units} units)")
    shards.append(s)
  if missing:
    raise ValueError(f"{store_dir}: cannot commit: shards incomplete: {', '.join(missing)}; "
                     "re-run the missing processes with the same command")
  first = shards[0].manifest
  for s in shards[1:]:
    diff = [k for k in SHARED_KEYS if s.manifest.get(k) != first.get(k)]
    if diff:
      raise ValueError(f"{store_dir}: shard {s.path} differs from shard 0 in {diff}")
  doc_ids, offsets = [], [0]
  for s in shards:
    d = s.documents
    doc_ids += list(d["doc_ids"])
    offsets += [offsets[-1] + int(u) for u in np.asarray(d["unit_offsets"][1:])]
  want = list(full_header["doc_ids"])
  if doc_ids != want:
    raise ValueError(f"{store_dir}: the shards hold {len(doc_ids)} documents, not the "
                     f"corpus's {len(want)} in its order (a shard of another corpus?)")
  manifest = {
      "format": FORMAT, **{k: first[k] for k in SHARED_KEYS},
      "corpus_hash": full_header["corpus_hash"],
      "documents_hash": store_lib.documents_hash(doc_ids, offsets),
      "num_docs": len(doc_ids), "total_units": int(offsets[-1]),
      "units_done": int(offsets[-1]), "complete": True,
      "shards": [{"path": os.path.relpath(s.path, store_dir), "units": s.total_units,
                  "num_docs": len(s.documents["doc_ids"]), "fingerprint": s.fingerprint}
                 for s in shards],
  }
  mpath = os.path.join(store_dir, store_lib.MANIFEST)
  if os.path.exists(mpath):
    old = rio.read_json(mpath, "the store manifest")
    if old != rio.json_roundtrip(manifest):
      raise ValueError(f"{mpath} commits a different recording; delete the directory")
  else:
    rio.atomic_write_json(mpath, manifest)
  return ShardedStore(store_dir)


class ShardedSite:
  """One site over all shards, as a matcher ``ActivationSource``."""

  def __init__(self, store: "ShardedStore", site: str):
    self.store = store
    self.site = site
    self.parts = [s.site(site) for s in store.shards]
    self.num_units = store.units_done
    self.num_neurons = self.parts[0].num_neurons
    self._starts = store.shard_starts

  def read(self, start: int, stop: int) -> np.ndarray:
    """Units ``[start, stop)`` as a [stop - start, num_neurons] float32 array."""
    if not 0 <= start <= stop <= self.num_units:
      raise IndexError(f"site {self.site!r}: units [{start}, {stop}) are outside the "
                       f"{self.num_units} units of {self.store.path}")
    out = []
    for part, a in zip(self.parts, self._starts):
      b = a + part.num_units
      lo, hi = max(start, a), min(stop, b)
      if lo < hi:
        out.append(part.read(lo - a, hi - a))
    if not out:
      return np.zeros((0, self.num_neurons), np.float32)
    return out[0] if len(out) == 1 else np.concatenate(out)

  def moments(self) -> Moments:
    return self.store.moments()[self.site]


class ShardedStore:
  """A committed sharded store (read side); ``open_store`` returns one."""

  def __init__(self, path: str):
    self.path = path
    mpath = os.path.join(path, store_lib.MANIFEST)
    try:
      self.manifest = rio.read_json(mpath, "the store manifest")
    except ValueError as e:
      raise store_lib.StoreDamagedError(f"{e}; {store_lib.REMEDY}") from e
    if self.manifest.get("format") != FORMAT:
      raise ValueError(f"{mpath}: not a sharded store ({self.manifest.get('format')!r})")
    self.shards = []
    for info in self.manifest["shards"]:
      s = store_lib.Store(os.path.join(path, info["path"]))
      if s.fingerprint != info["fingerprint"]:
        raise store_lib.StoreDamagedError(
            f"store {path}: shard {info['path']} is not the one committed (fingerprint "
            f"{s.fingerprint}, committed {info['fingerprint']}); {store_lib.REMEDY}")
      self.shards.append(s)
    self.shard_starts = np.concatenate([[0], np.cumsum([s.total_units for s in self.shards])])[:-1]
    self._moments = None
    self._docs = None

  sites = property(lambda self: list(self.manifest["sites"]))
  units_done = property(lambda self: int(self.manifest["units_done"]))
  total_units = property(lambda self: int(self.manifest["total_units"]))
  complete = property(lambda self: self.units_done == self.total_units)

  @property
  def fingerprint(self) -> str:
    """A content id: the manifest, which holds every shard's fingerprint."""
    body = rio.canonical_json(self.manifest)
    return hashlib.sha256(body.encode()).hexdigest()[:16]

  def check_complete(self) -> None:
    if not self.complete:
      raise ValueError(f"store {self.path} is incomplete")

  def site(self, name: str) -> ShardedSite:
    if name not in self.manifest["sites"]:
      raise KeyError(f"site {name!r} is not in store {self.path}; it has {self.sites}")
    return ShardedSite(self, name)

  @property
  def documents(self) -> dict:
    if self._docs is None:
      ids, domains, offsets = [], [], [0]
      for s in self.shards:
        d = s.documents
        ids += list(d["doc_ids"])
        domains += list(d["domains"])
        offsets += [offsets[-1] + int(u) for u in d["unit_offsets"][1:]]
      self._docs = {"doc_ids": ids, "domains": domains,
                    "unit_offsets": np.asarray(offsets, np.int64)}
    return self._docs

  def moments(self) -> dict[str, Moments]:
    """{site: Moments} over all shards (Chan merges, in shard order)."""
    if self._moments is None:
      out = {}
      for site in self.sites:
        m = self.shards[0].moments()[site]
        for s in self.shards[1:]:
          m = m.merge(s.moments()[site])
        out[site] = m
      self._moments = out
    return self._moments

  def verify(self, progress: bool = False) -> list:
    """``Store.verify`` of every shard; returns their reports."""
    return [s.verify(progress=progress) for s in self.shards]


def record_sharded(model, docs: Sequence, sites, store_dir: str, *, process: int,
                   count: int, barrier_timeout_s: float = 24 * 3600, **kwargs):
  """Records this process's documents into its own shard, then commits.

  Every process calls this with the same arguments except ``process``. Under the
  multi-process runtime (``jax.distributed``) the processes meet at a barrier once
  their shards are complete, process 0 writes the manifest and all of them return
  the ``ShardedStore``. Without the runtime (shards recorded one by one, e.g. on
  separate machines writing one file system), whichever process finds every shard
  complete commits, and the others return their own shard's ``Store``.

  Args:
    model, docs, sites, **kwargs: as ``recording.record``.
    store_dir: the sharded store directory.
    process, count: this process's index and the number of processes.
    barrier_timeout_s: how long a finished process waits for the others.
  """
  import jax  # pylint: disable=g-import-not-at-top
  from rosetta_jax import distributed  # pylint: disable=g-import-not-at-top
  from rosetta_jax import recording  # pylint: disable=g-import-not-at-top
  from rosetta_jax.data.corpus import corpus_hash  # pylint: disable=g-import-not-at-top
  if not 0 <= process < count:
    raise ValueError(f"process {process} must lie in [0, {count})")
  for leaf in jax.tree_util.tree_leaves(model.params):
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
      raise ValueError("recording over several processes runs each process's documents "
                       "through its own copy of the model; its parameters span other "
                       "processes' devices: place them on a mesh of this process's "
                       "devices (sharding.local_mesh), model parallelism within a host")
  check_layout(store_dir, count)
  ranges = split_documents(docs, count)
  d0, d1 = ranges[process]
  own = recording.record(model, docs[d0:d1], sites, shard_dir(store_dir, process, count),
                         processes=(0, 1), **kwargs)
  full = {"corpus_hash": corpus_hash(docs), "doc_ids": [d.doc_id for d in docs]}
  running = jax.process_count() == count and count > 1
  if running:
    # The same name on every process (paths may differ between hosts), new per call:
    # every process makes the same record calls in the same order.
    tag = (f"rosetta_jax.record:{next(_CALLS)}:{model.name}:{full['corpus_hash']}:"
           f"{os.path.basename(os.path.normpath(store_dir))}")
    distributed.barrier(tag + ":shards", barrier_timeout_s)
  done = [store_lib.Store(shard_dir(store_dir, i, count))
          if os.path.exists(os.path.join(shard_dir(store_dir, i, count), store_lib.MANIFEST))
          else None for i in range(count)]
  if (not running or process == 0) and all(s is not None and s.complete for s in done):
    commit(store_dir, count, full)
  if running:
    distributed.barrier(tag + ":manifest", barrier_timeout_s)
  return ShardedStore(store_dir) if is_sharded(store_dir) else own
