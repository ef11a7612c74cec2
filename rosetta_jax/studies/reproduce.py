"""Every study into one report: each registered study on one context, then a summary.

``run(ctx, studies)`` runs the studies of the registry in order on the same
context (the same models, stores and pairs), each writing its own outputs, and
returns the summary table (claim, measured value, 95% interval, agrees or not)
made from each study's ``claims``. ``write`` renders
``workdir/reproduce/{results.json,report.html}``: the summary, then one section
per study.
"""

from __future__ import annotations

import dataclasses
import os
import time

from rosetta_jax import io as io_lib
from rosetta_jax.report.html import Report
from rosetta_jax.studies import context as context_lib
from rosetta_jax.studies import registry

NAME = "reproduce"
OUTPUT = "reproduce"
ORDER = ("scaling", "polarization", "domains", "null_ablation", "theory", "data_filter")


@dataclasses.dataclass(frozen=True)
class ReproduceResult:
  """Attributes:
    results: {study: its Result}, in the order run.
    summary: rows of (claim, measured, 95% CI, agrees with the published claim?).
    seconds: time per study.
  """
  models: str
  results: dict
  summary: tuple[tuple, ...]
  seconds: dict

  def to_json(self) -> dict:
    return {"study": NAME, "models": self.models,
            "summary": [dict(zip(("claim", "measured", "ci", "agrees"), r))
                        for r in self.summary],
            "studies": list(self.results), "seconds": self.seconds}


def run(ctx: context_lib.Context, studies=ORDER, configs: dict | None = None,
        log=print) -> ReproduceResult:
  """Runs ``studies`` (registry names) in order; each writes its own outputs."""
  configs = configs or {}
  results, rows, secs = {}, [], {}
  t_start = time.time()
  for name in studies:
    t = time.time()
    log(f"[reproduce] {name}")
    results[name] = registry.run_study(name, ctx, configs.get(name))
    rows += registry.STUDIES[name].claims(results[name])
    secs[name] = time.time() - t
  secs["total"] = time.time() - t_start
  return ReproduceResult(ctx.models, results, tuple(tuple(r) for r in rows), secs)


def write(ctx: context_lib.Context, result: ReproduceResult) -> str:
  """Writes workdir/reproduce/{results.json,report.html}; returns the report's path."""
  out = os.path.join(ctx.workdir, OUTPUT)
  os.makedirs(out, exist_ok=True)
  io_lib.write_json(os.path.join(out, "results.json"), result.to_json())
  rep = Report("rosetta_jax: reproducing the Rosetta-neuron scaling claims")
  rep.section("Summary")
  rep.table(["claim", "measured", "95% CI", "agrees with the published claim"],
            [list(r) for r in result.summary])
  units = next(iter(ctx.stores.values())).units_done if ctx.stores else 0
  rep.text(f"{units} units from {len(ctx.docs)} held-out documents; 95% basic bootstrap "
           f"intervals from {ctx.cfg.bootstrap} document resamples (seed {ctx.cfg.seed}).",
           css="note")
  for name, res in result.results.items():
    registry.STUDIES[name].section(rep, res)
  rep.section("Run")
  rep.table(["stage", "seconds"], [[k, v] for k, v in result.seconds.items()])
  return rep.write(os.path.join(out, "report.html"))
