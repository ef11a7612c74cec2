"""The theory comparison (claim 5) as a study: the capacity model, its mechanism variants
and toy simulations against the counts the scaling study measured in the same workdir.

``run(ctx, cfg)`` (``cfg`` a ``TheoryConfig``):

* the toy sweep (``cfg.sim``, a ``theory.simulate.SimConfig``): alpha fixed from the
  embedded corpus's word rank-frequency law (never from Rosetta counts), beta
  predicted with ``theory.capacity`` and simulated (``theory.compare``);
* the variants at the measured sizes (``cfg.variants``, a
  ``theory.predict.VariantsConfig``): F and alpha fixed by the declared rule (the
  zoo's tokens, with the workdir's own tokenizer; the words rule for other models,
  whose tokenizers differ), each mechanism's a priori prediction at every measured
  N, its fit to all sizes and its out-of-sample test on the smallest sizes beside a
  plain power law, with bootstrap intervals and the verdict of
  ``theory.bootstrap.VERDICT_RULE``.

Outputs go to ``workdir/theory``. Needs the ``theory`` package (installed with
rosetta_jax).
"""

from __future__ import annotations

import dataclasses
import os

from rosetta_jax.report import docs_theory
from rosetta_jax.report.html import Report
from rosetta_jax.studies import context as context_lib

NAME = "theory"
TITLE = "rosetta_jax: theory sweep"
OUTPUT = "theory"


def _variants_presets() -> dict:
  from theory import predict  # pylint: disable=g-import-not-at-top
  # micro is the tests' preset: the words rule (counting the zoo's tokens over the
  # corpus is the slow part of the tokens rule) and few resamples.
  small = predict.VariantsConfig(rules=("words",), steps=150, reps=20, alpha_bootstrap=5)
  return {"micro": small, "tiny": predict.VariantsConfig(), "default": predict.VariantsConfig()}


@dataclasses.dataclass(frozen=True)
class TheoryConfig:
  """The theory study's settings: the toy sweep (None: none) and the variants at the
  measured sizes (None: none)."""
  sim: object
  variants: object


def default_config(preset: str = "tiny") -> TheoryConfig:
  """The preset's sweep (alpha fixed from the corpus) and its variants' settings."""
  from theory import corpus_stats, simulate  # pylint: disable=g-import-not-at-top
  est = corpus_stats.corpus_alpha("all", ngram=1, bootstrap=2)   # the estimate only
  return TheoryConfig(dataclasses.replace(simulate.PRESETS[preset], alpha=est["alpha"]),
                      _variants_presets()[preset])


@dataclasses.dataclass(frozen=True)
class TheoryResult:
  """``theory.compare``'s results (alpha, the prediction, the simulation, the table) and,
  under ``variants``, ``theory.predict.run_all``'s (None without a measured scaling run)."""
  data: dict

  @property
  def table(self) -> list[dict]:
    return self.data["table"]

  @property
  def variants(self) -> dict | None:
    return self.data.get("variants")

  def to_json(self) -> dict:
    return {"study": NAME, **self.data}


def _rules(ctx, rules) -> tuple[tuple[str, ...], str | None]:
  tok = os.path.join(ctx.workdir, "zoo")
  if os.path.exists(os.path.join(tok, "tokenizer.json")):
    return tuple(rules), tok
  return tuple(r for r in rules if r != "tokens") or ("words",), None


def run(ctx: context_lib.Context, cfg=None) -> TheoryResult:
  from theory import compare, corpus_stats, predict  # pylint: disable=g-import-not-at-top
  cfg = cfg or default_config()
  if not isinstance(cfg, TheoryConfig):              # a bare SimConfig: the sweep only
    cfg = TheoryConfig(cfg, None)
  est = corpus_stats.corpus_alpha("all", ngram=1, bootstrap=(
      cfg.variants.alpha_bootstrap if cfg.variants is not None else 200))
  alpha = {"alpha": est["alpha"], "ci": est["ci"],
           "source": "word rank-frequency law of the embedded corpus"}
  measured = os.path.join(ctx.workdir, "results.json")
  have = os.path.exists(measured)
  if cfg.sim is not None:
    res = compare.run_comparison(cfg.sim, os.path.join(ctx.workdir, OUTPUT), alpha,
                                 measured if have else None, log=lambda *_: None)
  else:                                                # the variants only
    res = {"alpha": alpha, "table": []}
  if have and cfg.variants is not None:
    v = cfg.variants
    rules, tok = _rules(ctx, v.rules)
    res["variants"] = predict.run_all(measured, rules, tokenizer_dir=tok, n_fit=v.n_fit,
                                      steps=v.steps, bootstrap=v.alpha_bootstrap, reps=v.reps,
                                      names=v.variants or None, seed=v.seed, log=lambda *_: None)
  return TheoryResult(res)


def _declared(result: TheoryResult) -> tuple[str, dict] | None:
  v = result.variants
  if not v:
    return None
  rule = next(iter(v["rules"]))
  return rule, v["rules"][rule]


def claims(result: TheoryResult) -> list[list]:
  pred = next((r for r in result.table if r["source"].startswith("predicted (capacity")), None)
  measured = next((r for r in result.table if r["source"].startswith("measured")), None)
  rows = []
  if pred:
    rows.append(["5. capacity model predicts a sublinear exponent", f"beta = {pred['beta']:.3f}",
                 f"[{pred['ci'][0]:.3f}, {pred['ci'][1]:.3f}]",
                 "yes" if pred["ci"][1] < 1 else "no"])
  if pred and measured:
    rows.append(["5. predicted CI contains the measured beta", f"measured {measured['beta']:.3f}",
                 f"[{pred['ci'][0]:.3f}, {pred['ci'][1]:.3f}]",
                 "yes" if pred["ci"][0] <= measured["beta"] <= pred["ci"][1] else "no"])
  dec = _declared(result)
  if dec:
    rule, r = dec
    fits = r["verdict"]["fits"]
    rows.append([f"5. a mechanism fits the measured counts at their sizes (rule `{rule}`; "
                 "a priori or out of sample)", ", ".join(fits) or "none",
                 f"measured beta {r['measured']['beta']:.3f}", "yes" if fits else "no"])
  return rows


def section(rep: Report, result: TheoryResult) -> Report:
  from theory import compare  # pylint: disable=g-import-not-at-top
  if result.table:
    compare.section(rep, result.data)
  v = result.variants
  if v:
    rep.section("Claim 5: mechanisms at the measured sizes")
    for rule, r in v["rules"].items():
      fx = r["fixed"]
      rep.text(f"Rule `{rule}`: alpha = {fx['alpha']:.3f}, F = {fx['num_features']:g} "
               f"({fx['text']}).")
      rep.table(*docs_theory.predicted_rows(r))
      rep.text(f"Out of sample: fitted on the {r['n_fit']} smallest sizes.")
      rep.table(*docs_theory.oos_rows(r))
      rep.text(f"Verdict: {r['verdict']['text']}. Rule: {r['verdict']['rule']}")
  return rep
