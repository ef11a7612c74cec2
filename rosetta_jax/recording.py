"""The streaming recorder: documents -> aligned units -> an on-disk activation store.

``record(model, docs, sites, store_dir, batch_size=..., max_len=...)``:

1. *Plan* (host, cheap): tokenise every document with the model's tokenizer (and
   the ``align_with`` tokenizers), align them on canonical spans
   (``data/align.py``), and cut each document into context windows of at most
   ``max_len`` tokens at unit boundaries. Only token ids and unit ids are kept
   (8 bytes per token), never activations.
2. *Stream*: consecutive windows form batches of ``batch_size`` rows padded to a
   bucketed length (powers of two up to ``max_len``, so a few shapes compile
   once). One jitted step runs the forward pass and pools tokens into units on
   the device (segment ops), so only pooled ``[units, neurons]`` rows reach the
   host, one batch at a time (by default the next batch computes on the device
   meanwhile: ``overlap``); the logits are never computed (the step drops them
   and XLA removes the dead unembedding).
3. *Append and commit*: each site's rows are written into the store, per-neuron
   moments are merged (float64, Chan), and the manifest is committed atomically.

Re-running the same call resumes after the last committed batch. Batches are a
deterministic function of the documents and settings, so a resumed recording is
bit-for-bit equal to an uninterrupted one. A different model, corpus or setting
in the same directory is an error naming the differing fields.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from rosetta_jax import store as store_lib
from rosetta_jax.data import align as align_lib
from rosetta_jax.data.corpus import corpus_hash
from rosetta_jax.data.tokenizer import Tokenizer
from rosetta_jax.models import common

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
MIN_BUCKET = 16


@dataclasses.dataclass(frozen=True)
class Plan:
  """What to feed the model, for the whole corpus, as compact arrays.

  Attributes:
    ids: [n_tokens] int32 token ids of all documents, concatenated.
    units: [n_tokens] int32 global unit of each token, or -1.
    windows: [W, 2] int64 token ranges [start, stop) into ``ids``, in order.
    unit_offsets: [D + 1] int64 first unit of each document.
    doc_ids: D document ids.
    domains: D domain labels.
  """
  ids: np.ndarray
  units: np.ndarray
  windows: np.ndarray
  unit_offsets: np.ndarray
  doc_ids: list
  domains: list

  @property
  def total_units(self) -> int:
    return int(self.unit_offsets[-1])


def as_tokenizer(tok) -> Tokenizer:
  """Our byte-offset ``Tokenizer``; wraps a transformers fast tokenizer (as
  ``load_model`` returns), raising if it has no offsets."""
  if isinstance(tok, Tokenizer):
    return tok
  if hasattr(tok, "backend_tokenizer") or hasattr(tok, "is_fast"):  # transformers
    return Tokenizer.from_transformers(tok)
  raise ValueError(f"{type(tok).__name__} is not a tokenizer with byte offsets")


def tokenizer_hash(tok) -> str:
  """A content hash of a tokenizer (its serialized backend and special-token flag)."""
  tok = as_tokenizer(tok)
  backend = getattr(tok, "backend", None)
  body = backend.to_str() if backend is not None else repr(tok)
  flag = str(getattr(tok, "add_special_tokens", ""))
  return hashlib.sha256((body + flag).encode()).hexdigest()[:16]


@jax.jit
def _leaf_sums(xs):
  """(sum, sum of |x|) of each leaf; one compile per parameter shape list."""
  return [(jnp.sum(x.astype(jnp.float32)), jnp.sum(jnp.abs(x.astype(jnp.float32))))
          for x in xs]


def weights_fingerprint(params) -> str:
  """A hash of a parameter pytree: paths, shapes, dtypes, each leaf's sum and sum
  of absolute values (6 significant digits, so the result does not depend on how
  the sums were sharded) and its first 16 values. Cheap for sharded models."""
  leaves = jax.tree_util.tree_flatten_with_path(params)[0]
  stats = _leaf_sums([x for _, x in leaves])
  h = hashlib.sha256()
  for (path, x), (s, a) in zip(leaves, stats):
    head = np.asarray(jnp.ravel(x[(0,) * (x.ndim - 1)] if x.ndim > 1 else x)[:16],
                      dtype=np.float32)
    h.update(f"{jax.tree_util.keystr(path)}|{x.shape}|{x.dtype}|{float(s):.6e}|"
             f"{float(a):.6e}|".encode())
    h.update(head.tobytes())
  return h.hexdigest()[:16]


def make_plan(tokenizer, docs: Sequence, max_len: int, align_with: Sequence = ()) -> Plan:
  """Tokenises, aligns and windows documents for one model.

  Args:
    tokenizer: the model's tokenizer (``encode`` with byte offsets).
    docs: ``Document``s (``doc_id``, ``text``, ``domain``).
    max_len: the model's context per window, in tokens.
    align_with: other models' tokenizers; units are their shared canonical spans.

  Returns:
    The ``Plan``.
  """
  ids, units, wins, offsets = [], [], [], [0]
  n_tok = 0
  for doc in docs:
    encs = [tokenizer.encode(doc.text)] + [t.encode(doc.text) for t in align_with]
    al = align_lib.align_encodings(encs, doc.doc_id)
    tu = al.token_units[0]
    for a, b in align_lib.windows(tu, max_len, doc.doc_id):
      wins.append((n_tok + a, n_tok + b))
    ids.append(encs[0].ids.astype(np.int32))
    units.append(np.where(tu >= 0, tu + offsets[-1], -1).astype(np.int32))
    n_tok += len(tu)
    offsets.append(offsets[-1] + al.num_units)
  if offsets[-1] >= np.iinfo(np.int32).max:
    raise ValueError(f"{offsets[-1]} units exceed int32; record the corpus in parts")
  return Plan(np.concatenate(ids) if ids else np.zeros(0, np.int32),
              np.concatenate(units) if units else np.zeros(0, np.int32),
              np.asarray(wins, dtype=np.int64).reshape(-1, 2),
              np.asarray(offsets, dtype=np.int64),
              [d.doc_id for d in docs], [d.domain for d in docs])


def buckets(max_len: int) -> list[int]:
  """Padded sequence lengths: powers of two from 16, then ``max_len``."""
  out, b = [], MIN_BUCKET
  while b < max_len:
    out.append(b)
    b *= 2
  return out + [max_len]


@dataclasses.dataclass(frozen=True)
class Batch:
  """One fixed-shape batch: tokens/mask/segments [batch_size, L]; units [u0, u1)."""
  tokens: np.ndarray
  mask: np.ndarray
  segments: np.ndarray
  u0: int
  u1: int


def batch_bounds(plan: Plan, batch_size: int) -> list[tuple[int, int, int]]:
  """[(first window, stop window, u1)] of every batch; u1 = units done after it."""
  out, u1 = [], 0
  for w0 in range(0, len(plan.windows), batch_size):
    w1 = min(w0 + batch_size, len(plan.windows))
    seg = plan.units[plan.windows[w0, 0]:plan.windows[w1 - 1, 1]]
    if (seg >= 0).any():
      u1 = int(seg.max()) + 1
    out.append((w0, w1, u1))
  return out


def make_batch(plan: Plan, w0: int, w1: int, u0: int, batch_size: int, pad_id: int,
               bucket_lens: Sequence[int]) -> Batch:
  """Pads windows [w0, w1) into a [batch_size, L] batch; segments are units - u0."""
  lens = plan.windows[w0:w1, 1] - plan.windows[w0:w1, 0]
  length = next(b for b in bucket_lens if b >= lens.max())
  tokens = np.full((batch_size, length), pad_id, np.int32)
  mask = np.zeros((batch_size, length), np.int32)
  seg = np.full((batch_size, length), -1, np.int32)
  u1 = u0
  for r, (a, b) in enumerate(plan.windows[w0:w1]):
    tokens[r, :b - a] = plan.ids[a:b]
    mask[r, :b - a] = 1
    su = plan.units[a:b]
    seg[r, :b - a] = np.where(su >= 0, su - u0, -1)
    if (su >= 0).any():
      u1 = max(u1, int(su.max()) + 1)
  return Batch(tokens, mask, seg, u0, u1)


@functools.lru_cache(maxsize=32)
def make_step(module, sites: tuple[str, ...], pooling: str, dtype: str):
  """The jitted recording step: forward pass + pooling of every site into units.

  ``step(params, tokens [b, L], mask [b, L], segments [b, L])`` ->
  ``{site: [b * L, neurons]}`` (rows past the batch's unit count are zeros).
  Cached: Flax modules compare by config, so re-recording reuses compilations.
  """
  out_dtype = DTYPES[dtype]

  def step(params, tokens, mask, segments):
    _, acts = module.apply({"params": params}, tokens, mask, sites=sites)
    return {s: align_lib.pool_segments(acts[s], segments, segments.size, pooling)
            .astype(out_dtype) for s in sites}
  return jax.jit(step)


def site_widths(model, sites: tuple[str, ...]) -> dict[str, int]:
  """Neurons per site, from an abstract forward pass (no compute)."""
  tokens = jax.ShapeDtypeStruct((1, MIN_BUCKET), jnp.int32)
  _, acts = jax.eval_shape(
      lambda p, t: model.module.apply({"params": p}, t, None, sites=sites),
      model.params, tokens)
  return {s: int(acts[s].shape[-1]) for s in sites}


def record(model, docs: Sequence, sites: Sequence[str] | None, store_dir: str, *,
           batch_size: int = 8, max_len: int = 512, pooling: str = "mean",
           align_with: Sequence | None = None, dtype: str = "float32",
           progress: bool = True, commit_interval_s: float = 5.0, overlap: bool = True,
           batch_sharding=None, processes: tuple[int, int] | None = None,
           barrier_timeout_s: float = 24 * 3600) -> store_lib.Store:
  """Records pooled unit activations of ``model`` on ``docs`` into ``store_dir``.

  Args:
    model: a ``models.base.Model`` with a tokenizer.
    docs: ``Document``s, recorded in the given order.
    sites: site names (e.g. ``model.mlp_sites()``); None = all MLP sites.
    store_dir: the store directory; an existing store of the same recording is
      resumed.
    batch_size: windows per batch (a fixed shape).
    max_len: tokens per context window (<= the model's max positions).
    pooling: "mean", "max" or "last" token of each unit.
    align_with: other models' tokenizers; units become the canonical spans shared
      with them (record every model with the same set, its own included or not).
    dtype: stored dtype, "float32" or "bfloat16" (moments are of stored values).
    progress: show a tqdm bar (units/s, ETA).
    commit_interval_s: commit at most this often (0 = every batch); a kill loses
      at most this much work.
    overlap: dispatch batch k + 1 to the device before the host fetches, checks
      and writes batch k, so device compute overlaps host work (measured on 2
      CPU cores: 1.06x the forward pass vs 1.40x without). The host then holds
      one batch of pooled activations while the device computes the next; False
      holds strictly one batch in all memories at once. Results are identical.
    batch_sharding: optional ``jax.sharding.Sharding`` for the [batch, L] inputs
      (e.g. ``NamedSharding(mesh, P("data"))``); parameters keep their own.
    processes: (this process, number of processes); None: from the
      multi-process runtime (``jax.process_index()``, ``jax.process_count()``).
      With more than one, each process records its share of the documents into
      its own shard of a sharded store (``store_shards.py``), whose manifest is
      committed once every shard is complete.
    barrier_timeout_s: with several processes, how long one that has finished
      waits for the others before ending with an error.

  Returns:
    The finished ``Store``.

  Raises:
    ValueError: bad arguments, alignment errors (naming the document), a store of
      a different recording in ``store_dir``, non-finite activations.
  """
  index, count = (jax.process_index(), jax.process_count()) if processes is None else processes
  if count > 1:
    from rosetta_jax import store_shards  # pylint: disable=g-import-not-at-top
    return store_shards.record_sharded(
        model, docs, sites, store_dir, process=index, count=count,
        barrier_timeout_s=barrier_timeout_s, batch_size=batch_size, max_len=max_len,
        pooling=pooling, align_with=align_with, dtype=dtype, progress=progress,
        commit_interval_s=commit_interval_s, overlap=overlap, batch_sharding=batch_sharding)
  if model.tokenizer is None:
    raise ValueError(f"model {model.name!r} has no tokenizer; recording needs one")
  if pooling not in align_lib.POOLINGS:
    raise ValueError(f"unknown pooling {pooling!r}; expected one of {align_lib.POOLINGS}")
  if dtype not in DTYPES:
    raise ValueError(f"unknown dtype {dtype!r}; expected one of {sorted(DTYPES)}")
  if batch_size < 1 or max_len < 1:
    raise ValueError(f"batch_size and max_len must be positive, got {batch_size}, {max_len}")
  max_pos = getattr(model.config, "max_position_embeddings", None)
  if max_pos is not None and max_len > max_pos:
    raise ValueError(f"max_len={max_len} exceeds model {model.name!r}'s "
                     f"max_position_embeddings={max_pos}")
  if not docs:
    raise ValueError("no documents to record")
  sites = tuple(model.mlp_sites() if sites is None else sites)
  if not sites:
    raise ValueError("no sites to record")
  sites = common.check_sites(sites, model.num_layers)
  align_with = tuple(as_tokenizer(t) for t in (align_with or ()))
  tokenizer = as_tokenizer(model.tokenizer)

  plan = make_plan(tokenizer, docs, max_len, align_with)
  bucket_lens = buckets(max_len)
  header = {
      "model": {"name": model.name, "weights_hash": weights_fingerprint(model.params),
                "tokenizer": tokenizer_hash(tokenizer)},
      "sites": {s: {"neurons": n} for s, n in site_widths(model, sites).items()},
      "dtype": dtype,
      "corpus_hash": corpus_hash(docs),
      "documents_hash": store_lib.documents_hash(plan.doc_ids, plan.unit_offsets),
      "num_docs": len(docs),
      "total_units": plan.total_units,
      "settings": {"pooling": pooling, "max_len": max_len, "batch_size": batch_size,
                   "buckets": bucket_lens,
                   "align_with": sorted(tokenizer_hash(t) for t in align_with)},
  }
  writer = store_lib.StoreWriter(store_dir, header, {
      "doc_ids": plan.doc_ids, "domains": plan.domains, "unit_offsets": plan.unit_offsets})
  done = writer.units_done
  bounds = batch_bounds(plan, batch_size)
  ends = {0} | {u1 for _, _, u1 in bounds}
  if done not in ends:
    raise ValueError(f"{store_dir}: units_done={done} is not a batch boundary of this "
                     "recording; the store is inconsistent, delete it")
  step = make_step(model.module, sites, pooling, dtype)
  moments = dict(writer.moments)
  pad_id = int(tokenizer.pad_id)

  bar = None
  if progress:
    from tqdm.auto import tqdm
    bar = tqdm(total=plan.total_units, initial=done, unit="unit", unit_scale=True,
               desc=f"record {model.name}", dynamic_ncols=True)
  state = {"last_commit": time.monotonic(), "moments": moments}

  def finish(u0: int, u1: int, out) -> None:
    """Host side of one batch: fetch, check, merge moments, write, maybe commit."""
    futures = []
    for s in sites if u1 > u0 else ():
      rows = np.asarray(out[s])[:u1 - u0]  # host slice: no per-shape compile
      m = store_lib.chunk_moments(rows)
      if not (np.isfinite(m.min).all() and np.isfinite(m.max).all()):
        bad = int(np.flatnonzero(~(np.isfinite(m.min) & np.isfinite(m.max)))[0])
        doc = int(np.searchsorted(plan.unit_offsets, u0, side="right") - 1)
        raise ValueError(f"site {s!r}: neuron {bad} is NaN or inf in units "
                         f"[{u0}, {u1}) (from document {plan.doc_ids[doc]!r})")
      state["moments"][s] = state["moments"][s].merge(m)
      futures.append(writer.write(s, u0, rows))
    for f in futures:  # all sites' writes run concurrently
      f.result()
    now = time.monotonic()
    if now - state["last_commit"] >= commit_interval_s or u1 == plan.total_units:
      writer.commit(u1, state["moments"])
      state["last_commit"] = now
    if bar is not None:
      bar.update(u1 - u0)

  pending, u_prev = None, 0
  try:
    for w0, w1, u1 in bounds:
      u0, u_prev = u_prev, u1
      if u1 <= done:
        continue
      batch = make_batch(plan, w0, w1, u0, batch_size, pad_id, bucket_lens)
      inputs = (batch.tokens, batch.mask, batch.segments)
      if batch_sharding is not None:
        inputs = tuple(jax.device_put(x, batch_sharding) for x in inputs)
      out = step(model.params, *inputs)  # dispatched asynchronously
      if overlap and pending is not None:
        finish(*pending)  # host work on batch k while the device computes k + 1
      pending = (u0, u1, out)
      if not overlap:
        finish(*pending)
        pending = None
      del out
    if pending is not None:
      finish(*pending)
      pending = None
    if writer.units_done != plan.total_units:  # e.g. trailing batches without units
      writer.commit(plan.total_units, state["moments"])
  finally:
    if bar is not None:
      bar.close()
  return store_lib.open_store(store_dir)
