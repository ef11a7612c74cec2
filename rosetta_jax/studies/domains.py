"""Domains and depth (claim 3): do Rosetta neurons specialise in domains with size, and where are they?

``run_domains(cfg, workdir, models)`` is the library behind ``python -m
experiments.domains``; it shares the workdir layout of the scaling and
polarization studies (zoo, acts, pairs, neurons) and writes
``workdir/domains/{config.json,results.json,report.html}``.

Per size: each Rosetta neuron's preferred domain (argmax of its domain means),
the share per domain against non-Rosetta neurons drawn from the same layers in
the same numbers, with document-bootstrap CIs (preferred domains recomputed per
resample); the trend of the *specialised* share (code + math) with log size;
Rosetta density per relative depth; and a gallery of the top Rosetta neurons
with their top-activating text, highlighted.
"""

from __future__ import annotations

import html
import os
import time

import numpy as np
import plotly.graph_objects as go

from rosetta_jax.analysis import depth as depth_lib, domains as dom_lib, polarization as pol
from rosetta_jax.analysis import selectivity as sel
from rosetta_jax.report import figures
from rosetta_jax.report.html import Report
from rosetta_jax.studies import common
from rosetta_jax.studies.polarization import (Context, load_context, model_stats,
                                              rosetta_members, rosetta_sets,
                                              study_config)
from rosetta_jax.zoo import config as config_lib

SPECIALISED = ("code", "math")
GALLERY_NEURONS = 6
GALLERY_SNIPPETS = 5


def _layers(ctx: Context, model) -> np.ndarray:
  n = [ctx.stores[model.name].site(s).num_neurons for s in model.mlp_sites()]
  return np.repeat(np.arange(len(n)), n), np.array(n)


def run_domains(cfg: config_lib.StudyConfig, workdir: str, models: str = "zoo",
                progress: bool = True, ctx: Context | None = None) -> dict:
  """Runs the domains and depth study; returns the results dict."""
  t_start = time.time()
  sub = study_config(cfg, workdir, models, "domains", {"specialised": list(SPECIALISED)})
  ctx = ctx or load_context(cfg, workdir, models, progress)
  names = list(ctx.labels.domains)
  spec = np.isin(names, SPECIALISED)
  per_size, boot_spec, boot_spec_ctrl, depth, gallery = [], [], [], {}, []
  for pair in ctx.pairs:
    masks = rosetta_sets(ctx, pair)
    members = rosetta_members(ctx, pair)          # [B, Na + Nb] or None
    pref, pref_b, ros, ctrl, depths, const = [], [], [], [], [], []
    for model, mask in zip((pair.a, pair.b), masks[:2]):
      st = model_stats(ctx, model)
      layer, npl = _layers(ctx, model)
      full = sel.metrics(st)
      boot = sel.metrics(st, ctx.weights)
      c = dom_lib.matched_controls(mask, layer, seed=ctx.cfg.seed, exclude=st.constant)
      pref.append(full["preferred_domain"])
      pref_b.append(boot["preferred_domain"])
      ros.append(mask & ~st.constant)
      const.append(st.constant)
      cm = np.zeros_like(mask)
      cm[c] = True
      ctrl.append(cm)
      depths.append(depth_lib.depth_density(layer[mask], npl))
    pref, pref_b = np.concatenate(pref), np.concatenate(pref_b, axis=1)
    ros, ctrl = np.concatenate(ros), np.concatenate(ctrl)
    share_r = dom_lib.domain_shares(pref[ros], len(names))
    share_c = dom_lib.domain_shares(pref[ctrl], len(names))
    # Each resample's own Rosetta set (re-matched); -1 = not counted.
    ros_b = ros if members is None else members & ~np.concatenate(const)
    b_r = dom_lib.domain_shares(np.where(ros_b, pref_b, -1), len(names))
    b_c = dom_lib.domain_shares(pref_b[:, ctrl], len(names))
    boot_spec.append(b_r[:, spec].sum(1))
    boot_spec_ctrl.append(b_c[:, spec].sum(1))
    x, dens = depths[0][0], (depths[0][1] + depths[1][1]) / 2
    depth[pair.label] = {"depth": x.tolist(), "density": dens.tolist(),
                         "slope": depth_lib.depth_slope(x, dens)}
    per_size.append({
        "label": pair.label, "size": pair.size, "rosetta": int(ros.sum()),
        "controls": int(ctrl.sum()),
        "share_rosetta": dict(zip(names, share_r.tolist())),
        "share_rosetta_ci": {n: pol.ci(b_r[:, i]) for i, n in enumerate(names)},
        "share_controls": dict(zip(names, share_c.tolist())),
        "share_controls_ci": {n: pol.ci(b_c[:, i]) for i, n in enumerate(names)},
        "specialised_rosetta": float(share_r[spec].sum()),
        "specialised_rosetta_ci": pol.ci(boot_spec[-1]),
        "specialised_controls": float(share_c[spec].sum()),
        "specialised_controls_ci": pol.ci(boot_spec_ctrl[-1])})
  gallery = make_gallery(ctx, ctx.pairs[-1])
  sizes = [e["size"] for e in per_size]
  bs, bc = np.stack(boot_spec, 1), np.stack(boot_spec_ctrl, 1)
  trends = {
      "specialised_rosetta": pol.trend(sizes, [e["specialised_rosetta"] for e in per_size], bs),
      "specialised_controls": pol.trend(sizes, [e["specialised_controls"] for e in per_size], bc),
      "specialised_difference": pol.trend(
          sizes, [e["specialised_rosetta"] - e["specialised_controls"] for e in per_size], bs - bc),
  }
  results = {"study": "domains", "models": models, "domains": names,
             "specialised": list(SPECIALISED), "sizes": sizes, "per_size": per_size,
             "trend": trends, "depth": depth, "gallery": gallery, "bootstrap": cfg.bootstrap,
             "seconds": {**ctx.seconds, "total": time.time() - t_start}}
  common.write_json(os.path.join(sub, "results.json"), results)
  rep = Report("rosetta_jax: domain specialisation and depth")
  add_section(rep, results)
  rep.write(os.path.join(sub, "report.html"))
  return results


