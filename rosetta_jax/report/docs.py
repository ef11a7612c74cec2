"""The numbers of README.md and docs/ rendered from ``docs/results/*.json``.

A documented run leaves a summary (``write_summary``): the command that made
it, the commit, the machine, and the study's results without its bulky arrays.
A page holds a rendered block as::

  <!-- results:scaling_tiny:pairs -->
  | ... the table ... |
  <!-- /results -->

``render_text`` rewrites every block from its file with the named template
(``TEMPLATES``); ``experiments.render_docs`` rewrites the pages, and its
``--check`` mode (run by the tests) fails when a page and its file disagree.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import subprocess
import sys
from typing import Callable

from rosetta_jax import io as io_lib

BLOCK = re.compile(r"(<!-- results:(?P<file>[\w.-]+):(?P<template>[\w.-]+) -->\n)"
                   r"(?P<body>.*?)(<!-- /results -->)", re.S)
_DROP = ("r", "layer_density_a", "depth_a", "null_r_quantiles", "raw_r_quantiles",
         "model_info", "anchors")

TEMPLATES: dict[str, Callable[[dict], str]] = {}


def template(name: str):
  def register(fn):
    TEMPLATES[name] = fn
    return fn
  return register


def _commit() -> str:
  try:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True, check=True,
                          cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return "unknown"


def _slim(x):
  if isinstance(x, dict):
    return {k: _slim(v) for k, v in x.items() if k not in _DROP}
  if isinstance(x, list):
    return [_slim(v) for v in x]
  return x


def write_summary(path: str, results: dict, argv=None, seconds: float | None = None) -> dict:
  """Writes a run's summary: its command, commit, machine and slimmed results."""
  argv = sys.argv if argv is None else argv
  cmd = "python -m " + os.path.splitext(os.path.relpath(argv[0]))[0].replace(os.sep, ".") \
      if argv and argv[0].endswith(".py") else (argv[0] if argv else "")
  out = {"command": " ".join([cmd] + [a for a in argv[1:] if not a.startswith("--summary")]),
         "commit": _commit(),
         "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()}",
         "date": datetime.date.today().isoformat(),
         "seconds": seconds, "results": _slim(results)}
  io_lib.write_json(path, out)
  return out


def render_text(text: str, results_dir: str, where: str = "page") -> str:
  """``text`` with every results block rendered from its file."""
  def sub(m):
    path = os.path.join(results_dir, m.group("file") + ".json")
    if not os.path.exists(path):
      raise FileNotFoundError(f"{where}: block {m.group('file')}:{m.group('template')} "
                              f"needs {path}; run the command that writes it")
    name = m.group("template")
    if name not in TEMPLATES:
      raise KeyError(f"{where}: unknown results template {name!r}; known: "
                     f"{sorted(TEMPLATES)}")
    with open(path) as f:
      summary = json.load(f)
    return m.group(1) + TEMPLATES[name](summary).rstrip("\n") + "\n" + m.group(5)
  return BLOCK.sub(sub, text)


def render_file(path: str, results_dir: str, check: bool = False) -> bool:
  """Renders one page in place (or, with ``check``, only compares); True if it differs."""
  with open(path) as f:
    text = f.read()
  new = render_text(text, results_dir, where=path)
  if new != text and not check:
    io_lib.atomic_write(path, new)
  return new != text


# ----------------------------------------------------------------------------
# Templates
# ----------------------------------------------------------------------------


def _ci(ci, fmt="{:.3f}") -> str:
  if ci is None or ci[0] is None:
    return "-"
  return "[" + fmt.format(ci[0]) + ", " + fmt.format(ci[1]) + "]"


def _b(x, fmt="{:.3f}") -> str:
  return "-" if x is None else fmt.format(x)


def _table(header, rows) -> str:
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
  return "\n".join(lines)


@template("source")
def source(s: dict) -> str:
  """Where the numbers come from."""
  t = f", {s['seconds'] / 60:.1f} min" if s.get("seconds") else ""
  return (f"`{s['command']}` (commit {s['commit']}, {s['machine']}, {s['date']}{t})")


