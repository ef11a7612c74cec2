"""The scaling study (claim 1): Rosetta count vs model size, with a bootstrap CI.

``run_scaling(cfg, workdir, models="zoo")`` is the library behind
``python -m experiments.scaling``: models -> recorded activations -> Rosetta
pairs per size -> power law. Finished pair matches are cached in
``workdir/pairs`` so a re-run only redoes what is missing.
"""

from __future__ import annotations

import gc
import json
import os
import time

import numpy as np
from absl import logging

from rosetta_jax import store as store_lib
from rosetta_jax.analysis import bootstrap, null as null_lib, scaling
from rosetta_jax.match import rosetta
from rosetta_jax.match.sources import ConcatSource
from rosetta_jax.models import base
from rosetta_jax.report import scaling_report
from rosetta_jax.studies.common import (Pair, doc_index, prepare_workdir, record_models,
                                        resolve_models, study_documents, write_json)
from rosetta_jax.zoo import config as config_lib


# ----------------------------------------------------------------------------
# Matching
# ----------------------------------------------------------------------------


def count_ci(count: int, boot: np.ndarray, level: float = 0.95) -> list[float]:
  """Basic (reverse-percentile) bootstrap interval of a count.

  Resampling documents with replacement shifts mutual-NN counts (duplicated
  documents change every correlation), so the plain percentile interval can miss
  the estimate itself; the basic interval ``2*count - q`` corrects that
  first-order bias. ``boot_mean`` in the results shows the shift.
  """
  a = (1 - level) / 2
  lo, hi = np.quantile(boot, [a, 1 - a])
  return [max(0.0, 2 * count - hi), 2 * count - lo]


