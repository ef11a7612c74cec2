"""The one pipeline every study shares: models -> documents -> stores -> pairs.

``load_context(cfg, workdir, models)`` checks the workdir, resolves ``--models``
(training the embedded zoo if asked), writes ``config.json``, records every
model's MLP sites on the study's documents, and returns a ``Context``.
``match_pair(ctx, pair)`` matches one pair of models under the configured
criterion, bootstraps the count over documents, and returns a frozen
``PairResult``, cached in ``workdir/pairs`` under a key of everything that
determines it (models and store contents, sites, criterion, candidates,
resamples, seed): a study that needs other settings computes and keeps its own
entry, never another's.

Workdir layout::

  W/config.json            the pipeline's configuration (format, models, config)
  W/zoo/                   the embedded zoo (checkpoints, tokenizer)
  W/acts/<model>/          one activation store per model
  W/pairs/<label>-<key>.*  PairResults (npz) and their pairs tables (tsv)
  W/neurons/               per-model neuron statistics
  W/results.json, W/report.html       the scaling study (the main job)
  W/<study>/{results.json,report.html} every other study

Models: ``zoo`` pairs the seeds of each width (the "independently trained
models" of the definition). For a list of models, ``A+B,C+D`` pairs models
joined by ``+`` (one size per group); a plain list ``A,B,C`` matches every pair
and places each pair at the geometric mean of the two models' neuron counts.
Entries are model directories, ``offline:`` names or GGUF files.
"""

from __future__ import annotations

import dataclasses
import fcntl
import functools
import gc
import hashlib
import itertools
import json
import os
import time
from typing import Sequence

import numpy as np
from absl import logging

from rosetta_jax import io as io_lib
from rosetta_jax import recording
from rosetta_jax import store as store_lib
from rosetta_jax.analysis import bootstrap, selectivity as sel, stats
from rosetta_jax.data import corpus as corpus_lib
from rosetta_jax.match import rosetta
from rosetta_jax.match.sources import ConcatSource
from rosetta_jax.models import base
from rosetta_jax.studies import config as config_lib
from rosetta_jax.zoo import train

TOP_M = 32          # top-activating units kept per neuron by the neuron statistics


@dataclasses.dataclass(frozen=True)
class Pair:
  """Two models compared at one size."""
  label: str
  a: base.Model
  b: base.Model

  @property
  def size(self) -> float:
    """Geometric mean of the two models' studied neuron counts."""
    return float(np.sqrt(self.a.num_neurons * self.b.num_neurons))


# ----------------------------------------------------------------------------
# The workdir lock
# ----------------------------------------------------------------------------

_LOCKS: dict[str, int] = {}


def lock_workdir(workdir: str) -> None:
  """Holds ``workdir/.lock`` for the rest of this process (reentrant).

  Raises:
    RuntimeError: another process holds it.
  """
  os.makedirs(workdir, exist_ok=True)
  key = os.path.realpath(workdir)
  if key in _LOCKS:
    return
  path = os.path.join(workdir, ".lock")
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    other = os.read(fd, 64).decode(errors="replace").strip() or "?"
    os.close(fd)
    raise RuntimeError(f"{workdir} is in use by another rosetta_jax process (pid {other}); "
                       "wait for it to finish or choose another --workdir") from None
  os.ftruncate(fd, 0)
  os.write(fd, str(os.getpid()).encode())
  _LOCKS[key] = fd


# ----------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------


def parse_models(spec: str) -> list[list[str]]:
  """``--models`` as groups of names (checked before any work)."""
  spec = spec.strip()
  if not spec:
    raise config_lib.ConfigError("models: empty; use 'zoo' or a comma-separated list of "
                                 "models")
  if spec == "zoo":
    return []
  groups = [[n.strip() for n in g.split("+")] for g in spec.split(",")]
  if any(not n for g in groups for n in g):
    raise config_lib.ConfigError(f"models: an empty name in {spec!r}")
  if any(len(g) > 1 for g in groups) and any(len(g) < 2 for g in groups):
    raise config_lib.ConfigError(f"models: every '+' group of {spec!r} needs at least two "
                                 "models")
  if len({n for g in groups for n in g}) < 2:
    raise config_lib.ConfigError("models: needs at least two models to match")
  return groups


