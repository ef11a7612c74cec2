r"""Claim 2, neuron polarization: are Rosetta neurons more selective, and more so with size?

    python -m experiments.polarization --models=zoo --preset=tiny --workdir=runs/tiny

For every size (the two seeds of one zoo width, or a pair of --models) it computes
per-neuron kurtosis, Hoyer sparsity, activation frequency, domain selectivity,
top-unit domain/token entropy and a token+domain explanation score (streamed over
the stored activations), then AUROC and Cohen's d of Rosetta vs non-Rosetta
neurons with document-bootstrap CIs, and the slope of d against ln N with its CI.
About 1 minute after the scaling study on the tiny preset (2 CPU cores). The result
to look for: d > 0 and a positive slope whose CI excludes 0.

Shares ``--workdir`` with ``experiments.scaling`` (zoo, activation stores and
Rosetta pairs are reused, or made if missing); this study's ``config.json``,
``results.json`` and ``report.html`` go to ``<workdir>/polarization/``. Re-running
resumes; a workdir holding another config is an error.
"""

from __future__ import annotations

from absl import app

from experiments import common_flags as cf
from rosetta_jax.studies import polarization as study


def main(argv):
  cfg = cf.study_config(argv)
  res = study.run_polarization(cfg, cf.WORKDIR.value, cf.MODELS.value, progress=cf.PROGRESS.value)
  for m, t in res["trend"].items():
    print(f"{m:15s} slope of d per ln N {t['d']['slope']:+.3f}  "
          f"95% CI [{t['d']['ci'][0]:+.3f}, {t['d']['ci'][1]:+.3f}]")
  print(f"wrote {cf.WORKDIR.value}/polarization/results.json and report.html")


if __name__ == "__main__":
  app.run(main)