@template("headline")
def headline(s: dict) -> str:
  r = s["results"]
  h = r["headline"]
  desc = (f" This is a descriptive slope, not an exponent: {r['descriptive']}."
          if r.get("descriptive") else "")
  return (f"Declared criterion: {r['criterion_name']}. beta = {_b(h['beta'])}, 95% CI "
          f"{_ci(h['ci'])} (resampling {h['resamples']}; regression interval across the "
          f"sizes {_ci(h['regression_ci'])}).{desc} {r['converged']['verdict'].capitalize()}.")


@template("pairs")
def pairs(s: dict) -> str:
  r = s["results"]
  return _table(
      ["pair", "neurons", "count", "95% CI (documents)", "est. false positives",
       "mutual NN", "null pairs / permutation", "r threshold", "unit-identity null"],
      [[p["label"], p["neurons_a"], p["count"], _ci(p["count_ci"], "{:.0f}"),
        f"{p['false_positives']:.2f}", p["raw_count"], f"{p['null_count']:.1f}",
        _b(p["r_threshold"]), p["identity"]["count"] if p.get("identity") else "-"]
       for p in r["pairs"]])


@template("sizes")
def sizes(s: dict) -> str:
  h = s["results"]["headline"]
  return _table(["size N", "mean count", "95% CI (models and documents)"],
                [[f"{n:.0f}", f"{c:.1f}", _ci(ci, "{:.1f}")]
                 for n, c, ci in zip(h["sizes"], h["counts"], h["count_ci"])])


@template("sensitivity")
def sensitivity(s: dict) -> str:
  r = s["results"]
  rows = [["declared: " + r["criterion_name"], _b(r["headline"]["beta"]),
           _ci(r["headline"]["ci"]), _ci(r["headline"]["regression_ci"])]]
  rows += [[n, _b(v["beta"]), _ci(v["ci"]), _ci(v["regression_ci"])]
           for n, v in r["sensitivity"].items()]
  return _table(["criterion", "beta", "95% CI", "regression CI"], rows)


@template("budgets")
def budgets(s: dict) -> str:
  r = s["results"]
  return _table(["documents", "units", "beta", "95% CI"],
                [[f, r["budget_units"][f], _b(v["beta"]), _ci(v["ci"])]
                 for f, v in r["budgets"].items()])


@template("baselines")
def baselines(s: dict) -> str:
  r = s["results"]
  u = r.get("untrained")
  rows = []
  if u:
    f = u["fit"]
    rows.append(["untrained (random-init) zoo", " / ".join(str(c) for c in u["counts"]),
                 _b(f["beta"] if f else None), _ci(f["ci"] if f else None)])
  ident = r.get("identity_null")
  if ident:
    rows.append(["unit-identity null (same text, context destroyed)",
                 " / ".join(str(c) for c in ident["counts"]), "-", "-"])
  rows.append(["trained (declared criterion)", " / ".join(str(c) for c in r["counts"]),
               _b(r["headline"]["beta"]), _ci(r["headline"]["ci"])])
  return _table(["baseline", "counts per pair", "beta", "95% CI"], rows)


@template("lomo")
def lomo(s: dict) -> str:
  v = {k: x for k, x in s["results"]["leave_one_model_out"].items() if x is not None}
  if not v:
    return "Leave one model out: no fit left."
  return (f"Leave one model out: beta from {min(v.values()):.3f} to {max(v.values()):.3f} "
          f"over {len(v)} models.")


def _verdict(ci) -> str:
  if ci is None or ci[0] is None:
    return "not measurable"
  return "grows" if ci[0] > 0 else "shrinks" if ci[1] < 0 else "inconclusive (CI spans 0)"


