"""Renders the numbers of README.md and docs/*.md from docs/results/*.json.

  python -m experiments.render_docs            # rewrite the pages' results blocks
  python -m experiments.render_docs --check    # fail if a page and its file disagree

A results block is ``<!-- results:FILE:TEMPLATE -->`` ... ``<!-- /results -->``;
FILE is ``docs/results/FILE.json`` (written by the documented command with
``--summary``), TEMPLATE one of ``rosetta_jax.report.docs.TEMPLATES``.
"""

from __future__ import annotations

import glob
import os
import sys

from absl import app, flags

from rosetta_jax.report import docs

CHECK = flags.DEFINE_bool("check", False, "Only compare; exit 1 naming each stale page.")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pages(root: str = ROOT) -> list[str]:
  return [os.path.join(root, "README.md")] + sorted(glob.glob(os.path.join(root, "docs", "*.md")))


def main(argv):
  del argv
  results = os.path.join(ROOT, "docs", "results")
  stale = [p for p in pages() if docs.render_file(p, results, check=CHECK.value)]
  for p in stale:
    print(("stale: " if CHECK.value else "rendered: ") + os.path.relpath(p, ROOT))
  if CHECK.value and stale:
    print("run `python -m experiments.render_docs` to re-render them", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  app.run(main)
