"""The polarization study (claim 2): are Rosetta neurons more selective, more so with size?

``run_polarization(cfg, workdir, models)`` is the library behind
``python -m experiments.polarization``. It shares the scaling study's workdir
layout: the zoo (``workdir/zoo``), the activation stores (``workdir/acts``) and the
Rosetta pairs (``workdir/pairs``) are reused or made; per-model neuron statistics
are cached in ``workdir/neurons`` (shared with the domains study); this study's
``config.json``, ``results.json`` and ``report.html`` go to ``workdir/polarization``.

``load_context`` (also used by the domains and null/ablation studies) runs the
shared pipeline: models -> stores -> Rosetta pairs -> unit labels.
"""

from __future__ import annotations

import dataclasses
import os
import time

import numpy as np
import plotly.graph_objects as go
from absl import logging

from rosetta_jax import recording as record_lib
from rosetta_jax.analysis import bootstrap, polarization as pol, selectivity as sel
from rosetta_jax.data import align as align_lib
from rosetta_jax.match.sources import ConcatSource
from rosetta_jax.report.html import Report
from rosetta_jax.studies import common
from rosetta_jax.studies.scaling import load_members, match_pair
from rosetta_jax.zoo import config as config_lib

TOP_M = 32


@dataclasses.dataclass
class Context:
  """Everything a study needs about one workdir's models and recordings."""
  cfg: config_lib.StudyConfig
  workdir: str
  models: str
  pairs: list
  stores: dict
  docs: list
  labels: sel.UnitLabels
  spans: np.ndarray                   # [T, 2] byte span of each unit in its document
  weights: np.ndarray                 # [B, D] document bootstrap multiplicities
  rows: list                          # scaling.match_pair results, one per pair
  seconds: dict


def study_config(cfg: config_lib.StudyConfig, workdir: str, models: str, study: str,
                 extra: dict | None = None) -> str:
  """Prepares ``workdir/<study>`` (config.json checked like the scaling study's)."""
  sub = os.path.join(workdir, study)
  common.prepare_workdir(sub, {"study": study, "models": models,
                               "config": config_lib.to_dict(cfg), **(extra or {})})
  return sub


def unit_labels(models, docs, stores) -> tuple[sel.UnitLabels, np.ndarray]:
  """Re-derives each unit's text and byte span from the documents (as the recorder cut them)."""
  toks = {}
  for m in models:
    toks.setdefault(record_lib.tokenizer_hash(m.tokenizer), record_lib.as_tokenizer(m.tokenizer))
  toks = list(toks.values())
  texts, spans, counts = [], [], []
  for doc in docs:
    al = align_lib.align_encodings([t.encode(doc.text) for t in toks], doc.doc_id)
    raw = doc.text.encode("utf-8")
    texts += [raw[s:e].decode("utf-8", errors="replace") for s, e in al.spans]
    spans.append(al.spans)
    counts.append(al.num_units)
  store = next(iter(stores.values()))
  offs = store.documents["unit_offsets"]
  align_lib.check_unit_counts([d.doc_id for d in docs], counts, np.diff(offs),
                              what=f"the documents re-aligned and store {store.path}")
  return (sel.UnitLabels.build(offs, [d.domain for d in docs], texts),
          np.concatenate(spans).astype(np.int64))


def load_context(cfg: config_lib.StudyConfig, workdir: str, models: str = "zoo",
                 progress: bool = True) -> Context:
  """Models, stores and Rosetta pairs of ``workdir`` (made or reused)."""
  t0 = time.time()
  pairs = common.resolve_models(models, cfg, workdir, progress=progress)
  t_models = time.time() - t0
  docs = common.study_documents(cfg)
  uniq = list({m.name: m for p in pairs for m in (p.a, p.b)}.values())
  t0 = time.time()
  stores = common.record_models(uniq, docs, workdir, cfg, progress=progress)
  t_record = time.time() - t0
  weights = bootstrap.bootstrap_weights(len(docs), cfg.bootstrap, cfg.seed)
  t0 = time.time()
  rows = [match_pair(p, stores, cfg, weights, os.path.join(workdir, "pairs"), masks=True,
                     progress=progress) for p in pairs]
  order = np.argsort([r["size"] for r in rows], kind="stable")
  pairs, rows = [pairs[i] for i in order], [rows[i] for i in order]
  t_match = time.time() - t0
  labels, spans = unit_labels(uniq, docs, stores)
  return Context(cfg, workdir, models, pairs, stores, docs, labels, spans, weights, rows,
                 {"models": t_models, "record": t_record, "match": t_match})


