r"""Claim 3, domains and depth: do Rosetta neurons specialise with size, and where are they?

    python -m experiments.domains --models=zoo --preset=tiny --workdir=runs/tiny

Preferred domain of each Rosetta neuron, share per domain per size against two
controls (non-Rosetta neurons matched on layer and activation frequency, and the
neurons the permutation null pairs up), in sample and with the preferred domain
estimated on documents not used to select the neurons (document-bootstrap CIs),
the slope of the code+math share minus each control with ln N, Rosetta density
per relative depth, and a gallery of the top Rosetta neurons with their
top-activating text highlighted. Seconds after the scaling and polarization
studies (it reuses their cached neuron statistics and the 0.5 unit budget's pair
results; without them it matches each pair once more on half the documents).
The result to look for: a positive held-out slope against both controls.

Shares ``--workdir`` with ``experiments.scaling`` (zoo, activation stores and
Rosetta pairs are reused, or made if missing); this study's ``results.json`` and
``report.html`` go to ``<workdir>/domains/``. Re-running
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
  res = registry.run_study("domains", ctx)
  for arm, trends in res.trend.items():
    for name, t in trends.items():
      print(f"{arm:9s} {name:14s} slope per ln N {t['slope']:+.3f}  95% CI "
            f"[{t['ci'][0]:+.3f}, {t['ci'][1]:+.3f}]")
  print(f"wrote {cf.WORKDIR.value}/domains/results.json and report.html")
  cf.finish(ctx, res)


if __name__ == "__main__":
  cf.run(main)