def resolve_models(spec: str, cfg: config_lib.StudyConfig, workdir: str,
                   progress: bool = True) -> list[Pair]:
  """Turns ``--models`` into the pairs to match (training the zoo if asked)."""
  groups = parse_models(spec)
  if not groups:
    models = train.train_zoo(cfg.zoo, os.path.join(workdir, "zoo"), progress=progress)
    by_width = {}
    for m in models:
      m.select_depths(cfg.depths)
      by_width.setdefault(m.config.hidden_size, []).append(m)
    return [Pair(f"w{w}" + ("" if len(ms) == 2 else f"-{a.name}-{b.name}"), a, b)
            for w, ms in by_width.items() for a, b in itertools.combinations(ms, 2)]
  from rosetta_jax.models import load_model  # pylint: disable=g-import-not-at-top
  loaded = {n: load_model(n).select_depths(cfg.depths) for g in groups for n in g}
  if any(len(g) > 1 for g in groups):
    return [Pair(_short(a) + "~" + _short(b), loaded[a], loaded[b])
            for g in groups for a, b in itertools.combinations(g, 2)]
  return [Pair(_short(a) + "~" + _short(b), loaded[a], loaded[b])
          for a, b in itertools.combinations([g[0] for g in groups], 2)]


def _short(name: str) -> str:
  return os.path.basename(os.path.normpath(name)) or name


def safe_name(name: str) -> str:
  """A file name for a model name (readable tail + short hash)."""
  return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[-80:] + "-" + \
      hashlib.sha1(name.encode()).hexdigest()[:6]


# ----------------------------------------------------------------------------
# Documents and recording
# ----------------------------------------------------------------------------


def study_documents(cfg: config_lib.StudyConfig) -> list[corpus_lib.Document]:
  """The held-out documents the study records, cut to ``record_chars``."""
  docs = corpus_lib.load_corpus("heldout")
  if cfg.record_docs and cfg.record_docs < len(docs):
    # Evenly spaced over the id-sorted documents, so every domain keeps its share.
    docs = [docs[i] for i in np.linspace(0, len(docs) - 1, cfg.record_docs).astype(int)]
  if cfg.record_chars:
    docs = [dataclasses.replace(d, text=d.text[:cfg.record_chars]) for d in docs]
  return docs


def record_models(models: Sequence[base.Model], docs, root: str,
                  cfg: config_lib.StudyConfig, progress: bool = True) -> dict:
  """Records every model's studied MLP sites into ``root/acts``; {model name: Store}."""
  toks = tokenizers(models)
  align_with = toks if len(toks) > 1 else None
  stores = {}
  for m in models:
    stores[m.name] = recording.record(
        m, docs, m.mlp_sites(), os.path.join(root, "acts", safe_name(m.name)),
        batch_size=cfg.record_batch,
        max_len=min(cfg.record_len, getattr(m.config, "max_position_embeddings", 1 << 30)),
        pooling=cfg.pooling, align_with=align_with, progress=progress)
  return stores


def doc_index(store: store_lib.Store) -> np.ndarray:
  """[T] document index of each unit."""
  offs = store.documents["unit_offsets"]
  return np.repeat(np.arange(len(offs) - 1), np.diff(offs))


def tokenizers(models) -> list:  # pylint: disable=redefined-outer-name
  """The distinct tokenizers of ``models`` (by content), as the recorder aligned them."""
  toks = {}
  for m in models:
    toks.setdefault(recording.tokenizer_hash(m.tokenizer), m.tokenizer)
  return list(toks.values())


def unit_labels(models, docs, stores) -> tuple[sel.UnitLabels, np.ndarray]:
  """Each unit's text, document and domain, and its [T, 2] byte span in its
  document, re-derived from the documents as the recorder cut them
  (``explorer.unit_text``, checked against the store)."""
  from rosetta_jax.explorer.units import unit_text  # pylint: disable=g-import-not-at-top
  units = unit_text(docs, tokenizers(models), next(iter(stores.values())))
  texts = []
  for d, doc in enumerate(docs):
    raw = doc.text.encode("utf-8")
    lo, hi = units.unit_offsets[d], units.unit_offsets[d + 1]
    texts += [raw[s:e].decode("utf-8", errors="replace") for s, e in units.spans[lo:hi]]
  return (sel.UnitLabels.build(units.unit_offsets, [d.domain for d in docs], texts),
          units.spans)


