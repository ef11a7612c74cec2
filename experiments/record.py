"""Records a model's MLP neurons on a corpus into a resumable activation store.

Command (a tiny local checkpoint takes seconds; Pythia-70M on the embedded
held-out split, ~250k units, takes minutes on 2 CPU cores)::

    python -m experiments.record --model=/path/to/hf_dir --corpus=embedded \\
        --split=heldout --sites=mlp --workdir=/tmp/rec

Writes ``config.json`` (the flags), ``store/`` (the activation store: manifest,
documents, moments, one zarr array per site) and ``results.json`` (units,
sites, neurons, seconds) into the workdir. Re-running the command resumes an
interrupted recording; a different model, corpus or setting in the same workdir
is an error. ``--align_with`` names other models (dirs) whose tokenizers define
the shared units, so stores of models with different tokenizers line up.
"""

from __future__ import annotations

import json
import os
import time

from absl import app, flags, logging

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "Local Hugging Face model directory (or cached hub id).")
flags.DEFINE_string("corpus", "embedded", "'embedded' or a .jsonl[.xz] corpus file.")
flags.DEFINE_enum("split", "heldout", ["train", "heldout", "all"], "Corpus split.")
flags.DEFINE_string("sites", "mlp", "'mlp' (every layer) or comma-separated site names.")
flags.DEFINE_string("workdir", None, "Output directory.")
flags.DEFINE_list("align_with", [], "Other model directories whose tokenizers to align with.")
flags.DEFINE_integer("batch_size", 8, "Windows per batch.")
flags.DEFINE_integer("max_len", 512, "Tokens per context window (capped at the model's).")
flags.DEFINE_enum("pooling", "mean", ["mean", "max", "last"], "Pooling within units.")
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Stored dtype.")
flags.DEFINE_integer("max_docs", 0, "Record only the first N documents (0 = all).")
flags.DEFINE_integer("max_chars", 0, "Cut documents to N characters (0 = whole).")
flags.mark_flags_as_required(["model", "workdir"])


def _tokenizer_of(model_dir: str):
  from transformers import AutoTokenizer
  return AutoTokenizer.from_pretrained(model_dir)


def main(argv):
  del argv
  import dataclasses

  from rosetta_jax.data.corpus import load_corpus
  from rosetta_jax.models import load_model
  from rosetta_jax.recording import record

  os.makedirs(FLAGS.workdir, exist_ok=True)
  config = {k: FLAGS[k].value for k in ("model", "corpus", "split", "sites", "align_with",
                                         "batch_size", "max_len", "pooling", "dtype",
                                         "max_docs", "max_chars")}
  logging.info("config: %s", config)
  with open(os.path.join(FLAGS.workdir, "config.json"), "w") as f:
    json.dump(config, f, indent=1)

  docs = load_corpus(FLAGS.split, None if FLAGS.corpus == "embedded" else FLAGS.corpus)
  if FLAGS.max_docs:
    docs = docs[:FLAGS.max_docs]
  if FLAGS.max_chars:
    docs = [dataclasses.replace(d, text=d.text[:FLAGS.max_chars]) for d in docs]
  model = load_model(FLAGS.model)
  if model.tokenizer is None:
    raise ValueError(f"{FLAGS.model} has no tokenizer files; recording needs one")
  sites = (model.mlp_sites() if FLAGS.sites == "mlp"
           else [s.strip() for s in FLAGS.sites.split(",") if s.strip()])
  max_len = min(FLAGS.max_len, getattr(model.config, "max_position_embeddings", FLAGS.max_len))
  align_with = [_tokenizer_of(d) for d in FLAGS.align_with]

  start = time.time()
  store = record(model, docs, sites, os.path.join(FLAGS.workdir, "store"),
                 batch_size=FLAGS.batch_size, max_len=max_len, pooling=FLAGS.pooling,
                 align_with=align_with or None, dtype=FLAGS.dtype)
  results = {"model": model.name, "documents": len(docs), "units": store.units_done,
             "sites": {s: store.site(s).num_neurons for s in store.sites},
             "store": os.path.abspath(store.path), "seconds": round(time.time() - start, 2)}
  with open(os.path.join(FLAGS.workdir, "results.json"), "w") as f:
    json.dump(results, f, indent=1)
  logging.info("recorded %d units x %d sites into %s", store.units_done, len(sites), store.path)


if __name__ == "__main__":
  app.run(main)
