"""Every study into one report: scaling, polarization, domains/depth, null/ablation, theory.

``run_reproduce(cfg, workdir, models)`` runs the scaling study in ``workdir`` (its
own outputs stay at the top level), the other studies into
``workdir/<study>/`` on the same zoo, stores and pairs, the theory comparison
into ``workdir/theory`` when the ``theory`` package is importable, and writes
``workdir/reproduce/{config.json,results.json,report.html}``: a summary table
(claim, measured value, 95% CI, agrees or not) and one section per claim.
"""

from __future__ import annotations

import math
import os
import time

import numpy as np

from rosetta_jax.analysis.scaling import fit_power_law
from rosetta_jax.report import scaling_section
from rosetta_jax.report.html import Report
from rosetta_jax.studies import (common, datafilter, domains, null_ablation, polarization,
                                 scaling)
from rosetta_jax.zoo import config as config_lib

# A small theory sweep per preset (the full one is experiments.theory_sweep's).
THEORY = {"micro": dict(num_features=16, budgets=(4, 8), num_seeds=2, steps=50, batch_size=64,
                        probe_size=256, bootstrap=10),
          "tiny": dict(num_features=64, budgets=(4, 8, 16, 32), num_seeds=2, steps=800,
                       batch_size=256, probe_size=1024, bootstrap=50),
          "default": dict(num_features=128, budgets=(4, 6, 8, 16, 32, 64), num_seeds=4,
                          steps=3000, batch_size=1024, probe_size=4096, bootstrap=100)}


def _ci(lo, hi) -> str:
  return f"[{lo:.3f}, {hi:.3f}]"


def run_theory(workdir: str, theory: str, log=print) -> dict | None:
  """theory.compare on a preset-sized sweep; None when the package is absent."""
  try:
    from theory import compare, corpus_stats, simulate  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  est = corpus_stats.corpus_alpha("all", ngram=1)
  alpha = {"alpha": est["alpha"], "ci": est["ci"],
           "source": "word rank-frequency law of the embedded corpus"}
  sim = simulate.SimConfig(alpha=alpha["alpha"], **THEORY[theory])
  return compare.run_comparison(sim, os.path.join(workdir, "theory"), alpha,
                                os.path.join(workdir, "results.json"), log=log)


def summary(scal: dict, pol: dict, dom: dict, nul: dict, theo: dict | None,
            filt: dict | None = None) -> list[list]:
  """Rows of (claim, measured, 95% CI, agrees with the published claim?)."""
  rows = []
  f = (scal["fit"] or {}).get("count")
  if f is None:
    rows.append(["1. Rosetta count ~ N^beta, sublinear (beta < 1)", "one size: no fit", "",
                 "not measurable"])
    f = {"beta": float("nan")}
  else:
    rows.append(["1. Rosetta count ~ N^beta, sublinear (beta < 1)", f"beta = {f['beta']:.3f}",
                 _ci(*f["ci"]), "yes" if f["ci"][1] < 1 else "no (CI reaches 1)"])
  for m in ("kurtosis", "hoyer", "dsi", "token_entropy", "explanation"):
    t = pol["trend"][m]["d"]
    lo, hi = t["ci"]
    verdict = ("yes" if lo > 0 else "no (opposite)" if hi < 0 else "inconclusive (CI spans 0)")
    if math.isnan(lo):
      verdict = "not measurable"
    rows.append([f"2. polarization: Cohen d of {m} (Rosetta - non) grows with size",
                 f"slope {t['slope']:.3f} per ln N", _ci(lo, hi), verdict])
  t = dom["trend"]["specialised_difference"]
  lo, hi = t["ci"]
  rows.append(["3. Rosetta neurons specialise (code+math share, minus controls) with size",
               f"slope {t['slope']:.3f} per ln N", _ci(lo, hi),
               "not measurable" if math.isnan(lo) else
               "yes" if lo > 0 else "no (opposite)" if hi < 0 else "inconclusive (CI spans 0)"])
  tr = nul["null_threshold_ratio"]
  t0 = min(tr, key=float)
  x = tr[t0]
  rows.append([f"4. permutation null collapses (r >= {t0})",
               f"null/real = {x['null']}/{x['real']}", "",
               "yes" if x["real"] and x["null"] <= 0.1 * x["real"] else "no"])
  k = nul["variants"]["k=3"]["fit"]
  rows.append(["4. exponent with mutual 3-NN instead of best buddies", f"beta = {k['beta']:.3f}",
               _ci(*k["ci"]), "yes" if k["ci"][1] < 1 else "no (CI reaches 1)"])
  if theo:
    pred = next(r for r in theo["table"] if r["source"].startswith("predicted (capacity"))
    rows.append(["5. capacity model predicts a sublinear exponent", f"beta = {pred['beta']:.3f}",
                 _ci(*pred["ci"]), "yes" if pred["ci"][1] < 1 else "no"])
    rows.append(["5. predicted CI contains the measured beta", f"measured {f['beta']:.3f}",
                 _ci(*pred["ci"]),
                 "yes" if pred["ci"][0] <= f["beta"] <= pred["ci"][1] else "no"])
  if filt:
    ros, rnd = filt["subsets"]["rosetta"], filt["subsets"]["random"]
    rows.append([f"6. Rosetta-selected data lowers held-out {filt['target']} loss vs random",
                 f"{ros['target_loss_ci'][0]:.3f} vs {rnd['target_loss_ci'][0]:.3f}",
                 _ci(*ros["target_loss_ci"][1:]),
                 "yes" if filt["rosetta_beats_random"] else "no (CIs overlap)"])
  return rows


