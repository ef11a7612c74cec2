"""Domains and depth (claim 3): do Rosetta neurons specialise in domains with size, and where are they?

``run(ctx, cfg)`` works on the pipeline's context (``studies/context.py``) and
its outputs go to ``workdir/domains/{results.json,report.html}``.

Per size, each neuron's preferred domain is the argmax of its domain means, and
the share of a set of neurons preferring each domain (and code + math, the
*specialised* share) is compared between the Rosetta set and two controls:

- the matched control (``analysis.controls.pair_matched_control``): per model,
  as many non-Rosetta neurons as Rosetta ones, in the same layers and matched on
  activation frequency (10 quantile bins per layer), redrawn for every
  resample's Rosetta set (seed (cfg.seed, resample, side));
- the null-paired neurons (``analysis.controls.null_control``): the neurons in
  a mutual pair of the first dataset-permutation null (the criterion's k, before
  its r floor), what selection by r picks when the models share nothing.

Two arms. **In sample**: the Rosetta set and the preferred domains both from
every document (as the paper measures them). **Held out** (the verdict): the
documents are split deterministically into a selection half,
``pairs.budget_documents(D, 0.5, cfg.seed)`` (the first ceil(D / 2) documents
of the seeded order the unit-budget curve uses, so the pair result is the
scaling study's own 0.5 budget, cached), and the rest. The Rosetta set, its
resamples, the null's pairs and the frequencies the control is matched on come
from the selection half only (``match_pair(ctx, pair, budget=0.5)``); the
preferred domains and DSI from the other half only. Resamples: the selection
half's own document bootstrap for the Rosetta sets, and an independent bootstrap
of the estimation half (seed [cfg.seed, 5]) for the preferred domains.

Intervals are 95% basic bootstrap intervals; the trend with log size is fitted on
the specialised share's difference from each control, and DSI (the domain
selectivity index) is compared with each control by AUROC, Cliff's delta and
Cohen's d. Also: Rosetta density per relative depth and a gallery of the top
Rosetta neurons with their top-activating text, highlighted.
"""

from __future__ import annotations

import dataclasses
import html

import numpy as np
import plotly.graph_objects as go

from rosetta_jax import pairs as pairs_lib
from rosetta_jax.analysis import bootstrap, controls, depth as depth_lib
from rosetta_jax.analysis import domains as dom_lib, stats
from rosetta_jax.analysis import selectivity as sel
from rosetta_jax.report import figures
from rosetta_jax.report.html import Report
from rosetta_jax.studies import config as config_lib
from rosetta_jax.studies import context as context_lib

NAME = "domains"
TITLE = "rosetta_jax: domain specialisation and depth"
OUTPUT = "domains"
SPECIALISED = ("code", "math")
GALLERY_NEURONS = 6
GALLERY_SNIPPETS = 5
SELECTION = 0.5        # share of the documents the held-out arm selects neurons on
CONTROL_BINS = 10
ARMS = ("in_sample", "held_out")
SETS = ("rosetta", "matched", "null")


@dataclasses.dataclass(frozen=True)
class DomainsResult:
  """Attributes:
    domains: the corpus's domain names.
    sizes: [S] pair sizes.
    per_size: per pair and arm ("in_sample", "held_out"), for the Rosetta set and
      both controls ("matched", "null"): counts, preferred-domain shares and the
      specialised share with intervals, the specialised difference from each
      control and DSI effects against each control.
    trend: {arm: {"rosetta", "matched", "null", "minus_matched", "minus_null"}:
      stats.trend} of the specialised share (or difference) against ln size.
    depth: per pair, Rosetta density per relative depth and its slope.
    gallery: the largest pair's top Rosetta neurons with their top-activating text.
    split: the held-out arm's documents (selection and estimation counts, rule).
  """
  models: str
  domains: tuple[str, ...]
  sizes: tuple[float, ...]
  per_size: tuple[dict, ...]
  trend: dict
  depth: dict
  gallery: tuple[dict, ...]
  bootstrap: int
  seconds: dict
  split: dict = dataclasses.field(default_factory=dict)

  def to_json(self) -> dict:
    return {"study": NAME, "models": self.models, "domains": list(self.domains),
            "specialised": list(SPECIALISED), "sizes": list(self.sizes),
            "per_size": list(self.per_size), "trend": self.trend, "depth": self.depth,
            "gallery": list(self.gallery), "bootstrap": self.bootstrap,
            "split": self.split, "seconds": self.seconds}


