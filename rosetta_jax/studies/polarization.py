"""The polarization study (claim 2): are Rosetta neurons more selective, more so with size?

``run(ctx, cfg)``: per pair of models, every selectivity metric of the Rosetta
neurons against the rest (``analysis.stats.effect_sizes``: Cohen's d and AUROC,
oriented so that positive means "Rosetta more selective"), with basic bootstrap
intervals in which each document resample recomputes the metrics and uses its
own re-matched Rosetta set; then the trend of each effect with log size.
Cliff's delta (``stats.cliffs_delta``, 2 AUROC - 1) is reported beside them.

The same effects are measured against a matched control
(``analysis.controls.matched_control``): for each model of the pair, as many
non-Rosetta neurons as it has Rosetta ones, in the same layers (exactly) and
with the same distribution of activation frequency (``frequency`` of
``selectivity.metrics``, quantile bins within each layer), drawn with the seed
``cfg.seed``. Every document resample draws its own control for its own
re-matched Rosetta set, with the resample's frequencies (seed (cfg.seed,
resample, side)), so the intervals carry the control's sampling too. A layer
with fewer non-Rosetta neurons than Rosetta ones is filled with replacement
(``on_short="replace"``; a layer with none gets no control) and counted in the
balance report rather than stopping the study. The per-size balance (per-layer counts, KS and max quantile gap of
frequency) is saved with the effects; ``trend_control`` fits each effect
against the control with log size.

The second control is the set of neurons the dataset-permutation null pairs up
(``analysis.controls.null_control``: both models' neurons in a mutual pair of
the first null permutation, under the criterion's own k and before its r floor,
which removes nearly all of them by construction): what selecting mutual
nearest neighbours by r picks when the two models share nothing. It is one fixed
set per pair, so its intervals carry the resampled metrics and Rosetta sets but
not the null's own sampling; ``trend_null`` fits each effect against it with log
size, and the claim rows state the verdict against both controls (the trend of
Cohen's d against all other neurons stays as a descriptive row).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import plotly.graph_objects as go
from absl import logging

from rosetta_jax.analysis import controls, selectivity as sel, stats
from rosetta_jax.report.html import Report
from rosetta_jax.studies import config as config_lib
from rosetta_jax.studies import context as context_lib
from rosetta_jax import pairs as pairs_lib

NAME = "polarization"
TITLE = "rosetta_jax: neuron polarization"
OUTPUT = "polarization"
PLOT_NON_ROSETTA = 1500       # non-Rosetta neurons drawn per size for the violins
CONTROL_BINS = 10             # frequency quantile bins per layer of the matched control
EFFECTS = ("d", "auroc", "delta")
# Weight-based metrics (``analysis.vocab``: each MLP neuron's output weights through
# the final norm's scale and the unembedding): excess kurtosis and skew of its
# logits over the vocabulary; larger = more peaked / more promoting.
VOCAB_SIGN = {"vocab_kurtosis": 1, "vocab_skew": 1}


def vocab_metrics(ctx, pair: pairs_lib.Pair) -> dict[str, np.ndarray] | None:
  """{"vocab_kurtosis", "vocab_skew"}: [Na + Nb] of the pair's pooled neurons, from
  ``ctx.vocab`` (the explorer's promotes/suppresses projection); None where a model
  has none (an encoder, or a family without a readout)."""
  get = getattr(ctx, "vocab", None)
  res = ctx.result(pair)
  proj = [get(m) if get is not None else None for m in (pair.a, pair.b)]
  if any(p is None for p in proj):
    return None
  sites = (res.sites_a, res.sites_b)
  return {f"vocab_{k}": np.concatenate([np.asarray(getattr(p[s], k), np.float64)
                                        for p, ss in zip(proj, sites) for s in ss])
          for k in ("kurtosis", "skew")}


def metric_names(ctx) -> tuple[str, ...]:
  """The activation metrics, and the vocabulary metrics when every pair has them."""
  vocab = all(vocab_metrics(ctx, p) is not None for p in ctx.pairs)
  return tuple(sel.METRICS) + (tuple(VOCAB_SIGN) if vocab else ())


@dataclasses.dataclass(frozen=True)
class PolarizationResult:
  """Attributes:
    sizes: [S] pair sizes.
    per_size: per pair, the Rosetta / non-Rosetta counts and, per metric, medians,
      d, AUROC and Cliff's delta with their intervals; under "matched_control" the
      same effects against the matched control, and its balance per model; under
      "null_control" against the null-paired neurons (count, overlap with the
      Rosetta set, balance).
    trend: {metric: {"d"|"auroc": stats.trend}} of the effects against ln size.
    trend_control: {metric: {"d"|"auroc"|"delta": stats.trend}} of the effects
      against the matched control.
    trend_null: the same against the neurons the permutation null pairs up.
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
  trend_control: dict = dataclasses.field(default_factory=dict)
  trend_null: dict = dataclasses.field(default_factory=dict)
  plot: dict = dataclasses.field(default_factory=dict, repr=False)

  def to_json(self) -> dict:
    return {"study": NAME, "models": self.models, "sizes": list(self.sizes),
            "per_size": list(self.per_size), "trend": self.trend,
            "trend_control": self.trend_control, "trend_null": self.trend_null,
            "bootstrap": self.bootstrap,
            "documents": self.documents, "units": self.units, "signs": {**sel.SELECTIVE_SIGN, **VOCAB_SIGN},
            "seconds": self.seconds}


def pair_metrics(ctx: context_lib.Context, pair: pairs_lib.Pair):
  """Full-data and per-resample metrics of A's and B's neurons pooled, the Rosetta
  mask, and the per-resample Rosetta masks [B, Na + Nb]."""
  res = ctx.result(pair)
  sa, sb = ctx.neuron_stats(pair.a), ctx.neuron_stats(pair.b)
  full = {k: np.concatenate([v, sel.metrics(sb)[k]]) for k, v in sel.metrics(sa).items()}
  ba, bb = sel.metrics(sa, ctx.weights), sel.metrics(sb, ctx.weights)
  boot = {k: np.concatenate([ba[k], bb[k]], axis=1) for k in ba}
  ros = np.concatenate([res.mask_a, res.mask_b])
  members = np.concatenate([res.members_a, res.members_b], axis=1)
  # Weight metrics do not change with the documents: every resample sees the same
  # values (its own Rosetta set and control still vary).
  for k, v in (vocab_metrics(ctx, pair) or {}).items():
    full[k], boot[k] = v, np.broadcast_to(v, members.shape)
  return full, boot, ros, members


def pair_controls(res: pairs_lib.PairResult, frequency, boot_frequency, ros, members,
                  seed: int):
  """Matched controls of a pair's pooled Rosetta sets (A's neurons, then B's).

  Args:
    res: the pair's result (sizes and site offsets of both models).
    frequency: [Na + Nb] full-data activation frequency.
    boot_frequency: [B, Na + Nb] per resample.
    ros: [Na + Nb] full-data Rosetta mask; members: [B, Na + Nb] per resample.
    seed: the study's seed.

  Returns:
    (control indices into the pooled neurons, [B] per-resample control indices,
    {"a", "b"}: ``controls.Balance`` of the full-data control per model,
    {"replaced", "unmatched"}: control neurons drawn with replacement and Rosetta
    neurons left without a control, summed over all resamples).
  """
  draw = lambda freq, mask, key: controls.pair_matched_control(
      res.offsets_a, res.offsets_b, np.asarray(freq), np.asarray(mask, bool), key,
      bins=CONTROL_BINS, on_short="replace")
  full, bal = draw(frequency, ros, (seed,))
  boot, short = [], {"replaced": 0, "unmatched": 0}
  for b in range(len(members)):
    idx, bb = draw(boot_frequency[b], members[b], (seed, b))
    boot.append(idx)
    for k in short:
      short[k] += sum(getattr(x, k) for x in bb)
  return full, boot, {"a": bal[0], "b": bal[1]}, short


_against = controls.versus
_effects = controls.effects


def _vs(full, boot, ros, members, ctrl, ctrl_b, sign, sink) -> dict:
  """One metric against one control: median, effects with intervals; appends the
  per-resample effects to ``sink`` ({"auroc", "d", "delta"} lists)."""
  a_c, d_c = _against(full, ros, ctrl, sign)
  per_b = np.array([_against(boot[b], members[b], ctrl_b[b], sign)
                    for b in range(len(members))]).reshape(-1, 2)
  sink["auroc"].append(per_b[:, 0])
  sink["d"].append(per_b[:, 1])
  sink["delta"].append(2 * per_b[:, 0] - 1)
  med = float(np.nanmedian(full[ctrl])) if len(ctrl) else float("nan")
  return {"median_control": med, **_effects(a_c, d_c, per_b[:, 0], per_b[:, 1])}


def run(ctx: context_lib.Context, cfg: config_lib.StudyConfig | None = None) -> PolarizationResult:
  cfg = cfg or ctx.cfg
  rng = np.random.default_rng(cfg.seed)
  sizes, per_size, plot = [], [], {}
  names = metric_names(ctx)
  signs = {**sel.SELECTIVE_SIGN, **VOCAB_SIGN}
  boot_eff = {m: {"d": [], "auroc": []} for m in names}
  boot_ctrl = {m: {e: [] for e in EFFECTS} for m in names}
  boot_null = {m: {e: [] for e in EFFECTS} for m in names}
  for pair in ctx.pairs:
    res = ctx.result(pair)
    full, boot, ros, members = pair_metrics(ctx, pair)
    ctrl, ctrl_b, bal, short = pair_controls(res, full["frequency"], boot["frequency"], ros,
                                             members, cfg.seed)
    # The null's pairs are one fixed set (the first permutation on the full data):
    # its intervals carry the resampled metrics and Rosetta sets, not the null's
    # own sampling.
    null = controls.null_control(res)
    vs_ctrl, vs_null = {}, {}
    sizes.append(pair.size)
    entry = {"label": pair.label, "size": pair.size, "rosetta": int(ros.sum()),
             "non_rosetta": int((~ros).sum()), "metrics": {}}
    keep_non = np.flatnonzero(~ros)
    keep_non = rng.choice(keep_non, size=min(len(keep_non), PLOT_NON_ROSETTA), replace=False)
    plot[pair.label] = {}
    for m in names:
      sign = signs[m]
      e = stats.effect_sizes(full[m], ros, sign)
      eb = stats.effect_sizes(boot[m], members, sign)
      boot_eff[m]["d"].append(eb["d"])
      boot_eff[m]["auroc"].append(eb["auroc"])
      entry["metrics"][m] = {
          "median_rosetta": float(np.nanmedian(full[m][ros])) if ros.any() else float("nan"),
          "median_non": float(np.nanmedian(full[m][~ros])),
          **_effects(float(e["auroc"]), float(e["d"]), eb["auroc"], eb["d"])}
      vs_ctrl[m] = _vs(full[m], boot[m], ros, members, ctrl, ctrl_b, sign, boot_ctrl[m])
      vs_null[m] = _vs(full[m], boot[m], ros, members, null, [null] * len(members), sign,
                       boot_null[m])
      plot[pair.label][m] = (full[m][ros], full[m][keep_non])
    entry["matched_control"] = {
        "count": int(len(ctrl)), "bins": CONTROL_BINS, "seed": cfg.seed,
        "balance": {k: v.to_dict() for k, v in bal.items()},
        "boot_replaced": int(short["replaced"]), "boot_unmatched": int(short["unmatched"]),
        "metrics": vs_ctrl}
    entry["null_control"] = {
        "count": int(len(null)), "pairs": int(len(res.null_idx_a)),
        "overlap_rosetta": int(ros[null].sum()),
        "balance": {side: controls.balance(
            controls.site_index(off), full["frequency"][lo:hi], np.flatnonzero(ros[lo:hi]),
            null[(null >= lo) & (null < hi)] - lo).to_dict()
            for side, lo, hi, off in (("a", 0, res.neurons_a, res.offsets_a),
                                      ("b", res.neurons_a, len(ros), res.offsets_b))},
        "metrics": vs_null}
    per_size.append(entry)
  trends = {m: {eff: stats.trend(sizes, [e["metrics"][m][eff] for e in per_size],
                                 np.stack(boot_eff[m][eff], axis=1))
                for eff in ("d", "auroc")} for m in names}

  def against(key, boots):
    return {m: {eff: stats.trend(sizes, [e[key]["metrics"][m][eff] for e in per_size],
                                 np.stack(boots[m][eff], axis=1)) for eff in EFFECTS}
            for m in names}
  logging.info("polarization: kurtosis d slope %.3f %s", trends["kurtosis"]["d"]["slope"],
               trends["kurtosis"]["d"]["ci"])
  return PolarizationResult(models=ctx.models, sizes=tuple(sizes), per_size=tuple(per_size),
                            trend=trends, bootstrap=cfg.bootstrap, documents=len(ctx.docs),
                            units=ctx.labels.num_units, seconds=dict(ctx.seconds),
                            trend_control=against("matched_control", boot_ctrl),
                            trend_null=against("null_control", boot_null), plot=plot)


def _verdict(lo: float, hi: float) -> str:
  if np.isnan(lo):
    return "not measurable"
  return "yes" if lo > 0 else "no (opposite)" if hi < 0 else "inconclusive (CI spans 0)"


CONTROLS = (("matched_control", "trend_control", "matched control"),
            ("null_control", "trend_null", "null-paired neurons"))


def claims(result: PolarizationResult) -> list[list]:
  """Claim rows: the trend of Cliff's delta against each control (the verdict),
  then Cohen's d against all other neurons (descriptive, as the paper states it)."""
  rows = []
  for m in ("kurtosis", "hoyer", "dsi", "token_entropy", "explanation", "vocab_kurtosis"):
    for _, key, name in CONTROLS:
      trends = getattr(result, key)
      if m not in trends:
        continue
      t = trends[m]["delta"]
      lo, hi = t["ci"]
      rows.append([f"2. polarization: Cliff's delta of {m} (Rosetta - {name}) grows with size",
                   f"slope {t['slope']:.3f} per ln N", f"[{lo:.3f}, {hi:.3f}]",
                   _verdict(lo, hi)])
  for m in ("kurtosis", "hoyer", "dsi", "token_entropy", "explanation"):
    t = result.trend[m]["d"]
    lo, hi = t["ci"]
    rows.append([f"2. polarization (descriptive, against all other neurons): Cohen d of {m} "
                 "grows with size", f"slope {t['slope']:.3f} per ln N",
                 f"[{lo:.3f}, {hi:.3f}]", _verdict(lo, hi)])
  return rows


def effect_figure(result: PolarizationResult, eff: str = "d") -> go.Figure:
  """Oriented effect size (Rosetta more selective > 0) per metric vs size, with CIs."""
  fig = go.Figure()
  sizes = np.array(result.sizes)
  for m in result.trend:
    y = np.array([e["metrics"][m][eff] for e in result.per_size])
    lo = np.array([e["metrics"][m][f"{eff}_ci"][0] for e in result.per_size])
    hi = np.array([e["metrics"][m][f"{eff}_ci"][1] for e in result.per_size])
    _effect_trace(fig, sizes, y, lo, hi, m, result.trend[m][eff])
  fig.add_hline(y=0.5 if eff == "auroc" else 0.0, line=dict(color="#999", dash="dot"))
  fig.update_layout(title=f"Polarization: {'AUROC' if eff == 'auroc' else 'Cohen d'} "
                    "(Rosetta vs non-Rosetta, oriented: > baseline = Rosetta more selective)",
                    xaxis=dict(type="log", title="total MLP neurons N"),
                    yaxis=dict(title=eff), template="plotly_white", height=480)
  return fig


def _effect_trace(fig, sizes, y, lo, hi, metric: str, trend: dict) -> None:
  """One metric's effect vs size with its interval, its trend slope in the legend."""
  fig.add_trace(go.Scatter(
      x=sizes, y=y, mode="lines+markers",
      error_y=dict(type="data", symmetric=False, array=hi - y, arrayminus=y - lo),
      name=f"{metric} (slope {trend['slope']:.3f} [{trend['ci'][0]:.3f}, "
           f"{trend['ci'][1]:.3f}])"))


def control_figure(result: PolarizationResult, eff: str = "delta",
                   control: str = "matched_control") -> go.Figure:
  """Oriented effect of the Rosetta set against one control, per metric vs size."""
  fig = go.Figure()
  sizes = np.array(result.sizes)
  key, label = next((k, n) for c, k, n in CONTROLS if c == control)
  for m in result.trend:
    x = [e[control]["metrics"][m] for e in result.per_size]
    y = np.array([v[eff] for v in x])
    lo = np.array([v[f"{eff}_ci"][0] for v in x])
    hi = np.array([v[f"{eff}_ci"][1] for v in x])
    _effect_trace(fig, sizes, y, lo, hi, m, getattr(result, key)[m][eff])
  fig.add_hline(y=0.5 if eff == "auroc" else 0.0, line=dict(color="#999", dash="dot"))
  names = {"auroc": "AUROC", "delta": "Cliff's delta", "d": "Cohen d"}
  fig.update_layout(title=f"Polarization against the {label}: "
                    f"{names[eff]} (oriented: > baseline = Rosetta more selective)",
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
  for m in result.trend:
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
             for m in result.trend])
  if result.trend_control:
    _control_section(rep, result)
  return rep