def store_fingerprint(store: store_lib.Store) -> str:
  """A hash of a store's manifest: its model, settings, documents and commits."""
  return hashlib.sha1(json.dumps(store.manifest, sort_keys=True).encode()).hexdigest()


# ----------------------------------------------------------------------------
# The context
# ----------------------------------------------------------------------------


@dataclasses.dataclass
class Context:
  """One workdir's models, documents and recordings; pair results on demand.

  Attributes:
    cfg: the study configuration.
    workdir: the run's directory.
    models: the ``--models`` spec.
    pairs: the model pairs, by increasing size.
    stores: {model name: Store} of the recorded documents.
    docs: the recorded documents.
    weights: [B, D] document-bootstrap multiplicities, shared by every pair.
    seconds: time spent resolving models and recording.
    info: per model, its name, neurons, layers, sites and parameter count.
  """
  cfg: config_lib.StudyConfig
  workdir: str
  models: str
  pairs: list[Pair]
  stores: dict
  docs: list
  weights: np.ndarray
  seconds: dict
  info: tuple = ()
  progress: bool = True
  _results: dict = dataclasses.field(default_factory=dict, repr=False)
  _vocab: dict = dataclasses.field(default_factory=dict, repr=False)

  @property
  def unique_models(self) -> list[base.Model]:
    return list({m.name: m for p in self.pairs for m in (p.a, p.b)}.values())

  @functools.cached_property
  def _labels(self):
    return unit_labels(self.unique_models, self.docs, self.stores)

  @property
  def labels(self) -> sel.UnitLabels:
    """Text, document and domain of every unit."""
    return self._labels[0]

  @property
  def spans(self) -> np.ndarray:
    """[T, 2] byte span of each unit in its document."""
    return self._labels[1]

  def result(self, pair: Pair) -> "PairResult":
    """The pair's ``PairResult`` under the configured criterion (cached)."""
    if pair.label not in self._results:
      self._results[pair.label] = match_pair(self, pair)
    return self._results[pair.label]

  def vocab(self, model: base.Model) -> dict | None:
    """{site: ``analysis.vocab.VocabProjection``} of a decoder's studied MLP neurons
    (cached in workdir/neurons); None for models without a readout or whose
    weights were freed before it was computed."""
    from rosetta_jax.analysis import vocab as vocab_lib  # pylint: disable=g-import-not-at-top
    if model.name in self._vocab:
      return self._vocab[model.name]
    path = os.path.join(self.workdir, "neurons", safe_name(model.name) + "-vocab-" +
                        hashlib.sha1(json.dumps(model.mlp_sites()).encode()).hexdigest()[:8]
                        + ".npz")
    out = None
    if os.path.exists(path):
      out = vocab_lib.load_projections(path)
    elif model.params is not None:
      try:
        out = vocab_lib.vocab_projection(model)
      except (KeyError, ValueError):     # an encoder, or a family without a readout
        out = None
      if out is not None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        vocab_lib.save_projections(path, out)
    self._vocab[model.name] = out
    return out

  def neuron_stats(self, model: base.Model) -> sel.NeuronStats:
    """Selectivity statistics of one model's studied MLP neurons (cached on disk)."""
    path = os.path.join(self.workdir, "neurons", safe_name(model.name) +
                        f"-{store_fingerprint(self.stores[model.name])[:10]}-m{TOP_M}.npz")
    store = self.stores[model.name]
    if os.path.exists(path):
      store.check_files()                # as for cached pairs (match_pair)
      return sel.NeuronStats.load(path, self.labels)
    src = ConcatSource([store.site(s) for s in model.mlp_sites()])
    st = sel.neuron_stats(src, self.labels, top_m=TOP_M)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp.npz"
    st.save(tmp)
    os.replace(tmp, path)
    return st


