"""Cost of store checksums and exact matching: this tree against an older one.

    git archive <old commit> rosetta_jax benchmarks | tar -x -C /tmp/before
    python benchmarks/bench_integrity.py --before=/tmp/before [--rounds=3]
        [--modes=match32,match64,match32off,read,record]

Runs every mode in a fresh process per tree, interleaved (before, after,
before, after, ...) ``--rounds`` times, and prints the median of each figure
per tree (the machine may be shared: compare CPU times and ratios measured in
one process). Modes:

* ``match32`` / ``match64`` / ``match32off``: ``rj.match(a, b, k=1)`` of
  T=65536 x N=2048 numpy inputs, float32 / float64 / float32 at offset 1e4,
  moments included; one warm-up call, then one timed (wall and CPU seconds).
* ``read``: a float32 store of the same size: write (plus moments), read it
  all in 2048-unit chunks with a fresh ``Store`` (first reads check every chunk
  row's CRC), read it again (checked rows), and ``verify()`` where it exists.
* ``record``: ``benchmarks/bench_record.py``'s throughput (``record()`` vs the
  plain forward pass, 60 documents; ``record_s / forward_s`` is the figure).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

T, N = 65536, 2048


def _timed(f):
  f()
  t, c = time.perf_counter(), time.process_time()
  f()
  return time.perf_counter() - t, time.process_time() - c


def child(mode: str) -> dict:
  import rosetta_jax as rj
  from rosetta_jax import store as S
  from rosetta_jax.match.moments import Moments
  if mode.startswith("match"):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((T, N), dtype=np.float32)
    b = rng.standard_normal((T, N), dtype=np.float32)
    if mode == "match64":
      a, b = a.astype(np.float64), b.astype(np.float64)
    if mode == "match32off":
      a += 1e4
      b += 1e4
    s, cpu = _timed(lambda: rj.match(a, b, k=1))
    return {"s": s, "cpu": cpu}
  if mode == "read":
    root = tempfile.mkdtemp(prefix="bench_integrity_")
    try:
      x = np.random.default_rng(0).standard_normal((T, N), dtype=np.float32)
      hdr = {"model": {"name": "m"}, "sites": {"l/mlp": {"neurons": N}}, "dtype": "float32",
             "corpus_hash": "c", "documents_hash": S.documents_hash(["d"], [0, T]),
             "num_docs": 1, "total_units": T, "settings": {}}
      t0 = time.perf_counter()
      w = S.StoreWriter(root, hdr, {"doc_ids": ["d"], "domains": ["x"], "unit_offsets": [0, T]})
      m = Moments.empty(N)
      for u in range(0, T, 4096):
        w.write("l/mlp", u, x[u:u + 4096]).result()
        m = m.merge(S.chunk_moments(x[u:u + 4096]))
      w.commit(T, {"l/mlp": m})
      out = {"write_s": time.perf_counter() - t0}

      def read_all(src):
        for u in range(0, T, 2048):
          src.read(u, u + 2048)

      t0 = time.perf_counter()
      src = S.open_store(root).site("l/mlp")
      read_all(src)
      out["read_first_s"] = time.perf_counter() - t0
      t0 = time.perf_counter()
      read_all(src)
      out["read_again_s"] = time.perf_counter() - t0
      if hasattr(S.Store, "verify"):
        t0 = time.perf_counter()
        S.open_store(root).verify()
        out["verify_s"] = time.perf_counter() - t0
      return out
    finally:
      shutil.rmtree(root, ignore_errors=True)
  if mode == "record":
    import importlib.util
    root = os.path.dirname(os.path.dirname(os.path.abspath(S.__file__)))
    spec = importlib.util.spec_from_file_location(
        "bench_record", os.path.join(root, "benchmarks", "bench_record.py"))
    br = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(br)
    tp = br.throughput(argparse.Namespace(docs=60, batch_size=8, max_len=256, hidden=128,
                                          repeats=2))
    return {"forward_s": tp["forward_s"], "record_s": tp["record_s"],
            "ratio": tp["record_s"] / tp["forward_s"]}
  raise ValueError(f"unknown mode {mode!r}")


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--before", required=False, help="root of the older tree (rosetta_jax/ inside)")
  p.add_argument("--rounds", type=int, default=3)
  p.add_argument("--modes", default="match32,match64,match32off,read,record")
  p.add_argument("--child", help=argparse.SUPPRESS)
  args = p.parse_args()
  if args.child:
    print(json.dumps(child(args.child)))
    return
  here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  trees = {"after": here} if not args.before else {"before": args.before, "after": here}
  results: dict = {}
  for r in range(args.rounds):
    for mode in args.modes.split(","):
      for name, root in trees.items():
        env = dict(os.environ, PYTHONPATH=root)
        out = subprocess.run([sys.executable, os.path.abspath(__file__), f"--child={mode}"],
                             env=env, capture_output=True, text=True, cwd=tempfile.gettempdir())
        lines = [l for l in out.stdout.splitlines() if l.startswith("{")]
        if not lines:
          raise RuntimeError(f"{name} {mode} failed:\n{out.stderr[-2000:]}")
        rec = json.loads(lines[-1])
        print(json.dumps({"round": r, "mode": mode, "tree": name, **rec}), flush=True)
        for k, v in rec.items():
          results.setdefault((mode, k), {}).setdefault(name, []).append(v)
  print("medians over", args.rounds, "rounds:")
  for (mode, k), per in results.items():
    cells = "  ".join(f"{n} {statistics.median(v):.3f}" for n, v in per.items())
    print(f"  {mode:10s} {k:13s} {cells}")


if __name__ == "__main__":
  main()