@template("polarization_controls")
def polarization_controls(s: dict) -> str:
  """Per metric: the slope with ln N of Cliff's delta against each control, and
  of Cohen's d against all other neurons (descriptive)."""
  r = s["results"]
  rows = []
  for m, t in r["trend"].items():
    tc, tn = r["trend_control"][m]["delta"], r["trend_null"][m]["delta"]
    rows.append([m, f"{tc['slope']:+.3f} {_ci(tc['ci'])}", _verdict(tc["ci"]),
                 f"{tn['slope']:+.3f} {_ci(tn['ci'])}", _verdict(tn["ci"]),
                 f"{t['d']['slope']:+.3f} {_ci(t['d']['ci'])}"])
  return _table(["metric", "delta vs matched control: slope per ln N (95% CI)", "verdict",
                 "delta vs null-paired neurons", "verdict", "d vs all others (descriptive)"],
                rows)


# ----------------------------------------------------------------------------
# The vision study (``--modality=vision``: docs/vision.md)
# ----------------------------------------------------------------------------


def _fit_text(f: dict | None) -> str:
  if not f or f.get("beta") is None:
    return "no power-law fit (fewer than two sizes with pairs)"
  return (f"beta = {_b(f['beta'])}, 95% CI {_ci(f['ci'])} (resampling {f['resamples']}; "
          f"regression interval {_ci(f['regression_ci'])})")


@template("vision_headline")
def vision_headline(s: dict) -> str:
  """Both fits, the anchors and the units, in three sentences."""
  r = s["results"]
  g = r["generator"]
  a = g["anchor_set"]
  grid = r["units"] // r["documents"]
  return (f"{r['documents']} generated images x {grid} grid cells = {r['units']} units; "
          f"declared criterion {r['criterion_name']}. Discriminator vs discriminator (the "
          f"seeds of each width, {len(r['pairs'])} pairs over {len(r['headline']['sizes'])} "
          f"sizes): {_fit_text(r['headline'])}; {r['converged']['verdict']}. Generator vs "
          f"each discriminator ({len(g['pairs'])} pairs; size = the discriminator's studied "
          f"MLP neurons): {_fit_text(g['fit'])}. Anchors: {a['count']} of the generator's "
          f"{g['neurons']} studied neurons have a Rosetta partner in all {a['partners']} "
          f"discriminators (95% CI {_ci(a['count_ci'], '{:.0f}')}).")


@template("vision_side_by_side")
def vision_side_by_side(s: dict) -> str:
  """Per discriminator size: the seed pairs' and the generator pairs' mean counts."""
  r = s["results"]
  h, g = r["headline"], r["generator"]["fit"]
  gen = {n: (c, ci) for n, c, ci in zip(g["sizes"], g["counts"], g["count_ci"])}
  rows = []
  for n, c, ci in zip(h["sizes"], h["counts"], h["count_ci"]):
    gc, gci = gen.get(n, (None, None))
    rows.append([f"{n:.0f}", f"{c:.1f}", _ci(ci, "{:.1f}"), f"{c / n:.3f}",
                 _b(gc, "{:.1f}"), _ci(gci, "{:.1f}"),
                 "-" if gc is None else f"{gc / n:.3f}"])
  return _table(["discriminator MLP neurons", "seed pairs: mean count",
                 "95% CI (models and images)", "fraction",
                 "generator vs discriminator: mean count", "95% CI", "fraction"], rows)


def _pair_rows(ps) -> list:
  return [[p["label"], p["neurons_b"], p["count"], _ci(p["count_ci"], "{:.0f}"),
           f"{p['false_positives']:.2f}", p["raw_count"], f"{p['null_count']:.1f}",
           _b(p["r_threshold"])] for p in ps]


_PAIR_HEADER = ["pair", "neurons (B)", "count", "95% CI (images)", "est. false positives",
                "mutual NN", "null pairs / permutation", "r threshold"]


@template("vision_pairs")
def vision_pairs(s: dict) -> str:
  """Every pair: the seed pairs, then the generator against each discriminator."""
  r = s["results"]
  return _table(_PAIR_HEADER, _pair_rows(r["pairs"]) + _pair_rows(r["generator"]["pairs"]))