def _control_section(rep: Report, result: PolarizationResult) -> None:
  """The comparison against both controls: effects, balance and trends."""
  tc, tn = result.trend_control, result.trend_null
  k, kn = tc["kurtosis"]["delta"], tn["kurtosis"]["delta"] if tn else None
  rep.text(f"Against the matched control: for each model, as many non-Rosetta neurons as "
           f"Rosetta ones, in the same layers and matched on activation frequency "
           f"({CONTROL_BINS} quantile bins per layer), redrawn in every resample for that "
           f"resample's Rosetta set. Frequency is matched by construction, so its effect "
           f"against the control is near zero. Slope of Cliff's delta per e-fold of size: "
           f"kurtosis {k['slope']:.3f} [{k['ci'][0]:.3f}, {k['ci'][1]:.3f}].")
  rep.figure(control_figure(result, "delta"))
  rows = []
  for e in result.per_size:
    c = e["matched_control"]
    for side in ("a", "b"):
      b = c["balance"][side]
      rows.append([e["label"], side, sum(v[0] for v in b["per_layer"].values()),
                   b["layers_equal"], b["ks"], b["max_quantile_gap"], b["spilled"],
                   b["replaced"], b["unmatched"]])
  rep.table(["pair", "model", "Rosetta", "layer counts equal", "KS of frequency",
             "max quantile gap", "spilled", "replaced", "unmatched"], rows)
  if tn:
    rep.text(f"Against the null-paired neurons: the neurons in a mutual pair of the first "
             f"dataset-permutation null (the criterion's k, before its r floor): what "
             f"selecting mutual nearest neighbours by r picks when nothing is shared. One "
             f"fixed set per pair; the intervals resample the metrics and the Rosetta sets. "
             f"Slope of Cliff's delta per e-fold of size: kurtosis {kn['slope']:.3f} "
             f"[{kn['ci'][0]:.3f}, {kn['ci'][1]:.3f}].")
    rep.figure(control_figure(result, "delta", "null_control"))
    rows = []
    for e in result.per_size:
      c = e["null_control"]
      rows.append([e["label"], c["pairs"], c["count"], c["overlap_rosetta"],
                   c["balance"]["a"]["ks"], c["balance"]["b"]["ks"]])
    rep.table(["pair", "null pairs", "null-paired neurons", "of them Rosetta",
               "KS of frequency vs Rosetta (A)", "(B)"], rows)
  rows = []
  for m in result.trend:
    for e in result.per_size:
      x, c = e["metrics"][m], e["matched_control"]["metrics"][m]
      n = e.get("null_control", {}).get("metrics", {}).get(m)
      rows.append([m, e["label"], x["median_rosetta"], c["median_control"], c["delta"],
                   f"[{c['delta_ci'][0]:.3f}, {c['delta_ci'][1]:.3f}]", c["d"],
                   n["median_control"] if n else float("nan"),
                   n["delta"] if n else float("nan"),
                   f"[{n['delta_ci'][0]:.3f}, {n['delta_ci'][1]:.3f}]" if n else "",
                   n["d"] if n else float("nan"),
                   x["delta"], f"[{x['delta_ci'][0]:.3f}, {x['delta_ci'][1]:.3f}]"])
  rep.table(["metric", "pair", "median (Rosetta)", "median (matched)", "delta vs matched",
             "95% CI", "d vs matched", "median (null-paired)", "delta vs null-paired",
             "95% CI", "d vs null-paired", "delta vs rest", "95% CI"], rows)
  rows = []
  for m in result.trend:
    for name, t in (("matched", tc), ("null-paired", tn)):
      if m in t:
        rows.append([m, name, t[m]["delta"]["slope"],
                     f"[{t[m]['delta']['ci'][0]:.3f}, {t[m]['delta']['ci'][1]:.3f}]",
                     t[m]["auroc"]["slope"],
                     f"[{t[m]['auroc']['ci'][0]:.3f}, {t[m]['auroc']['ci'][1]:.3f}]",
                     t[m]["d"]["slope"], f"[{t[m]['d']['ci'][0]:.3f}, {t[m]['d']['ci'][1]:.3f}]"])
  rep.table(["metric", "control", "slope of delta vs control, per ln N", "95% CI",
             "slope of AUROC", "95% CI", "slope of d", "95% CI"], rows)
