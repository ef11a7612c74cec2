"""Reports: plotly figures and one self-contained HTML file per study."""

from __future__ import annotations

import numpy as np

from rosetta_jax.analysis.scaling import PowerLawFit
from rosetta_jax.report import figures
from rosetta_jax.report.html import Report


def scaling_section(rep: Report, results: dict, fit: PowerLawFit | None) -> Report:
  """Adds the scaling study (claim 1) to a report (without the fit for one size)."""
  pairs = results["pairs"]
  sizes = np.array(results["sizes"])
  counts = np.array(results["counts"])
  lo = np.array([p["count_ci"][0] for p in pairs])
  hi = np.array([p["count_ci"][1] for p in pairs])
  labels = [p["label"] for p in pairs]
  rep.section("Claim 1: Rosetta neurons grow as a sublinear power law")
  if fit is not None:
    verdict = ("sublinear: the fraction shrinks with size" if fit.ci[1] < 1 else
               "not significantly sublinear at this scale")
    rep.text(f"count ~ N^beta with beta = {fit.beta:.3f}, 95% CI [{fit.ci[0]:.3f}, "
             f"{fit.ci[1]:.3f}] ({fit.method}, {fit.n_boot} document resamples, "
             f"r2 = {fit.r2:.3f}); fraction ~ N^{fit.beta_fraction:.3f}. Verdict: {verdict}.")
  else:
    rep.text("Only one model size has Rosetta pairs: no power law can be fitted.")
  rep.text(f"{results['units']} aligned units from {results['documents']} held-out documents; "
           "Rosetta = mutual nearest neighbours on Pearson r across all layers.", css="note")
  if fit is not None:
    rep.figure(figures.count_vs_size(fit, sizes, counts, lo, hi, labels))
    rep.figure(figures.fraction_vs_size(fit, sizes, counts / sizes, lo / sizes, hi / sizes,
                                        labels))
  rep.figure(figures.r_distribution({p["label"]: np.array(p["r"]) for p in pairs}))
  density = {}
  for p in pairs:
    n = p["num_layers_a"]
    depth = p.get("depth_a") or (np.arange(n) + 0.5) / n
    density[p["label"]] = (np.asarray(depth), np.array(p["layer_density_a"]))
  rep.figure(figures.depth_profile(density))
  rep.table(["pair", "neurons (A)", "count", "95% CI", "fraction", "mean r",
             "mutual NN (no threshold)", "null count", "null max r", "r threshold",
             "constant (excluded)"],
            [[p["label"], p["neurons_a"], p["count"],
              f"[{p['count_ci'][0]:.0f}, {p['count_ci'][1]:.0f}]", p["fraction"], p["r_mean"],
              p.get("raw_count", p["count"]), p.get("null_count", "-"),
              p.get("null_r_max") if p.get("null_r_max") is not None else "-",
              p.get("r_threshold") if p.get("r_threshold") is not None else "-",
              p["excluded_a"] + p["excluded_b"]] for p in pairs])
  rep.text("Null: B's held-out documents shuffled as whole blocks (same matcher). A pair "
           "counts as Rosetta when it is a mutual nearest neighbour and, when the null "
           "threshold is on, its r exceeds the strongest null pair (or, with --null_fdr, "
           "the lowest r above which the null explains at most that fraction of the "
           "pairs).", css="note")
  if results.get("anchors"):
    anchor_section(rep, results["anchors"])
  return rep


def anchor_section(rep: Report, anchors: dict) -> Report:
  """Neurons with a Rosetta partner in every other model (one row per anchor model)."""
  rep.section("Anchors: neurons with a Rosetta partner in every other model")
  rows = []
  for name, a in anchors.items():
    ci = a.get("count_ci")
    rows.append([name, a["partners"], a["count"], f"[{ci[0]:.0f}, {ci[1]:.0f}]" if ci else "-",
                 a["fraction"]])
  rep.table(["anchor model", "other models", "neurons in all", "95% CI", "fraction"], rows)
  rep.figure(figures.depth_profile(
      {name: (np.array(a["depth"]), np.array(a["layer_density"])) for name, a in anchors.items()}))
  rep.text("An anchor neuron is in a Rosetta pair (same criterion as above) with each "
           "other model; its CI intersects the same document resamples across pairs.",
           css="note")
  return rep


def scaling_report(results: dict, fit: PowerLawFit, path: str) -> str:
  """Writes the scaling study's report.html."""
  rep = Report("rosetta_jax: Rosetta neuron scaling")
  scaling_section(rep, results, fit)
  rep.section("Run")
  rep.table(["stage", "seconds"], [[k, v] for k, v in results["seconds"].items()])
  return rep.write(path)
