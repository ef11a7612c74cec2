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


# docs/theory.md's templates live beside these; importing the module registers them.
from rosetta_jax.report import docs_theory  # pylint: disable=g-import-not-at-top,unused-import,wrong-import-position