def rosetta_sets(ctx: Context, pair) -> tuple[np.ndarray, np.ndarray, tuple]:
  """Boolean Rosetta masks over A's and B's neurons (sites concatenated), and the
  pairs table as (neuron of A, neuron of B, r) arrays (sites concatenated)."""
  def offsets(m):
    n = [ctx.stores[m.name].site(s).num_neurons for s in m.mlp_sites()]
    return dict(zip(m.mlp_sites(), np.cumsum([0] + n)[:-1])), int(sum(n))
  off_a, na = offsets(pair.a)
  off_b, nb = offsets(pair.b)
  row = ctx.rows[ctx.pairs.index(pair)]
  if "idx_a" in row:              # global (sites concatenated) indices from match_pair
    ia, jb, r = row["idx_a"], row["idx_b"], row["r"]
  else:                           # older caches: the pairs table
    ia, jb, r = [], [], []
    with open(os.path.join(ctx.workdir, "pairs", f"{pair.label}.tsv")) as f:
      next(f)
      for line in f:
        sa, i, sb, j, rr = line.rstrip("\n").split("\t")
        ia.append(off_a[sa] + int(i))
        jb.append(off_b[sb] + int(j))
        r.append(float(rr))
  ma, mb = np.zeros(na, bool), np.zeros(nb, bool)
  ma[ia], mb[jb] = True, True
  return ma, mb, (np.array(ia, np.int64), np.array(jb, np.int64), np.array(r))


def model_stats(ctx: Context, model) -> sel.NeuronStats:
  """Selectivity statistics of one model's MLP neurons (cached in workdir/neurons)."""
  path = os.path.join(ctx.workdir, "neurons", common._safe(model.name) + f"-m{TOP_M}.npz")  # pylint: disable=protected-access
  if os.path.exists(path):
    return sel.NeuronStats.load(path, ctx.labels)
  store = ctx.stores[model.name]
  src = ConcatSource([store.site(s) for s in model.mlp_sites()])
  st = sel.neuron_stats(src, ctx.labels, top_m=TOP_M)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  st.save(path + ".tmp.npz")
  os.replace(path + ".tmp.npz", path)
  return st


def rosetta_members(ctx: Context, pair) -> np.ndarray | None:
  """[B, Na + Nb] Rosetta membership of A's then B's neurons in each bootstrap
  resample (re-matched per resample by ``match_pair``), or None for a pair cached
  before membership was kept."""
  both = load_members(os.path.join(ctx.workdir, "pairs"), ctx.rows[ctx.pairs.index(pair)])
  return None if both is None else np.concatenate(both, axis=1)


def pair_metrics(ctx: Context, pair):
  """Full-data and bootstrap metrics of A's and B's neurons pooled, the Rosetta
  mask, the per-resample Rosetta masks ([B, N]; the full-data mask repeated when
  the pair's cache predates them), and whether they were re-matched."""
  ma, mb, _ = rosetta_sets(ctx, pair)
  sa, sb = model_stats(ctx, pair.a), model_stats(ctx, pair.b)
  full = {k: np.concatenate([v, sel.metrics(sb)[k]]) for k, v in sel.metrics(sa).items()}
  ba, bb = sel.metrics(sa, ctx.weights), sel.metrics(sb, ctx.weights)
  boot = {k: np.concatenate([ba[k], bb[k]], axis=1) for k in ba}
  ros = np.concatenate([ma, mb])
  members = rosetta_members(ctx, pair)
  if members is None:
    logging.warning("%s: no per-resample Rosetta sets cached; the CIs keep the full-data "
                    "set fixed", pair.label)
    return full, boot, ros, np.broadcast_to(ros, (len(ctx.weights), len(ros))), False
  return full, boot, ros, members, True