def split_documents(num_docs: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """(selection documents, estimation documents): disjoint, sorted, covering all.
  The selection half is the unit budget's ``pairs.budget_documents(D, 0.5, seed)``."""
  select = pairs_lib.budget_documents(num_docs, SELECTION, seed)
  return select, np.setdiff1d(np.arange(num_docs), select)


def _selection_result(ctx, pair) -> pairs_lib.PairResult:
  """The pair matched on the selection half only (the cached 0.5 unit budget)."""
  return pairs_lib.match_pair(ctx, pair, budget=SELECTION)


def _share_ci(boot, full) -> list[float]:
  return stats.interval(boot, float(full), bounds=(0.0, 1.0))


def _arm(names, spec, pref, pref_b, dsi, dsi_b, ros, members, ctrl, ctrl_b, null) -> dict:
  """One arm of one pair: shares of the Rosetta set and both controls, with the
  per-resample specialised shares under "_boot" (removed before saving).

  Args:
    pref, dsi: [N] preferred domain and DSI of the pooled neurons; pref_b, dsi_b [B, N].
    ros: [N] Rosetta (non-constant); members: [B, N] per resample.
    ctrl, ctrl_b: matched control indices, full data and per resample; null: indices.
  """
  k = len(names)
  sets = {"rosetta": (pref[ros], [np.where(members[b], pref_b[b], -1)
                                  for b in range(len(members))]),
          "matched": (pref[ctrl], [pref_b[b][ctrl_b[b]] for b in range(len(members))]),
          "null": (pref[null], [pref_b[b][null] for b in range(len(members))])}
  out, boot = {}, {}
  for name, (full, per_b) in sets.items():
    share = dom_lib.domain_shares(full, k)
    sb = np.stack([dom_lib.domain_shares(x, k) for x in per_b]) if per_b else np.zeros((0, k))
    boot[name] = sb[:, spec].sum(1)
    out[name] = {"count": int(np.sum(full >= 0)),
                 "share": dict(zip(names, share.tolist())),
                 "share_ci": {n: _share_ci(sb[:, i], share[i]) for i, n in enumerate(names)},
                 "specialised": float(share[spec].sum()),
                 "specialised_ci": _share_ci(boot[name], share[spec].sum())}
  for c in ("matched", "null"):
    diff = out["rosetta"]["specialised"] - out[c]["specialised"]
    out[f"minus_{c}"] = {"specialised": diff,
                         "specialised_ci": stats.interval(boot["rosetta"] - boot[c], diff,
                                                          bounds=(-1.0, 1.0))}
    boot[f"minus_{c}"] = boot["rosetta"] - boot[c]
    cb = ctrl_b if c == "matched" else [null] * len(members)
    a, d = controls.versus(dsi, ros, ctrl if c == "matched" else null)
    per = np.array([controls.versus(dsi_b[b], members[b], cb[b])
                    for b in range(len(members))]).reshape(-1, 2)
    out[f"dsi_vs_{c}"] = controls.effects(a, d, per[:, 0], per[:, 1])
  out["_boot"] = boot
  return out


def _controls(res, freq, ros, members, seed):
  """Matched control (full and per resample) and null-paired neurons of a pair."""
  draw = lambda mask, key: controls.pair_matched_control(
      res.offsets_a, res.offsets_b, freq, mask, key, bins=CONTROL_BINS, on_short="replace")[0]
  return (draw(ros, (seed,)), [draw(members[b], (seed, b)) for b in range(len(members))],
          controls.null_control(res))


def run(ctx: context_lib.Context, cfg: config_lib.StudyConfig | None = None) -> DomainsResult:
  """Preferred-domain shares against both controls, in sample and on held-out
  documents, their trends with size, depth profiles and a gallery."""
  cfg = cfg or ctx.cfg
  names = list(ctx.labels.domains)
  spec = np.isin(names, SPECIALISED)
  per_size, boots, depth, split = [], {a: [] for a in ARMS}, {}, {}
  for pair in ctx.pairs:
    res, res_s = ctx.result(pair), _selection_result(ctx, pair)
    stats_ = [ctx.neuron_stats(m) for m in (pair.a, pair.b)]
    num_docs = len(stats_[0].n)
    select, estimate = split_documents(num_docs, cfg.seed)
    w_sel, w_est = np.zeros(num_docs), np.zeros(num_docs)
    w_sel[select], w_est[estimate] = 1.0, 1.0
    w_est_b = np.zeros((len(ctx.weights), num_docs))
    w_est_b[:, estimate] = bootstrap.bootstrap_weights(len(estimate), len(ctx.weights),
                                                       [cfg.seed, 5])
    split = {"documents": num_docs, "selection": len(select), "estimation": len(estimate),
             "rule": f"pairs.budget_documents(D, {SELECTION}, seed={cfg.seed})"}

    def pooled(weights):
      """Both models' metrics under document weights ([N] for None, else [B, N])."""
      m = [sel.metrics(st, weights) for st in stats_]
      return {k: np.concatenate([m[0][k], m[1][k]], axis=-1)
              for k in ("preferred_domain", "dsi", "frequency")}
    constant = np.concatenate([st.constant for st in stats_])
    full, boot = pooled(None), pooled(ctx.weights)
    est, est_b = pooled(w_est[None]), pooled(w_est_b)
    freq_sel = pooled(w_sel[None])["frequency"][0]
    entry = {"label": pair.label, "size": pair.size}
    for arm, r, p, pb in (("in_sample", res, full, boot), ("held_out", res_s, est, est_b)):
      ros = np.concatenate([r.mask_a, r.mask_b]) & ~constant
      members = np.concatenate([r.members_a, r.members_b], axis=1) & ~constant
      freq = full["frequency"] if arm == "in_sample" else freq_sel
      ctrl, ctrl_b, null = _controls(r, freq, ros, members, cfg.seed)
      e = _arm(names, spec, p["preferred_domain"].reshape(-1), pb["preferred_domain"],
               p["dsi"].reshape(-1), pb["dsi"], ros, members, ctrl, ctrl_b, null)
      boots[arm].append(e.pop("_boot"))
      entry[arm] = e
    entry["rosetta"] = entry["in_sample"]["rosetta"]["count"]
    entry["controls"] = entry["in_sample"]["matched"]["count"]
    layer_a, npl_a = controls.site_index(res.offsets_a), np.diff(res.offsets_a)
    layer_b, npl_b = controls.site_index(res.offsets_b), np.diff(res.offsets_b)
    x, da = depth_lib.depth_density(layer_a[res.mask_a], npl_a)
    _, db = depth_lib.depth_density(layer_b[res.mask_b], npl_b)
    dens = (da + db) / 2
    depth[pair.label] = {"depth": x.tolist(), "density": dens.tolist(),
                         "slope": depth_lib.depth_slope(x, dens)}
    per_size.append(entry)
  sizes = [e["size"] for e in per_size]
  trends = {arm: {k: stats.trend(sizes, [e[arm][k]["specialised"] for e in per_size],
                                 np.stack([b[k] for b in boots[arm]], 1))
                  for k in ("rosetta", "matched", "null", "minus_matched", "minus_null")}
            for arm in ARMS}
  return DomainsResult(models=ctx.models, domains=tuple(names), sizes=tuple(sizes),
                       per_size=tuple(per_size), trend=trends, depth=depth,
                       gallery=tuple(make_gallery(ctx, ctx.pairs[-1])),
                       bootstrap=cfg.bootstrap, seconds=dict(ctx.seconds), split=split)


CONTROL_NAMES = {"matched": "matched control", "null": "null-paired neurons"}
ARM_NAMES = {"in_sample": "in sample", "held_out": "preferred domain on held-out documents"}


def _verdict(lo: float, hi: float) -> str:
  return ("not measurable" if np.isnan(lo) else "yes" if lo > 0 else
          "no (opposite)" if hi < 0 else "inconclusive (CI spans 0)")


def claims(result: DomainsResult) -> list[list]:
  """The held-out arm against each control (the verdict), then the in-sample arm
  against the matched control (as the paper measures it)."""
  rows = []
  for arm, c in (("held_out", "matched"), ("held_out", "null"), ("in_sample", "matched")):
    t = result.trend[arm][f"minus_{c}"]
    lo, hi = t["ci"]
    rows.append([f"3. Rosetta neurons specialise with size (code+math share minus the "
                 f"{CONTROL_NAMES[c]}; {ARM_NAMES[arm]})",
                 f"slope {t['slope']:.3f} per ln N", f"[{lo:.3f}, {hi:.3f}]", _verdict(lo, hi)])
  return rows


def make_gallery(ctx: context_lib.Context, pair) -> list[dict]:
  """The top Rosetta pairs (by r) of a pair of models, with A's top-activating snippets."""
  res = ctx.result(pair)
  ia, r = res.idx_a, res.r
  st = ctx.neuron_stats(pair.a)
  full = sel.metrics(st)
  order = np.argsort(-r, kind="stable")[:GALLERY_NEURONS]
  top = ia[order]
  layer, npl = controls.site_index(res.offsets_a), np.diff(res.offsets_a)
  texts = {d.doc_id: d.text for d in ctx.docs}
  doc_ids = ctx.stores[pair.a.name].documents["doc_ids"]
  out = []
  for n, ri in zip(top, order):
    snippets = []
    for u in st.top_units[n][:GALLERY_SNIPPETS]:
      if u < 0:
        continue
      d = int(ctx.labels.doc_index[u])
      snippets.append({"html": dom_lib.snippet_html(texts[doc_ids[d]], ctx.spans[u]),
                       "activation": float(st.top_values[n][list(st.top_units[n]).index(u)]),
                       "domain": ctx.labels.domains[ctx.labels.doc_domain[d]]})
    out.append({"model": pair.a.name, "site": pair.a.mlp_sites()[layer[n]],
                "neuron": int(n - np.cumsum([0] + list(npl))[layer[n]]), "r": float(r[ri]),
                "dsi": float(full["dsi"][n]),
                "preferred_domain": ctx.labels.domains[int(full["preferred_domain"][n])],
                "snippets": snippets})
  return out


def _ci(x) -> str:
  return f"[{x[0]:.3f}, {x[1]:.3f}]"


def section(rep: Report, result: DomainsResult) -> Report:
  """Adds the domains (claim 3) and depth sections to a report."""
  results = result.to_json()
  names, t = results["domains"], results["trend"]
  spec = "+".join(results["specialised"])
  rep.section("Claim 3: Rosetta neurons specialise in domains with size")
  th = t["held_out"]
  sp = results["split"]
  rep.text(f"Share of neurons preferring {spec}, Rosetta against two controls: non-Rosetta "
           f"neurons matched on layer and activation frequency, and the neurons the "
           f"permutation null pairs up. Held out (the verdict): Rosetta sets, null pairs and "
           f"matching frequencies from {sp.get('selection')} of {sp.get('documents')} "
           f"documents ({sp.get('rule')}), preferred domains from the other "
           f"{sp.get('estimation')}. Slope per e-fold of size of the Rosetta share minus the "
           f"matched control's: {th['minus_matched']['slope']:.3f} "
           f"{_ci(th['minus_matched']['ci'])}; minus the null-paired neurons': "
           f"{th['minus_null']['slope']:.3f} {_ci(th['minus_null']['ci'])} (95% basic "
           f"bootstrap intervals, {results['bootstrap']} resamples).")
  for arm in ARMS:
    fig = go.Figure()
    sizes = np.array(results["sizes"])
    for kind, dash in (("rosetta", "solid"), ("matched", "dot"), ("null", "dash")):
      y = np.array([e[arm][kind]["specialised"] for e in results["per_size"]])
      ci = np.array([e[arm][kind]["specialised_ci"] for e in results["per_size"]])
      fig.add_trace(go.Scatter(x=sizes, y=y, mode="lines+markers", line=dict(dash=dash),
                               name=kind, error_y=figures.ci_err(y, ci[:, 0], ci[:, 1])))
    fig.update_layout(title=f"{spec} share vs size ({ARM_NAMES[arm]})",
                      xaxis=dict(type="log", title="total MLP neurons N"),
                      yaxis=dict(title="share of neurons"), template="plotly_white",
                      height=420)
    rep.figure(fig)
  rows = []
  for e in results["per_size"]:
    for arm in ARMS:
      x = e[arm]
      rows.append([e["label"], ARM_NAMES[arm], x["rosetta"]["count"], x["rosetta"]["specialised"],
                   _ci(x["rosetta"]["specialised_ci"]), x["matched"]["specialised"],
                   x["null"]["count"], x["null"]["specialised"],
                   x["minus_matched"]["specialised"], _ci(x["minus_matched"]["specialised_ci"]),
                   x["minus_null"]["specialised"], _ci(x["minus_null"]["specialised_ci"]),
                   x["dsi_vs_matched"]["delta"], _ci(x["dsi_vs_matched"]["delta_ci"]),
                   x["dsi_vs_null"]["delta"], _ci(x["dsi_vs_null"]["delta_ci"])])
  rep.table(["pair", "arm", "Rosetta", f"{spec} share (Rosetta)", "95% CI", "matched",
             "null-paired", "null", "minus matched", "95% CI", "minus null", "95% CI",
             "DSI delta vs matched", "95% CI", "DSI delta vs null", "95% CI"], rows)
  rep.table(["arm", "quantity", "slope per ln N", "95% CI"],
            [[ARM_NAMES[arm], k, t[arm][k]["slope"], _ci(t[arm][k]["ci"])]
             for arm in ARMS for k in ("rosetta", "matched", "null", "minus_matched",
                                       "minus_null")])
  rows = []
  for e in results["per_size"]:
    for kind in SETS:
      x = e["held_out"][kind]
      rows.append([e["label"], kind] + [f"{x['share'][n]:.3f} {_ci(x['share_ci'][n])}"
                                        for n in names])
  rep.table(["pair", "set (held out)"] + names, rows)
  rep.section("Depth: where Rosetta neurons sit")
  rep.figure(figures.depth_profile({k: (np.array(v["depth"]), np.array(v["density"]))
                                    for k, v in results["depth"].items()}))
  rep.table(["pair", "density slope vs relative depth"],
            [[k, v["slope"]] for k, v in results["depth"].items()])
  rep.section("Gallery: top Rosetta neurons of the largest pair and their top-activating text")
  for g in results["gallery"]:
    items = "".join(f"<li><code>{s['activation']:.3f}</code> [{html.escape(s['domain'])}] "
                    f"{s['html']}</li>" for s in g["snippets"])
    rep.raw(f"<h3>{html.escape(g['model'])} {html.escape(g['site'])} neuron {g['neuron']} "
            f"(r = {g['r']:.3f}, DSI = {g['dsi']:.3f}, prefers "
            f"{html.escape(g['preferred_domain'])})</h3><ul>{items}</ul>")
  return rep
