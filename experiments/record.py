"""Records a model's MLP neurons on a corpus into a resumable activation store.

Command (a tiny local checkpoint takes seconds; Pythia-70M on the embedded
held-out split, ~250k units, takes minutes on 2 CPU cores)::

    python -m experiments.record --model=/path/to/hf_dir --corpus=embedded \\
        --split=heldout --sites=mlp --workdir=/tmp/rec

Every field of ``RecordConfig`` (``rosetta_jax/studies/config.py``) is a flag;
``--preset=tiny`` records 40 documents cut to 600 characters. Flags are checked
before anything is written. Writes ``config.json`` (the config), ``store/`` (the activation store: manifest,
documents, moments, one zarr array per site) and ``results.json`` (units,
sites, neurons, seconds) into the workdir. Re-running the command resumes an
interrupted recording; a different model, corpus or setting in the same workdir
is an error. ``--align_with`` names other models (dirs) whose tokenizers define
the shared units, so stores of models with different tokenizers line up.
"""
from __future__ import annotations

import dataclasses
import os
import time

import jax
from absl import flags

from experiments import common_flags as cf
from rosetta_jax import io as io_lib
from rosetta_jax import sharding
from rosetta_jax.studies import config as config_lib
from rosetta_jax.studies import context

config_lib.define_flags(config_lib.RecordConfig)
flags.adopt_module_key_flags(cf)
flags.adopt_module_key_flags(config_lib)


def main(argv):
  preset = cf.PRESET.value if flags.FLAGS["preset"].present else "default"
  cfg = cf.make_config(argv, config_lib.RecordConfig, config_lib.RECORD_PRESETS, preset=preset)
  from rosetta_jax.data.corpus import load_corpus  # pylint: disable=g-import-not-at-top
  from rosetta_jax.models import check_model, load_model  # pylint: disable=g-import-not-at-top
  from rosetta_jax.recording import record  # pylint: disable=g-import-not-at-top
  from transformers import AutoTokenizer  # pylint: disable=g-import-not-at-top

  workdir = cf.WORKDIR.value
  meta = config_lib.workdir_record("record", cfg.model, cfg)
  existed = config_lib.check_workdir(workdir, meta)
  check_model(cfg.model)                       # a damaged checkpoint fails before any write
  docs = load_corpus(cfg.split, None if cfg.corpus == "embedded" else cfg.corpus)
  if cfg.max_docs:
    docs = docs[:cfg.max_docs]
  if cfg.max_chars:
    docs = [dataclasses.replace(d, text=d.text[:cfg.max_chars]) for d in docs]
  mesh = cf.mesh(local=True) if cf.MESH.value else None   # each process: its own copy
  model = load_model(cfg.model, mesh=mesh)
  if model.tokenizer is None:
    raise config_lib.ConfigError(f"model: {cfg.model} has no tokenizer files; recording "
                                 "needs one")
  sites = (model.mlp_sites() if cfg.sites == "mlp"
           else [s.strip() for s in cfg.sites.split(",") if s.strip()])
  max_len = min(cfg.max_len, getattr(model.config, "max_position_embeddings", cfg.max_len))
  align_with = [AutoTokenizer.from_pretrained(d) for d in cfg.align_with]
  primary = jax.process_index() == 0          # one process writes config and results
  if primary:
    context.lock_workdir(workdir)
  if primary and not existed:
    config_lib.write_workdir_config(workdir, meta)
  start = time.time()
  store = record(model, docs, sites, os.path.join(workdir, "store"),
                 batch_size=cfg.batch_size, max_len=max_len, pooling=cfg.pooling,
                 align_with=align_with or None, dtype=cfg.dtype, progress=cf.PROGRESS.value,
                 batch_sharding=None if mesh is None else sharding.named(mesh, sharding.BATCH))
  if not primary:
    return
  results = {"model": model.name, "documents": len(docs), "units": store.units_done,
             "sites": {s: store.site(s).num_neurons for s in store.sites},
             "store": os.path.abspath(store.path), "seconds": round(time.time() - start, 2)}
  io_lib.write_json(os.path.join(workdir, "results.json"), results)
  print(f"recorded {store.units_done} units x {len(sites)} sites into {store.path}")


if __name__ == "__main__":
  cf.run(main)