def load_context(cfg: config_lib.StudyConfig, workdir: str, models: str = "zoo",
                 progress: bool = True) -> Context:
  """Checks ``workdir``, resolves the models, records them; returns the Context.

  ``config.json`` is written only after the configuration and the models have
  been accepted, so a refused run leaves none behind.
  """
  record = config_lib.workdir_record("pipeline", models, cfg)
  from rosetta_jax.models import check_model  # pylint: disable=g-import-not-at-top
  for group in parse_models(models):                 # a bad spec or a damaged checkpoint
    for name in group:                               # fails before any work or write
      check_model(name)
  existed = config_lib.check_workdir(workdir, record)
  lock_workdir(workdir)
  t0 = time.time()
  pairs = resolve_models(models, cfg, workdir, progress=progress)
  pairs.sort(key=lambda p: p.size)
  if not existed:
    config_lib.write_workdir_config(workdir, record)
  t_models = time.time() - t0
  docs = study_documents(cfg)
  t0 = time.time()
  uniq = list({m.name: m for p in pairs for m in (p.a, p.b)}.values())
  stores = record_models(uniq, docs, workdir, cfg, progress=progress)
  weights = bootstrap.bootstrap_weights(len(docs), cfg.bootstrap, cfg.seed)
  return Context(cfg, workdir, models, pairs, stores, docs, weights,
                 {"models": t_models, "record": time.time() - t0},
                 tuple(model_info(m) for m in uniq), progress)


def free_weights(ctx: Context, keep_vocab: bool = True) -> None:
  """Drops the models' parameters (GBs for real models) once recording is done,
  after computing (or loading) their vocabulary projections when ``keep_vocab``.

  Studies that run a model again (data selection) must not call this.
  """
  for m in ctx.unique_models:
    if keep_vocab:
      ctx.vocab(m)
    m.params = None
  gc.collect()


def model_info(m: base.Model) -> dict:
  return {"name": m.name, "neurons": m.num_neurons, "layers": m.num_layers,
          "sites": m.mlp_sites(), "neurons_per_layer": m.neurons_per_layer,
          "params": base.count_params(m.params)}


# ----------------------------------------------------------------------------
# Pair results
# ----------------------------------------------------------------------------

PAIR_FORMAT = 1