def match_pair(pair: Pair, stores: dict, cfg: config_lib.StudyConfig, weights: np.ndarray,
               cache_dir: str, masks: bool = False, progress: bool = False) -> dict:
  """Matches one pair, counts Rosetta pairs, and bootstraps the count.

  Returns a JSON-ready dict (count, fraction, r distribution, per-layer density,
  bootstrap counts) and writes the pairs table to ``cache_dir``. Results are
  cached per (pair, criterion): ``{label}.json`` for the default criterion, a
  suffixed name for other k / r_min / candidate / null-threshold settings.

  The dataset-permutation null runs through the same matcher (B's documents
  shuffled as blocks); with ``cfg.null_threshold`` a pair counts only if its r
  exceeds the strongest pair the null produced, so chance matches are excluded.
  """
  os.makedirs(cache_dir, exist_ok=True)
  key = pair.label
  if (cfg.k, cfg.r_min, cfg.candidates, cfg.null_threshold) != (
      1, None, config_lib.StudyConfig.candidates, True):
    key += f"-k{cfg.k}-r{cfg.r_min}-c{cfg.candidates}-n{int(cfg.null_threshold)}"
  if cfg.null_threshold and cfg.null_fdr is not None:
    key += f"-fdr{cfg.null_fdr}"
  cache = os.path.join(cache_dir, f"{key}.json")
  mask_file = os.path.join(cache_dir, f"{key}.members.npz")
  if os.path.exists(cache) and (not masks or os.path.exists(mask_file)):
    with open(cache) as f:
      out = json.load(f)
    if out.get("resamples") == len(weights) and "idx_a" in out:
      return out
  sa, sb = stores[pair.a.name], stores[pair.b.name]
  store_lib.check_same_units(sa, sb)
  acts_a = {s: sa.site(s) for s in pair.a.mlp_sites()}
  acts_b = {s: sb.site(s) for s in pair.b.mlp_sites()}
  # k + candidates - 1: a resample can re-rank k-NN lists (with c == k it never could).
  c = cfg.candidates + cfg.k - 1
  t0 = time.time()
  result, sites_a, off_a, sites_b, off_b = rosetta.match_sites(
      acts_a, acts_b, k=c, model_a=pair.a.name, model_b=pair.b.name, progress=progress)
  null, *_ = rosetta.match_sites(acts_a, acts_b, k=cfg.k, model_a=pair.a.name,
                                 model_b=pair.b.name, null_permutation=cfg.seed,
                                 doc_ids=doc_index(sa), progress=progress)
  t_match = time.time() - t0
  _, _, null_r = rosetta.mutual_pairs(null, k=cfg.k, r_min=cfg.r_min)
  null_r_max = float(null_r.max()) if len(null_r) else None
  r_min = cfg.r_min
  raw_r = rosetta.mutual_pairs(result, k=cfg.k)[2]
  if cfg.null_threshold and null_r_max is not None:
    if cfg.null_fdr is None:
      above = float(np.nextafter(np.float32(null_r_max), np.float32(np.inf)))
    else:
      above = null_lib.fdr_threshold(raw_r, null_r, cfg.null_fdr)
    r_min = above if r_min is None else max(r_min, above)
  raw = len(raw_r)
  ia, jb, r = rosetta.mutual_pairs(result, k=cfg.k, r_min=r_min)
  # Bootstrap over documents, re-matching each resample among the candidates.
  t0 = time.time()
  stats = bootstrap.doc_stats(ConcatSource(list(acts_a.values())),
                              ConcatSource(list(acts_b.values())), doc_index(sa),
                              result.a_to_b_idx, result.b_to_a_idx,
                              num_docs=len(sa.documents["doc_ids"]))
  boot, in_a, in_b = bootstrap.resample_counts(stats, weights, k=cfg.k, r_min=r_min,
                                               return_masks=True)
  # Which neurons are in a pair, per resample (bit-packed): the anchor analysis
  # intersects these across a model's partners.
  np.savez_compressed(mask_file, a=np.packbits(in_a, axis=1), b=np.packbits(in_b, axis=1),
                      num_a=in_a.shape[1], num_b=in_b.shape[1])
  t_boot = time.time() - t0
  layer_a = np.searchsorted(off_a, ia, side="right") - 1
  per_layer = np.bincount(layer_a, minlength=len(sites_a)) / np.diff(off_a)
  with open(os.path.join(cache_dir, f"{key}.tsv"), "w") as f:
    f.write("site_a\tneuron_a\tsite_b\tneuron_b\tr\n")
    lb = np.searchsorted(off_b, jb, side="right") - 1
    for i, j, la, lb_, rr in zip(ia, jb, layer_a, lb, r):
      f.write(f"{sites_a[la]}\t{i - off_a[la]}\t{sites_b[lb_]}\t{j - off_b[lb_]}\t{rr:.6f}\n")
  out = {
      "label": pair.label, "model_a": pair.a.name, "model_b": pair.b.name,
      "neurons_a": pair.a.num_neurons, "neurons_b": pair.b.num_neurons,
      "size": pair.size, "count": int(len(ia)), "fraction": len(ia) / pair.size,
      "count_ci": count_ci(len(ia), boot),
      "boot_mean": float(boot.mean()),
      "raw_count": raw, "null_count": int(len(null_r)), "null_r_max": null_r_max,
      "null_r_quantiles": (np.quantile(null_r, [0.5, 0.9, 0.99]).tolist() if len(null_r)
                           else None),
      "raw_r_quantiles": np.quantile(raw_r, [0.5, 0.9, 0.99]).tolist() if raw else None,
      "count_above_null_max": (int((raw_r > null_r_max).sum()) if null_r_max is not None
                               else raw),
      "r_threshold": r_min,
      "idx_a": ia.tolist(), "idx_b": jb.tolist(),
      "r": r.tolist(), "r_mean": float(r.mean()) if len(r) else float("nan"),
      "excluded_a": int(len(result.excluded_a)), "excluded_b": int(len(result.excluded_b)),
      "units": int(result.num_units), "layer_density_a": per_layer.tolist(),
      "num_layers_a": len(sites_a), "boot_counts": boot.tolist(),
      "depth_a": list(rosetta.relative_depths(sites_a, pair.a.num_layers).values()),
      "resamples": len(weights), "seconds": {"match": t_match, "bootstrap": t_boot},
      "cache": f"{key}.json",
  }
  write_json(cache, out)
  return out


def load_members(cache_dir: str, row: dict) -> tuple[np.ndarray, np.ndarray] | None:
  """Per-resample pair membership of a ``match_pair`` row: (in_a [B, Na], in_b [B, Nb])
  bool, or None for a pair cached before membership was kept."""
  if not row.get("cache"):
    return None
  path = os.path.join(cache_dir, os.path.splitext(row["cache"])[0] + ".members.npz")
  if not os.path.exists(path):
    return None
  with np.load(path) as z:
    return (np.unpackbits(z["a"], axis=1, count=int(z["num_a"])).astype(bool),
            np.unpackbits(z["b"], axis=1, count=int(z["num_b"])).astype(bool))


