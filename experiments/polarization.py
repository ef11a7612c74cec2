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

import dataclasses
import json

from absl import app, flags, logging

from rosetta_jax.studies import polarization as study
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
  res = study.run_polarization(cfg, _WORKDIR.value, _MODELS.value, progress=_PROGRESS.value)
  for m, t in res["trend"].items():
    print(f"{m:15s} slope of d per ln N {t['d']['slope']:+.3f}  "
          f"95% CI [{t['d']['ci'][0]:+.3f}, {t['d']['ci'][1]:+.3f}]")
  print(f"wrote {_WORKDIR.value}/polarization/results.json and report.html")


if __name__ == "__main__":
  app.run(main)
