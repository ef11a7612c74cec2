"""Flags every study binary shares, defined once, and the config they select.

A binary imports this module (which defines ``--workdir``, ``--preset``,
``--models``, ``--bootstrap``, ``--depths``, ``--config`` and ``--progress``), adds its own
flags, and calls ``study_config()`` in ``main``.
"""

from __future__ import annotations

import dataclasses
import json

from absl import app, flags, logging

from rosetta_jax.zoo import config as config_lib

WORKDIR = flags.DEFINE_string("workdir", None, "Output directory (shared by the studies).",
                              required=True)
PRESET = flags.DEFINE_enum("preset", "tiny", sorted(config_lib.PRESETS), "Named config.")
MODELS = flags.DEFINE_string("models", "zoo", "'zoo', or comma-separated model dirs/names.")
BOOTSTRAP = flags.DEFINE_integer("bootstrap", None, "Document-bootstrap resamples.")
PROGRESS = flags.DEFINE_bool("progress", True, "Show progress bars.")
DEPTHS = flags.DEFINE_list("depths", None,
                           "Relative depths in [0, 1] of the layers to study, each model's "
                           "nearest layer (e.g. 0,0.5,1); default: every layer.")
CONFIG = flags.DEFINE_string("config", None, "A study config.json to use instead of --preset "
                             "(e.g. <workdir>/config.json of an earlier scaling run).")


def study_config(argv, **overrides) -> config_lib.StudyConfig:
  """The StudyConfig of --config or --preset, with --bootstrap and ``overrides``
  (None values ignored). Also quiets INFO logs unless --verbosity was given."""
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)     # orbax/jax INFO lines drown the progress bars
  try:
    cfg = (config_lib.load_study_config(CONFIG.value) if CONFIG.value
           else config_lib.get_preset(PRESET.value))
  except (OSError, ValueError) as e:
    raise app.UsageError(str(e)) from e
  depths = None
  if DEPTHS.value is not None:
    try:
      depths = tuple(float(d) for d in DEPTHS.value)
    except ValueError:
      raise app.UsageError(f"--depths must be numbers in [0, 1], got {DEPTHS.value}") from None
    if not all(0.0 <= d <= 1.0 for d in depths):
      raise app.UsageError(f"--depths must be numbers in [0, 1], got {DEPTHS.value}")
  overrides = {"bootstrap": BOOTSTRAP.value, "depths": depths, **overrides}
  overrides = {k: v for k, v in overrides.items() if v is not None}
  if overrides.get("bootstrap", 2) < 2:
    raise app.UsageError("--bootstrap must be >= 2")
  if overrides.get("k", 1) < 1:
    raise app.UsageError("--k must be >= 1")
  if min(overrides.get("record_docs", 0), overrides.get("record_chars", 0)) < 0:
    raise app.UsageError("--record_docs and --record_chars must be >= 0")
  if min(overrides.get("record_len", 1), overrides.get("record_batch", 1)) < 1:
    raise app.UsageError("--record_len and --record_batch must be >= 1")
  cfg = dataclasses.replace(cfg, **overrides)
  logging.info("config: %s", json.dumps(config_lib.to_dict(cfg)))
  return cfg