@template("vision_zoo")
def vision_zoo(s: dict) -> str:
  """Mean held-out accuracy per width and the generator's checks."""
  z = s["results"]["zoo_summary"]
  by = {}
  for name, acc in z["accuracy"].items():
    by.setdefault(name.rsplit("-s", 1)[0], []).append(acc)
  rows = [[w, len(v), f"{min(v):.3f} .. {max(v):.3f}"] for w, v in by.items()]
  g = z["generator"]
  text = (f"\n\nGenerator: {g['num_samples']} one-step samples, pixel mean / std "
          f"{g['pixel_mean']:.1f} / {g['pixel_std']:.1f} (training images "
          f"{g['train_pixel_mean']:.1f} / {g['train_pixel_std']:.1f}); the widest "
          f"classifier (seed 0) names the class each was generated for in "
          f"{g['classified_as_asked']:.1%} of them (chance 10%).")
  return _table(["classifier width", "seeds", "held-out accuracy (2,000 test images)"],
                rows) + text


@template("polarization_trend")
def polarization_trend(s: dict) -> str:
  """Each selectivity metric's trend with ln N: Cohen's d (Rosetta vs the rest) and
  Cliff's delta against the matched control."""
  r = s["results"]
  ctrl = r.get("trend_control") or {}
  rows = []
  for m, t in r["trend"].items():
    c = ctrl.get(m, {}).get("delta")
    rows.append([m, f"{t['d']['slope']:+.3f}", _ci(t["d"]["ci"]),
                 "-" if c is None else f"{c['slope']:+.3f}",
                 "-" if c is None else _ci(c["ci"])])
  return _table(["metric", "d slope per ln N", "95% CI", "Cliff's delta vs control: slope",
                 "95% CI"], rows)


@template("polarization_sizes")
def polarization_sizes(s: dict) -> str:
  """Per pair, kurtosis and Hoyer: Cliff's delta against the rest and both controls."""
  r = s["results"]
  rows = []
  for e in r["per_size"]:
    for m in ("kurtosis", "hoyer"):
      x, c, n = (e["metrics"][m], e["matched_control"]["metrics"][m],
                 e["null_control"]["metrics"][m])
      rows.append([e["label"], m, e["rosetta"], f"{x['delta']:+.3f} {_ci(x['delta_ci'])}",
                   f"{c['delta']:+.3f} {_ci(c['delta_ci'])}",
                   f"{n['delta']:+.3f} {_ci(n['delta_ci'])}", e["null_control"]["count"]])
  return _table(["pair", "metric", "Rosetta neurons", "delta vs all others", "vs matched",
                 "vs null-paired", "null-paired neurons"], rows)


@template("domains_controls")
def domains_controls(s: dict) -> str:
  """Per pair and arm: the code+math share of the Rosetta set, both controls and
  the differences; then the trend of each difference."""
  r = s["results"]
  names = {"in_sample": "in sample", "held_out": "held out"}
  rows = []
  for e in r["per_size"]:
    for arm, name in names.items():
      x = e[arm]
      rows.append([e["label"], name, x["rosetta"]["count"],
                   f"{x['rosetta']['specialised']:.3f}", f"{x['matched']['specialised']:.3f}",
                   f"{x['null']['specialised']:.3f}",
                   f"{x['minus_matched']['specialised']:+.3f} "
                   f"{_ci(x['minus_matched']['specialised_ci'])}",
                   f"{x['minus_null']['specialised']:+.3f} "
                   f"{_ci(x['minus_null']['specialised_ci'])}"])
  table = _table(["pair", "arm", "Rosetta", "Rosetta share", "matched", "null-paired",
                  "minus matched (95% CI)", "minus null-paired (95% CI)"], rows)
  trends = _table(["arm", "slope per ln N: minus matched (95% CI)", "verdict",
                   "minus null-paired (95% CI)", "verdict"],
                  [[name, f"{r['trend'][arm]['minus_matched']['slope']:+.3f} "
                          f"{_ci(r['trend'][arm]['minus_matched']['ci'])}",
                    _verdict(r["trend"][arm]["minus_matched"]["ci"]),
                    f"{r['trend'][arm]['minus_null']['slope']:+.3f} "
                    f"{_ci(r['trend'][arm]['minus_null']['ci'])}",
                    _verdict(r["trend"][arm]["minus_null"]["ci"])]
                   for arm, name in names.items()])
  return table + "\n\n" + trends