@dataclasses.dataclass(frozen=True)
class PairResult:
  """One matched pair of models under one criterion.

  Neuron indices run over each model's studied sites concatenated in order
  (``offsets_*`` [S + 1]: the first neuron of each site, then the total).

  Attributes:
    label, model_a, model_b: the pair and its models.
    neurons_a, neurons_b: studied neurons of each model.
    size: geometric mean of the two (the size axis of the scaling fit).
    sites_a, sites_b, offsets_a, offsets_b: the studied sites and their offsets.
    num_layers_a, num_layers_b: layers of each model (for relative depth).
    criterion: the ``rosetta.Criterion`` applied, as a dict.
    r_threshold: the r floor it came to (None: none).
    idx_a, idx_b, r, rank: the Rosetta pairs.
    raw_r: r of every mutual pair before any r floor.
    null_r: r of the mutual pairs under the dataset-permutation null.
    boot_counts: [B] the count re-matched in each document resample.
    members_a, members_b: [B, N] which neurons are Rosetta in each resample.
    excluded_a, excluded_b: constant neurons left out of matching.
    units: units matched over.
    seconds: {"match", "bootstrap"}.
    key: the cache key (hash of everything the result depends on).
  """
  label: str
  model_a: str
  model_b: str
  neurons_a: int
  neurons_b: int
  size: float
  sites_a: tuple[str, ...]
  sites_b: tuple[str, ...]
  offsets_a: np.ndarray
  offsets_b: np.ndarray
  num_layers_a: int
  num_layers_b: int
  criterion: dict
  r_threshold: float | None
  idx_a: np.ndarray
  idx_b: np.ndarray
  r: np.ndarray
  rank: np.ndarray
  raw_r: np.ndarray
  null_r: np.ndarray
  boot_counts: np.ndarray
  members_a: np.ndarray
  members_b: np.ndarray
  excluded_a: int
  excluded_b: int
  units: int
  seconds: dict
  key: str

  _ARRAYS = ("offsets_a", "offsets_b", "idx_a", "idx_b", "r", "rank", "raw_r", "null_r",
             "boot_counts")

  @property
  def count(self) -> int:
    return int(len(self.idx_a))

  @property
  def fraction(self) -> float:
    return self.count / self.size

  @property
  def count_ci(self) -> list[float]:
    return stats.count_interval(self.count, self.boot_counts)

  @property
  def null_r_max(self) -> float | None:
    return float(self.null_r.max()) if len(self.null_r) else None

  @property
  def mask_a(self) -> np.ndarray:
    m = np.zeros(self.neurons_a, bool)
    m[self.idx_a] = True
    return m

  @property
  def mask_b(self) -> np.ndarray:
    m = np.zeros(self.neurons_b, bool)
    m[self.idx_b] = True
    return m

  @property
  def matches(self) -> rosetta.Matches:
    """The pairs as a ``Matches`` table (site and neuron within site)."""
    return rosetta.Matches.from_indices(self.idx_a, self.idx_b, self.r, self.rank,
                                        self.sites_a, self.offsets_a, self.sites_b,
                                        self.offsets_b, self.model_a, self.model_b)

  @property
  def depth_a(self) -> list[float]:
    return list(stats.relative_depths(self.sites_a, self.num_layers_a).values())

  @property
  def layer_density_a(self) -> np.ndarray:
    layer = np.searchsorted(self.offsets_a, self.idx_a, side="right") - 1
    return np.bincount(layer, minlength=len(self.sites_a)) / np.diff(self.offsets_a)

  def summary(self) -> dict:
    """The JSON-ready summary kept in results.json."""
    raw, null = self.raw_r, self.null_r
    q = lambda x: np.quantile(x, [0.5, 0.9, 0.99]).tolist() if len(x) else None
    return {
        "label": self.label, "model_a": self.model_a, "model_b": self.model_b,
        "neurons_a": self.neurons_a, "neurons_b": self.neurons_b, "size": self.size,
        "count": self.count, "fraction": self.fraction, "count_ci": self.count_ci,
        "boot_mean": float(self.boot_counts.mean()), "raw_count": int(len(raw)),
        "null_count": int(len(null)), "null_r_max": self.null_r_max,
        "null_r_quantiles": q(null), "raw_r_quantiles": q(raw),
        "count_above_null_max": (int((raw > self.null_r_max).sum())
                                 if self.null_r_max is not None else int(len(raw))),
        "criterion": self.criterion, "r_threshold": self.r_threshold,
        "r": self.r.tolist(), "r_mean": float(self.r.mean()) if self.count else float("nan"),
        "excluded_a": self.excluded_a, "excluded_b": self.excluded_b, "units": self.units,
        "layer_density_a": self.layer_density_a.tolist(), "num_layers_a": len(self.sites_a),
        "depth_a": self.depth_a, "resamples": int(len(self.boot_counts)),
        "seconds": self.seconds, "cache": f"{self.label}-{self.key}",
    }

  def save(self, path: str) -> None:
    meta = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
            if f.name not in self._ARRAYS + ("members_a", "members_b")}
    meta["format"] = PAIR_FORMAT
    io_lib.save_npz(path, meta=np.array(json.dumps(meta, default=io_lib.json_default)),
                    members_a=np.packbits(self.members_a, axis=1),
                    members_b=np.packbits(self.members_b, axis=1),
                    **{k: getattr(self, k) for k in self._ARRAYS})

  @staticmethod
  def load(path: str) -> "PairResult":
    with np.load(path) as z:
      meta = json.loads(str(z["meta"]))
      if meta.pop("format", None) != PAIR_FORMAT:
        raise ValueError(f"{path}: a pair result of another format; delete "
                         f"{os.path.dirname(path)} and re-run to recompute it")
      arrays = {k: z[k] for k in PairResult._ARRAYS}
      ma = np.unpackbits(z["members_a"], axis=1, count=meta["neurons_a"]).astype(bool)
      mb = np.unpackbits(z["members_b"], axis=1, count=meta["neurons_b"]).astype(bool)
    meta["sites_a"], meta["sites_b"] = tuple(meta["sites_a"]), tuple(meta["sites_b"])
    return PairResult(**meta, **arrays, members_a=ma, members_b=mb)

  def write_table(self, path: str) -> None:
    """The pairs as a tab-separated table (site_a, neuron_a, site_b, neuron_b, r)."""
    t = self.matches
    lines = ["site_a\tneuron_a\tsite_b\tneuron_b\tr"]
    lines += [f"{sa}\t{na}\t{sb}\t{nb}\t{r:.6f}" for sa, na, sb, nb, r in
              zip(t.site_a, t.neuron_a, t.site_b, t.neuron_b, t.r)]
    io_lib.atomic_write(path, "\n".join(lines) + "\n")


