"""docs/theory.md's templates: the variants at the measured sizes and the simulations.

Rendered from ``docs/results/theory_variants.json`` (``experiments.theory_sweep
--variants_out``: ``theory.predict.run_all``) and ``docs/results/theory_zoo_sim.json``
(``--zoo_sim_out``: ``theory.predict.zoo_simulation``); registered in
``report.docs.TEMPLATES`` on import.
"""

from __future__ import annotations

from rosetta_jax.report.docs import _b, _ci, _table, template


def _f(x, fmt="{:.1f}") -> str:
  return "-" if x is None else fmt.format(x)


def _rules(s: dict) -> dict:
  return s["results"]["rules"]


@template("theory_rules")
def rules(s: dict) -> str:
  """F and alpha by each rule."""
  return _table(["rule", "alpha", "F (types >= 10 occurrences)", "units counted", "the rule"],
                [[f"`{name}`", f"{r['fixed']['alpha']:.3f} {_ci(r['fixed']['alpha_ci'])}",
                  f"{r['fixed']['num_features']:g}", f"{r['fixed']['num_units']:,}",
                  r["fixed"]["text"]] for name, r in _rules(s).items()])


@template("theory_measured")
def measured(s: dict) -> str:
  """Where the measured side comes from."""
  r = next(iter(_rules(s).values()))
  m = r["measured"]
  src = m.get("source") or {}
  run = (f" (written by `{src['command']}`, commit {src['commit']}, {src['date']})"
         if src.get("command") else "")
  return (f"Measured: `{m['path']}`{run}: {len(m['sizes'])} sizes, beta = {m['beta']:.3f} "
          f"{_ci(m['beta_ci'])}. Resampling for the fitted variants: "
          f"{r['resample']['reps']} resamples, {r['resample']['rule']}.")


def predicted_rows(r: dict) -> tuple[list, list]:
  """(header, rows) of one rule's predicted-at-measured-N table."""
  m = r["measured"]
  k = len(m["sizes"])
  head = ["", f"beta over the {k} sizes"] + [f"N = {n:g}" for n in m["sizes"]]
  rows = [["measured", f"{m['beta']:.3f} {_ci(m['beta_ci'])}"] +
          [f"{c:.1f} {_ci(ci, '{:.1f}')}" for c, ci in zip(m["counts"], m["count_ci"])]]
  for name, v in r["variants"].items():
    a = v["apriori"]
    rows.append([f"{name}, a priori", f"{a['beta']:.3f} {_ci(a['beta_ci'])}"] +
                [f"{c:.1f}" for c in a["counts"]])
  for name, v in r["variants"].items():
    fa = v["fit_all"]
    b = fa.get("bootstrap") or {}
    cis = b.get("counts_ci") or [None] * k
    rows.append([f"{name}, fit to all {k}", f"{fa['beta']:.3f} {_ci(b.get('beta_ci'))}"] +
                [f"{c:.1f} {_ci(ci, '{:.1f}')}" for c, ci in zip(fa["counts"], cis)])
  return head, rows


def _params(o: dict) -> str:
  cis = (o.get("bootstrap") or {}).get("physical_ci") or {}
  return ", ".join(f"{k} {x:.3g} {_ci(cis.get(k), '{:.3g}')}" for k, x in o["physical"].items())


def oos_rows(r: dict) -> tuple[list, list]:
  """(header, rows) of one rule's out-of-sample table (the power law last)."""
  m, n_fit = r["measured"], r["n_fit"]
  held = m["sizes"][n_fit:]
  head = (["mechanism", "fitted parameters [95% CI]", f"beta ({len(m['sizes'])} sizes)"] +
          [f"N = {n:g}: predicted [95% CI] (error in half-widths)" for n in held] +
          ["held-out rms log error (central 95% over resamples)", "beats the line in"])
  pl = r["power_law"]
  entries = [(name, v["out_of_sample"]) for name, v in r["variants"].items()]
  entries.append(("power law", {"physical": {"beta": pl["beta"]}, "beta": pl["beta"],
                                "counts": pl["counts"], "score": pl["score"],
                                "bootstrap": {**(pl.get("bootstrap") or {}),
                                              "physical_ci": {"beta": (pl.get("bootstrap") or
                                                                       {}).get("beta_ci")}}}))
  rows = []
  for name, o in entries:
    b = o.get("bootstrap") or {}
    sc = o["score"]
    cis = (b.get("counts_ci") or [None] * len(m["sizes"]))[n_fit:]
    cells = [f"{p:.1f} {_ci(ci, '{:.1f}')} ({e:+.1f}{', in CI' if ok else ''})"
             for p, ci, e, ok in zip(sc["predicted"], cis, sc["error_in_half_widths"],
                                     sc["in_interval"])]
    beats = b.get("beats_line")
    rows.append([name, _params(o), f"{o['beta']:.3f} {_ci(b.get('beta_ci'))}", *cells,
                 f"{sc['rms_log_error']:.3f} {_ci(b.get('rms_log_error_range'))}",
                 "-" if name == "power law" or beats is None else f"{beats:.0%}"])
  return head, rows


def _register(rule: str):
  template(f"theory_predicted_{rule}")(lambda s: _table(*predicted_rows(_rules(s)[rule])))
  template(f"theory_oos_{rule}")(lambda s: _table(*oos_rows(_rules(s)[rule])))


for _rule in ("tokens", "words"):
  _register(_rule)