# ----------------------------------------------------------------------------
# The study
# ----------------------------------------------------------------------------


def run_polarization(cfg: config_lib.StudyConfig, workdir: str, models: str = "zoo",
                     progress: bool = True, ctx: Context | None = None) -> dict:
  """Runs the polarization study; writes workdir/polarization/{config,results}.json, report.html."""
  t_start = time.time()
  sub = study_config(cfg, workdir, models, "polarization", {"top_m": TOP_M})
  ctx = ctx or load_context(cfg, workdir, models, progress)
  rng = np.random.default_rng(cfg.seed)
  sizes, per_size, boot_eff, plot = [], [], {m: {"d": [], "auroc": []} for m in sel.METRICS}, {}
  for pair, row in zip(ctx.pairs, ctx.rows):
    full, boot, ros, members, rematched = pair_metrics(ctx, pair)
    sizes.append(pair.size)
    entry = {"label": pair.label, "size": pair.size, "rosetta": int(ros.sum()),
             "non_rosetta": int((~ros).sum()), "rosetta_rematched": rematched, "metrics": {}}
    keep_non = np.flatnonzero(~ros)
    keep_non = rng.choice(keep_non, size=min(len(keep_non), 1500), replace=False)
    plot[pair.label] = {}
    for m in sel.METRICS:
      sign = sel.SELECTIVE_SIGN[m]
      e, eb = pol.effect_sizes(full[m], ros, sign), pol.effect_sizes(boot[m], members, sign)
      boot_eff[m]["d"].append(eb["d"])
      boot_eff[m]["auroc"].append(eb["auroc"])
      entry["metrics"][m] = {
          "median_rosetta": float(np.nanmedian(full[m][ros])) if ros.any() else float("nan"),
          "median_non": float(np.nanmedian(full[m][~ros])),
          "auroc": float(e["auroc"]), "auroc_ci": pol.ci(eb["auroc"]),
          "d": float(e["d"]), "d_ci": pol.ci(eb["d"])}
      plot[pair.label][m] = (full[m][ros], full[m][keep_non])
    per_size.append(entry)
  trends = {}
  for m in sel.METRICS:
    trends[m] = {
        eff: pol.trend(sizes, [e["metrics"][m][eff] for e in per_size],
                       np.stack(boot_eff[m][eff], axis=1))
        for eff in ("d", "auroc")}
  results = {"study": "polarization", "models": models, "sizes": sizes, "per_size": per_size,
             "trend": trends, "bootstrap": cfg.bootstrap, "documents": len(ctx.docs),
             "units": ctx.labels.num_units, "signs": sel.SELECTIVE_SIGN,
             "seconds": {**ctx.seconds, "total": time.time() - t_start}}
  common.write_json(os.path.join(sub, "results.json"), results)
  rep = Report("rosetta_jax: neuron polarization")
  add_section(rep, results, plot)
  rep.write(os.path.join(sub, "report.html"))
  logging.info("polarization: kurtosis d slope %.3f %s", trends["kurtosis"]["d"]["slope"],
               trends["kurtosis"]["d"]["ci"])
  return results


# ----------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------