def anchors(rows: list, info: list, cache_dir: str) -> dict | None:
  """Neurons of each model with a Rosetta partner in *every* other model.

  Defined when the study matched every pair of >= 3 models (a plain ``A,B,C``
  list). For model X the anchor set is the intersection, over the other models
  Y, of X's neurons in a Rosetta pair with Y; its CI intersects the same
  document-bootstrap resamples of every pair (basic bootstrap, as the counts).

  Returns:
    {model: {count, fraction, count_ci, partners, layer_density, depth}} or None.
  """
  names = [m["name"] for m in info]
  by = {(r["model_a"], r["model_b"]): r for r in rows}
  if len(names) < 3 or any((x, y) not in by and (y, x) not in by
                           for i, x in enumerate(names) for y in names[i + 1:]):
    return None
  out = {}
  for m in info:
    x, n = m["name"], m["neurons"]
    point, members = np.ones(n, bool), []
    for y in names:
      if y == x:
        continue
      side = "a" if (x, y) in by else "b"
      r = by[(x, y)] if side == "a" else by[(y, x)]
      mine = np.zeros(n, bool)
      mine[np.asarray(r[f"idx_{side}"], np.int64)] = True
      point &= mine
      both = load_members(cache_dir, r)          # None: cached before members were kept
      members.append(None if both is None else both[0 if side == "a" else 1])
    count = int(point.sum())
    ci = None
    if all(b is not None for b in members):
      ci = count_ci(count, np.logical_and.reduce(members).sum(1))
    site_of = np.arange(n) // int(m["neurons_per_layer"])      # studied site of each neuron
    density = np.bincount(site_of[point], minlength=len(m["sites"])) / np.bincount(site_of)
    out[x] = {"count": count, "fraction": count / n, "partners": len(names) - 1,
              "count_ci": ci, "layer_density": density.tolist(),
              "depth": list(rosetta.relative_depths(m["sites"], m["layers"]).values())}
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
  info = [{"name": m.name, "neurons": m.num_neurons, "layers": m.num_layers,
           "sites": m.mlp_sites(),
           "neurons_per_layer": m.neurons_per_layer, "params": base.count_params(m.params)}
          for m in uniq]
  for m in uniq:      # matching reads the stores: free the weights (GBs for real models)
    m.params = None
  gc.collect()
  num_docs = len(docs)
  weights = bootstrap.bootstrap_weights(num_docs, cfg.bootstrap, cfg.seed)
  t0 = time.time()
  want_anchors = len(uniq) >= 3 and len(pairs) == len(uniq) * (len(uniq) - 1) // 2
  rows = [match_pair(p, stores, cfg, weights, os.path.join(workdir, "pairs"),
                     masks=want_anchors, progress=progress) for p in pairs]
  t_match = time.time() - t0
  rows.sort(key=lambda r: r["size"])
  sizes = np.array([r["size"] for r in rows])
  counts = np.array([r["count"] for r in rows])
  boot = np.array([r["boot_counts"] for r in rows]).T        # [B, S]
  fit = None
  if len(np.unique(sizes[counts > 0])) >= 2:
    fit = scaling.fit_power_law(sizes, counts, boot_counts=boot)
  else:
    logging.warning("fewer than two sizes with Rosetta pairs: no power-law fit")
  results = {
      "study": "scaling", "models": models,
      "sizes": sizes.tolist(), "counts": counts.tolist(),
      "null_counts": [r.get("null_count") for r in rows],
      "fractions": (counts / sizes).tolist(),
      "pairs": [{k: v for k, v in r.items() if k not in ("boot_counts", "idx_a", "idx_b")}
                for r in rows],
      "fit": fit.to_dict() if fit else None,
      "units": rows[0]["units"], "documents": num_docs, "bootstrap": cfg.bootstrap,
      "model_info": info,
      "anchors": anchors(rows, info, os.path.join(workdir, "pairs")) if want_anchors else None,
      "seconds": {"models": t_models, "record": t_record, "match": t_match,
                  "total": time.time() - t_start},
  }
  write_json(os.path.join(workdir, "results.json"), results)
  scaling_report(results, fit, os.path.join(workdir, "report.html"))
  if fit:
    logging.info("beta = %.3f [%.3f, %.3f] over %d sizes", fit.beta, *fit.ci, len(rows))
  return results
