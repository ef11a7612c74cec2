r"""Claim 4 checks: the dataset-permutation null and the matching ablations.

    python -m experiments.null_ablation --models=zoo --preset=tiny --workdir=runs/tiny

Counts per size and the fitted exponent with document-bootstrap CIs for: the
permutation null (B's documents deranged; reported as null/real, with and without
r thresholds), mutual k-NN for k in 1, 3, 5, 10, r thresholds 0.3/0.5/0.7,
pooling mean/max/last (re-recorded into <workdir>/null_ablation/pool_*, deleted
once every pair's counts are cached: each is as large as the main store), and unit
budgets (1/8, 1/4, 1/2 of the documents). About 3 minutes on the tiny preset.
The result to look for: the thresholded null collapses to ~0 while the real
counts and exponent are stable across criteria.

Shares ``--workdir`` with ``experiments.scaling`` (zoo, activation stores and
Rosetta pairs are reused, or made if missing); this study's ``config.json``,
``results.json`` and ``report.html`` go to ``<workdir>/null_ablation/``. Re-running
resumes; a workdir holding another config is an error.
"""

from __future__ import annotations

import json

from absl import app

from experiments import common_flags as cf
from rosetta_jax.studies import null_ablation as study


def main(argv):
  cfg = cf.study_config(argv)
  res = study.run_null_ablation(cfg, cf.WORKDIR.value, cf.MODELS.value, progress=cf.PROGRESS.value)
  for name, v in res["variants"].items():
    f = v["fit"]
    print(f"{name:14s} counts {v['counts']}  beta {f['beta']:.3f} "
          f"[{f['ci'][0]:.3f}, {f['ci'][1]:.3f}]")
  print("null/real by threshold:", json.dumps(res["null_threshold_ratio"]))
  print(f"wrote {cf.WORKDIR.value}/null_ablation/results.json and report.html")


if __name__ == "__main__":
  app.run(main)
