"""What every binary shares: the run flags, the config flags derived from its
dataclass, and one error handler.

A binary imports this module, derives its config's flags
(``define_study_flags()`` for the studies' ``StudyConfig``, or
``config_lib.define_flags(SomeConfig)``), adopts this module's and the config
module's flags as its own (so ``--helpshort`` lists them), and runs ``main``
through ``run``. Errors a user can fix (a bad flag, a missing file, a
refused workdir, a damaged store) end the run with one line naming the flag,
path or field; set ``--verbose`` (or ROSETTA_JAX_VERBOSE=1) for the traceback.
``--verify`` checks every activation store of the workdir after the flags are
validated and before any work (``verify_workdir``).
"""

from __future__ import annotations

import json
import os
import re
import sys

from absl import app, flags, logging

from rosetta_jax.studies import config as config_lib

WORKDIR = flags.DEFINE_string("workdir", None, "Output directory (shared by the studies).",
                              required=True)
PRESET = flags.DEFINE_string("preset", "tiny", "Named config (tiny, default, paper).")
CONFIG = flags.DEFINE_string("config", None, "A config.json to use instead of --preset "
                             "(e.g. <workdir>/config.json of an earlier run).")
PROGRESS = flags.DEFINE_bool("progress", True, "Show progress bars.")
VERBOSE = flags.DEFINE_bool("verbose", False, "Show the traceback of an error.")
SUMMARY = flags.DEFINE_string("summary", None, "Also write the run's summary (command, "
                              "commit, machine, numbers) here, e.g. docs/results/NAME.json: "
                              "the file README.md and docs/ render their numbers from.")
VERIFY = flags.DEFINE_bool("verify", False, "Before any work, verify every activation "
                           "store in the workdir (chunk files, checksums, documents, "
                           "moments: Store.verify); a damaged one ends the run, naming it.")
# Devices and processes (docs/scale.md). Defaults: one process, no sharding.
MESH = flags.DEFINE_string("mesh", "", "Device mesh 'data:D,model:M' over every process's "
                           "devices (-1: the rest); empty: one device, no sharding.")
COORDINATOR = flags.DEFINE_string("coordinator", None, "host:port of process 0 in a "
                                  "multi-process run (with --num_processes, --process_id); "
                                  "unset: one process, or the cluster's own (SLURM, Open "
                                  "MPI, TPU) detection.")
NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in the run.")
PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index, from 0.")
DISTRIBUTED_TIMEOUT = flags.DEFINE_integer(
    "distributed_timeout_s", 300, "Seconds to wait for every process at start-up.")
EXPLORER = flags.DEFINE_bool("explorer", True, "Write the run's explorer page "
                             "(<workdir>/explorer/index.html) when the study finishes.")


def define_study_flags() -> None:
  """--models and one flag per ``StudyConfig`` field (the study binaries' flags)."""
  if "models" not in flags.FLAGS:
    flags.DEFINE_string("models", "zoo", "'zoo', or comma-separated model dirs, offline: "
                        "names or GGUF files ('A+B,C+D' pairs within groups).")
  config_lib.define_flags(config_lib.StudyConfig)


def start_processes():
  """Joins the multi-process runtime from the flags or the environment (a no-op for
  one process); ``run`` calls it before ``main``. Returns a ``ProcessInfo``."""
  from rosetta_jax import distributed  # pylint: disable=g-import-not-at-top
  return distributed.initialize(COORDINATOR.value, NUM_PROCESSES.value, PROCESS_ID.value,
                                timeout_s=DISTRIBUTED_TIMEOUT.value)


def mesh(local: bool = False):
  """The ``--mesh`` mesh over every process's devices (``sharding.mesh_from_flag``);
  ``local``: the model axis of ``--mesh`` over this process's devices, ``data`` the
  rest of them (the mesh each process records its own documents on)."""
  from rosetta_jax import sharding  # pylint: disable=g-import-not-at-top
  if local:
    return sharding.local_mesh(None, sharding.parse_mesh(MESH.value)[1] or 1)
  return sharding.mesh_from_flag(MESH.value)


