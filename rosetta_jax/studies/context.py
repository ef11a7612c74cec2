"""The one pipeline every study shares: models -> documents -> stores -> pairs.

``load_context(cfg, workdir, models)`` checks the workdir, resolves ``--models``
(training the embedded zoo if asked), writes ``config.json``, records every
model's MLP sites on the study's documents, and returns a ``Context``.
``ctx.result(pair)`` is that pair's ``PairResult`` under the declared criterion
(``rosetta_jax/pairs.py``: matched, null, bootstrapped, cached in ``workdir/pairs``
under a key of everything that determines it).

Workdir layout::

  W/config.json            the pipeline's configuration (format, models, config)
  W/zoo/                   the embedded zoo (checkpoints, tokenizer)
  W/acts/<model>/          one activation store per model
  W/pairs/<label>-<key>.*  PairResults (npz) and their pairs tables (tsv)
  W/neurons/               per-model neuron statistics
  W/results.json, W/report.html       the scaling study (the main job)
  W/<study>/{results.json,report.html} every other study

Models: ``zoo`` pairs every two seeds of each width (the "independently trained
models" of the definition). For a list of models, ``A+B,C+D`` pairs models
joined by ``+`` (one size per group); a plain list ``A,B,C`` matches every pair
and places each pair at the geometric mean of the two models' neuron counts.
Entries are model directories, ``offline:`` names or GGUF files.

``--modality=vision`` (``zoo`` only) trains the vision zoo, records it on the
generator's images (``rosetta_jax/vision_pipeline.py``) and adds the generator's
pairs with each discriminator (``ctx.generator_pairs``) beside the seed pairs.
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
from typing import Any, Sequence

import numpy as np

from rosetta_jax import recording, vision_pipeline
from rosetta_jax import store as store_lib
from rosetta_jax.analysis import bootstrap, selectivity as sel
from rosetta_jax.data import corpus as corpus_lib
from rosetta_jax.match.sources import ConcatSource
from rosetta_jax.models import base
from rosetta_jax.studies import config as config_lib
from rosetta_jax.pairs import Pair, match_pair
from rosetta_jax.zoo import train

TOP_M = 32          # top-activating units kept per neuron by the neuron statistics


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
    for m in models:
      m.select_depths(cfg.depths)
    return zoo_pairs(models)
  from rosetta_jax.models import load_model  # pylint: disable=g-import-not-at-top
  loaded = {n: load_model(n).select_depths(cfg.depths) for g in groups for n in g}
  if any(len(g) > 1 for g in groups):
    return [Pair(_short(a) + "~" + _short(b), loaded[a], loaded[b])
            for g in groups for a, b in itertools.combinations(g, 2)]
  return [Pair(_short(a) + "~" + _short(b), loaded[a], loaded[b])
          for a, b in itertools.combinations([g[0] for g in groups], 2)]


def zoo_pairs(models: Sequence[base.Model], prefix: str = "") -> list[Pair]:
  """The zoo's pairs, by width: every pair of seeds within each family
  ("w64-s0s1" for GPT-NeoX, "w64-llama-s0s1"), then, when the zoo has several
  families, the same seed across families ("w64-gpt_neox-llama-s0")."""
  by_width: dict = {}
  for m in models:
    fam = train.family_of(m.name)
    by_width.setdefault(m.config.hidden_size, {}).setdefault(fam, []).append(m)
  seed = lambda m: m.name.rsplit("-s", 1)[-1]
  out = []
  for w, fams in by_width.items():
    for fam, ms in fams.items():
      tag = "" if fam == "gpt_neox" else f"{fam}-"
      out += [Pair(f"{prefix}w{w}-{tag}s{seed(a)}s{seed(b)}", a, b)
              for a, b in itertools.combinations(ms, 2)]
    for fa, fb in itertools.combinations(list(fams), 2):
      seeds_b = {seed(m): m for m in fams[fb]}
      out += [Pair(f"{prefix}w{w}-{fa}-{fb}-s{seed(a)}", a, seeds_b[seed(a)])
              for a in fams[fa] if seed(a) in seeds_b]
  return out


def pair_kind(model_a: str, model_b: str) -> str:
  """"seeds" (one zoo family, two seeds) or "architectures" (two families)."""
  return "seeds" if train.family_of(model_a) == train.family_of(model_b) else "architectures"


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
    mesh: a ``("data", "model")`` device mesh the pairs are matched over (units on
      ``data``, neurons on ``model``; ``--mesh``), or None: one device.
    generator_pairs: the vision zoo's generator against each discriminator (empty
      for text), matched like ``pairs`` but kept apart from the size axis.
    zoo_summary: the vision zoo's summary (held-out accuracy of each classifier,
      the generator's checks); None for text.
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
  mesh: Any = None
  generator_pairs: list[Pair] = dataclasses.field(default_factory=list)
  zoo_summary: dict | None = None
  _results: dict = dataclasses.field(default_factory=dict, repr=False)
  _vocab: dict = dataclasses.field(default_factory=dict, repr=False)

  @property
  def unique_models(self) -> list[base.Model]:
    return list({m.name: m for p in self.pairs + self.generator_pairs
                 for m in (p.a, p.b)}.values())

  @functools.cached_property
  def _labels(self):
    if self.cfg.modality == "vision":
      return vision_pipeline.unit_labels(next(iter(self.stores.values())))
    return unit_labels(self.unique_models, self.docs, self.stores)

  @property
  def labels(self) -> sel.UnitLabels:
    """Text, document and domain of every unit."""
    return self._labels[0]

  @property
  def spans(self) -> np.ndarray:
    """[T, 2] byte span of each unit in its document."""
    return self._labels[1]

  def result(self, pair: Pair):
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
                 progress: bool = True, mesh=None) -> Context:
  """Checks ``workdir``, resolves the models, records them; returns the Context.

  ``config.json`` is written only after the configuration and the models have
  been accepted, so a refused run leaves none behind. ``mesh``: the devices the
  pairs are matched over (``Context.mesh``).
  """
  record = config_lib.workdir_record("pipeline", models, cfg)
  if cfg.modality == "vision":
    return _load_vision_context(cfg, workdir, models, record, progress)
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
                 tuple(model_info(m) for m in uniq), progress, mesh)


def _load_vision_context(cfg, workdir: str, models: str, record: dict,
                         progress: bool) -> Context:
  """``load_context`` for the vision zoo: train, record on the generated images, pair."""
  if models.strip() != "zoo":
    raise config_lib.ConfigError(f"models: --modality=vision runs the vision zoo only "
                                 f"(--models=zoo), got {models!r}")
  existed = config_lib.check_workdir(workdir, record)
  lock_workdir(workdir)
  t0 = time.time()
  zoo = vision_pipeline.train_models(cfg, os.path.join(workdir, "zoo"), progress=progress)
  classifiers, generator, samples = zoo.classifiers, zoo.generator, zoo.samples
  pairs = sorted(zoo_pairs(classifiers), key=lambda p: p.size)
  gen_pairs = vision_pipeline.generator_pairs(generator, classifiers)
  if not existed:
    config_lib.write_workdir_config(workdir, record)
  t_models = time.time() - t0
  t0 = time.time()
  stores = vision_pipeline.record_models(
      classifiers, generator, samples, lambda n: os.path.join(workdir, "acts", safe_name(n)),
      batch_size=cfg.record_batch, progress=progress)
  docs = vision_pipeline.probe_documents(samples)
  weights = bootstrap.bootstrap_weights(len(docs), cfg.bootstrap, cfg.seed)
  return Context(cfg, workdir, models, pairs, stores, docs, weights,
                 {"models": t_models, "record": time.time() - t0},
                 tuple(model_info(m) for m in [generator] + classifiers), progress,
                 generator_pairs=gen_pairs, zoo_summary=zoo.summary)


def untrained_pairs(ctx: Context) -> list[Pair]:
  """The untrained baseline: the zoo's models at initialisation, recorded into the
  context's stores like the trained ones, paired like them ("untrained-w64-s0s1")."""
  models = train.untrained_zoo(ctx.cfg.zoo, os.path.join(ctx.workdir, "zoo"))
  for m in models:
    m.select_depths(ctx.cfg.depths)
  ctx.stores.update(record_models(models, ctx.docs, ctx.workdir, ctx.cfg,
                                  progress=ctx.progress))
  return zoo_pairs(models, prefix="untrained-")


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
