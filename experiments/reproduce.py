r"""Every claim in one report: scaling, polarization, domains/depth, null/ablation, theory,
data filtering.

    python -m experiments.reproduce --models=zoo --preset=tiny --workdir=runs/tiny

Runs experiments.scaling (outputs at the workdir's top level), then the
polarization, domains and null/ablation studies on the same zoo, stores and pairs,
the theory comparison (``theory.compare``, a preset-sized sweep) into
<workdir>/theory, the data-filtering case study into <workdir>/data_filter
(zoo only; ``--skip_data_filter`` to leave it out), and writes <workdir>/reproduce/report.html: a summary table
(claim, measured value, 95% CI, agrees or not) and one section per claim.
tiny: about 12 minutes on 2 CPU cores (most of it training the zoo); default:
over an hour.

Shares ``--workdir`` with ``experiments.scaling`` (zoo, activation stores and
Rosetta pairs are reused, or made if missing); this study's ``config.json``,
``results.json`` and ``report.html`` go to ``<workdir>/reproduce/``. Re-running
resumes; a workdir holding another config is an error.
"""

from __future__ import annotations

import dataclasses
import json

from absl import app, flags, logging

from rosetta_jax.studies import reproduce as study
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
_THEORY = flags.DEFINE_enum("theory", None, ["micro", "tiny", "default"],
                            "Theory sweep size (default: the preset's, tiny for tiny).")
_NO_THEORY = flags.DEFINE_bool("skip_theory", False, "Skip the theory comparison.")
_NO_FILTER = flags.DEFINE_bool("skip_data_filter", False,
                               "Skip the data-filtering study (claim 6; zoo only).")


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
  theory = None if _NO_THEORY.value else (
      _THEORY.value or ("default" if _PRESET.value != "tiny" else "tiny"))
  res = study.run_reproduce(cfg, _WORKDIR.value, _MODELS.value, progress=_PROGRESS.value,
                            theory=theory, log=logging.info,
                            data_filter=not _NO_FILTER.value)
  for r in res["summary"]:
    print(f"{r['claim']:75s} {r['measured']:24s} {r['ci']:18s} {r['agrees']}")
  print(f"wrote {_WORKDIR.value}/reproduce/results.json and report.html")


if __name__ == "__main__":
  app.run(main)