def pair_key(ctx: Context, pair: Pair, criterion: rosetta.Criterion) -> str:
  """Hash of everything a PairResult depends on.

  The models' weights, documents, units and recorded values enter through the
  stores' content ids (``Store.fingerprint``: the header with the weights hash,
  the documents hash, the units committed and the SHA-256 of the chunk
  checksums) and the units they hold; the neuron subset through the studied
  sites; the resamples through the bootstrap multiplicities themselves (so their
  number, their seed and the documents drawn from all enter), besides the
  criterion, the candidates and the null's seed.
  """
  cfg = ctx.cfg
  sa, sb = ctx.stores[pair.a.name], ctx.stores[pair.b.name]
  weights = np.ascontiguousarray(ctx.weights)
  parts = {"format": PAIR_FORMAT, "a": pair.a.name, "b": pair.b.name,
           "store_a": sa.fingerprint, "store_b": sb.fingerprint,
           "units": [sa.units_done, sb.units_done],
           "sites_a": pair.a.mlp_sites(), "sites_b": pair.b.mlp_sites(),
           "criterion": dataclasses.asdict(criterion), "candidates": cfg.candidates,
           "bootstrap": cfg.bootstrap, "seed": cfg.seed,
           "weights": [list(weights.shape), str(weights.dtype),
                       hashlib.sha256(weights.tobytes()).hexdigest()]}
  return hashlib.sha1(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]


def match_pair(ctx: Context, pair: Pair,
               criterion: rosetta.Criterion | None = None) -> PairResult:
  """Matches one pair, applies the criterion, bootstraps the count (cached).

  The dataset-permutation null runs through the same matcher (B's documents
  deranged as whole blocks, seed ``cfg.seed``); the criterion's null rule turns
  its pairs into an r floor. Each document resample re-matches among
  ``cfg.candidates`` candidates per neuron (``analysis.bootstrap``).
  """
  cfg = ctx.cfg
  crit = criterion or cfg.criterion
  key = pair_key(ctx, pair, crit)
  folder = os.path.join(ctx.workdir, "pairs")
  path = os.path.join(folder, f"{pair.label}-{key}.npz")
  sa, sb = ctx.stores[pair.a.name], ctx.stores[pair.b.name]
  if os.path.exists(path):
    # A cached result reads no activations: a deleted or cut chunk file must
    # still be noticed (a stat per file; ``--verify`` checks the contents).
    sa.check_files()
    sb.check_files()
    return PairResult.load(path)
  store_lib.check_same_units(sa, sb)
  acts_a = {s: sa.site(s) for s in pair.a.mlp_sites()}
  acts_b = {s: sb.site(s) for s in pair.b.mlp_sites()}
  doc = doc_index(sa)
  # k + candidates - 1: a resample can re-rank k-NN lists (with c == k it never could).
  c = cfg.candidates + crit.k - 1
  t0 = time.time()
  result, sites_a, off_a, sites_b, off_b = rosetta.match_sites(
      acts_a, acts_b, k=c, model_a=pair.a.name, model_b=pair.b.name, progress=ctx.progress)
  null, *_ = rosetta.match_sites(acts_a, acts_b, k=crit.k, model_a=pair.a.name,
                                 model_b=pair.b.name, null_permutation=cfg.seed,
                                 doc_ids=doc, progress=ctx.progress)
  t_match = time.time() - t0
  null_r = rosetta.mutual_pairs(null, k=crit.k, r_min=crit.r_min)[2]
  raw_r = rosetta.mutual_pairs(result, k=crit.k)[2]
  r_min = crit.threshold(raw_r, null_r)
  ia, jb, r = rosetta.mutual_pairs(result, k=crit.k, r_min=r_min)
  t0 = time.time()
  doc_stats = bootstrap.doc_stats(ConcatSource(list(acts_a.values())),
                                  ConcatSource(list(acts_b.values())), doc,
                                  result.a_to_b_idx, result.b_to_a_idx,
                                  num_docs=len(sa.documents["doc_ids"]))
  boot, in_a, in_b = bootstrap.resample_counts(doc_stats, ctx.weights, k=crit.k, r_min=r_min,
                                               return_masks=True)
  out = PairResult(
      label=pair.label, model_a=pair.a.name, model_b=pair.b.name,
      neurons_a=pair.a.num_neurons, neurons_b=pair.b.num_neurons, size=pair.size,
      sites_a=tuple(sites_a), sites_b=tuple(sites_b), offsets_a=np.asarray(off_a, np.int64),
      offsets_b=np.asarray(off_b, np.int64), num_layers_a=pair.a.num_layers,
      num_layers_b=pair.b.num_layers, criterion=dataclasses.asdict(crit),
      r_threshold=None if r_min is None else float(r_min),
      idx_a=ia, idx_b=jb, r=r,
      rank=rosetta.pair_ranks(result, ia, jb) if len(ia) else np.zeros(0, np.int32),
      raw_r=raw_r, null_r=null_r, boot_counts=np.asarray(boot, np.int64),
      members_a=in_a, members_b=in_b, excluded_a=int(len(result.excluded_a)),
      excluded_b=int(len(result.excluded_b)), units=int(result.num_units),
      seconds={"match": t_match, "bootstrap": time.time() - t0}, key=key)
  out.save(path)
  out.write_table(os.path.join(folder, f"{pair.label}-{key}.tsv"))
  warn_degenerate(out)
  return out


