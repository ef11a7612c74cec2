r"""Claim 3, domains and depth: do Rosetta neurons specialise with size, and where are they?

    python -m experiments.domains --models=zoo --preset=tiny --workdir=runs/tiny

Preferred domain of each Rosetta neuron, share per domain per size against
layer-matched random non-Rosetta neurons (document-bootstrap CIs), the slope of
the code+math share with ln N, Rosetta density per relative depth, and a gallery
of the top Rosetta neurons with their top-activating text highlighted. Seconds
after the polarization study (it reuses its cached neuron statistics). The
result to look for: a positive slope of the specialised share minus controls.

Shares ``--workdir`` with ``experiments.scaling`` (zoo, activation stores and
Rosetta pairs are reused, or made if missing); this study's ``config.json``,
``results.json`` and ``report.html`` go to ``<workdir>/domains/``. Re-running
resumes; a workdir holding another config is an error.
"""

from __future__ import annotations

from absl import app

from experiments import common_flags as cf
from rosetta_jax.studies import domains as study


def main(argv):
  cfg = cf.study_config(argv)
  res = study.run_domains(cfg, cf.WORKDIR.value, cf.MODELS.value, progress=cf.PROGRESS.value)
  t = res["trend"]["specialised_difference"]
  print(f"specialised share (Rosetta - controls): slope {t['slope']:+.3f} per ln N, "
        f"95% CI [{t['ci'][0]:+.3f}, {t['ci'][1]:+.3f}]")
  print(f"wrote {cf.WORKDIR.value}/domains/results.json and report.html")


if __name__ == "__main__":
  app.run(main)