def make_gallery(ctx: Context, pair) -> list[dict]:
  """The top Rosetta pairs (by r) of a pair of models, with A's top-activating snippets."""
  _, _, (ia, _, r) = rosetta_sets(ctx, pair)
  st = model_stats(ctx, pair.a)
  full = sel.metrics(st)
  order = np.argsort(-r, kind="stable")[:GALLERY_NEURONS]
  top = ia[order]
  layer, npl = _layers(ctx, pair.a)
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


def add_section(rep: Report, results: dict) -> Report:
  """Adds the domains (claim 3) and depth sections to a report."""
  names, t = results["domains"], results["trend"]
  rep.section("Claim 3: Rosetta neurons specialise in domains with size")
  ts = t["specialised_rosetta"]
  td = t["specialised_difference"]
  rep.text(f"Share of Rosetta neurons preferring {'+'.join(results['specialised'])}: slope per "
           f"e-fold of size {ts['slope']:.3f} [{ts['ci'][0]:.3f}, {ts['ci'][1]:.3f}]; minus the "
           f"share among layer-matched non-Rosetta controls: {td['slope']:.3f} "
           f"[{td['ci'][0]:.3f}, {td['ci'][1]:.3f}] (95% CIs, {results['bootstrap']} document "
           "resamples, preferred domains recomputed per resample).")
  fig = go.Figure()
  sizes = np.array(results["sizes"])
  for kind, dash in (("rosetta", "solid"), ("controls", "dot")):
    for name in names:
      y = np.array([e[f"share_{kind}"][name] for e in results["per_size"]])
      ci = np.array([e[f"share_{kind}_ci"][name] for e in results["per_size"]])
      fig.add_trace(go.Scatter(x=sizes, y=y, mode="lines+markers", line=dict(dash=dash),
                               name=f"{name} ({kind})", error_y=figures._ci_err(y, ci[:, 0], ci[:, 1])))  # pylint: disable=protected-access
  fig.update_layout(title="Preferred-domain share vs size (solid: Rosetta, dotted: controls)",
                    xaxis=dict(type="log", title="total MLP neurons N"),
                    yaxis=dict(title="share of neurons"), template="plotly_white", height=480)
  rep.figure(fig)
  rep.table(["pair", "Rosetta", "specialised share (Rosetta)", "95% CI", "controls", "95% CI"],
            [[e["label"], e["rosetta"], e["specialised_rosetta"],
              f"[{e['specialised_rosetta_ci'][0]:.3f}, {e['specialised_rosetta_ci'][1]:.3f}]",
              e["specialised_controls"],
              f"[{e['specialised_controls_ci'][0]:.3f}, {e['specialised_controls_ci'][1]:.3f}]"]
             for e in results["per_size"]])
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
