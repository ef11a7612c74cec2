"""Domains and depth (claim 3): do Rosetta neurons specialise in domains with size, and where are they?

``run(ctx, cfg)`` works on the pipeline's context (``studies/context.py``) and
its outputs go to ``workdir/domains/{results.json,report.html}``.

Per size: each Rosetta neuron's preferred domain (argmax of its domain means),
the share per domain against non-Rosetta neurons drawn from the same layers in
the same numbers, with document-bootstrap CIs (preferred domains recomputed per
resample); the trend of the *specialised* share (code + math) with log size;
Rosetta density per relative depth; and a gallery of the top Rosetta neurons
with their top-activating text, highlighted.
"""

from __future__ import annotations

import dataclasses
import html

import numpy as np
import plotly.graph_objects as go

from rosetta_jax.analysis import depth as depth_lib, domains as dom_lib, stats
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


@dataclasses.dataclass(frozen=True)
class DomainsResult:
  """Attributes:
    domains: the corpus's domain names.
    sizes: [S] pair sizes.
    per_size: per pair, the preferred-domain shares of Rosetta neurons and of
      layer-matched controls, with intervals.
    trend: slopes against ln size of the specialised (code + math) share.
    depth: per pair, Rosetta density per relative depth and its slope.
    gallery: the largest pair's top Rosetta neurons with their top-activating text.
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

  def to_json(self) -> dict:
    return {"study": NAME, "models": self.models, "domains": list(self.domains),
            "specialised": list(SPECIALISED), "sizes": list(self.sizes),
            "per_size": list(self.per_size), "trend": self.trend, "depth": self.depth,
            "gallery": list(self.gallery), "bootstrap": self.bootstrap,
            "seconds": self.seconds}


def _layers(ctx: context_lib.Context, model):
  n = [ctx.stores[model.name].site(s).num_neurons for s in model.mlp_sites()]
  return np.repeat(np.arange(len(n)), n), np.array(n)


def _share_ci(boot, full) -> list[float]:
  return stats.interval(boot, float(full), bounds=(0.0, 1.0))


def run(ctx: context_lib.Context, cfg: config_lib.StudyConfig | None = None) -> DomainsResult:
  """Preferred-domain shares, their trend with size, depth profiles and a gallery."""
  cfg = cfg or ctx.cfg
  names = list(ctx.labels.domains)
  spec = np.isin(names, SPECIALISED)
  per_size, boot_spec, boot_spec_ctrl, depth = [], [], [], {}
  for pair in ctx.pairs:
    res = ctx.result(pair)
    members = np.concatenate([res.members_a, res.members_b], axis=1)    # [B, Na + Nb]
    pref, pref_b, ros, ctrl, depths, const = [], [], [], [], [], []
    for model, mask in zip((pair.a, pair.b), (res.mask_a, res.mask_b)):
      st = ctx.neuron_stats(model)
      layer, npl = _layers(ctx, model)
      full = sel.metrics(st)
      boot = sel.metrics(st, ctx.weights)
      c = dom_lib.matched_controls(mask, layer, seed=cfg.seed, exclude=st.constant)
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
    ros_b = members & ~np.concatenate(const)
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
        "share_rosetta_ci": {n: _share_ci(b_r[:, i], share_r[i]) for i, n in enumerate(names)},
        "share_controls": dict(zip(names, share_c.tolist())),
        "share_controls_ci": {n: _share_ci(b_c[:, i], share_c[i]) for i, n in enumerate(names)},
        "specialised_rosetta": float(share_r[spec].sum()),
        "specialised_rosetta_ci": _share_ci(boot_spec[-1], share_r[spec].sum()),
        "specialised_controls": float(share_c[spec].sum()),
        "specialised_controls_ci": _share_ci(boot_spec_ctrl[-1], share_c[spec].sum())})
  sizes = [e["size"] for e in per_size]
  bs, bc = np.stack(boot_spec, 1), np.stack(boot_spec_ctrl, 1)
  trends = {
      "specialised_rosetta": stats.trend(sizes, [e["specialised_rosetta"] for e in per_size], bs),
      "specialised_controls": stats.trend(sizes, [e["specialised_controls"] for e in per_size],
                                          bc),
      "specialised_difference": stats.trend(
          sizes, [e["specialised_rosetta"] - e["specialised_controls"] for e in per_size],
          bs - bc),
  }
  return DomainsResult(models=ctx.models, domains=tuple(names), sizes=tuple(sizes),
                       per_size=tuple(per_size), trend=trends, depth=depth,
                       gallery=tuple(make_gallery(ctx, ctx.pairs[-1])),
                       bootstrap=cfg.bootstrap, seconds=dict(ctx.seconds))


def claims(result: DomainsResult) -> list[list]:
  t = result.trend["specialised_difference"]
  lo, hi = t["ci"]
  verdict = ("not measurable" if np.isnan(lo) else "yes" if lo > 0 else
             "no (opposite)" if hi < 0 else "inconclusive (CI spans 0)")
  return [["3. Rosetta neurons specialise (code+math share, minus controls) with size",
           f"slope {t['slope']:.3f} per ln N", f"[{lo:.3f}, {hi:.3f}]", verdict]]


def make_gallery(ctx: context_lib.Context, pair) -> list[dict]:
  """The top Rosetta pairs (by r) of a pair of models, with A's top-activating snippets."""
  res = ctx.result(pair)
  ia, r = res.idx_a, res.r
  st = ctx.neuron_stats(pair.a)
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


def section(rep: Report, result: DomainsResult) -> Report:
  """Adds the domains (claim 3) and depth sections to a report."""
  results = result.to_json()
  names, t = results["domains"], results["trend"]
  rep.section("Claim 3: Rosetta neurons specialise in domains with size")
  ts = t["specialised_rosetta"]
  td = t["specialised_difference"]
  rep.text(f"Share of Rosetta neurons preferring {'+'.join(results['specialised'])}: slope per "
           f"e-fold of size {ts['slope']:.3f} [{ts['ci'][0]:.3f}, {ts['ci'][1]:.3f}]; minus the "
           f"share among layer-matched non-Rosetta controls: {td['slope']:.3f} "
           f"[{td['ci'][0]:.3f}, {td['ci'][1]:.3f}] (95% basic bootstrap intervals, "
           f"{results['bootstrap']} document resamples, preferred domains recomputed per "
           "resample).")
  fig = go.Figure()
  sizes = np.array(results["sizes"])
  for kind, dash in (("rosetta", "solid"), ("controls", "dot")):
    for name in names:
      y = np.array([e[f"share_{kind}"][name] for e in results["per_size"]])
      ci = np.array([e[f"share_{kind}_ci"][name] for e in results["per_size"]])
      fig.add_trace(go.Scatter(x=sizes, y=y, mode="lines+markers", line=dict(dash=dash),
                               name=f"{name} ({kind})", error_y=figures.ci_err(y, ci[:, 0], ci[:, 1])))
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