@template("theory_verdict")
def verdict(s: dict) -> str:
  """The verdict rule, each mechanism's tests under each rule, and the declared verdict."""
  rs = _rules(s)
  first = next(iter(rs))
  head = ["mechanism"] + [f"{t} (`{rule}`{'' if rule == first else ', sensitivity'})"
                          for rule in rs for t in
                         ("a priori inside every interval", "out of sample inside every "
                          "held-out interval", "beats the line in", "fits")]
  names = list(next(iter(rs.values()))["verdict"]["mechanisms"])
  rows = []
  for name in names:
    row = [name]
    for r in rs.values():
      x = r["verdict"]["mechanisms"][name]
      oos = all(r["variants"][name]["out_of_sample"]["score"]["in_interval"])
      row += ["yes" if x["apriori"] else "no", "yes" if oos else "no",
              "-" if x["beats_line"] is None else f"{x['beats_line']:.0%}",
              "**yes**" if x["fits"] else "no"]
    rows.append(row)
  tok = rs.get("tokens") or next(iter(rs.values()))
  return (f"Rule (`theory.bootstrap.VERDICT_RULE`): {tok['verdict']['rule']}\n\n" +
          _table(head, rows) + f"\n\n**Verdict (declared `tokens` rule): "
          f"{tok['verdict']['text']}.**")


@template("theory_zoo_sim")
def zoo_sim(s: dict) -> str:
  """The zoo-regime simulation beside the variants' a priori predictions at its N."""
  r = s["results"]
  sim, cfg = r["simulated"], r["simulated"]["config"]
  n = sim["budgets"]
  pairs = cfg["num_seeds"] * (cfg["num_seeds"] - 1) // 2
  crit = (f"mutual 1-NN, FDR q = {cfg['fdr_q']:g} against {cfg['null_permutations']} "
          "probe-row permutations" if cfg.get("null_permutations") else
          f"mutual 1-NN with r >= {cfg['r_min']:g}")
  head = ["", "beta over N"] + [f"N = {x:g}" for x in n]
  rows = [[f"simulated Rosetta pairs ({crit}; mean of {pairs} seed pair"
           f"{'s' if pairs > 1 else ''})", f"{sim['beta_sim']:.3f} {_ci(sim['beta_sim_ci'])}"] +
          [_f(c) for c in sim["rosetta_mean"]]]
  if sim.get("threshold_mean") and sim["threshold_mean"][0] is not None:
    rows.append(["r threshold of the criterion (mean over seed pairs)", ""] +
                [_f(t, "{:.3f}") for t in sim["threshold_mean"]])
  rows += [
      [f"simulated features with a dedicated neuron (r >= {cfg['r_dedicated']:g}, mean of "
       f"{cfg['num_seeds']} seeds)", _b(sim.get("beta_dedicated"))] +
      [_f(c) for c in sim["dedicated_mean"]],
      ["simulated selectivity, Rosetta neurons", ""] +
      [_f(c, "{:.2f}") for c in sim["selectivity_rosetta"]],
      ["simulated selectivity, non-Rosetta neurons", ""] +
      [_f(c, "{:.2f}") for c in sim["selectivity_other"]],
      ["training loss (end)", ""] + [_f(c, "{:.3f}") for c in sim["loss_mean"]]]
  a, f = r["utility_alpha"], cfg["num_features"]
  for name, p in r["predicted"].items():
    rows.append([f"{name}, a priori (alpha = {a:.2f}, F = {f})", f"{p['beta']:.3f}"] +
                [_f(c) for c in p["counts"]])
  for name, p in r["predicted"].items():
    rows.append([f"{name}, predicted non-Rosetta selectivity", ""] +
                [_f(c, "{:.2f}") for c in p["selectivity_non_rosetta"]])
  return (f"Preset `{r['preset']}`: F = {f}, {cfg['num_seeds']} seeds vmapped, "
          f"{cfg['steps']} Adam steps x {cfg['batch_size']}, probe {cfg['probe_size']}, "
          f"{cfg['bootstrap']} bootstrap resamples.\n\n" + _table(head, rows))


@template("theory_regime")
def regime(s: dict) -> str:
  """The regime map's numbers: where each map is sublinear, and its local beta over the
  F/N span of the measured configurations at each rule's alpha (nearest grid row)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  g = s["results"]["regime"]
  alphas, ratios = np.asarray(g["alphas"]), np.asarray(g["ratios"])
  rows = []
  for name, grid in g["grids"].items():
    b = np.asarray(grid, float)
    sub = (b < 1) & (ratios[None, :] > 1) & np.isfinite(b)
    where = ("none" if not sub.any() else
             f"F/N {ratios[sub.any(0)].min():.2g}-{ratios[sub.any(0)].max():.2g} at alpha "
             f"{alphas[sub.any(1)].min():.2f}-{alphas[sub.any(1)].max():.2f}")
    cells = []
    for rule, r in s["results"]["rules"].items():
      pts = [p for p in g["points"] if p["alpha"] == r["fixed"]["alpha"]]
      i = int(np.argmin(np.abs(alphas - r["fixed"]["alpha"])))
      lo, hi = min(p["ratio"] for p in pts), max(p["ratio"] for p in pts)
      span = b[i, (ratios >= lo / 1.25) & (ratios <= hi * 1.25)]
      cells.append(f"`{rule}`: F/N {lo:.2g}-{hi:.2g}, alpha {alphas[i]:.2f}: "
                   f"{span.min():.2f}-{span.max():.2f}")
    rows.append([name, where, "; ".join(cells)])
  return _table(["map", f"sublinear cells (local beta < 1, F/N > 1) at N = {g['n']:g}",
                 "local beta at the measured configurations (F/N span, nearest grid)"], rows)