def run_reproduce(cfg: config_lib.StudyConfig, workdir: str, models: str = "zoo",
                  progress: bool = True, theory: str | None = "tiny", log=print,
                  data_filter: bool = True) -> dict:
  """Runs every study; writes workdir/reproduce/{config,results}.json and report.html."""
  t0 = time.time()
  sub = polarization.study_config(cfg, workdir, models, "reproduce", {"theory": theory})
  secs = {}
  scal = scaling.run_scaling(cfg, workdir, models, progress=progress)
  secs["scaling"] = time.time() - t0
  ctx = polarization.load_context(cfg, workdir, models, progress)
  out = {}
  for name, fn in (("polarization", polarization.run_polarization),
                   ("domains", domains.run_domains),
                   ("null_ablation", null_ablation.run_null_ablation)):
    t = time.time()
    out[name] = fn(cfg, workdir, models, progress, ctx=ctx)
    secs[name] = time.time() - t
  t = time.time()
  theo = run_theory(workdir, theory, log) if theory else None
  secs["theory"] = time.time() - t
  t = time.time()
  filt = None
  if data_filter and models == "zoo":
    filt = datafilter.run_data_filter(cfg, datafilter.FilterConfig(), workdir, models,
                                      progress=progress)
  secs["data_filter"] = time.time() - t
  rows = summary(scal, out["polarization"], out["domains"], out["null_ablation"], theo, filt)
  results = {"study": "reproduce", "models": models, "summary": [
      dict(zip(("claim", "measured", "ci", "agrees"), r)) for r in rows],
             "theory": bool(theo), "seconds": {**secs, "total": time.time() - t0}}
  common.write_json(os.path.join(sub, "results.json"), results)
  rep = Report("rosetta_jax: reproducing the Rosetta-neuron scaling claims")
  rep.section("Summary")
  rep.table(["claim", "measured", "95% CI", "agrees with the published claim"], rows)
  rep.text(f"{scal['units']} units from {scal['documents']} held-out documents; CIs from "
           f"{cfg.bootstrap} document-bootstrap resamples (seed {cfg.seed}).", css="note")
  fit = fit_power_law(scal["sizes"], scal["counts"],
                      boot_counts=np.array([r["boot_counts"] for r in ctx.rows]).T)
  scaling_section(rep, scal, fit)
  polarization.add_section(rep, out["polarization"])
  domains.add_section(rep, out["domains"])
  null_ablation.add_section(rep, out["null_ablation"])
  if theo:
    rep.section("Claim 5: the capacity model")
    rep.table(["source", "beta", "95% CI", "note"],
              [[r["source"], r["beta"], _ci(*r["ci"]), r["note"]] for r in theo["table"]])
  if filt:
    datafilter.data_filter_section(rep, filt)
  rep.section("Run")
  rep.table(["stage", "seconds"], [[k, v] for k, v in results["seconds"].items()])
  rep.write(os.path.join(sub, "report.html"))
  return results
