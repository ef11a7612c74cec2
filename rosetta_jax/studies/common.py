"""What every study shares: the workdir, the models, the recorded activations.

A study's stages write into ``workdir`` and are reused when the same command runs
again: the zoo resumes from its checkpoints, recordings resume from their stores.
A workdir that holds a different configuration is an error, never overwritten.

Models: ``--models=zoo`` trains (or loads) the embedded zoo and pairs the seeds of
each width (the "independently trained models" of the definition). For a list of
models, ``A+B,C+D`` pairs models joined by ``+`` (one size per group); a plain list
``A,B,C`` matches every pair and places each pair at the geometric mean of the
two models' neuron counts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
from typing import Sequence

import numpy as np

from rosetta_jax import recording as record_lib
from rosetta_jax import store as store_lib
from rosetta_jax.data import corpus as corpus_lib
from rosetta_jax.models import base
from rosetta_jax.zoo import config as config_lib
from rosetta_jax.zoo import train


@dataclasses.dataclass(frozen=True)
class Pair:
  """Two models compared at one size."""
  label: str
  a: base.Model
  b: base.Model

  @property
  def size(self) -> float:
    return float(np.sqrt(self.a.num_neurons * self.b.num_neurons))


# ----------------------------------------------------------------------------
# Workdir
# ----------------------------------------------------------------------------


def write_json(path: str, obj) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=1, default=_json_default)
  os.replace(tmp, path)


def _json_default(x):
  if isinstance(x, (np.integer,)):
    return int(x)
  if isinstance(x, (np.floating,)):
    return float(x)
  if isinstance(x, np.ndarray):
    return x.tolist()
  raise TypeError(f"not JSON serialisable: {type(x)}")


def prepare_workdir(workdir: str, config: dict) -> None:
  """Creates ``workdir`` with ``config.json``, or checks it holds the same config."""
  path = os.path.join(workdir, "config.json")
  config = json.loads(json.dumps(config, default=_json_default))
  if os.path.exists(path):
    with open(path) as f:
      old = json.load(f)
    if isinstance(old.get("config"), dict):
      # Fields added after a workdir was made, at defaults that keep the old behaviour.
      old["config"] = {**config_lib.LATER_FIELDS, **old["config"]}
    if old != config:
      diff = sorted(k for k in set(old) | set(config) if old.get(k) != config.get(k))
      raise ValueError(f"{workdir} holds a run with a different configuration (differs in "
                       f"{diff}); choose another --workdir or delete it")
    return
  os.makedirs(workdir, exist_ok=True)
  write_json(path, config)


# ----------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------


def resolve_models(spec: str, cfg: config_lib.StudyConfig, workdir: str,
                   progress: bool = True) -> list[Pair]:
  """Turns ``--models`` into the pairs to match (training the zoo if asked)."""
  spec = spec.strip()
  if not spec:
    raise ValueError("--models is empty: use 'zoo' or a comma-separated list of models")
  if spec == "zoo":
    models = train.train_zoo(cfg.zoo, os.path.join(workdir, "zoo"), progress=progress)
    by_width = {}
    for m in models:
      m.select_depths(cfg.depths)
      by_width.setdefault(m.config.hidden_size, []).append(m)
    return [Pair(f"w{w}" + ("" if len(ms) == 2 else f"-{a.name}-{b.name}"), a, b)
            for w, ms in by_width.items() for a, b in itertools.combinations(ms, 2)]
  from rosetta_jax.models import load_model  # pylint: disable=g-import-not-at-top
  groups = [g.split("+") for g in spec.split(",")]
  loaded = {n: load_model(n).select_depths(cfg.depths) for g in groups for n in g}
  if any(len(g) > 1 for g in groups):
    if any(len(g) < 2 for g in groups):
      raise ValueError(f"--models={spec}: every '+' group needs at least two models")
    return [Pair(_short(a) + "~" + _short(b), loaded[a], loaded[b])
            for g in groups for a, b in itertools.combinations(g, 2)]
  if len(loaded) < 2:
    raise ValueError("--models needs at least two models to match")
  return [Pair(_short(a) + "~" + _short(b), loaded[a], loaded[b])
          for a, b in itertools.combinations([g[0] for g in groups], 2)]


def _short(name: str) -> str:
  return os.path.basename(os.path.normpath(name)) or name


# ----------------------------------------------------------------------------
# Recording
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


def record_models(models: Sequence[base.Model], docs, workdir: str,
                  cfg: config_lib.StudyConfig, progress: bool = True) -> dict:
  """Records every model's MLP sites; returns {model name: Store}."""
  toks = {}
  for m in models:
    toks.setdefault(record_lib.tokenizer_hash(m.tokenizer), m.tokenizer)
  align_with = list(toks.values()) if len(toks) > 1 else None
  stores = {}
  for m in models:
    path = os.path.join(workdir, "acts", _safe(m.name))
    stores[m.name] = record_lib.record(
        m, docs, m.mlp_sites(), path, batch_size=cfg.record_batch,
        max_len=min(cfg.record_len, getattr(m.config, "max_position_embeddings", 1 << 30)),
        pooling=cfg.pooling, align_with=align_with, progress=progress)
  return stores


def _safe(name: str) -> str:
  return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[-80:] + "-" + \
      hashlib.sha1(name.encode()).hexdigest()[:6]


def doc_index(store: store_lib.Store) -> np.ndarray:
  """[T] document index of each unit."""
  offs = store.documents["unit_offsets"]
  return np.repeat(np.arange(len(offs) - 1), np.diff(offs))
