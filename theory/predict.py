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
(``analysis.stats.ols`` in log-log space).
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
  """
  sizes: np.ndarray
  counts: np.ndarray
  count_ci: np.ndarray
  beta: float
  beta_ci: list
  labels: list
  path: str


def read_measured(path: str) -> Measured:
  """The scaling study's counts per size and their intervals from its results.json
  (the headline's mean per size when the study has one; else one pair per size).

  Raises:
    FileNotFoundError / ValueError: no file, or no ``pairs`` with counts and a ``fit``.
  """
  if not os.path.exists(path):
    raise FileNotFoundError(f"measured results not found: {path}")
  res = io_lib.read_json(path, what="a scaling study's results")
  head = res.get("headline")
  if head and head.get("beta") is not None:
    # Replicated models: one point per size (the mean of its pairs), its interval
    # over models and documents, and the headline exponent.
    out = Measured(np.array(head["sizes"], float), np.array(head["counts"], float),
                   np.array(head["count_ci"], float), float(head["beta"]),
                   [float(c) for c in head["ci"]],
                   [f"N={s:g}" for s in head["sizes"]], os.path.abspath(path))
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
                   [p["label"] for p in pairs], os.path.abspath(path))
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
             log=print) -> dict:
  """A priori, fitted and out-of-sample predictions of every variant at the measured sizes.

  Returns:
    JSON-ready dict: ``fixed``, ``measured``, ``variants`` {name: {apriori, fit_all,
    out_of_sample}}, ``power_law`` (out of sample), ``n_fit``.
  """
  names = list(names or V.VARIANTS)
  if not 2 <= n_fit < len(m.sizes):
    raise ValueError(f"n_fit must be in [2, {len(m.sizes) - 1}], got {n_fit}")
  a, f = fixed["alpha"], fixed["num_features"]
  size = V.feature_axis(f, m.sizes.max())
  held = np.arange(n_fit, len(m.sizes))
  out = {}
  for name in names:
    v = V.get(name)
    apriori = _curve(name, v.init, m, fixed, size)
    betas = [V.fitted_beta(name, v.init, m.sizes, al, f, size) for al in fixed["alpha_ci"]]
    apriori["beta_ci"] = [min(betas + [apriori["beta"]]), max(betas + [apriori["beta"]])]
    apriori["physical"] = v.physical(v.init)
    apriori["score"] = _score(np.asarray(apriori["counts"]), m, np.arange(len(m.sizes)))
    fa = V.fit(name, m.sizes, m.counts, a, f, size, steps=steps)
    fit_all = {**_curve(name, fa.theta, m, fixed, size), "physical": fa.physical,
               "loss": fa.loss}
    fit_all["score"] = _score(np.asarray(fit_all["counts"]), m, np.arange(len(m.sizes)))
    fo = V.fit(name, m.sizes[:n_fit], m.counts[:n_fit], a, f, size, steps=steps)
    oos = {**_curve(name, fo.theta, m, fixed, size), "physical": fo.physical, "loss": fo.loss}
    oos["score"] = _score(np.asarray(oos["counts"]), m, held)
    out[name] = {"summary": v.summary, "apriori": apriori, "fit_all": fit_all,
                 "out_of_sample": oos}
    log(f"{name}: a priori beta {apriori['beta']:.3f}; fit-all beta {fit_all['beta']:.3f} "
        f"(rms log err {fit_all['score']['rms_log_error']:.3f}); out-of-sample rms log err "
        f"{oos['score']['rms_log_error']:.3f}")
  line = stats.ols(np.log(m.sizes[:n_fit]), np.log(m.counts[:n_fit]))
  pl = np.exp(line.intercept + line.slope * np.log(m.sizes))
  power = {"beta": float(line.slope), "intercept": float(line.intercept),
           "counts": pl.tolist(), "score": _score(pl, m, held)}
  log(f"power law on {n_fit} smallest: beta {line.slope:.3f}; out-of-sample rms log err "
      f"{power['score']['rms_log_error']:.3f}")
  return {"fixed": fixed, "n_fit": n_fit, "feature_axis": size,
          "measured": {"sizes": m.sizes.tolist(), "counts": m.counts.tolist(),
                       "count_ci": m.count_ci.tolist(), "beta": m.beta, "beta_ci": m.beta_ci,
                       "labels": m.labels, "path": m.path},
          "variants": out, "power_law": power}


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


def run_all(measured_path: str, rules=("tokens", "words"), tokenizer_dir: str | None = None,
            png: str | None = None, n_fit: int = 3, steps: int = 400, bootstrap: int = 200,
            log=print) -> dict:
  """Every rule x variant on one scaling study's results.json (+ the regime map)."""
  m = read_measured(measured_path)
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
    results[rule] = evaluate(m, fixed, n_fit=n_fit, steps=steps, log=log)
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


def markdown_tables(res: dict) -> str:
  """docs/theory.md's tables from ``run_all``'s JSON (the numbers exactly as written)."""
  lines = []
  for rule, r in res["rules"].items():
    fx, m = r["fixed"], r["measured"]
    sizes = [f"{s:g}" for s in m["sizes"]]
    lines += [f"**Rule `{rule}`**: alpha = {fx['alpha']:.3f} [{fx['alpha_ci'][0]:.3f}, "
              f"{fx['alpha_ci'][1]:.3f}], F = {fx['num_features']:g}.", "",
              "| | beta over the 5 sizes | " + " | ".join(f"N = {s}" for s in sizes) + " |",
              "|---|---|" + "---|" * len(sizes),
              f"| measured (tiny zoo) | {m['beta']:.3f} [{m['beta_ci'][0]:.3f}, "
              f"{m['beta_ci'][1]:.3f}] | " + " | ".join(
                  f"{c:g} [{lo:g}, {hi:g}]" for c, (lo, hi) in zip(m["counts"], m["count_ci"])) + " |"]
    for name, v in r["variants"].items():
      a = v["apriori"]
      lines.append(f"| {name}, a priori | {a['beta']:.3f} [{a['beta_ci'][0]:.3f}, "
                   f"{a['beta_ci'][1]:.3f}] | " + " | ".join(f"{c:.1f}" for c in a["counts"]) + " |")
    for name, v in r["variants"].items():
      fa = v["fit_all"]
      lines.append(f"| {name}, fit to all 5 | {fa['beta']:.3f} | " +
                   " | ".join(f"{c:.1f}" for c in fa["counts"]) + " |")
    lines += ["", f"Out of sample (fitted on the {r['n_fit']} smallest sizes):", "",
              "| mechanism | fitted parameters | beta (5 sizes) | " + " | ".join(
                  f"N = {s:g}: pred (err in half-widths)" for s in m["sizes"][r["n_fit"]:]) +
              " | rms log error |", "|---|---|---|" + "---|" * (len(sizes) - r["n_fit"] + 1)]
    rows = [(name, v["out_of_sample"]) for name, v in r["variants"].items()]
    pl = r["power_law"]
    rows.append(("power law", {"physical": {"beta": pl["beta"]}, "beta": pl["beta"],
                               "score": pl["score"]}))
    for name, o in rows:
      sc = o["score"]
      par = ", ".join(f"{k} {x:.3g}" for k, x in o["physical"].items())
      cells = " | ".join(f"{p:.1f} ({e:+.1f}{' in CI' if ok else ''})" for p, e, ok in
                         zip(sc["predicted"], sc["error_in_half_widths"], sc["in_interval"]))
      lines.append(f"| {name} | {par} | {o['beta']:.3f} | {cells} | {sc['rms_log_error']:.3f} |")
    lines.append("")
  return "\n".join(lines)