def study_mesh():
  """The mesh a study binary matches its pairs over (``--mesh``; None: one device).

  The studies run in one process: their pipeline trains, records and writes the
  workdir from it. A run across processes records with ``experiments.record``
  (each process its own shard of the documents) and matches in one process.
  """
  import jax  # pylint: disable=g-import-not-at-top
  if jax.process_count() > 1:
    raise config_lib.ConfigError(
        f"num_processes: the study binaries run in one process ({jax.process_count()} "
        "joined); record each model across processes with `python -m experiments.record "
        "--num_processes=...`, then run the study in one process, over its devices with "
        "--mesh=data:D,model:M")
  return mesh() if MESH.value else None


def models() -> str:
  return flags.FLAGS.models


def finish(ctx, result=None) -> None:
  """What every study binary does last: the run's summary (``--summary``) and its
  explorer page (``--explorer``)."""
  if SUMMARY.value and result is not None:
    import time  # pylint: disable=g-import-not-at-top
    from rosetta_jax.report import docs  # pylint: disable=g-import-not-at-top
    docs.write_summary(SUMMARY.value, result.to_json(), seconds=time.time() - _START)
    print(f"wrote {SUMMARY.value}")
  if EXPLORER.value and getattr(ctx.cfg, "modality", "text") != "text":
    print("no explorer page: the explorer shows text units only (--noexplorer to silence)")
  elif EXPLORER.value:
    from rosetta_jax import explorer  # pylint: disable=g-import-not-at-top
    print(f"wrote {explorer.write_explorer(ctx, progress=PROGRESS.value)}")


def quiet_logs() -> None:
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)     # orbax/jax INFO lines drown the progress bars


def make_config(argv, cls=config_lib.StudyConfig, presets=None, preset=None, path=None,
                skip=(), **overrides):
  """The config of --config (or ``path``) or --preset (or ``preset``), with the
  derived flags and ``overrides`` applied."""
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  quiet_logs()
  path = CONFIG.value if path is None else path
  # A study's --preset is the named preset of its --modality (text unless given).
  modality = (flags.FLAGS.modality if presets is None and cls is config_lib.StudyConfig
              and "modality" in flags.FLAGS else None)
  base = (config_lib.load_config(path, cls) if path
          else config_lib.get_preset(preset or PRESET.value, presets, modality=modality))
  cfg = config_lib.apply_flags(base, skip=skip, **overrides)
  logging.info("config: %s", json.dumps(config_lib.to_dict(cfg)))
  if VERIFY.value:
    verify_workdir(WORKDIR.value)
  return cfg


def verify_workdir(workdir: str) -> list:
  """``--verify``: ``Store.verify`` of every store under ``workdir``, one line each.

  Raises:
    StoreDamagedError: the first damaged store, with every problem found in it.
  """
  from rosetta_jax import store as store_lib  # pylint: disable=g-import-not-at-top
  reports = []
  for path in store_lib.find_stores(workdir) if os.path.isdir(workdir) else []:
    rep = store_lib.Store(path).verify(progress=PROGRESS.value)
    print(f"verified {path}: {rep.sites} sites, {rep.chunk_rows} chunk rows, "
          f"{rep.bytes / 2 ** 20:.1f} MiB in {rep.seconds:.2f} s")
    reports.append(rep)
  if not reports:
    print(f"--verify: no activation stores in {workdir} yet")
  return reports


def study_config(argv, **overrides) -> config_lib.StudyConfig:
  return make_config(argv, **overrides)


def _flag_message(e: Exception) -> str:
  """A ConfigError's 'field: message' as '--field: message' when the field is a flag."""
  msg = str(e)
  m = re.match(r"^([A-Za-z_][\w.]*): ", msg)
  if m and m.group(1).replace(".", "_") in flags.FLAGS:
    return "--" + m.group(1).replace(".", "_") + msg[len(m.group(1)):]
  return msg


_START = __import__("time").time()


def run(main) -> None:
  """``app.run(main)`` with errors a user can fix reported in one line."""
  def wrapped(argv):
    try:
      start_processes()
      return main(argv)
    except app.UsageError:
      raise
    except config_lib.ConfigError as e:
      if VERBOSE.value or os.environ.get("ROSETTA_JAX_VERBOSE"):
        raise
      raise app.UsageError(_flag_message(e)) from None
    except (ValueError, FileNotFoundError, RuntimeError, KeyError, OSError) as e:
      if VERBOSE.value or os.environ.get("ROSETTA_JAX_VERBOSE"):
        raise
      print(f"error: {type(e).__name__}: {e}\n(run with --verbose for the traceback)",
            file=sys.stderr)
      sys.exit(1)
  app.run(wrapped)
