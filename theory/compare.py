"""Predicted vs simulated vs measured Rosetta-count exponents, with CIs.

``run_comparison`` fixes alpha (given, or from the corpus's rank-frequency law),
predicts beta with ``theory.capacity`` for the simulation's own feature count and
budgets, runs the ``theory.simulate`` sweep, reads the measured beta of the
scaling study from its ``results.json`` (``results["fit"]["count"]["beta"]`` and
``["ci"]``), and writes ``config.json``, ``results.json`` and a self-contained
``report.html`` (table + plotly figures) into the workdir.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Callable

import numpy as np

from rosetta_jax import io as io_lib
from rosetta_jax.report.html import Report
from theory import capacity, simulate


def read_measured(path: str) -> dict:
  """beta and its CI from a scaling study's results.json.

  Raises:
    FileNotFoundError: no such file.
    ValueError: the file lacks ``fit.count.beta`` / ``fit.count.ci`` or they are
      not finite numbers / a [lo, hi] pair.
  """
  if not os.path.exists(path):
    raise FileNotFoundError(f"measured results not found: {path}")
  res = io_lib.read_json(path, what="a scaling study's results")
  try:
    fit = res["fit"]["count"]
    beta, ci = float(fit["beta"]), [float(c) for c in fit["ci"]]
  except (KeyError, TypeError, ValueError) as e:
    raise ValueError(f"{path}: expected results['fit']['count']['beta'] and ['ci'] = [lo, hi] "
                     f"({type(e).__name__}: {e})") from None
  if len(ci) != 2 or not np.all(np.isfinite([beta, *ci])) or ci[0] > ci[1]:
    raise ValueError(f"{path}: bad measured beta {beta} with ci {ci}")
  return {"beta": beta, "ci": ci, "path": os.path.abspath(path)}


def predicted_ci(budgets, params: capacity.CapacityParams, alpha_ci, max_features: int) -> list:
  """Range of the predicted Rosetta beta as alpha spans its CI (other params fixed)."""
  alphas = [*np.linspace(alpha_ci[0], alpha_ci[1], 5), float(params.alpha)]
  vals = [float(capacity.fitted_beta(budgets, dataclasses.replace(params, alpha=a), max_features))
          for a in alphas]
  return [min(vals), max(vals)]


def _figures(res: dict) -> list:
  import plotly.graph_objects as go
  sim, pred = res["simulated"], res["predicted"]
  n = sim["budgets"]
  f1 = go.Figure()
  f1.add_trace(go.Scatter(x=n, y=sim["rosetta_mean"], mode="markers+lines", name="simulated",
                          error_y={"type": "data", "array": sim["rosetta_std"]}))
  f1.add_trace(go.Scatter(x=n, y=pred["rosetta"], mode="lines", name="predicted"))
  f1.add_trace(go.Scatter(x=n, y=sim["dedicated_mean"], mode="markers", name="sim: dedicated"))
  f1.update_layout(title="Rosetta count vs neuron budget", xaxis_type="log", yaxis_type="log",
                   xaxis_title="neurons N", yaxis_title="count")
  f2 = go.Figure()
  rows = res["table"]
  f2.add_trace(go.Scatter(
      x=[r["source"] for r in rows], y=[r["beta"] for r in rows], mode="markers",
      error_y={"type": "data", "symmetric": False,
               "array": [r["ci"][1] - r["beta"] for r in rows],
               "arrayminus": [r["beta"] - r["ci"][0] for r in rows]}))
  f2.add_hline(y=1.0, line_dash="dot", annotation_text="linear")
  f2.update_layout(title="Count exponent beta (95% CI)", yaxis_title="beta")
  f3 = go.Figure()
  f3.add_trace(go.Scatter(x=n, y=sim["selectivity_rosetta"], name="sim: Rosetta"))
  f3.add_trace(go.Scatter(x=n, y=sim["selectivity_other"], name="sim: non-Rosetta"))
  f3.add_trace(go.Scatter(x=n, y=pred["selectivity"]["rosetta"], name="pred: Rosetta",
                          line_dash="dash"))
  f3.add_trace(go.Scatter(x=n, y=pred["selectivity"]["non_rosetta"], name="pred: non-Rosetta",
                          line_dash="dash"))
  f3.update_layout(title="Selectivity (top-feature share) vs N", xaxis_type="log",
                   xaxis_title="neurons N", yaxis_title="selectivity")
  return [f1, f2, f3]


def section(rep: Report, res: dict) -> Report:
  """Adds the theory comparison (claim 5) to a report: the beta table and figures."""
  a = res["alpha"]
  rep.section("Claim 5: Rosetta count exponent: theory vs simulation vs measurement")
  rep.text(f"alpha = {a['alpha']:.3f} [{a['ci'][0]:.3f}, {a['ci'][1]:.3f}] ({a['source']})")
  rep.table(["source", "beta", "95% CI", "note"],
            [[r["source"], r["beta"], f"[{r['ci'][0]:.3f}, {r['ci'][1]:.3f}]", r["note"]]
             for r in res["table"]])
  for fig in _figures(res):
    rep.figure(fig)
  return rep


def write_report(res: dict, path: str) -> str:
  """The comparison as one self-contained report (``rosetta_jax.report``)."""
  return section(Report("rosetta_jax: theory sweep"), res).write(path)


def _cached_sim(workdir: str, sim_config: simulate.SimConfig) -> dict | None:
  """The ``simulated`` block of a previous results.json with the same sim config."""
  path = os.path.join(workdir, "results.json")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    sim = json.load(f).get("simulated") or {}
  want = json.loads(json.dumps(dataclasses.asdict(sim_config)))
  return sim if sim.get("config") == want else None


def run_comparison(sim_config: simulate.SimConfig, workdir: str, alpha_info: dict,
                   measured_path: str | None = None, seed_noise: float = 0.25,
                   matcher: Callable | None = None, log: Callable = print) -> dict:
  """The whole comparison; writes config.json, results.json, report.html.

  Resumes: a results.json in ``workdir`` whose simulation used the same
  ``sim_config`` supplies the simulation (the predictions are always recomputed).

  Args:
    sim_config: the simulation sweep (its alpha must equal alpha_info["alpha"]).
    workdir: output directory (created).
    alpha_info: dict ``alpha``, ``ci`` [lo, hi], ``source`` (how alpha was fixed).
    measured_path: a scaling study's results.json, or None.
    seed_noise: the capacity model's run-to-run jitter.

  Returns:
    The results dict written to results.json.
  """
  if abs(sim_config.alpha - alpha_info["alpha"]) > 1e-9:
    raise ValueError(f"sim alpha {sim_config.alpha} != alpha {alpha_info['alpha']}")
  os.makedirs(workdir, exist_ok=True)
  measured = read_measured(measured_path) if measured_path else None
  cfg = {"sim": dataclasses.asdict(sim_config), "alpha": alpha_info,
         "measured_path": measured_path, "seed_noise": seed_noise}
  io_lib.write_json(os.path.join(workdir, "config.json"), cfg)
  f_ = sim_config.num_features
  params = capacity.CapacityParams(alpha=alpha_info["alpha"], num_features=float(f_),
                                   seed_noise=seed_noise)
  budgets = sorted(sim_config.budgets)
  pred = capacity.predict(budgets, params, f_)
  pred["beta_rosetta_ci"] = predicted_ci(budgets, params, alpha_info["ci"], f_)
  pred["beta_tail_limit"] = 1.0 / alpha_info["alpha"]
  log(f"predicted beta (F={f_}, budgets {budgets}): {pred['beta_rosetta']:.3f}")
  sim = _cached_sim(workdir, sim_config)
  if sim is None:
    sim = simulate.run_sweep(sim_config, matcher, log)
  else:
    log("reusing the simulation in results.json (same sim config)")
  table = [
      {"source": "predicted (capacity model)", "beta": pred["beta_rosetta"],
       "ci": pred["beta_rosetta_ci"], "note": "range over alpha's CI; same F and budgets as sim"},
      {"source": "predicted, tail limit 1/alpha", "beta": pred["beta_tail_limit"],
       "ci": sorted([1.0 / alpha_info["ci"][1], 1.0 / alpha_info["ci"][0]]),
       "note": "F >> N, D << N closed form"},
      {"source": "simulated (toy ReLU models)", "beta": sim["beta_sim"],
       "ci": sim["beta_sim_ci"], "note": "bootstrap over probe inputs and seed pairs"},
  ]
  if measured:
    table.append({"source": "measured (scaling study)", "beta": measured["beta"],
                  "ci": measured["ci"], "note": measured["path"]})
  res = {"alpha": alpha_info, "predicted": pred, "simulated": sim, "measured": measured,
         "table": table}
  io_lib.write_json(os.path.join(workdir, "results.json"), res)
  write_report(res, os.path.join(workdir, "report.html"))
  return res
