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

import dataclasses
import json

from absl import app, flags, logging

from rosetta_jax.studies import domains as study
from rosetta_jax.studies.polarization import load_study_config
from rosetta_jax.zoo import config as config_lib

_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory (shared by the studies).",
                               required=True)
_PRESET = flags.DEFINE_enum("preset", "tiny", sorted(config_lib.PRESETS), "Named config.")
_MODELS = flags.DEFINE_string("models", "zoo", "'zoo', or comma-separated model dirs/names.")
_BOOTSTRAP = flags.DEFINE_integer("bootstrap", None, "Document-bootstrap resamples.")
_PROGRESS = flags.DEFINE_bool("progress", True, "Show progress bars.")
_CONFIG = flags.DEFINE_string("config", None, "A study config.json to use instead of --preset "
                              "(e.g. <workdir>/config.json of an earlier scaling run).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  cfg = (load_study_config(_CONFIG.value) if _CONFIG.value
         else config_lib.get_preset(_PRESET.value))
  if _BOOTSTRAP.value is not None:
    if _BOOTSTRAP.value < 2:
      raise app.UsageError("--bootstrap must be >= 2")
    cfg = dataclasses.replace(cfg, bootstrap=_BOOTSTRAP.value)
  logging.info("config: %s", json.dumps(config_lib.to_dict(cfg)))
  res = study.run_domains(cfg, _WORKDIR.value, _MODELS.value, progress=_PROGRESS.value)
  t = res["trend"]["specialised_difference"]
  print(f"specialised share (Rosetta - controls): slope {t['slope']:+.3f} per ln N, "
        f"95% CI [{t['ci'][0]:+.3f}, {t['ci'][1]:+.3f}]")
  print(f"wrote {_WORKDIR.value}/domains/results.json and report.html")


if __name__ == "__main__":
  app.run(main)
