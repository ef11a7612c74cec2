"""The scaling study (claim 1): Rosetta count vs model size, with bootstrap intervals.

``run(ctx, cfg)`` counts the Rosetta pairs of every pair of models in the
context (``context.match_pair``), fits count ~ N^beta over the sizes, and, when
every pair of three or more models was matched, finds the anchors. Its outputs
are the workdir's top-level ``results.json`` and ``report.html``.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from absl import logging

from rosetta_jax.analysis import stats
from rosetta_jax.report import figures
from rosetta_jax.report.html import Report
from rosetta_jax.studies import config as config_lib
from rosetta_jax.studies import context as context_lib

NAME = "scaling"
TITLE = "rosetta_jax: Rosetta neuron scaling"
OUTPUT = ""             # the workdir itself: the main job


@dataclasses.dataclass(frozen=True)
class ScalingResult:
  """The scaling study's result.

  Attributes:
    models: the ``--models`` spec.
    pairs: one ``PairResult`` per pair of models, by increasing size.
    fit: count ~ N^beta over the sizes (None with fewer than two sizes with pairs).
    anchors: ``context.anchor_sets`` (None unless every pair of >= 3 models was matched).
    model_info: name, neurons, layers, sites, neurons_per_layer, params per model.
    documents: documents recorded.
    bootstrap: document resamples.
    seconds: time per stage.
  """
  models: str
  pairs: tuple[context_lib.PairResult, ...]
  fit: stats.PowerLawFit | None
  anchors: dict | None
  model_info: tuple[dict, ...]
  documents: int
  bootstrap: int
  seconds: dict

  @property
  def sizes(self) -> np.ndarray:
    return np.array([p.size for p in self.pairs])

  @property
  def counts(self) -> np.ndarray:
    return np.array([p.count for p in self.pairs])

  def to_json(self) -> dict:
    return {
        "study": NAME, "models": self.models,
        "sizes": self.sizes.tolist(), "counts": self.counts.tolist(),
        "null_counts": [int(len(p.null_r)) for p in self.pairs],
        "fractions": (self.counts / self.sizes).tolist(),
        "criterion": self.pairs[0].criterion if self.pairs else None,
        "pairs": [p.summary() for p in self.pairs],
        "fit": self.fit.to_dict() if self.fit else None,
        "units": self.pairs[0].units if self.pairs else 0, "documents": self.documents,
        "bootstrap": self.bootstrap, "model_info": list(self.model_info),
        "anchors": self.anchors, "seconds": self.seconds,
    }


def run(ctx: context_lib.Context, cfg: config_lib.StudyConfig | None = None) -> ScalingResult:
  """Counts, intervals and the power law of every pair in the context."""
  del cfg       # the pipeline's own config (ctx.cfg) is the study's
  results = tuple(ctx.result(p) for p in ctx.pairs)
  sizes = np.array([r.size for r in results])
  counts = np.array([r.count for r in results])
  fit = None
  if len(np.unique(sizes[counts > 0])) >= 2:
    fit = stats.fit_power_law(sizes, counts,
                              boot_counts=np.stack([r.boot_counts for r in results], 1))
    logging.info("beta = %.3f [%.3f, %.3f] over %d sizes", fit.beta, *fit.ci, len(results))
  else:
    logging.warning("fewer than two sizes with Rosetta pairs: no power-law fit")
  return ScalingResult(
      models=ctx.models, pairs=results, fit=fit, anchors=context_lib.anchor_sets(ctx, results),
      model_info=ctx.info,
      documents=len(ctx.docs), bootstrap=ctx.cfg.bootstrap,
      seconds={**ctx.seconds, "match": sum(sum(r.seconds.values()) for r in results)})


def claims(result: ScalingResult) -> list[list]:
  """Summary rows: (claim, measured, 95% CI, agrees with the published claim?)."""
  name = "1. Rosetta count ~ N^beta, sublinear (beta < 1)"
  if result.fit is None:
    return [[name, "one size: no fit", "", "not measurable"]]
  f = result.fit
  return [[name, f"beta = {f.beta:.3f}", f"[{f.ci[0]:.3f}, {f.ci[1]:.3f}]",
           "yes" if f.ci[1] < 1 else "no (CI reaches 1)"]]


def section(rep: Report, result: ScalingResult) -> Report:
  """Adds the scaling study (claim 1) to a report."""
  pairs, fit = result.pairs, result.fit
  sizes, counts = result.sizes, result.counts
  ci = np.array([p.count_ci for p in pairs]).reshape(-1, 2)
  lo, hi = ci[:, 0], ci[:, 1]
  labels = [p.label for p in pairs]
  rep.section("Claim 1: Rosetta neurons grow as a sublinear power law")
  if fit is not None:
    verdict = ("sublinear: the fraction shrinks with size" if fit.ci[1] < 1 else
               "not significantly sublinear at this scale")
    rep.text(f"count ~ N^beta with beta = {fit.beta:.3f}, 95% CI [{fit.ci[0]:.3f}, "
             f"{fit.ci[1]:.3f}] (basic bootstrap over {fit.n_boot} document resamples, "
             f"r2 = {fit.r2:.3f}); fraction ~ N^{fit.beta_fraction:.3f}. Verdict: {verdict}.")
  else:
    rep.text("Only one model size has Rosetta pairs: no power law can be fitted.")
  units = pairs[0].units if pairs else 0
  crit = pairs[0].criterion if pairs else {}
  rep.text(f"{units} aligned units from {result.documents} held-out documents; Rosetta = "
           f"mutual {crit.get('k', 1)}-nearest neighbours on Pearson r across all layers, "
           f"null rule {crit.get('null')!r}"
           + (f" (q = {crit['q']})" if crit.get("q") is not None else "") + ".", css="note")
  if fit is not None:
    rep.figure(figures.count_vs_size(fit, sizes, counts, lo, hi, labels))
    rep.figure(figures.fraction_vs_size(fit, sizes, counts / sizes, lo / sizes, hi / sizes,
                                        labels))
  rep.figure(figures.r_distribution({p.label: p.r for p in pairs}))
  rep.figure(figures.depth_profile({p.label: (np.asarray(p.depth_a), p.layer_density_a)
                                    for p in pairs}))
  rep.table(["pair", "neurons (A)", "count", "95% CI", "fraction", "mean r",
             "mutual NN (no threshold)", "null count", "null max r", "r threshold",
             "constant (excluded)"],
            [[p.label, p.neurons_a, p.count, f"[{p.count_ci[0]:.0f}, {p.count_ci[1]:.0f}]",
              p.fraction, float(p.r.mean()) if p.count else float("nan"), len(p.raw_r),
              len(p.null_r), p.null_r_max if p.null_r_max is not None else "-",
              p.r_threshold if p.r_threshold is not None else "-",
              p.excluded_a + p.excluded_b] for p in pairs])
  rep.text("Null: B's held-out documents shuffled as whole blocks (same matcher). A pair "
           "counts as Rosetta when it is a mutual nearest neighbour and, under the 'max' "
           "null rule, its r exceeds the strongest null pair (under 'fdr', the lowest r "
           "above which the null explains at most a fraction q of the pairs). Intervals: "
           "basic bootstrap over documents, each resample re-matched among the candidates.",
           css="note")
  if result.anchors:
    anchor_section(rep, result.anchors)
  return rep


def anchor_section(rep: Report, anchors: dict) -> Report:
  """Neurons with a Rosetta partner in every other model (one row per anchor model)."""
  rep.section("Anchors: neurons with a Rosetta partner in every other model")
  rows = []
  for name, a in anchors.items():
    ci = a["count_ci"]
    rows.append([name, a["partners"], a["count"], f"[{ci[0]:.0f}, {ci[1]:.0f}]", a["fraction"]])
  rep.table(["anchor model", "other models", "neurons in all", "95% CI", "fraction"], rows)
  rep.figure(figures.depth_profile(
      {name: (np.array(a["depth"]), np.array(a["layer_density"])) for name, a in anchors.items()}))
  rep.text("An anchor neuron is in a Rosetta pair (same criterion as above) with each "
           "other model; its interval intersects the same document resamples across pairs.",
           css="note")
  return rep
