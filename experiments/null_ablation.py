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
Rosetta pairs are reused, or made if missing); this study's ``results.json`` and
``report.html`` go to ``<workdir>/null_ablation/``. Re-running
resumes; a workdir holding another config is an error.
"""
from __future__ import annotations

from absl import flags

from experiments import common_flags as cf
from rosetta_jax.studies import context, registry

cf.define_study_flags()
flags.adopt_module_key_flags(cf)
flags.adopt_module_key_flags(cf.config_lib)


def main(argv):
  ctx = context.load_context(cf.study_config(argv), cf.WORKDIR.value, cf.models(),
                             progress=cf.PROGRESS.value, mesh=cf.study_mesh())
  context.free_weights(ctx)
  res = registry.run_study("null_ablation", ctx)
  for name, v in res.variants.items():
    f = v["fit"]
    print(f"{name:14s} counts {v['counts']}  beta {f['beta']:.3f} "
          f"[{f['ci'][0]:.3f}, {f['ci'][1]:.3f}]")
  print(f"wrote {cf.WORKDIR.value}/null_ablation/results.json and report.html")
  cf.finish(ctx, res)


if __name__ == "__main__":
  cf.run(main)