@template("vision_polarization_sizes")
def vision_polarization_sizes(s: dict) -> str:
  """Cohen's d of each metric (positive: Rosetta more selective), mean over each
  size's pairs."""
  per = s["results"]["per_size"]
  metrics = list(per[0]["metrics"]) if per else []
  by = {}
  for p in per:
    by.setdefault(p["size"], []).append(p)
  rows = [[f"{n:.0f}", len(ps)] + [f"{sum(p['metrics'][m]['d'] for p in ps) / len(ps):+.2f}"
                                   for m in metrics] for n, ps in by.items()]
  return _table(["size N", "pairs"] + metrics, rows)


# ----------------------------------------------------------------------------
# The data-selection study (docs/data_filter.md)
# ----------------------------------------------------------------------------


@template("data_filter_setup")
def data_filter_setup(s: dict) -> str:
  """The model, the three document sets and the token budget."""
  r = s["results"]
  sets = r["sets"]
  doms = lambda k: ", ".join(f"{n} {d}" for d, n in sets[k]["domains"].items())
  seeds = len(r["arms"]["rosetta"]["target_loss"])
  return (f"Model `{r['model']}` (pair {r['pair']}), target `{r['target']}`: "
          f"{r['rosetta_neurons']} Rosetta neurons on the selection set. Selection set "
          f"{sets['selection']['documents']} documents ({doms('selection')}); pool "
          f"{sets['pool']['documents']} ({doms('pool')}); evaluation "
          f"{sets['evaluation']['documents']} ({doms('evaluation')}). Every arm trains on "
          f"the same {r['budget_tokens']} tokens ({r['train_tokens']} tokens read per run, "
          f"{r['train_tokens'] / r['budget_tokens']:.1f} passes), {seeds} seeds per arm. "
          f"Matched control balance (first seed): KS {r['control_balance']['ks']:.3f}, "
          f"layers equal: {'yes' if r['control_balance']['layers_equal'] else 'no'}.")


@template("data_filter_arms")
def data_filter_arms(s: dict) -> str:
  """Per arm: target-token share, evaluation losses and the oracle share, with
  t-intervals over seeds."""
  r = s["results"]
  rows = [["start (no training)", "-", f"{r['start']['target']:.4f}", "-",
           f"{r['start']['other']:.4f}", "-", "0"]]
  for name, a in r["arms"].items():
    sh = a["target_oracle_share_ci"]
    rows.append([name, f"{100 * a['precision_ci'][0]:.0f}%", f"{a['target_loss_ci'][0]:.4f}",
                 _ci(a["target_loss_ci"][1:], "{:.4f}"), f"{a['other_loss_ci'][0]:.4f}",
                 _ci(a["other_loss_ci"][1:], "{:.4f}"),
                 "undefined (the oracle gains nothing)" if sh is None else
                 f"{sh[0]:.2f} {_ci(sh[1:], '{:.2f}')}"])
  verdict = ("\n\nIs the Rosetta arm's evaluation loss below the random arm's: "
             f"{'yes' if r['rosetta_beats_random'] else 'no'}; below the matched control's: "
             f"{'yes' if r['rosetta_beats_control'] else 'no'} (yes: the 95% t-intervals over "
             "seeds do not overlap and the Rosetta arm's is the lower).")
  return _table(["arm", f"{r['target']} share of tokens", f"evaluation {r['target']} loss",
                 "95% CI", "other-domain loss", "95% CI", "share of the oracle's gain (95% CI)"],
                rows) + verdict
