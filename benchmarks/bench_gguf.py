"""GGUF header costs: refusing an unsupported file, and reading a supported one's config.

Run: ``python benchmarks/bench_gguf.py [--vocab=262144 --tensor_mib=256]`` (about
a minute on 2 CPU cores, most of it the old full parse).

Writes two GGUF files into a temporary directory, each with a Gemma-sized
vocabulary (``--vocab`` tokens, scores and types) and one ``--tensor_mib`` float32
tensor: ``mamba`` (no port) and a tiny ``gemma2``. Prints, each in a fresh
subprocess (time and peak RSS above the interpreter with the loader imported):

* refusing the ``mamba`` file with ``load_model`` (the architecture is read first)
  vs transformers' ``load_gguf_checkpoint(return_tensors=False)``, the full metadata
  parse the loader used to run before checking the architecture;
* the ``gemma2`` file's config: ``gguf_io.read_header`` + ``hf_config_dict`` vs the
  same transformers parse (the reference for the config).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

_CHILD = r"""
import json, sys, time
from rosetta_jax.models import gguf_io, hf
from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint
import gguf, jax

def status(key):  # kB, from /proc/self/status
  for line in open("/proc/self/status"):
    if line.startswith(key):
      return int(line.split()[1])

what, path = sys.argv[1], sys.argv[2]
open("/proc/self/clear_refs", "w").write("5")  # reset VmHWM to the current RSS
base = status("VmRSS:")
t = time.perf_counter()
out = ""
if what == "refuse":
  try:
    hf.load_model(path)
  except ValueError as e:
    out = str(e)[:120]
elif what == "header":
  out = gguf_io.hf_config_dict(gguf_io.read_header(path))["model_type"]
else:  # transformers' full parse
  try:
    out = load_gguf_checkpoint(path, return_tensors=False)["config"]["model_type"]
  except ValueError as e:
    out = str(e)[:120]
dt = time.perf_counter() - t
print(json.dumps({"s": dt, "peak_mb": (status("VmHWM:") - base) / 1024, "out": out}))
"""


def _write(path: Path, arch: str, vocab: int, tensor_mib: int) -> None:
  import gguf
  w = gguf.GGUFWriter(str(path), arch)
  w.add_block_count(1)
  if arch == "gemma2":
    for key, value in (("context_length", 64), ("embedding_length", 64),
                       ("feed_forward_length", 64), ("attention.head_count", 1),
                       ("attention.head_count_kv", 1), ("attention.key_length", 64),
                       ("attention.value_length", 64), ("attention.sliding_window", 8)):
      w.add_uint32(f"gemma2.{key}", value)
    w.add_float32("gemma2.attention.layer_norm_rms_epsilon", 1e-6)
  w.add_tokenizer_model("llama")
  w.add_token_list([f"\u2581tok{i}" for i in range(vocab)])
  w.add_token_scores([0.0] * vocab)
  w.add_token_types([1] * vocab)
  rows = tensor_mib * (1 << 20) // (4 * 64)
  w.add_tensor("token_embd.weight", np.zeros((rows, 64), np.float32))
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()


def _run(what: str, path: Path) -> dict:
  out = subprocess.run([sys.executable, "-c", _CHILD, what, str(path)], check=True,
                       capture_output=True, text=True).stdout
  return json.loads(out.strip().splitlines()[-1])


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--vocab", type=int, default=262144)
  ap.add_argument("--tensor_mib", type=int, default=256)
  args = ap.parse_args()
  with tempfile.TemporaryDirectory() as tmp:
    mamba, gemma = Path(tmp) / "mamba.gguf", Path(tmp) / "gemma2.gguf"
    _write(mamba, "mamba", args.vocab, args.tensor_mib)
    _write(gemma, "gemma2", args.vocab, args.tensor_mib)
    print(f"files: {mamba.stat().st_size / 2**20:.0f} MiB each, {args.vocab} tokens")
    rows = [("refuse mamba: load_model", "refuse", mamba),
            ("refuse mamba: old full parse", "full", mamba),
            ("gemma2 config: read_header", "header", gemma),
            ("gemma2 config: transformers parse", "full", gemma)]
    res = {}
    for label, what, path in rows:
      res[label] = r = _run(what, path)
      print(f"{label:36s} {r['s']:9.4f} s  peak +{r['peak_mb']:7.1f} MB  {r['out']}")
    for a, b in ((rows[1][0], rows[0][0]), (rows[3][0], rows[2][0])):
      print(f"{b}: {res[a]['s'] / res[b]['s']:.0f}x faster than '{a}'")


if __name__ == "__main__":
  main()