def effect_figure(results: dict, eff: str = "d") -> go.Figure:
  """Oriented effect size (Rosetta more selective > 0) per metric vs size, with CIs."""
  fig = go.Figure()
  sizes = np.array(results["sizes"])
  for m in sel.METRICS:
    y = np.array([e["metrics"][m][eff] for e in results["per_size"]])
    lo = np.array([e["metrics"][m][f"{eff}_ci"][0] for e in results["per_size"]])
    hi = np.array([e["metrics"][m][f"{eff}_ci"][1] for e in results["per_size"]])
    t = results["trend"][m][eff]
    fig.add_trace(go.Scatter(
        x=sizes, y=y, mode="lines+markers",
        error_y=dict(type="data", symmetric=False, array=hi - y, arrayminus=y - lo),
        name=f"{m} (slope {t['slope']:.3f} [{t['ci'][0]:.3f}, {t['ci'][1]:.3f}])"))
  base = 0.5 if eff == "auroc" else 0.0
  fig.add_hline(y=base, line=dict(color="#999", dash="dot"))
  fig.update_layout(title=f"Polarization: {'AUROC' if eff == 'auroc' else 'Cohen d'} "
                    "(Rosetta vs non-Rosetta, oriented: > baseline = Rosetta more selective)",
                    xaxis=dict(type="log", title="total MLP neurons N"),
                    yaxis=dict(title=eff), template="plotly_white", height=480)
  return fig


def violin_figure(metric: str, plot: dict) -> go.Figure:
  """Split violins of one metric per size: Rosetta (left) vs non-Rosetta (right)."""
  fig = go.Figure()
  for i, (label, by_metric) in enumerate(plot.items()):
    ros, non = by_metric[metric]
    for vals, name, side, color in ((ros, "Rosetta", "negative", "#d62728"),
                                    (non, "non-Rosetta", "positive", "#1f77b4")):
      vals = vals[np.isfinite(vals)]
      fig.add_trace(go.Violin(x=[label] * len(vals), y=vals, side=side, name=name,
                              legendgroup=name, showlegend=i == 0, line_color=color,
                              box_visible=True, meanline_visible=True, points=False))
  fig.update_layout(title=f"{metric}: Rosetta vs non-Rosetta per size", violinmode="overlay",
                    yaxis=dict(title=metric), template="plotly_white", height=420)
  return fig


def add_section(rep: Report, results: dict, plot: dict | None = None) -> Report:
  """Adds the polarization claim (2) to a report."""
  t = results["trend"]
  fixed = [e["label"] for e in results["per_size"] if not e.get("rosetta_rematched", False)]
  membership = ("re-matched in every resample" if not fixed else
                f"fixed at the full-data match for {', '.join(fixed)}")
  rep.section("Claim 2: neuron polarization (Rosetta neurons grow more selective with size)")
  rep.text(f"Effect sizes are oriented so that positive d (AUROC > 0.5) means Rosetta "
           f"neurons are more selective; 95% CIs from {results['bootstrap']} document "
           f"resamples (metrics recomputed per resample; Rosetta sets "
           f"{membership}). "
           f"Slope of Cohen's d per e-fold of size: kurtosis {t['kurtosis']['d']['slope']:.3f} "
           f"[{t['kurtosis']['d']['ci'][0]:.3f}, {t['kurtosis']['d']['ci'][1]:.3f}].")
  rep.figure(effect_figure(results, "d"))
  rep.figure(effect_figure(results, "auroc"))
  if plot:
    for m in ("kurtosis", "dsi", "token_entropy", "explanation"):
      rep.figure(violin_figure(m, plot))
  rows = []
  for m in sel.METRICS:
    for e in results["per_size"]:
      x = e["metrics"][m]
      rows.append([m, e["label"], e["rosetta"], x["median_rosetta"], x["median_non"], x["d"],
                   f"[{x['d_ci'][0]:.3f}, {x['d_ci'][1]:.3f}]", x["auroc"],
                   f"[{x['auroc_ci'][0]:.3f}, {x['auroc_ci'][1]:.3f}]"])
  rep.table(["metric", "pair", "Rosetta", "median (Rosetta)", "median (non)", "d", "d 95% CI",
             "AUROC", "AUROC 95% CI"], rows)
  rep.table(["metric", "slope of d vs ln N", "95% CI", "slope of AUROC", "95% CI"],
            [[m, t[m]["d"]["slope"], f"[{t[m]['d']['ci'][0]:.3f}, {t[m]['d']['ci'][1]:.3f}]",
              t[m]["auroc"]["slope"],
              f"[{t[m]['auroc']['ci'][0]:.3f}, {t[m]['auroc']['ci'][1]:.3f}]"]
             for m in sel.METRICS])
  return rep
