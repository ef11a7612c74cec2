r"""The numbers of docs/reliability.md, measured in one run.

    python benchmarks/reliability_numbers.py --workdir=runs/micro \
        --out=docs/results/reliability.json

1. Exactness: the worst |r - r_float64| of ``rj.match`` over a grid of offsets
   (up to 1e8 x the spread), scales (1e-20..1e20) and dtypes (float64, int64,
   float32), planted pairs as in tests/test_match_exact.py, and the worst
   relative error of the bootstrap's per-document sums at the same extremes.
2. Damage checks: ``Store.check_files`` (a stat per chunk file) and
   ``Store.verify`` (every byte) over every store of ``--workdir`` (a finished
   study workdir; its config.json is copied into the output).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from rosetta_jax import io as io_lib  # noqa: E402
from rosetta_jax import store as store_lib  # noqa: E402
from rosetta_jax.analysis import bootstrap  # noqa: E402
from rosetta_jax.match import match  # noqa: E402


def planted(seed, t=1024, n=12):
  rng = np.random.default_rng(seed)
  z = rng.normal(size=(t, n))
  perm = rng.permutation(n)
  return z + 0.6 * rng.normal(size=(t, n)), z[:, perm] + 0.6 * rng.normal(size=(t, n)), perm


def ref_r(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  za, zb = a - a.mean(0), b - b.mean(0)
  return (za / np.sqrt((za * za).sum(0))).T @ (zb / np.sqrt((zb * zb).sum(0)))


def exactness() -> dict:
  out = {}
  cases = [(np.float64, o, s) for o in (0, 1e4, 1e6, 1e8) for s in (1e-20, 1e-3, 1, 1e20)]
  cases += [(np.float32, o, s) for o in (0, 1e4, 1e6) for s in (1e-20, 1, 1e20)]
  cases += [(np.int64, o, 1000) for o in (0, 2 ** 40, 2 ** 62)]
  for dtype, off, scale in cases:
    a, b, perm = planted(len(out))
    if dtype == np.int64:
      x = np.int64(off) + np.round(scale * (a - a.min())).astype(np.int64)
      y = np.int64(off) + np.round(scale * (b - b.min())).astype(np.int64)
      r = ref_r(x - np.int64(off), y - np.int64(off))
    else:
      x, y = (scale * (off + a)).astype(dtype), (scale * (off + b)).astype(dtype)
      r = ref_r(x, y)
    res = match(x, y, k=1)
    idx = res.a_to_b_idx[:, 0]
    err = float(np.abs(res.a_to_b_r[:, 0] - r[np.arange(len(idx)), idx]).max())
    found = int((res.b_to_a_idx[:, 0] == perm).sum())
    out[f"{np.dtype(dtype).name} offset={off:g} scale={scale:g}"] = {
        "max_abs_r_error": err, "planted_found": f"{found}/{len(perm)}"}
  worst = max(v["max_abs_r_error"] for v in out.values())
  # The bootstrap's per-document sums (hostpass.doc_sums) at the extremes.
  doc = np.repeat(np.arange(16), 64)
  rng = np.random.default_rng(1)
  ca, cb = rng.integers(0, 12, (12, 3)), rng.integers(0, 12, (12, 3))
  a, b, _ = planted(99)
  base = bootstrap.doc_stats(a, b, doc, ca, cb, num_docs=16)
  sums = {}
  for off, scale in ((1e8, 1.0), (1e8, 1e-3), (1e4, 1e-20), (1e6, 1e20)):
    got = bootstrap.doc_stats(scale * (off + a), scale * (off + b), doc, ca, cb, num_docs=16)
    sums[f"float64 offset={off:g} scale={scale:g}"] = max(
        float(np.abs(getattr(got, k) - getattr(base, k)).max() /
              np.abs(getattr(base, k)).max()) for k in ("sa", "saa", "sab", "sba"))
  return {"match": out, "match_worst_abs_r_error": worst, "doc_sums_worst_rel_error": sums}


def damage_checks(workdir: str) -> dict:
  out = {}
  for path in store_lib.find_stores(workdir):
    st = store_lib.Store(path)
    t0 = time.perf_counter()
    st.check_files()
    t_files = time.perf_counter() - t0
    rep = store_lib.Store(path).verify()
    out[os.path.relpath(path, workdir)] = {
        "units": st.units_done, "sites": rep.sites, "chunk_files": rep.chunk_files,
        "bytes": rep.bytes, "check_files_s": round(t_files, 5), "verify_s": round(rep.seconds, 4),
        "verify_MB_per_s": round(rep.bytes / 1e6 / rep.seconds, 1)}
  return out


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--workdir", required=True)
  ap.add_argument("--out", required=True)
  args = ap.parse_args()
  commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                          cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
  res = {"command": "python " + " ".join(sys.argv), "commit": commit,
         "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores "
                    "(shared)",
         "workdir_config": io_lib.read_json(os.path.join(args.workdir, "config.json")),
         "exactness": exactness(), "stores": damage_checks(args.workdir)}
  io_lib.write_json(args.out, res)
  print(json.dumps({k: res[k] for k in ("commit", "stores")}, indent=1))
  print("worst |r error|:", res["exactness"]["match_worst_abs_r_error"])
  print("doc sums:", res["exactness"]["doc_sums_worst_rel_error"])


if __name__ == "__main__":
  main()
