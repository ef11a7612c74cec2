"""The theory comparison (claim 5) as a study: the capacity model and toy simulations
against the exponent the scaling study measured in the same workdir.

``run(ctx, sim)`` fixes alpha from the embedded corpus's word rank-frequency law
(never from Rosetta counts), predicts beta with ``theory.capacity``, runs the
``theory.simulate`` sweep ``sim`` (a ``SimConfig``: ``theory.simulate.PRESETS``)
and reads the measured beta from ``workdir/results.json``. Outputs go to
``workdir/theory``. Needs the ``theory`` package (installed with rosetta_jax).
"""

from __future__ import annotations

import dataclasses
import os

from rosetta_jax.report.html import Report
from rosetta_jax.studies import context as context_lib

NAME = "theory"
TITLE = "rosetta_jax: theory sweep"
OUTPUT = "theory"


def _simulate():
  from theory import simulate  # pylint: disable=g-import-not-at-top
  return simulate


def default_config(preset: str = "tiny"):
  """The preset's sweep, with alpha fixed from the corpus."""
  from theory import corpus_stats  # pylint: disable=g-import-not-at-top
  simulate = _simulate()
  est = corpus_stats.corpus_alpha("all", ngram=1)
  return dataclasses.replace(simulate.PRESETS[preset], alpha=est["alpha"])


@dataclasses.dataclass(frozen=True)
class TheoryResult:
  """``theory.compare``'s results: alpha, the prediction, the simulation, the table."""
  data: dict

  @property
  def table(self) -> list[dict]:
    return self.data["table"]

  def to_json(self) -> dict:
    return {"study": NAME, **self.data}


def run(ctx: context_lib.Context, sim=None) -> TheoryResult:
  from theory import compare, corpus_stats  # pylint: disable=g-import-not-at-top
  sim = sim or default_config()
  est = corpus_stats.corpus_alpha("all", ngram=1)
  alpha = {"alpha": est["alpha"], "ci": est["ci"],
           "source": "word rank-frequency law of the embedded corpus"}
  measured = os.path.join(ctx.workdir, "results.json")
  res = compare.run_comparison(sim, os.path.join(ctx.workdir, OUTPUT), alpha,
                               measured if os.path.exists(measured) else None, log=lambda *_: None)
  return TheoryResult(res)


def claims(result: TheoryResult) -> list[list]:
  pred = next(r for r in result.table if r["source"].startswith("predicted (capacity"))
  measured = next((r for r in result.table if r["source"].startswith("measured")), None)
  rows = [["5. capacity model predicts a sublinear exponent", f"beta = {pred['beta']:.3f}",
           f"[{pred['ci'][0]:.3f}, {pred['ci'][1]:.3f}]", "yes" if pred["ci"][1] < 1 else "no"]]
  if measured:
    rows.append(["5. predicted CI contains the measured beta", f"measured {measured['beta']:.3f}",
                 f"[{pred['ci'][0]:.3f}, {pred['ci'][1]:.3f}]",
                 "yes" if pred["ci"][0] <= measured["beta"] <= pred["ci"][1] else "no"])
  return rows


def section(rep: Report, result: TheoryResult) -> Report:
  from theory import compare  # pylint: disable=g-import-not-at-top
  return compare.section(rep, result.data)
