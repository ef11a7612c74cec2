"""The scaling study: models -> recorded activations -> Rosetta pairs -> power law.

``run_scaling(cfg, workdir, models="zoo")`` is the library behind
``python -m experiments.scaling``. Every stage writes into ``workdir`` and is
reused when the same command runs again: the zoo resumes from its checkpoints,
recordings resume from their stores, finished pair matches are cached. A
workdir that holds a different configuration is an error, never overwritten.

Pairs: for the zoo, the seeds of each width are matched with each other (the
"independently trained models" of the definition). For a list of models,
``A+B,C+D`` pairs models joined by ``+`` (one size per group); a plain list
``A,B,C`` matches every pair and places each pair at the geometric mean of the
two models' neuron counts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import time
from typing import Sequence

import numpy as np
from absl import logging

from rosetta_jax import record as record_lib
from rosetta_jax import store as store_lib
from rosetta_jax.analysis import bootstrap, scaling
from rosetta_jax.data import corpus as corpus_lib
from rosetta_jax.match import rosetta
from rosetta_jax.match.sources import ConcatSource
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


def _write_json(path: str, obj) -> None:
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
    if old != config:
      diff = sorted(k for k in set(old) | set(config) if old.get(k) != config.get(k))
      raise ValueError(f"{workdir} holds a run with a different configuration (differs in "
                       f"{diff}); choose another --workdir or delete it")
    return
  os.makedirs(workdir, exist_ok=True)
  _write_json(path, config)


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
      by_width.setdefault(m.config.hidden_size, []).append(m)
    return [Pair(f"w{w}" + ("" if len(ms) == 2 else f"-{a.name}-{b.name}"), a, b)
            for w, ms in by_width.items() for a, b in itertools.combinations(ms, 2)]
  from rosetta_jax.models import load_model  # pylint: disable=g-import-not-at-top
  groups = [g.split("+") for g in spec.split(",")]
  loaded = {n: load_model(n) for g in groups for n in g}
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
  if cfg.record_docs:
    docs = docs[:cfg.record_docs]
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


# ----------------------------------------------------------------------------
# Matching
# ----------------------------------------------------------------------------


def match_pair(pair: Pair, stores: dict, cfg: config_lib.StudyConfig, weights: np.ndarray,
               cache_dir: str) -> dict:
  """Matches one pair, counts Rosetta pairs, and bootstraps the count.

  Returns a JSON-ready dict (count, fraction, r distribution, per-layer density,
  bootstrap counts) and writes the pairs table to ``cache_dir``.
  """
  os.makedirs(cache_dir, exist_ok=True)
  cache = os.path.join(cache_dir, f"{pair.label}.json")
  if os.path.exists(cache):
    with open(cache) as f:
      out = json.load(f)
    if out.get("resamples") == len(weights):
      return out
  sa, sb = stores[pair.a.name], stores[pair.b.name]
  store_lib.check_same_units(sa, sb)
  acts_a = {s: sa.site(s) for s in pair.a.mlp_sites()}
  acts_b = {s: sb.site(s) for s in pair.b.mlp_sites()}
  c = max(cfg.candidates, cfg.k)
  t0 = time.time()
  result, sites_a, off_a, sites_b, off_b = rosetta.match_sites(
      acts_a, acts_b, k=c, model_a=pair.a.name, model_b=pair.b.name)
  t_match = time.time() - t0
  ia, jb, r = rosetta.mutual_pairs(result, k=cfg.k, r_min=cfg.r_min)
  # Bootstrap over documents, re-matching each resample among the candidates.
  t0 = time.time()
  stats = bootstrap.doc_stats(ConcatSource(list(acts_a.values())),
                              ConcatSource(list(acts_b.values())), doc_index(sa),
                              result.a_to_b_idx, result.b_to_a_idx,
                              num_docs=len(sa.documents["doc_ids"]))
  boot = bootstrap.resample_counts(stats, weights, k=cfg.k, r_min=cfg.r_min)
  t_boot = time.time() - t0
  layer_a = np.searchsorted(off_a, ia, side="right") - 1
  per_layer = np.bincount(layer_a, minlength=len(sites_a)) / np.diff(off_a)
  with open(os.path.join(cache_dir, f"{pair.label}.tsv"), "w") as f:
    f.write("site_a\tneuron_a\tsite_b\tneuron_b\tr\n")
    lb = np.searchsorted(off_b, jb, side="right") - 1
    for i, j, la, lb_, rr in zip(ia, jb, layer_a, lb, r):
      f.write(f"{sites_a[la]}\t{i - off_a[la]}\t{sites_b[lb_]}\t{j - off_b[lb_]}\t{rr:.6f}\n")
  out = {
      "label": pair.label, "model_a": pair.a.name, "model_b": pair.b.name,
      "neurons_a": pair.a.num_neurons, "neurons_b": pair.b.num_neurons,
      "size": pair.size, "count": int(len(ia)), "fraction": len(ia) / pair.size,
      "count_ci": np.quantile(boot, [0.025, 0.975]).tolist(),
      "r": r.tolist(), "r_mean": float(r.mean()) if len(r) else float("nan"),
      "excluded_a": int(len(result.excluded_a)), "excluded_b": int(len(result.excluded_b)),
      "units": int(result.num_units), "layer_density_a": per_layer.tolist(),
      "num_layers_a": len(sites_a), "boot_counts": boot.tolist(),
      "resamples": len(weights), "seconds": {"match": t_match, "bootstrap": t_boot},
  }
  _write_json(cache, out)
  return out


# ----------------------------------------------------------------------------
# The study
# ----------------------------------------------------------------------------


def run_scaling(cfg: config_lib.StudyConfig, workdir: str, models: str = "zoo",
                progress: bool = True) -> dict:
  """Runs the scaling study into ``workdir``; returns the results dict.

  Writes ``config.json``, ``results.json``, ``report.html`` (and the zoo,
  activation stores and pair tables beneath ``workdir``).
  """
  from rosetta_jax.report import scaling_report  # pylint: disable=g-import-not-at-top
  prepare_workdir(workdir, {"study": "scaling", "models": models,
                            "config": config_lib.to_dict(cfg)})
  t_start = time.time()
  pairs = resolve_models(models, cfg, workdir, progress=progress)
  t_models = time.time() - t_start
  docs = study_documents(cfg)
  uniq = list({m.name: m for p in pairs for m in (p.a, p.b)}.values())
  t0 = time.time()
  stores = record_models(uniq, docs, workdir, cfg, progress=progress)
  t_record = time.time() - t0
  num_docs = len(docs)
  weights = bootstrap.bootstrap_weights(num_docs, cfg.bootstrap, cfg.seed)
  t0 = time.time()
  rows = [match_pair(p, stores, cfg, weights, os.path.join(workdir, "pairs")) for p in pairs]
  t_match = time.time() - t0
  rows.sort(key=lambda r: r["size"])
  sizes = np.array([r["size"] for r in rows])
  counts = np.array([r["count"] for r in rows])
  boot = np.array([r["boot_counts"] for r in rows]).T        # [B, S]
  fit = scaling.fit_power_law(sizes, counts, boot_counts=boot)
  results = {
      "study": "scaling", "models": models,
      "sizes": sizes.tolist(), "counts": counts.tolist(),
      "fractions": (counts / sizes).tolist(),
      "pairs": [{k: v for k, v in r.items() if k not in ("boot_counts",)} for r in rows],
      "fit": fit.to_dict(),
      "units": rows[0]["units"], "documents": num_docs, "bootstrap": cfg.bootstrap,
      "model_info": [{"name": m.name, "neurons": m.num_neurons, "layers": m.num_layers,
                      "neurons_per_layer": m.neurons_per_layer,
                      "params": base.count_params(m.params)} for m in uniq],
      "seconds": {"models": t_models, "record": t_record, "match": t_match,
                  "total": time.time() - t_start},
  }
  _write_json(os.path.join(workdir, "results.json"), results)
  scaling_report(results, fit, os.path.join(workdir, "report.html"))
  logging.info("beta = %.3f [%.3f, %.3f] over %d sizes", fit.beta, *fit.ci, len(rows))
  return results
