"""The variants at the measured sizes: a priori predictions and the out-of-sample test.

The rule that fixes F and alpha (``RULES``) is written here, before any measured
count is read, and the measured counts enter only through ``read_measured``:

* ``tokens`` (the headline): the units the zoo study correlates over are its
  tokenizer's tokens (both models of a pair share the tokenizer, so canonical
  spans are tokens), and the zoo learns from the corpus's train split. F is the
  number of token types seen at least ``MIN_COUNT`` times there; alpha is the
  rank-frequency slope of those tokens over ranks 1..F
  (``corpus_stats.estimate_alpha_counts``).
* ``words`` (the sensitivity row): the same with lower-cased words of the whole
  corpus (the alpha the theory study has always used).

``evaluate`` then gives, per variant: (a) the a priori prediction at every
measured N (free parameters at their a priori ``init``; beta's range over
alpha's CI), (b) the fit to all sizes (can the shape fit at all?), and (c) the
out-of-sample test: free parameters fitted by optax on the ``n_fit`` smallest
sizes, counts predicted at the larger ones and scored against the measured
intervals, beside a plain power law fitted to the same sizes
(``analysis.stats.ols`` in log-log space). Every fit is repeated on bootstrap
resamples of the measured counts and the verdict is taken by the written rule
(``theory.bootstrap``: ``RESAMPLE_RULE``, ``VERDICT_RULE``). ``VariantsConfig`` is
how the theory study (``rosetta_jax.studies.theory``) runs all of this.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from rosetta_jax import io as io_lib
from rosetta_jax.analysis import stats
from theory import corpus_stats
from theory import variants as V

MIN_COUNT = 10
RULES = {
    "tokens": (f"F = token types of the zoo's tokenizer seen >= {MIN_COUNT} times in the "
               "corpus's train split; alpha = rank-frequency slope of those tokens over ranks "
               "1..F (document bootstrap CI)"),
    "words": (f"F = lower-cased word types seen >= {MIN_COUNT} times in the whole corpus; "
              "alpha = word rank-frequency slope over ranks 1..F (document bootstrap CI)"),
}


def fix_parameters(rule: str, tokenizer=None, bootstrap: int = 200) -> dict:
  """F and alpha by ``RULES[rule]``, from the corpus alone.

  Args:
    rule: ``tokens`` or ``words``.
    tokenizer: the zoo's tokenizer (``tokens``; default: a BPE trained on the train
      split with the zoo's vocabulary size, which is how the zoo makes its own).

  Returns:
    dict ``rule``, ``text``, ``alpha``, ``alpha_ci``, ``num_features``, ``num_units``.
  """
  if rule not in RULES:
    raise ValueError(f"rule must be one of {sorted(RULES)}, got {rule!r}")
  if rule == "tokens":
    if tokenizer is None:
      from rosetta_jax.data import corpus, tokenizer as tok_lib  # pylint: disable=g-import-not-at-top
      from rosetta_jax.zoo.config import ZooConfig  # pylint: disable=g-import-not-at-top
      tokenizer = tok_lib.train_bpe((d.text for d in corpus.load_corpus("train")),
                                    ZooConfig().vocab_size)
    est = corpus_stats.corpus_token_alpha(tokenizer, "train", MIN_COUNT, bootstrap)
  else:
    est = corpus_stats.corpus_alpha("all", ngram=1, bootstrap=bootstrap)
  return {"rule": rule, "text": RULES[rule], "alpha": est["alpha"], "alpha_ci": est["ci"],
          "num_features": float(est["types_above_floor"]), "num_units": est["num_units"]}


@dataclasses.dataclass(frozen=True)
class Measured:
  """Counts of one scaling study, by increasing size.

  Attributes:
    sizes: [S] neurons per model (geometric mean of the pair).
    counts: [S] Rosetta counts; count_ci: [S, 2] their 95% intervals.
    beta, beta_ci: the study's power-law exponent and interval.
    labels: the pairs; path: the results.json read.
    source: the run that wrote it (``command``, ``commit``, ``date``, ``machine``) when
      ``path`` is a ``--summary`` file (``report.docs.write_summary``), else {}.
  """
  sizes: np.ndarray
  counts: np.ndarray
  count_ci: np.ndarray
  beta: float
  beta_ci: list
  labels: list
  path: str
  source: dict = dataclasses.field(default_factory=dict)


def read_measured(path: str) -> Measured:
  """The scaling study's counts per size and their intervals from its results.json or
  from its ``--summary`` file (``docs/results/scaling_tiny.json``): the headline's mean
  per size with its model-and-document interval when the study has one; else one pair
  per size.

  Raises:
    FileNotFoundError / ValueError: no file, or no ``pairs`` with counts and a ``fit``.
  """
  if not os.path.exists(path):
    raise FileNotFoundError(f"measured results not found: {path}")
  res = io_lib.read_json(path, what="a scaling study's results")
  source = {}
  if "results" in res and "command" in res:       # a --summary file: the run, then results
    source = {k: res.get(k) for k in ("command", "commit", "date", "machine")}
    res = res["results"]
  head = res.get("headline")
  if head and head.get("beta") is not None:
    # Replicated models: one point per size (the mean of its pairs), its interval
    # over models and documents, and the headline exponent.
    out = Measured(np.array(head["sizes"], float), np.array(head["counts"], float),
                   np.array(head["count_ci"], float), float(head["beta"]),
                   [float(c) for c in head["ci"]],
                   [f"N={s:g}" for s in head["sizes"]], path, source)
    if len(out.sizes) < 2 or np.any(out.counts <= 0):
      raise ValueError(f"{path}: need >= 2 sizes with positive counts, got "
                       f"{out.counts.tolist()}")
    return out
  try:
    pairs = sorted(res["pairs"], key=lambda p: p["size"])
    fit = res["fit"]["count"]
    out = Measured(np.array([p["size"] for p in pairs], float),
                   np.array([p["count"] for p in pairs], float),
                   np.array([p["count_ci"] for p in pairs], float),
                   float(fit["beta"]), [float(c) for c in fit["ci"]],
                   [p["label"] for p in pairs], path, source)
  except (KeyError, TypeError, ValueError) as e:
    raise ValueError(f"{path}: expected 'pairs' with size/count/count_ci and fit.count "
                     f"({type(e).__name__}: {e})") from None
  if len(out.sizes) < 2 or np.any(out.counts <= 0):
    raise ValueError(f"{path}: need >= 2 sizes with positive counts, got {out.counts.tolist()}")
  return out


def _score(pred: np.ndarray, m: Measured, idx: np.ndarray) -> dict:
  """Errors of predicted counts at sizes ``idx`` against the measured intervals."""
  p, c, ci = pred[idx], m.counts[idx], m.count_ci[idx]
  half = np.where(p >= c, ci[:, 1] - c, c - ci[:, 0])
  return {"sizes": m.sizes[idx].tolist(), "predicted": p.tolist(), "measured": c.tolist(),
          "log_error": np.log(p / c).tolist(),
          "rms_log_error": float(np.sqrt(np.mean(np.log(p / c) ** 2))),
          "in_interval": ((p >= ci[:, 0]) & (p <= ci[:, 1])).tolist(),
          "error_in_half_widths": ((p - c) / np.maximum(half, 1e-9)).tolist()}


def _curve(name, theta, m: Measured, fixed: dict, size: int) -> dict:
  sizes = m.sizes
  a, f = fixed["alpha"], fixed["num_features"]
  counts = np.asarray(V.counts(name, theta, sizes, a, f, size), float)
  sel = [V.get(name).selectivity(theta, n, a, f, size) for n in sizes]
  return {"counts": counts.tolist(),
          "beta": stats.loglog_slope(sizes, counts),
          "local_beta": [float(V.local_beta(name, theta, n, a, f, size)) for n in sizes],
          "selectivity_rosetta": [float(s["rosetta"]) for s in sel],
          "selectivity_non_rosetta": [float(s["non_rosetta"]) for s in sel],
          "dedicated": [float(s["dedicated"]) for s in sel]}


def evaluate(m: Measured, fixed: dict, names=None, n_fit: int = 3, steps: int = 400,
             reps: int = 200, seed: int = 0, log=print) -> dict:
  """A priori, fitted and out-of-sample predictions of every variant at the measured sizes.

  With ``reps`` > 0 every fit is repeated on ``reps`` resamples of the measured
  counts (``theory.bootstrap``: ``RESAMPLE_RULE``), giving intervals for the fitted
  parameters, beta and counts, the out-of-sample error and how often a variant
  beats the power law; ``verdict`` applies ``bootstrap.VERDICT_RULE``.

  Returns:
    JSON-ready dict: ``fixed``, ``measured``, ``variants`` {name: {apriori, fit_all,
    out_of_sample}} (each fitted entry with ``bootstrap``), ``power_law`` (out of
    sample, with ``bootstrap``), ``n_fit``, ``resample`` and ``verdict``.
  """
  from theory import bootstrap  # pylint: disable=g-import-not-at-top
  names = list(names or V.VARIANTS)
  if not 2 <= n_fit < len(m.sizes):
    raise ValueError(f"n_fit must be in [2, {len(m.sizes) - 1}], got {n_fit}")
  a, f = fixed["alpha"], fixed["num_features"]
  size = V.feature_axis(f, m.sizes.max())
  held = np.arange(n_fit, len(m.sizes))
  k = len(m.sizes)
  line = stats.ols(np.log(m.sizes[:n_fit]), np.log(m.counts[:n_fit]))
  pl = np.exp(line.intercept + line.slope * np.log(m.sizes))
  power = {"beta": float(line.slope), "intercept": float(line.intercept),
           "counts": pl.tolist(), "score": _score(pl, m, held)}
  log(f"power law on {n_fit} smallest: beta {line.slope:.3f}; out-of-sample rms log err "
      f"{power['score']['rms_log_error']:.3f}")
  # Rows fitted at once, one program per variant: the counts on all sizes, the counts on
  # the n_fit smallest, then each resample on all sizes and on the n_fit smallest.
  boot = (bootstrap.resample_counts(m.counts, m.count_ci, reps, seed) if reps
          else np.zeros((0, k)))
  rows = np.concatenate([m.counts[None], m.counts[None], boot, boot])
  w_all, w_fit = np.ones(k), (np.arange(k) < n_fit).astype(float)
  weights = np.stack([w_all, w_fit] + [w_all] * reps + [w_fit] * reps)
  if reps:
    power["bootstrap"], pl_rms = bootstrap.power_law(m.sizes, boot, n_fit, power)
  out = {}
  for name in names:
    v = V.get(name)
    apriori = _curve(name, v.init, m, fixed, size)
    betas = [V.fitted_beta(name, v.init, m.sizes, al, f, size) for al in fixed["alpha_ci"]]
    apriori["beta_ci"] = [min(betas + [apriori["beta"]]), max(betas + [apriori["beta"]])]
    apriori["physical"] = v.physical(v.init)
    apriori["score"] = _score(np.asarray(apriori["counts"]), m, np.arange(k))
    th, loss = V.fit_many(name, m.sizes, rows, a, f, size, steps, weights=weights)
    fitted = {}
    for key, row, idx in (("fit_all", 0, np.arange(k)), ("out_of_sample", 1, held)):
      if not np.isfinite(loss[row]):
        raise FloatingPointError(f"{name}: every start of the {key} fit diverged")
      theta = {p: float(x[row]) for p, x in th.items()}
      fitted[key] = {**_curve(name, theta, m, fixed, size), "physical": v.physical(theta),
                     "theta": theta, "loss": float(loss[row])}
      fitted[key]["score"] = _score(np.asarray(fitted[key]["counts"]), m, idx)
    out[name] = {"summary": v.summary, "apriori": apriori, **fitted}
    log(f"{name}: a priori beta {apriori['beta']:.3f}; fit-all beta "
        f"{fitted['fit_all']['beta']:.3f} (rms log err "
        f"{fitted['fit_all']['score']['rms_log_error']:.3f}); out-of-sample rms log err "
        f"{fitted['out_of_sample']['score']['rms_log_error']:.3f}")
    if reps:
      b = bootstrap.variant(name, m.sizes, boot, a, f, size, n_fit, out[name], pl_rms,
                            {p: x[2:2 + reps] for p, x in th.items()}, loss[2:2 + reps],
                            {p: x[2 + reps:] for p, x in th.items()}, loss[2 + reps:])
      out[name]["fit_all"]["bootstrap"] = b["fit_all"]
      out[name]["out_of_sample"]["bootstrap"] = b["out_of_sample"]
      log(f"{name}: bootstrap fit-all beta {b['fit_all']['beta_ci']}; beats the line in "
          f"{b['out_of_sample']['beats_line']:.0%} of {reps} resamples")
  res = {"fixed": fixed, "n_fit": n_fit, "feature_axis": size,
         "measured": {"sizes": m.sizes.tolist(), "counts": m.counts.tolist(),
                      "count_ci": m.count_ci.tolist(), "beta": m.beta, "beta_ci": m.beta_ci,
                      "labels": m.labels, "path": m.path, "source": m.source},
         "variants": out, "power_law": power,
         "resample": {"rule": bootstrap.RESAMPLE_RULE, "reps": reps, "seed": seed}}
  res["verdict"] = bootstrap.verdict(res)
  return res


REGIME_ALPHAS = np.round(np.linspace(0.5, 1.6, 23), 3)
REGIME_RATIOS = np.geomspace(0.5, 64.0, 24)   # no grid point at F = N exactly


def regime_map(results: dict, png: str, n: float = 512.0) -> dict:
  """The a priori allocation map and the out-of-sample-fitted isolation map, measured points on it.

  Each measured configuration (size N of the zoo under each rule) sits at
  (F / N, alpha) coloured by the measured beta of its study.
  """
  from theory import regime  # pylint: disable=g-import-not-at-top
  grids, points = {}, []
  for rule, res in results.items():
    m = res["measured"]
    for s in m["sizes"]:
      points.append({"alpha": res["fixed"]["alpha"], "ratio": res["fixed"]["num_features"] / s,
                     "beta": m["beta"], "label": f"{s:g}",
                     "marker": "o" if rule == "tokens" else "s"})
  head = results.get("tokens") or next(iter(results.values()))
  grids["allocation (a priori)"] = regime.beta_grid(
      "allocation", V.get("allocation").init, n, REGIME_ALPHAS, REGIME_RATIOS)
  iso = head["variants"].get("isolation")
  if iso:
    th = {"tau0": iso["fit_all"]["physical"]["tau0"], "tau1": iso["fit_all"]["physical"]["tau1"]}
    grids[f"isolation, tau0={th['tau0']:.2f}, tau1={th['tau1']:.2f} (fit to all sizes, "
          f"{head['fixed']['rule']} rule)"] = (
        regime.beta_grid("isolation", th, n, REGIME_ALPHAS, REGIME_RATIOS))
  regime.plot(grids, REGIME_ALPHAS, REGIME_RATIOS, points, png, n)
  return {"n": n, "alphas": REGIME_ALPHAS.tolist(), "ratios": REGIME_RATIOS.tolist(),
          "grids": {k: np.round(g, 4).tolist() for k, g in grids.items()},
          "points": points, "png": png}


@dataclasses.dataclass(frozen=True)
class VariantsConfig:
  """The variants at the measured sizes (``run_all``), as a study runs them.

  Attributes:
    rules: rules for F and alpha (``RULES``); the first is the declared one, the
      verdict's (``tokens`` for the zoo).
    variants: mechanisms (``variants.VARIANTS`` names; empty: all).
    n_fit: out-of-sample test: the smallest sizes fitted (at most the sizes less one).
    steps: Adam steps per start of every fit.
    reps: bootstrap resamples of the measured counts (0: no intervals).
    alpha_bootstrap: document resamples of alpha's CI.
    seed: the resampling seed.
  """
  rules: tuple[str, ...] = ("tokens", "words")
  variants: tuple[str, ...] = ()
  n_fit: int = 3
  steps: int = 400
  reps: int = 200
  alpha_bootstrap: int = 200
  seed: int = 0

  def __post_init__(self):
    object.__setattr__(self, "rules", tuple(self.rules))
    object.__setattr__(self, "variants", tuple(self.variants))
    bad = [r for r in self.rules if r not in RULES] + [
        v for v in self.variants if v not in V.VARIANTS]
    if bad or not self.rules:
      raise ValueError(f"rules must be some of {sorted(RULES)} and variants of "
                       f"{sorted(V.VARIANTS)}; got {list(self.rules)}, {list(self.variants)}")
    if self.n_fit < 2 or self.steps < 1 or self.reps < 0 or self.alpha_bootstrap < 2:
      raise ValueError(f"need n_fit >= 2, steps >= 1, reps >= 0, alpha_bootstrap >= 2; got "
                       f"{self.n_fit}, {self.steps}, {self.reps}, {self.alpha_bootstrap}")


def run_all(measured_path: str, rules=("tokens", "words"), tokenizer_dir: str | None = None,
            png: str | None = None, n_fit: int = 3, steps: int = 400, bootstrap: int = 200,
            reps: int = 200, names=None, seed: int = 0, log=print) -> dict:
  """Every rule x variant on one scaling study's results.json (+ the regime map).

  ``n_fit`` is capped at the number of measured sizes less one.
  """
  m = read_measured(measured_path)
  n_fit = min(n_fit, len(m.sizes) - 1)
  tok = None
  if tokenizer_dir:
    from rosetta_jax.data import tokenizer as tok_lib  # pylint: disable=g-import-not-at-top
    tok = tok_lib.Tokenizer.load(tokenizer_dir)
  results = {}
  for rule in rules:
    fixed = fix_parameters(rule, tok if rule == "tokens" else None, bootstrap)
    if tokenizer_dir and rule == "tokens":
      fixed["tokenizer"] = os.path.abspath(tokenizer_dir)
    log(f"rule {rule}: alpha {fixed['alpha']:.3f} {fixed['alpha_ci']}, F {fixed['num_features']:g}")
    results[rule] = evaluate(m, fixed, names=names, n_fit=n_fit, steps=steps, reps=reps,
                             seed=seed, log=log)
  out = {"rules": results}
  if png:
    out["regime"] = regime_map(results, png)
  return out


def zoo_simulation(preset: str, cache_dir: str | None, log=print) -> dict:
  """A ``simulate.ZOO_PRESETS`` sweep beside every variant's a priori prediction at its N.

  The variants see the simulation's own F and utility exponent (activity
  ``f ** -prob_alpha`` x importance ``f ** -alpha``: utility exponent
  ``prob_alpha + alpha``).
  """
  from theory import simulate  # pylint: disable=g-import-not-at-top
  cfg = simulate.ZOO_PRESETS[preset]
  sim = simulate.run_sweep(cfg, log=log, cache_dir=cache_dir)
  a, f = cfg.prob_alpha + cfg.alpha, float(cfg.num_features)
  sizes = np.asarray(sim["budgets"], float)
  size = V.feature_axis(f, sizes.max())
  pred = {}
  for name, v in V.VARIANTS.items():
    c = np.asarray(V.counts(name, v.init, sizes, a, f, size), float)
    sel = [v.selectivity(v.init, n, a, f, size) for n in sizes]
    pred[name] = {"counts": c.tolist(), "beta": stats.loglog_slope(sizes, c),
                  "selectivity_non_rosetta": [float(s["non_rosetta"]) for s in sel]}
  return {"preset": preset, "utility_alpha": a, "simulated": sim, "predicted": pred}
