"""The scaling study (claim 1): Rosetta count vs model size, with bootstrap intervals.

``run(ctx, cfg)`` counts the Rosetta pairs of every pair of models in the
context (``pairs.match_pair``), fits count ~ N^beta over the sizes, and, when
every pair of three or more models was matched, finds the anchors. On the vision
zoo it also counts the generator's pairs with each discriminator (their own fit
over the discriminators' sizes) and the generator's anchors: its neurons with a
partner in every discriminator. Its outputs are the workdir's top-level
``results.json`` and ``report.html``.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from absl import logging

from rosetta_jax.analysis import replicates, stats
from rosetta_jax.report import figures
from rosetta_jax.report.html import Report
from rosetta_jax.studies import config as config_lib
from rosetta_jax.studies import context as context_lib
from rosetta_jax import pairs as pairs_lib

NAME = "scaling"
TITLE = "rosetta_jax: Rosetta neuron scaling"
OUTPUT = ""             # the workdir itself: the main job


@dataclasses.dataclass(frozen=True)
class ScalingResult:
  """The scaling study's result.

  Attributes:
    models: the ``--models`` spec.
    pairs: one ``PairResult`` per pair of models, by increasing size.
    headline: the declared criterion's exponent over the sizes (mean count per
      size; interval over models and documents; the regression interval beside).
    sensitivity: {criterion name: ``replicates.Fit``} of the alternatives.
    budgets: {document fraction: ``replicates.Fit``} of the declared criterion on
      nested document subsets (1.0: the headline).
    budget_units: {document fraction: units matched}.
    leave_one_model_out: {model: beta without its pairs}.
    converged: ``replicates.converged`` of the criteria and the budgets.
    untrained: PairResults of the untrained zoo (empty: not run).
    untrained_fit: their exponent (None: not run).
    descriptive: why the fit is descriptive rather than an exponent ("" if not).
    by_kind: {"seeds" | "architectures": ``replicates.Fit``} of the declared
      criterion on each kind of zoo pair, when the zoo has several families
      (empty otherwise).
    anchors: ``context.anchor_sets`` (None unless every pair of >= 3 models was matched).
    model_info: name, neurons, layers, sites, neurons_per_layer, params per model.
    documents: documents recorded (images, for vision).
    bootstrap: resamples.
    seconds: time per stage.
    modality: text or vision.
    generator_pairs: the vision zoo's generator against each discriminator (empty
      for text), by discriminator width then seed.
    generator_fit: their count over the discriminators' studied neurons (the
      discriminators of each width resampled; the generator is in every pair).
    generator_anchors: ``pairs.model_anchors`` of the generator over all its pairs.
    zoo_summary: the vision zoo's accuracies and generator checks (None for text).
  """
  models: str
  pairs: tuple[pairs_lib.PairResult, ...]
  headline: replicates.Fit
  sensitivity: dict
  budgets: dict
  budget_units: dict
  leave_one_model_out: dict
  converged: dict
  untrained: tuple[pairs_lib.PairResult, ...]
  untrained_fit: replicates.Fit | None
  descriptive: str
  by_kind: dict
  anchors: dict | None
  model_info: tuple[dict, ...]
  documents: int
  bootstrap: int
  seconds: dict
  modality: str = "text"
  generator_pairs: tuple[pairs_lib.PairResult, ...] = ()
  generator_fit: replicates.Fit | None = None
  generator_anchors: dict | None = None
  zoo_summary: dict | None = None

  @property
  def fit(self) -> stats.PowerLawFit | None:
    """The headline power law (declared criterion, model-and-document interval)."""
    return self.headline.fit

  @property
  def sizes(self) -> np.ndarray:
    return np.array([p.size for p in self.pairs])

  @property
  def counts(self) -> np.ndarray:
    return np.array([p.count for p in self.pairs])

  @property
  def criterion(self) -> dict | None:
    return self.pairs[0].criterion if self.pairs else None

  def to_json(self) -> dict:
    ident = [p.identity for p in self.pairs]
    return {
        "study": NAME, "models": self.models,
        "sizes": self.sizes.tolist(), "counts": self.counts.tolist(),
        "null_counts": [p.null_count for p in self.pairs],
        "false_positives": [p.false_positives for p in self.pairs],
        "fractions": [p.fraction for p in self.pairs],
        "criterion": self.criterion,
        "criterion_name": criterion_name(self.criterion),
        "pairs": [p.summary() for p in self.pairs],
        "fit": self.fit.to_dict() if self.fit else None,
        "headline": self.headline.to_dict(),
        "descriptive": self.descriptive,
        "by_kind": {k: v.to_dict() for k, v in self.by_kind.items()},
        "sensitivity": {k: v.to_dict() for k, v in self.sensitivity.items()},
        "budgets": {f"{k:g}": v.to_dict() for k, v in self.budgets.items()},
        "budget_units": {f"{k:g}": v for k, v in self.budget_units.items()},
        "leave_one_model_out": self.leave_one_model_out,
        "converged": self.converged,
        "identity_null": ({"counts": [i["count"] for i in ident],
                           "raw_counts": [i["raw_count"] for i in ident],
                           "fixed_units": ident[0]["fixed_units"]}
                          if ident and all(i is not None for i in ident) else None),
        "untrained": ({"pairs": [p.summary() for p in self.untrained],
                       "counts": [p.count for p in self.untrained],
                       "fit": self.untrained_fit.to_dict() if self.untrained_fit else None}
                      if self.untrained else None),
        "units": self.pairs[0].units if self.pairs else 0, "documents": self.documents,
        "bootstrap": self.bootstrap, "model_info": list(self.model_info),
        "anchors": self.anchors, "seconds": self.seconds, "modality": self.modality,
        "generator": self._generator_json(), "zoo_summary": self.zoo_summary,
    }

  def _generator_json(self) -> dict | None:
    if not self.generator_pairs:
      return None
    gp, f = self.generator_pairs, self.generator_fit
    return {"model": gp[0].model_a, "neurons": gp[0].neurons_a,
            "pairs": [p.summary() for p in gp],
            "discriminator_neurons": [p.neurons_b for p in gp],
            "counts": [p.count for p in gp], "fractions": [p.fraction for p in gp],
            "fit": f.to_dict() if f is not None else None,
            "headline": f.to_dict() if f is not None else None,
            "anchor_set": self.generator_anchors}


def criterion_name(crit: dict | None) -> str:
  if not crit:
    return ""
  from rosetta_jax.match.rosetta import Criterion  # pylint: disable=g-import-not-at-top
  return Criterion(**crit).name


def _fits(pairs, resampler, names) -> dict:
  out = {}
  for name in names:
    cs = [p.criterion_counts(name) for p in pairs]
    out[name] = replicates.fit(resampler, [c for c, _ in cs], np.stack([b for _, b in cs], 1))
  return out


def _fit_of(results, seed: int, resamples: int) -> replicates.Fit:
  groups = replicates.group_by_size([r.size for r in results],
                                    [(r.model_a, r.model_b) for r in results])
  return replicates.fit(replicates.ModelResampler(groups, resamples, seed),
                        [r.count for r in results], np.stack([r.boot_counts for r in results], 1))


def by_kind(results, seed: int, resamples: int) -> dict:
  """The declared criterion's fit on each kind of zoo pair (``context.pair_kind``),
  when there is more than one kind."""
  kinds: dict = {}
  for r in results:
    kinds.setdefault(context_lib.pair_kind(r.model_a, r.model_b), []).append(r)
  if len(kinds) < 2:
    return {}
  return {k: _fit_of(v, seed, resamples) for k, v in sorted(kinds.items())}


def _descriptive(ctx, pairs, groups) -> str:
  why = []
  if len(groups) < 4:
    why.append(f"{len(groups)} sizes (an exponent needs at least 4)")
  fams = {(ctx_family(p.model_a), ctx_family(p.model_b)) for p in pairs}
  if any(a != b for a, b in fams) or len({f for ab in fams for f in ab}) > 1:
    why.append("its pairs differ in family as well as size")
  return "; ".join(why)


def ctx_family(name: str) -> str:
  """A model's family for the descriptive rule: the zoo, else its name's stem."""
  base = name.rsplit("/", 1)[-1].lower()
  for stem in ("zoo", "vit", "pythia", "opt", "qwen", "smollm", "llama", "gemma", "gpt2", "bert",
               "minilm", "untrained"):
    if stem in base:
      return stem
  return base


def run(ctx: context_lib.Context, cfg: config_lib.StudyConfig | None = None) -> ScalingResult:
  """Counts, intervals and the power law of every pair in the context, beside the
  alternatives, the unit budget, the untrained baseline and the unit-identity null."""
  del cfg       # the pipeline's own config (ctx.cfg) is the study's
  cfg = ctx.cfg
  results = tuple(ctx.result(p) for p in ctx.pairs)
  groups = replicates.group_by_size([r.size for r in results],
                                    [(r.model_a, r.model_b) for r in results])
  resampler = replicates.ModelResampler(groups, len(ctx.weights), cfg.seed)
  headline = replicates.fit(resampler, [r.count for r in results],
                            np.stack([r.boot_counts for r in results], 1))
  if headline.fit is not None:
    logging.info("beta = %.3f [%.3f, %.3f] over %d sizes (%s)", headline.beta, *headline.ci,
                 len(groups), resampler.resamples_text)
  else:
    logging.warning("fewer than two sizes with Rosetta pairs: no power-law fit")
  names = list(results[0].sensitivity) if results else []
  sensitivity = _fits(results, resampler, names)
  budgets, budget_units = {1.0: headline}, {1.0: results[0].units if results else 0}
  for f in cfg.budgets:
    sub = tuple(pairs_lib.match_pair(ctx, p, budget=f) for p in ctx.pairs)
    res_b = replicates.ModelResampler(groups, len(sub[0].boot_counts), cfg.seed)
    budgets[f] = replicates.fit(res_b, [r.count for r in sub],
                                np.stack([r.boot_counts for r in sub], 1))
    budget_units[f] = sub[0].units
  budgets = dict(sorted(budgets.items()))
  budget_units = dict(sorted(budget_units.items()))
  verdict = replicates.converged({"declared": headline, **sensitivity}, budgets)
  untrained, untrained_fit = (), None
  if ctx.models == "zoo" and cfg.untrained:
    upairs = context_lib.untrained_pairs(ctx)
    untrained = tuple(pairs_lib.match_pair(ctx, p) for p in upairs)
    untrained_fit = _fit_of(untrained, cfg.seed, len(ctx.weights))
  gen_results, gen_fit, gen_anchors = generator_results(ctx)
  return ScalingResult(
      models=ctx.models, pairs=results, headline=headline, sensitivity=sensitivity,
      budgets=budgets, budget_units=budget_units,
      leave_one_model_out=replicates.leave_one_model_out(groups, [r.count for r in results]),
      converged=verdict, untrained=untrained, untrained_fit=untrained_fit,
      descriptive=_descriptive(ctx, results, groups),
      by_kind=by_kind(results, cfg.seed, len(ctx.weights)) if ctx.models == "zoo" else {},
      anchors=pairs_lib.anchor_sets(ctx, results), model_info=ctx.info,
      documents=len(ctx.docs), bootstrap=cfg.bootstrap,
      seconds={**ctx.seconds, "match": sum(sum(r.seconds.values())
                                           for r in results + gen_results)},
      modality=ctx.cfg.modality, generator_pairs=gen_results, generator_fit=gen_fit,
      generator_anchors=gen_anchors, zoo_summary=ctx.zoo_summary)


def generator_results(ctx: context_lib.Context):
  """(PairResults, Fit over the discriminators' sizes, anchors) of the generator's
  pairs; ((), None, None) without a generator."""
  if not ctx.generator_pairs:
    return (), None, None
  res = tuple(ctx.result(p) for p in ctx.generator_pairs)
  groups = replicates.group_by_size([r.neurons_b for r in res],
                                    [(r.model_a, r.model_b) for r in res])
  fit = replicates.fit(replicates.ModelResampler(groups, len(ctx.weights), ctx.cfg.seed),
                       [r.count for r in res], np.stack([r.boot_counts for r in res], 1))
  return res, fit, pairs_lib.model_anchors(ctx.generator_pairs[0].a, res)


def claims(result: ScalingResult) -> list[list]:
  """Summary rows: (claim, measured, 95% CI, agrees with the published claim?)."""
  name = "1. Rosetta count ~ N^beta, sublinear (beta < 1)"
  if result.fit is None:
    return [[name, "one size: no fit", "", "not measurable"]]
  f = result.fit
  agrees = "yes" if f.ci[1] < 1 else "no (CI reaches 1)"
  if result.descriptive:
    agrees = f"descriptive only ({result.descriptive})"
  elif not result.converged["criteria_agree"]:
    agrees += "; depends on the criterion"
  return [[name, f"beta = {f.beta:.3f}", f"[{f.ci[0]:.3f}, {f.ci[1]:.3f}]", agrees]]


def _ci(ci) -> str:
  return "-" if ci is None or ci[0] is None else f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def _b(x) -> str:
  return "-" if x is None else f"{x:.3f}"


def section(rep: Report, result: ScalingResult) -> Report:
  """Adds the scaling study (claim 1) to a report."""
  pairs, head = result.pairs, result.headline
  fit = head.fit
  crit = result.criterion or {}
  rep.section("Claim 1: Rosetta neurons grow as a sublinear power law")
  if fit is not None:
    verdict = ("sublinear: the fraction shrinks with size" if fit.ci[1] < 1 else
               "not significantly sublinear at this scale")
    kind = ("a descriptive slope, not an exponent: " + result.descriptive
            if result.descriptive else "an exponent")
    rep.text(f"Declared criterion: {criterion_name(crit)}. count ~ N^beta with beta = "
             f"{fit.beta:.3f}, 95% CI [{fit.ci[0]:.3f}, {fit.ci[1]:.3f}] (basic bootstrap "
             f"over {fit.n_boot} resamples of {head.resamples}); the regression interval "
             f"across the {len(head.sizes)} sizes alone is {_ci(head.regression.ci)}. "
             f"This is {kind}. Verdict: {verdict}.")
  else:
    rep.text("Only one model size has Rosetta pairs: no power law can be fitted.")
  rep.text(result.converged["verdict"].capitalize() + ".")
  units = pairs[0].units if pairs else 0
  what = ("generated images x grid cells" if result.modality == "vision" else
          "held-out documents")
  rep.text(f"{units} aligned units from {result.documents} {what}; Rosetta = "
           f"mutual {crit.get('k', 1)}-nearest neighbours on Pearson r across all layers. "
           "Size axis: the geometric mean of the two models' studied MLP neurons; the "
           "fraction is taken against the smaller model.", css="note")
  if fit is not None:
    lo, hi = head.count_ci[:, 0], head.count_ci[:, 1]
    labels = [f"N={s:.0f}" for s in head.sizes]
    rep.figure(figures.count_vs_size(fit, head.sizes, head.counts, lo, hi, labels))
    rep.figure(figures.fraction_vs_size(fit, head.sizes, head.counts / head.sizes,
                                        lo / head.sizes, hi / head.sizes, labels))
  rep.table(["pair", "neurons (A)", "count", "95% CI (documents)", "est. false positives",
             "fraction", "mean r", "mutual NN (no threshold)", "null pairs / permutation",
             "r threshold", "unit-identity null", "constant (excluded)"],
            [[p.label, p.neurons_a, p.count, f"[{p.count_ci[0]:.0f}, {p.count_ci[1]:.0f}]",
              f"{p.false_positives:.2f}", p.fraction,
              float(p.r.mean()) if p.count else float("nan"), len(p.raw_r),
              f"{p.null_count:.1f}", p.r_threshold if p.r_threshold is not None else "-",
              p.identity["count"] if p.identity else "-",
              p.excluded_a + p.excluded_b] for p in pairs])
  rep.table(["size N", "pairs", "mean count", "95% CI (models and documents)"],
            [[f"{s:.0f}", len(g), f"{c:.1f}", f"[{ci[0]:.1f}, {ci[1]:.1f}]"]
             for s, c, ci, g in zip(head.sizes, head.counts, head.count_ci,
                                    _groups(pairs))])
  if result.by_kind:
    rep.section("Pairs across seeds and across architectures")
    rep.table(["pairs", "beta", "95% CI (models and documents)", "regression CI",
               "mean count per size"],
              [[k, _b(f.beta), _ci(f.ci), _ci(f.regression.ci if f.regression else None),
                " / ".join(f"{c:.1f}" for c in f.counts)] for k, f in result.by_kind.items()])
    rep.text("'seeds': two seeds of one architecture (same tokenizer); 'architectures': "
             "GPT-NeoX against the Llama-style family at the same width and seed (different "
             "tokenizers, units aligned by byte span). The headline fits both together.",
             css="note")
  rows = [("declared: " + criterion_name(crit), head)] + list(result.sensitivity.items())
  rep.section("Sensitivity: beta under the alternatives (same recordings)")
  rep.table(["criterion", "beta", "95% CI", "regression CI", "counts per size"],
            [[n, _b(f.beta), _ci(f.ci), _ci(f.regression.ci if f.regression else None),
              " / ".join(f"{c:.0f}" for c in f.counts)] for n, f in rows])
  fitted = [(n, f.beta, f.ci) for n, f in rows if f.fit is not None]
  if fitted:
    rep.figure(figures.beta_forest(fitted))
  rep.text("Only the declared criterion is the headline; the others are reported so that "
           "a reader sees how much the answer depends on the choice. 'excess over null' "
           "is the raw mutual-pair count minus the null's expected count.", css="note")
  rep.section("Unit budget")
  bud = result.budgets
  rep.table(["documents", "units", "beta", "95% CI"],
            [[f"{f:g}", result.budget_units[f], _b(v.beta), _ci(v.ci)]
             for f, v in bud.items()])
  ok = [(result.budget_units[f], v.beta, v.ci) for f, v in bud.items() if v.fit is not None]
  if len(ok) >= 2:
    rep.figure(figures.beta_vs_budget([o[0] for o in ok], [o[1] for o in ok],
                                      [o[2] for o in ok]))
  lomo = {k: v for k, v in result.leave_one_model_out.items() if v is not None}
  if lomo:
    rep.text("Leave one model out: beta from " f"{min(lomo.values()):.3f} to "
             f"{max(lomo.values()):.3f} (" + ", ".join(f"{k}: {v:.3f}"
                                                       for k, v in lomo.items()) + ").")
  rep.section("Baselines")
  if result.untrained:
    uf = result.untrained_fit
    rep.text("Untrained (random-init) models at the same widths and seeds, counted by the "
             "same criterion: counts " + " / ".join(str(p.count) for p in result.untrained)
             + (f"; beta = {uf.beta:.3f} {_ci(uf.ci)}." if uf and uf.fit else "."))
  if pairs and pairs[0].identity:
    fixed = pairs[0].identity["fixed_units"]
    rep.table(["pair", "Rosetta count", "unit-identity null count", "contextual (difference)"],
              [[p.label, p.count, p.identity["count"], p.count - p.identity["count"]]
               for p in pairs])
    rep.text("Unit-identity null: B's units permuted among units with the same text (token "
             "identity kept, context destroyed), under the same r floor. Pairs that survive "
             "it are token detectors; the difference is the contextual Rosetta count. "
             f"{fixed:.1%} of units have a text that occurs once and cannot move.",
             css="note")
  rep.figure(figures.r_distribution({p.label: p.r for p in pairs}))
  rep.figure(figures.depth_profile({p.label: (np.asarray(p.depth_a), p.layer_density_a)
                                    for p in pairs}))
  rep.text("Null: B's held-out documents shuffled as whole blocks (same matcher), "
           f"{pairs[0].permutations if pairs else 0} independent permutations. Intervals: "
           "basic bootstrap; each resample redraws the documents (re-matched among the "
           "candidates), the models of each size (seeds, where a size has three or more), "
           "and the null's permutations (the threshold re-estimated).", css="note")
  if result.anchors:
    anchor_section(rep, result.anchors)
  if result.generator_pairs:
    generator_section(rep, result)
  return rep


def generator_section(rep: Report, result: ScalingResult) -> Report:
  """The vision zoo's generator against each discriminator, beside the seed pairs."""
  gp, f = result.generator_pairs, result.generator_fit
  rep.section("Generator vs discriminators (the generated images)")
  if f is not None and f.fit is not None:
    rep.text(f"Generator {gp[0].model_a} ({gp[0].neurons_a} studied neurons) against each "
             f"discriminator: count ~ N_discriminator^beta with beta = {f.beta:.3f}, 95% CI "
             f"{_ci(f.ci)} (resampling {f.resamples}); the seed pairs' beta is "
             f"{_b(result.headline.beta)} {_ci(result.headline.ci)}.")
  seeds = {}
  for p in result.pairs:
    seeds.setdefault(p.neurons_a, []).append(p.count)
  rep.table(["discriminator", "neurons", "generator pairs", "95% CI (images)",
             "fraction (of the discriminator)", "mean r", "seed pairs at this width (mean)"],
            [[p.model_b, p.neurons_b, p.count, f"[{p.count_ci[0]:.0f}, {p.count_ci[1]:.0f}]",
              p.count / p.neurons_b, float(p.r.mean()) if p.count else float("nan"),
              f"{np.mean(seeds[p.neurons_b]):.1f}" if p.neurons_b in seeds else "-"]
             for p in gp])
  if result.generator_anchors:
    anchor_section(rep, {gp[0].model_a: result.generator_anchors})
  rep.text("Units: the generated images x the canonical grid's cells. The null deranges "
           "whole images; the intervals resample images.", css="note")
  zs = result.zoo_summary or {}
  if zs.get("accuracy"):
    rep.table(["classifier", "held-out accuracy"], [[k, v] for k, v in zs["accuracy"].items()])
  if zs.get("generator"):
    rep.table(["generator check", "value"], [[k, v] for k, v in zs["generator"].items()])
  return rep


def _groups(pairs):
  g = replicates.group_by_size([p.size for p in pairs], [(p.model_a, p.model_b) for p in pairs])
  return [x.columns for x in g]


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
