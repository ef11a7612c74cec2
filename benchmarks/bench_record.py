"""Recording cost vs the plain forward pass, and peak memory vs corpus length.

    python benchmarks/bench_record.py [--docs=120] [--batch_size=8] [--max_len=256]

Prints, measured in one run:

1. Throughput: the jitted forward pass alone (``model(tokens, mask, sites)``, all
   MLP sites, outputs awaited) over exactly the batches the recorder builds, vs
   ``record()`` end to end (tokenising + aligning + forward + pooling + store
   writes + moments + commits) into a fresh store. Both are warmed up (compiled)
   first; the three are interleaved ``--repeats`` times and each keeps its best
   time (the machine may be shared). Goal: record / forward <= 1.25.
2. Peak RSS of a fresh process recording the corpus 1x and 4x as long (the
   documents repeated under new ids). Goal: ratio <= 1.1.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np

from rosetta_jax import recording as R
from rosetta_jax.data.corpus import Document, load_corpus
from rosetta_jax.data.tokenizer import train_bpe
from rosetta_jax.models.base import Model
from rosetta_jax.models.gpt_neox import GPTNeoX, GPTNeoXConfig


def build(args):
  tok = train_bpe([d.text for d in load_corpus("train")[:300]], vocab_size=1024)
  cfg = GPTNeoXConfig(vocab_size=tok.vocab_size, hidden_size=args.hidden, num_layers=4,
                      num_heads=4, intermediate_size=4 * args.hidden,
                      max_position_embeddings=args.max_len)
  module = GPTNeoX(cfg)
  params = module.init(jax.random.PRNGKey(0), np.zeros((1, 8), np.int32))["params"]
  return Model("bench", module, params, cfg, tok)


def corpus(n_docs: int, factor: int) -> list[Document]:
  base = load_corpus("heldout")[:n_docs]
  return [dataclasses.replace(d, doc_id=f"{d.doc_id}~{k}") for k in range(factor) for d in base]


def forward_pass(model, plan, args, sites):
  """The plain forward over the recorder's own batches; returns seconds."""
  bounds, lens = R.batch_bounds(plan, args.batch_size), R.buckets(args.max_len)
  pad = model.tokenizer.pad_id
  batches, u_prev = [], 0
  for w0, w1, u1 in bounds:
    b = R.make_batch(plan, w0, w1, u_prev, args.batch_size, pad, lens)
    batches.append((b.tokens, b.mask))
    u_prev = u1
  t = time.perf_counter()
  for tokens, mask in batches:
    jax.block_until_ready(model(tokens, mask, sites))
  return time.perf_counter() - t


def throughput(args):
  model = build(args)
  docs = corpus(args.docs, 1)
  sites = tuple(model.mlp_sites())
  root = tempfile.mkdtemp(prefix="bench_record_")
  try:
    plan = R.make_plan(model.tokenizer, docs, args.max_len)
    kw = dict(batch_size=args.batch_size, max_len=args.max_len, progress=False)
    forward_pass(model, plan, args, sites)  # compile every bucket
    R.record(model, docs, sites, os.path.join(root, "warm"), **kw)  # compile
    # The machine is shared: interleave the three measurements, keep each's best.
    t_fwd, t_rec = float("inf"), {True: float("inf"), False: float("inf")}
    for _ in range(args.repeats):
      t_fwd = min(t_fwd, forward_pass(model, plan, args, sites))
      for overlap in (True, False):
        out = os.path.join(root, f"timed{overlap}")
        t = time.perf_counter()
        st = R.record(model, docs, sites, out, overlap=overlap, **kw)
        t_rec[overlap] = min(t_rec[overlap], time.perf_counter() - t)
        units, neurons = st.units_done, sum(st.site(s).num_neurons for s in st.sites)
        shutil.rmtree(out)
    t = time.perf_counter()
    R.make_plan(model.tokenizer, docs, args.max_len)
    t_plan = time.perf_counter() - t
  finally:
    shutil.rmtree(root, ignore_errors=True)
  return dict(units=units, neurons=neurons, tokens=int(len(plan.ids)), forward_s=t_fwd,
              record_s=t_rec[True], record_serial_s=t_rec[False], plan_s=t_plan)


def rss_child(args):
  """Records the corpus ``args.factor`` times as long (one site); prints peak RSS."""
  model = build(args)
  docs = corpus(args.docs, args.factor)
  root = tempfile.mkdtemp(prefix="bench_rss_")
  try:
    t = time.perf_counter()
    st = R.record(model, docs, ["layer_3/mlp"], root, batch_size=args.batch_size,
                  max_len=args.max_len, progress=False)
    secs = time.perf_counter() - t
    nbytes = st.units_done * st.site("layer_3/mlp").num_neurons * 4
  finally:
    shutil.rmtree(root, ignore_errors=True)
  print(json.dumps({"factor": args.factor, "units": st.units_done, "store_mb": nbytes / 2**20,
                    "seconds": secs,
                    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def rss(args, factor):
  cmd = [sys.executable, os.path.abspath(__file__), f"--rss_child={factor}",
         f"--docs={args.docs}", f"--batch_size={args.batch_size}", f"--max_len={args.max_len}",
         f"--hidden={args.hidden}"]
  out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
  return json.loads(out.strip().splitlines()[-1])


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--docs", type=int, default=120)
  p.add_argument("--batch_size", type=int, default=8)
  p.add_argument("--max_len", type=int, default=256)
  p.add_argument("--hidden", type=int, default=128)
  p.add_argument("--repeats", type=int, default=2)
  p.add_argument("--rss_child", type=int, default=0)
  args = p.parse_args()
  if args.rss_child:
    args.factor = args.rss_child
    rss_child(args)
    return
  print(f"machine: {platform.machine()} {os.cpu_count()} cpus, jax {jax.__version__} "
        f"{jax.devices()[0].platform}; model: GPT-NeoX 4 layers, hidden {args.hidden}, "
        f"{4 * args.hidden} neurons/layer; batch {args.batch_size} x {args.max_len}")
  tp = throughput(args)
  print(f"throughput: {tp['units']} units ({tp['tokens']} tokens) x {tp['neurons']} neurons")
  print(f"  plain forward   {tp['forward_s']:.2f} s  ({tp['tokens'] / tp['forward_s']:.0f} tok/s)")
  print(f"  record (total)  {tp['record_s']:.2f} s  ({tp['units'] / tp['record_s']:.0f} units/s; "
        f"of which plan {tp['plan_s']:.2f} s)")
  print(f"  record, overlap=False  {tp['record_serial_s']:.2f} s")
  print(f"  record / forward = {tp['record_s'] / tp['forward_s']:.2f}  (goal <= 1.25); "
        f"overlap=False: {tp['record_serial_s'] / tp['forward_s']:.2f}")
  r1, r4 = rss(args, 1), rss(args, 4)
  for r in (r1, r4):
    print(f"peak RSS corpus {r['factor']}x: {r['peak_rss_mb']:.0f} MiB "
          f"({r['units']} units, store {r['store_mb']:.0f} MiB, {r['seconds']:.1f} s)")
  print(f"  RSS 4x / 1x = {r4['peak_rss_mb'] / r1['peak_rss_mb']:.3f}  (goal <= 1.1)")


if __name__ == "__main__":
  main()