def warn_degenerate(res: PairResult) -> bool:
  """Logs a warning when a pair's count interval has zero width (every resample gave
  the same count: too few documents for the bootstrap to vary); returns whether."""
  if stats.degenerate(res.count_ci, float(res.count)):
    logging.warning("%s: the count's interval %s is degenerate (all %d resamples gave %d "
                    "pairs): record more documents (--record_docs) before reading it",
                    res.label, res.count_ci, len(res.boot_counts), res.count)
    return True
  return False


def anchor_sets(ctx: Context, results: Sequence[PairResult]) -> dict | None:
  """Neurons of each model with a Rosetta partner in *every* other model.

  Defined when every pair of >= 3 models was matched (a plain ``A,B,C`` list).
  For model X the anchor set is ``rosetta.anchors`` of X's Rosetta masks with
  each other model; its interval intersects the same document resamples of
  every pair.

  Returns:
    {model: {count, fraction, count_ci, partners, layer_density, depth}} or None.
  """
  models = ctx.unique_models
  names = [m.name for m in models]
  by = {(r.model_a, r.model_b): r for r in results}
  if len(names) < 3 or any((x, y) not in by and (y, x) not in by
                           for i, x in enumerate(names) for y in names[i + 1:]):
    return None
  out = {}
  for m in models:
    points, members = [], []
    for y in names:
      if y == m.name:
        continue
      if (m.name, y) in by:
        r = by[(m.name, y)]
        points.append(r.mask_a)
        members.append(r.members_a)
      else:
        r = by[(y, m.name)]
        points.append(r.mask_b)
        members.append(r.members_b)
    point = rosetta.anchors(points)
    count = int(point.sum())
    site_of = np.arange(m.num_neurons) // m.neurons_per_layer
    density = (np.bincount(site_of[point], minlength=len(m.mlp_sites())) /
               np.bincount(site_of))
    out[m.name] = {"count": count, "fraction": count / m.num_neurons,
                   "partners": len(names) - 1,
                   "count_ci": stats.count_interval(count, rosetta.anchors(members).sum(1)),
                   "layer_density": density.tolist(),
                   "depth": list(stats.relative_depths(m.mlp_sites(), m.num_layers).values())}
  return out
