r"""The main job: do Rosetta neurons grow as a sublinear power law of model size?

    pip install -e . && python -m experiments.scaling --models=zoo --preset=tiny \
        --workdir=runs/tiny

With ``--models=zoo`` it trains the embedded GPT-NeoX zoo (5 widths, 8x neurons,
two seeds each) on the embedded corpus, records every MLP neuron on the held-out
documents, matches the two seeds of each width (mutual nearest neighbours on
Pearson r across all layers), fits count ~ N^beta with a document-bootstrap CI,
and writes ``config.json``, ``results.json`` and ``report.html`` into the workdir.
``tiny`` takes about 4 minutes on 2 CPU cores; ``default`` under an hour.

``--models=DIR_A,DIR_B,...`` runs the same study on Hugging Face checkpoints in
local directories (every pair matched; ``A1+A2,B1+B2`` pairs within groups).
Re-running the same command resumes; a workdir holding another config is an error.
The result to look for: beta < 1 with its CI below 1 (the fraction shrinks).
"""

from __future__ import annotations

import dataclasses
import json

from absl import app, flags, logging

from rosetta_jax.studies import scaling as study
from rosetta_jax.zoo import config as config_lib

_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory (resumed if it exists).",
                               required=True)
_PRESET = flags.DEFINE_enum("preset", "tiny", sorted(config_lib.PRESETS), "Named config.")
_MODELS = flags.DEFINE_string("models", "zoo", "'zoo', or comma-separated model dirs/names.")
_K = flags.DEFINE_integer("k", None, "Mutual-k-NN criterion (default: the preset's, 1).")
_R_MIN = flags.DEFINE_float("r_min", None, "Minimum r of a Rosetta pair.")
_BOOTSTRAP = flags.DEFINE_integer("bootstrap", None, "Document-bootstrap resamples.")
_NULL = flags.DEFINE_bool("null_threshold", None,
                          "Require r above the strongest permutation-null pair (default on).")
_RECORD_DOCS = flags.DEFINE_integer("record_docs", None,
                                    "Held-out documents to record (0 = all; evenly spaced).")
_RECORD_CHARS = flags.DEFINE_integer("record_chars", None,
                                     "Characters kept per document (0 = all).")
_PROGRESS = flags.DEFINE_bool("progress", True, "Show progress bars.")


def make_config() -> config_lib.StudyConfig:
  cfg = config_lib.get_preset(_PRESET.value)
  overrides = {"k": _K.value, "r_min": _R_MIN.value, "bootstrap": _BOOTSTRAP.value,
               "null_threshold": _NULL.value, "record_docs": _RECORD_DOCS.value,
               "record_chars": _RECORD_CHARS.value}
  overrides = {k: v for k, v in overrides.items() if v is not None}
  if overrides.get("k", 1) < 1:
    raise app.UsageError("--k must be >= 1")
  if overrides.get("bootstrap", 2) < 2:
    raise app.UsageError("--bootstrap must be >= 2")
  if min(overrides.get("record_docs", 0), overrides.get("record_chars", 0)) < 0:
    raise app.UsageError("--record_docs and --record_chars must be >= 0")
  return dataclasses.replace(cfg, **overrides)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)     # orbax/jax INFO lines drown the progress bars
  cfg = make_config()
  logging.info("config: %s", json.dumps(config_lib.to_dict(cfg)))
  res = study.run_scaling(cfg, _WORKDIR.value, _MODELS.value, progress=_PROGRESS.value)
  if res["fit"]:
    fit = res["fit"]["count"]
    print(f"beta = {fit['beta']:.3f}  95% CI [{fit['ci'][0]:.3f}, {fit['ci'][1]:.3f}]")
  print(f"counts {res['counts']} at N = {[int(s) for s in res['sizes']]}")
  print(f"wrote {_WORKDIR.value}/results.json and {_WORKDIR.value}/report.html")


if __name__ == "__main__":
  app.run(main)
