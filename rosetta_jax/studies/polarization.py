"""The polarization study (claim 2): are Rosetta neurons more selective, more so with size?

``run(ctx, cfg)``: per pair of models, every selectivity metric of the Rosetta
neurons against the rest (``analysis.stats.effect_sizes``: Cohen's d and AUROC,
oriented so that positive means "Rosetta more selective"), with basic bootstrap
intervals in which each document resample recomputes the metrics and uses its
own re-matched Rosetta set; then the trend of each effect with log size.
Outputs go to ``workdir/polarization``.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import plotly.graph_objects as go
from absl import logging

from rosetta_jax.analysis import selectivity as sel, stats
from rosetta_jax.report.html import Report
from rosetta_jax.studies import config as config_lib
from rosetta_jax.studies import context as context_lib

NAME = "polarization"
TITLE = "rosetta_jax: neuron polarization"
OUTPUT = "polarization"
PLOT_NON_ROSETTA = 1500       # non-Rosetta neurons drawn per size for the violins


@dataclasses.dataclass(frozen=True)
class PolarizationResult:
  """Attributes:
    sizes: [S] pair sizes.
    per_size: per pair, the Rosetta / non-Rosetta counts and, per metric, medians,
      d and AUROC with their intervals.
    trend: {metric: {"d"|"auroc": stats.trend}} of the effects against ln size.
    bootstrap, documents, units: the resampling and the data.
    plot: {pair label: {metric: (Rosetta values, sampled non-Rosetta values)}}
      for the violins (not saved).
  """
  models: str
  sizes: tuple[float, ...]
  per_size: tuple[dict, ...]
  trend: dict
  bootstrap: int
  documents: int
  units: int
  seconds: dict
  plot: dict = dataclasses.field(default_factory=dict, repr=False)

  def to_json(self) -> dict:
    return {"study": NAME, "models": self.models, "sizes": list(self.sizes),
            "per_size": list(self.per_size), "trend": self.trend, "bootstrap": self.bootstrap,
            "documents": self.documents, "units": self.units, "signs": sel.SELECTIVE_SIGN,
            "seconds": self.seconds}


def pair_metrics(ctx: context_lib.Context, pair: context_lib.Pair):
  """Full-data and per-resample metrics of A's and B's neurons pooled, the Rosetta
  mask, and the per-resample Rosetta masks [B, Na + Nb]."""
  res = ctx.result(pair)
  sa, sb = ctx.neuron_stats(pair.a), ctx.neuron_stats(pair.b)
  full = {k: np.concatenate([v, sel.metrics(sb)[k]]) for k, v in sel.metrics(sa).items()}
  ba, bb = sel.metrics(sa, ctx.weights), sel.metrics(sb, ctx.weights)
  boot = {k: np.concatenate([ba[k], bb[k]], axis=1) for k in ba}
  ros = np.concatenate([res.mask_a, res.mask_b])
  members = np.concatenate([res.members_a, res.members_b], axis=1)
  return full, boot, ros, members


def run(ctx: context_lib.Context, cfg: config_lib.StudyConfig | None = None) -> PolarizationResult:
  cfg = cfg or ctx.cfg
  rng = np.random.default_rng(cfg.seed)
  sizes, per_size, plot = [], [], {}
  boot_eff = {m: {"d": [], "auroc": []} for m in sel.METRICS}
  for pair in ctx.pairs:
    full, boot, ros, members = pair_metrics(ctx, pair)
    sizes.append(pair.size)
    entry = {"label": pair.label, "size": pair.size, "rosetta": int(ros.sum()),
             "non_rosetta": int((~ros).sum()), "metrics": {}}
    keep_non = np.flatnonzero(~ros)
    keep_non = rng.choice(keep_non, size=min(len(keep_non), PLOT_NON_ROSETTA), replace=False)
    plot[pair.label] = {}
    for m in sel.METRICS:
      sign = sel.SELECTIVE_SIGN[m]
      e = stats.effect_sizes(full[m], ros, sign)
      eb = stats.effect_sizes(boot[m], members, sign)
      boot_eff[m]["d"].append(eb["d"])
      boot_eff[m]["auroc"].append(eb["auroc"])
      entry["metrics"][m] = {
          "median_rosetta": float(np.nanmedian(full[m][ros])) if ros.any() else float("nan"),
          "median_non": float(np.nanmedian(full[m][~ros])),
          "auroc": float(e["auroc"]),
          "auroc_ci": stats.interval(eb["auroc"], float(e["auroc"]), bounds=(0.0, 1.0)),
          "d": float(e["d"]), "d_ci": stats.interval(eb["d"], float(e["d"]))}
      plot[pair.label][m] = (full[m][ros], full[m][keep_non])
    per_size.append(entry)
  trends = {m: {eff: stats.trend(sizes, [e["metrics"][m][eff] for e in per_size],
                                 np.stack(boot_eff[m][eff], axis=1))
                for eff in ("d", "auroc")} for m in sel.METRICS}
  logging.info("polarization: kurtosis d slope %.3f %s", trends["kurtosis"]["d"]["slope"],
               trends["kurtosis"]["d"]["ci"])
  return PolarizationResult(models=ctx.models, sizes=tuple(sizes), per_size=tuple(per_size),
                            trend=trends, bootstrap=cfg.bootstrap, documents=len(ctx.docs),
                            units=ctx.labels.num_units, seconds=dict(ctx.seconds), plot=plot)


def _verdict(lo: float, hi: float) -> str:
  if np.isnan(lo):
    return "not measurable"
  return "yes" if lo > 0 else "no (opposite)" if hi < 0 else "inconclusive (CI spans 0)"


def claims(result: PolarizationResult) -> list[list]:
  rows = []
  for m in ("kurtosis", "hoyer", "dsi", "token_entropy", "explanation"):
    t = result.trend[m]["d"]
    lo, hi = t["ci"]
    rows.append([f"2. polarization: Cohen d of {m} (Rosetta - non) grows with size",
                 f"slope {t['slope']:.3f} per ln N", f"[{lo:.3f}, {hi:.3f}]", _verdict(lo, hi)])
  return rows


def effect_figure(result: PolarizationResult, eff: str = "d") -> go.Figure:
  """Oriented effect size (Rosetta more selective > 0) per metric vs size, with CIs."""
  fig = go.Figure()
  sizes = np.array(result.sizes)
  for m in sel.METRICS:
    y = np.array([e["metrics"][m][eff] for e in result.per_size])
    lo = np.array([e["metrics"][m][f"{eff}_ci"][0] for e in result.per_size])
    hi = np.array([e["metrics"][m][f"{eff}_ci"][1] for e in result.per_size])
    t = result.trend[m][eff]
    fig.add_trace(go.Scatter(
        x=sizes, y=y, mode="lines+markers",
        error_y=dict(type="data", symmetric=False, array=hi - y, arrayminus=y - lo),
        name=f"{m} (slope {t['slope']:.3f} [{t['ci'][0]:.3f}, {t['ci'][1]:.3f}])"))
  fig.add_hline(y=0.5 if eff == "auroc" else 0.0, line=dict(color="#999", dash="dot"))
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


def section(rep: Report, result: PolarizationResult) -> Report:
  """Adds the polarization claim (2) to a report."""
  t = result.trend
  rep.section("Claim 2: neuron polarization (Rosetta neurons grow more selective with size)")
  rep.text(f"Effect sizes are oriented so that positive d (AUROC > 0.5) means Rosetta "
           f"neurons are more selective; 95% basic bootstrap intervals from "
           f"{result.bootstrap} document resamples (metrics recomputed per resample; Rosetta "
           f"sets re-matched in every resample). "
           f"Slope of Cohen's d per e-fold of size: kurtosis {t['kurtosis']['d']['slope']:.3f} "
           f"[{t['kurtosis']['d']['ci'][0]:.3f}, {t['kurtosis']['d']['ci'][1]:.3f}].")
  rep.figure(effect_figure(result, "d"))
  rep.figure(effect_figure(result, "auroc"))
  if result.plot:
    for m in ("kurtosis", "dsi", "token_entropy", "explanation"):
      rep.figure(violin_figure(m, result.plot))
  rows = []
  for m in sel.METRICS:
    for e in result.per_size:
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
