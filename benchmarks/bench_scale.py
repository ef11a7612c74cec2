"""Scaling benchmark: the matcher on 1, 2, 4 and 8 devices and on 2 processes, in one run.

  python benchmarks/bench_scale.py --out docs/results/scale.json   # ~3 min on 2 cores

Each configuration runs in a fresh process (the device count is fixed when JAX
starts): ``--xla_force_host_platform_device_count=n`` fake CPU devices, the exact
matcher on the same seeded data (T units, Na x Nb neurons, in memory), meshes
``data:n`` (units split, partial Grams summed) and ``model:n`` (A's neurons split,
column top-k merged); then two processes on loopback (``jax.distributed``, Gloo),
one device each, on the global ``data:2`` mesh. Every run's pairs are checked
against the one-device run (identical indices, max |r difference|). Prints the
time of each configuration relative to one device (wall and CPU time, medians of
``--repeats`` after a warm-up) and writes them, with the planner's tables for the
study's largest language pair, to ``--out``.

Fake devices share the host's cores: on a 2-core machine the ratios measure the
sharded program's overhead (communication, padding, per-shard dispatch), not a
speed-up; on a node each device brings its own compute.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)   # this checkout's rosetta_jax


def data(t, na, nb, seed=0):
  import numpy as np  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  z = rng.standard_normal((t, 64)).astype(np.float32)
  a = z @ rng.standard_normal((64, na)).astype(np.float32)
  b = z @ rng.standard_normal((64, nb)).astype(np.float32)
  a += rng.standard_normal(a.shape).astype(np.float32)
  b += rng.standard_normal(b.shape).astype(np.float32)
  return a, b


def child(args) -> None:
  """One configuration: time the match, save its result, print one JSON line."""
  if args.port:
    from rosetta_jax import distributed  # pylint: disable=g-import-not-at-top
    distributed.initialize(f"127.0.0.1:{args.port}", 2, args.pid, timeout_s=60)
  import numpy as np  # pylint: disable=g-import-not-at-top
  import rosetta_jax as rj  # pylint: disable=g-import-not-at-top
  from rosetta_jax import sharding  # pylint: disable=g-import-not-at-top
  a, b = data(args.units, args.neurons, args.neurons)
  mesh = sharding.mesh_from_flag(args.mesh)
  from rosetta_jax.match.moments import Moments  # pylint: disable=g-import-not-at-top
  moments = [Moments.from_host(x) for x in (a, b)]
  run = lambda: rj.match(a, b, k=1, mesh=mesh, moments_a=moments[0], moments_b=moments[1])
  res = run()                                            # warm-up: compilation
  walls, cpus = [], []
  for _ in range(args.repeats):
    t0, c0 = time.perf_counter(), time.process_time()
    res = run()
    walls.append(time.perf_counter() - t0)
    cpus.append(time.process_time() - c0)
  if args.pid == 0:
    np.savez(args.save, idx=res.a_to_b_idx, r=res.a_to_b_r, bidx=res.b_to_a_idx)
  print("RESULT " + json.dumps({"wall": float(np.median(walls)), "cpu": float(np.median(cpus)),
                                "pid": args.pid}), flush=True)


def launch(args, mesh, devices, save, processes=1):
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
             JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
  port = ""
  if processes > 1:
    with socket.socket() as s:
      s.bind(("127.0.0.1", 0))
      port = str(s.getsockname()[1])
  cmd = [sys.executable, __file__, "--child", "--mesh", mesh, "--units", str(args.units),
         "--neurons", str(args.neurons), "--repeats", str(args.repeats), "--save", save]
  procs = [subprocess.Popen(cmd + (["--port", port, "--pid", str(i)] if port else []),
                            env=env, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True) for i in range(processes)]
  outs = [p.communicate(timeout=900)[0] for p in procs]
  results = []
  for out, p in zip(outs, procs):
    lines = [l for l in out.splitlines() if l.startswith("RESULT ")]
    if p.returncode or not lines:
      raise RuntimeError(f"{mesh} x {processes} processes failed:\n{out[-3000:]}")
    results.append(json.loads(lines[-1][7:]))
  return {"wall": max(r["wall"] for r in results), "cpu": sum(r["cpu"] for r in results)}


def main() -> None:
  ap = argparse.ArgumentParser()
  ap.add_argument("--child", action="store_true")
  ap.add_argument("--mesh", default="")
  ap.add_argument("--port", default="")
  ap.add_argument("--pid", type=int, default=0)
  ap.add_argument("--save", default="")
  ap.add_argument("--units", type=int, default=32768)
  ap.add_argument("--neurons", type=int, default=1024)
  ap.add_argument("--repeats", type=int, default=3)
  ap.add_argument("--out", default="")
  args = ap.parse_args()
  if args.child:
    child(args)
    return
  import numpy as np  # pylint: disable=g-import-not-at-top
  tmp = tempfile.mkdtemp()
  configs = [("1 device", "", 1, 1)]
  for n in (2, 4, 8):
    configs += [(f"{n} devices, data:{n}", f"data:{n}", n, 1),
                (f"{n} devices, model:{n}", f"model:{n}", n, 1)]
  configs.append(("2 processes x 1 device, data:2", "data:2", 1, 2))
  rows = []
  base = None
  for label, mesh, devices, processes in configs:
    save = os.path.join(tmp, f"{len(rows)}.npz")
    r = launch(args, mesh, devices, save, processes)
    got = np.load(save)
    if base is None:
      base, ref = r, got
    same = bool((got["idx"] == ref["idx"]).all() and (got["bidx"] == ref["bidx"]).all())
    dr = float(np.nanmax(np.abs(got["r"] - ref["r"])))
    rows.append({"config": label, "mesh": mesh or "data:1,model:1", "devices": devices,
                 "processes": processes, "wall_s": round(r["wall"], 4),
                 "cpu_s": round(r["cpu"], 4), "wall_ratio": round(r["wall"] / base["wall"], 3),
                 "cpu_ratio": round(r["cpu"] / base["cpu"], 3), "same_pairs": same,
                 "max_abs_dr": dr})
    print(f"{label:34s} wall {r['wall']:.3f} s ({r['wall'] / base['wall']:.2f}x of 1 device)  "
          f"cpu {r['cpu']:.3f} s ({r['cpu'] / base['cpu']:.2f}x)  same pairs: {same}  "
          f"max|dr| {dr:.1e}", flush=True)
  from rosetta_jax import planner  # pylint: disable=g-import-not-at-top
  plans = {}
  for name in ("gpu-node-8", "tpu-v5p-64"):
    p = planner.plan_study("opt-30b", "qwen2.5-32b", 10_000_000, name)
    plans[name] = {"machine": p.machine, "record_mesh": list(p.record_mesh),
                   "match_mesh": list(p.match_mesh), "total_seconds": p.seconds,
                   "rows": p.rows(), "table": p.table()}
    print(f"\n{p.machine}: opt-30b x qwen2.5-32b, 10M units\n{p.table()}")
  if args.out:
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    out = {"command": "python benchmarks/bench_scale.py --out docs/results/scale.json",
           "commit": commit, "machine": f"{os.cpu_count()}-core CPU, fake CPU devices",
           "sizes": {"units": args.units, "neurons_a": args.neurons, "neurons_b": args.neurons,
                     "repeats": args.repeats},
           "matcher": rows, "planner": plans}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
      json.dump(out, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
