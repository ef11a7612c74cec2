"""Matcher benchmark: four ratios measured in one run (issue 5).

  python benchmarks/bench_match.py          # default sizes (2-core CPU: ~5-10 min)
  python benchmarks/bench_match.py --full   # the issue's sizes (needs ~20 GB RAM)

(1) roofline: one jitted A.T @ B of [T, Na] x [T, Nb] / our exact match time
    (T=16384, Na=Nb=4096 float32 in both modes), with moments given (as a store
    provides them) and including moments;
(2) speed-up over the researcher's baseline: np.corrcoef of the stacked
    activations, then argmax (same inputs as (1); default mode T=8192, Na=Nb=2048);
(3) sketch-and-rescore vs exact with planted Rosetta pairs among sparse
    activations: speed-up and recall of the exact mutual pairs (recovered with
    the same partner and r within 1e-5, the spec's exactness tolerance);
    default T=131072, N=2048, full T=262144, N=4096 (width 2048 in both: the
    sketch's error depends on the width, not on T);
(4) peak memory beyond the inputs (peak RSS during the call, sampled every 2 ms,
    minus the RSS before it, in a fresh process: includes XLA's compilation and
    the device copy of in-memory inputs; on an accelerator, the device
    allocator's peak minus the device-resident inputs) vs the Na x Nb float32
    matrix alone, at Na=Nb=32768 (T=512; the ratio's denominator does not
    depend on T).
On an accelerator, (1) also prints the default-precision (TF32) matmul, (2) also
compares with torch.corrcoef on the GPU when torch sees one, and (3) hands both
routes device-resident arrays.
Timings: medians of ``--repeats`` interleaved runs after one warm-up
(compilation), in wall time and in CPU time (all threads of the process; the
steadier figure on a machine shared with other jobs).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import threading
import time

import numpy as np


def accelerator() -> str | None:
  """The default JAX device's kind when it is not a CPU (e.g. 'NVIDIA H100 80GB HBM3')."""
  import jax
  d = jax.devices()[0]
  return None if d.platform == "cpu" else f"{d.platform}: {d.device_kind}"


def _precision(name):
  """A ``lax.DotAlgorithmPreset`` by name (``--precision``), or None (the default)."""
  if not name:
    return None
  import jax
  return getattr(jax.lax.DotAlgorithmPreset, name)


def timed(fns, repeats):
  """Median wall and CPU seconds of each of ``fns`` ({name: fn}).

  One warm-up call each (compilation), then ``repeats`` rounds calling all of
  them in turn (interleaved: on a shared machine the load drifts, and
  interleaving exposes every contender to the same conditions). CPU time
  (``time.process_time``: all threads of this process) is the steadier figure on
  a machine shared with other jobs; wall time is what a user waits.

  Returns:
    {name: (median wall s, median cpu s)}.
  """
  for f in fns.values():
    f()
  wall = {name: [] for name in fns}
  cpu = {name: [] for name in fns}
  for _ in range(repeats):
    for name, f in fns.items():
      t0, c0 = time.perf_counter(), time.process_time()
      f()
      wall[name].append(time.perf_counter() - t0)
      cpu[name].append(time.process_time() - c0)
  return {name: (float(np.median(wall[name])), float(np.median(cpu[name]))) for name in fns}


def bench_roofline(t_units, n, repeats, precision=None):
  import jax
  import jax.numpy as jnp
  from rosetta_jax.match import Moments, match
  match = functools.partial(match, precision=_precision(precision))   # --precision
  rng = np.random.default_rng(0)
  a = rng.standard_normal((t_units, n), dtype=np.float32)
  b = rng.standard_normal((t_units, n), dtype=np.float32)
  ad, bd = jnp.asarray(a), jnp.asarray(b)
  # The roofline is a float32 A.T @ B at full float32 precision, the arithmetic
  # the exact kernel does (on a CPU every precision is that; on a GPU the default
  # precision is TF32, reported beside it as "mm_default").
  mm = jax.jit(lambda x, y: jnp.matmul(x.T, y, precision=jax.lax.Precision.HIGHEST))
  mm_default = jax.jit(lambda x, y: x.T @ y)
  ma, mb = Moments.from_device(ad), Moments.from_device(bd)
  fns = {"mm": lambda: mm(ad, bd).block_until_ready(),
         "kernel": lambda: match(ad, bd, moments_a=ma, moments_b=mb),
         "full": lambda: match(ad, bd)}
  if accelerator():
    fns["mm_default"] = lambda: mm_default(ad, bd).block_until_ready()
  t = timed(fns, repeats)
  (w_mm, c_mm), (w_k, c_k), (w_f, c_f) = t["mm"], t["kernel"], t["full"]
  out = dict(T=t_units, N=n, matmul_s=w_mm, match_given_moments_s=w_k, match_s=w_f,
             matmul_cpu_s=c_mm, match_given_moments_cpu_s=c_k, match_cpu_s=c_f,
             matmul_tflops=2.0 * t_units * n * n / w_mm / 1e12,
             roofline_given_moments=w_mm / w_k, roofline_with_moments=w_mm / w_f,
             roofline_given_moments_cpu=c_mm / c_k, roofline_with_moments_cpu=c_mm / c_f)
  if "mm_default" in t:
    out["matmul_default_precision_s"] = t["mm_default"][0]
  return out


def bench_baseline(t_units, n, repeats, precision=None):
  import jax.numpy as jnp
  from rosetta_jax.match import match
  match = functools.partial(match, precision=_precision(precision))   # --precision
  rng = np.random.default_rng(1)
  a = rng.standard_normal((t_units, n), dtype=np.float32)
  b = rng.standard_normal((t_units, n), dtype=np.float32)

  def baseline():
    c = np.corrcoef(np.concatenate([a, b], axis=1).T)[:n, n:]
    return c.argmax(axis=1), c.argmax(axis=0)

  # Ours: the whole ``match`` call on the raw (numpy) arrays, moments and the
  # host-to-device copy included, as a researcher would call it.
  fns = {"base": baseline, "ours": lambda: match(a, b)}
  torch_gpu = _torch_cuda()
  if torch_gpu is not None:
    # The baseline a PyTorch researcher with a GPU writes: torch.corrcoef of the
    # stacked activations on the GPU (float32; TF32 off, PyTorch's default for
    # matmuls), then argmax, copies included.
    def torch_baseline():
      x = torch_gpu.from_numpy(np.concatenate([a, b], axis=1)).cuda()
      c = torch_gpu.corrcoef(x.T)[:n, n:]
      return c.argmax(dim=1).cpu().numpy(), c.argmax(dim=0).cpu().numpy()
    fns["torch"] = torch_baseline
  t = timed(fns, repeats)
  ours = match(a, b)
  ia, ib = baseline()
  agree = float((ours.a_to_b_idx[:, 0] == ia).mean())
  (w_b, c_b), (w_o, c_o) = t["base"], t["ours"]
  out = dict(T=t_units, N=n, corrcoef_s=w_b, match_s=w_o, corrcoef_cpu_s=c_b,
             match_cpu_s=c_o, speedup=w_b / w_o, speedup_cpu=c_b / c_o,
             same_neighbours=agree)
  if "torch" in t:
    out["torch_corrcoef_s"] = t["torch"][0]
    out["speedup_vs_torch"] = t["torch"][0] / w_o
    out["same_neighbours_torch"] = float((torch_baseline()[0] == ia).mean())
  return out


def _torch_cuda():
  """torch, if it is installed and sees a GPU (the GPU baseline); else None."""
  try:
    import torch
  except ImportError:
    return None
  return torch if torch.cuda.is_available() else None


def sparse_models(t, n, planted_frac=0.5, seed=0):
  """Two models' sparse activations sharing latent features; half the neurons of
  each are driven by one dedicated shared feature (the planted Rosetta pairs, at
  random positions), the rest by mixtures of 3 features; ReLU of signal + noise.

  Features are sparse (2% of units active) and exponential (heavy-tailed), so most
  activations are exactly zero after the ReLU. Built neuron-major ([n, t] rows)
  for speed, returned as C-ordered [t, n] float32.
  """
  rng = np.random.default_rng(seed)
  zt = np.zeros((n, t), np.float32)             # features, neuron-major
  for f in range(n):
    on = np.flatnonzero(rng.random(t) < 0.02)
    zt[f, on] = rng.exponential(1.0, on.size)
  planted = int(n * planted_frac)
  perm_a, perm_b = rng.permutation(n), rng.permutation(n)
  out = []
  for perm in (perm_a, perm_b):
    xt = rng.standard_normal((n, t), dtype=np.float32)
    xt *= 0.3
    xt -= 0.2
    for j in range(n):
      col = perm[j]
      if j < planted:
        xt[col] += 2.0 * zt[j]
      else:
        f = rng.integers(planted, n, 3)
        w = rng.uniform(0.5, 1.5, 3).astype(np.float32)
        xt[col] += w[0] * zt[f[0]] + w[1] * zt[f[1]] + w[2] * zt[f[2]]
    np.maximum(xt, 0, out=xt)
    out.append(np.ascontiguousarray(xt.T))
    del xt
  pairs = {(int(perm_a[j]), int(perm_b[j])) for j in range(planted)}
  return out[0], out[1], pairs


def bench_sketch(t, n, width, candidates, repeats, precision=None):
  from rosetta_jax.match import Moments, SketchConfig, match, mutual_pairs
  match = functools.partial(match, precision=_precision(precision))   # --precision
  a, b, planted = sparse_models(t, n)
  host_a, host_b = a, b
  if accelerator():
    # On an accelerator both routes get device-resident arrays (as a notebook
    # would hold them): the exact kernel reads them in place and the sketch
    # folds and rescores on the device. On a CPU the host arrays are used as is.
    import jax.numpy as jnp
    a, b = jnp.asarray(a), jnp.asarray(b)
  ma, mb = Moments.from_device(a), Moments.from_device(b)
  cfg = SketchConfig(width=width, candidates=candidates)
  tm = timed({"exact": lambda: match(a, b, moments_a=ma, moments_b=mb),
              "sketch": lambda: match(a, b, moments_a=ma, moments_b=mb, sketch=cfg)},
             repeats)
  ex = match(a, b, moments_a=ma, moments_b=mb)
  sk = match(a, b, moments_a=ma, moments_b=mb, sketch=cfg)
  phases = sketch_phases(lambda: match(a, b, moments_a=ma, moments_b=mb, sketch=cfg))
  ea, eb, er = mutual_pairs(ex)
  sa, sb, sr = mutual_pairs(sk)
  exact = {(i, j): r for i, j, r in zip(ea.tolist(), eb.tolist(), er.tolist())}
  got = {(i, j): r for i, j, r in zip(sa.tolist(), sb.tolist(), sr.tolist())}
  # Recovered = same pair, r within the spec's exactness tolerance 1e-5 (the two
  # r are float32 sums over T units in different orders).
  recovered = sum(1 for p, r in exact.items() if p in got and abs(got[p] - r) <= 1e-5)
  false = sum(1 for p in got if p not in exact)
  # Float64 truth for the exact mutual pairs: how far each route's r is from it.
  pairs = list(exact)
  r64 = pair_r64(host_a, host_b, [p[0] for p in pairs], [p[1] for p in pairs])
  err_exact = np.abs(np.array([exact[p] for p in pairs]) - r64)
  err_sketch = np.array([abs(got[p] - v) for p, v in zip(pairs, r64) if p in got])
  recovered64 = int(sum(1 for p, v in zip(pairs, r64) if p in got and abs(got[p] - v) <= 1e-5))
  flops_exact = 2.0 * t * n * n
  flops_sketch = 2.0 * width * n * n + 2.0 * t * n * candidates   # candidates: upper bound
  (w_e, c_e), (w_s, c_s) = tm["exact"], tm["sketch"]
  return dict(T=t, N=n, width=width, candidates=candidates, margin=cfg.margin,
              exact_s=w_e, sketch_s=w_s, exact_cpu_s=c_e, sketch_cpu_s=c_s,
              speedup=w_e / w_s, speedup_cpu=c_e / c_s,
              exact_mutual_pairs=len(exact), recovered=recovered,
              recall=recovered / max(1, len(exact)), false_pairs=false,
              a_top1_agree=float((sk.a_to_b_idx[:, 0] == ex.a_to_b_idx[:, 0]).mean()),
              planted_found_exact=len(planted & set(exact)), planted=len(planted),
              flop_ratio=flops_exact / flops_sketch, phases_s=phases,
              exact_max_err_vs_f64=float(err_exact.max(initial=0.0)),
              sketch_max_err_vs_f64=float(err_sketch.max(initial=0.0)),
              recovered_vs_f64=recovered64)


def pair_r64(a, b, ia, jb, batch=256):
  """Float64 Pearson r of column pairs (a[:, ia[p]], b[:, jb[p]]) of host arrays."""
  out = np.empty(len(ia))
  for s in range(0, len(ia), batch):
    xa = a[:, ia[s:s + batch]].astype(np.float64)
    xb = b[:, jb[s:s + batch]].astype(np.float64)
    xa -= xa.mean(axis=0)
    xb -= xb.mean(axis=0)
    out[s:s + batch] = (xa * xb).sum(0) / np.sqrt((xa * xa).sum(0) * (xb * xb).sum(0))
  return out


def sketch_phases(call):
  """Wall seconds of each phase of one sketch-and-rescore call (device work
  synchronised at each phase's end), by wrapping the phase functions."""
  import jax
  from rosetta_jax.match import sketch as sk_mod
  spent = {}

  def wrap(name):
    fn = getattr(sk_mod, name)

    def timed_fn(*args, **kw):
      t0 = time.perf_counter()
      out = jax.block_until_ready(fn(*args, **kw))
      spent[name] = spent.get(name, 0.0) + time.perf_counter() - t0
      if name == "_extra_pairs":
        spent["residual_pairs"] = len(out[0])
      return out
    return fn, timed_fn

  names = ("_sketch", "_fold_device", "match", "_extra_pairs", "_candidates_host", "_rescore_device",
           "_rescore_host", "_topk_pairs")
  saved = {}
  for name in names:
    saved[name], wrapped = wrap(name)
    setattr(sk_mod, name, wrapped)
  t0 = time.perf_counter()
  try:
    call()
  finally:
    for name, fn in saved.items():
      setattr(sk_mod, name, fn)
  spent["total"] = time.perf_counter() - t0
  return spent


def _memory_child(mode, t, n):
  """Runs in a fresh process: RSS growth of one match beyond its inputs."""
  import jax
  import jax.numpy as jnp
  from rosetta_jax.match import Moments, match
  jnp.zeros(8).block_until_ready()
  rng = np.random.default_rng(0)
  a = rng.standard_normal((t, n), dtype=np.float32)
  b = rng.standard_normal((t, n), dtype=np.float32)
  ma, mb = Moments.from_array(a), Moments.from_array(b)
  dev = jax.devices()[0]
  on_accel = dev.platform != "cpu"
  if on_accel and mode == "arrays":
    a, b = jnp.asarray(a), jnp.asarray(b)          # the inputs live on the device
    a.block_until_ready(), b.block_until_ready()
  dev_before = dev.memory_stats()["bytes_in_use"] if on_accel else 0

  class Source:        # a store-like source: the matcher streams it by unit chunks
    def __init__(self, x):
      self.x, (self.num_units, self.num_neurons) = x, x.shape

    def read(self, s, e):
      return self.x[s:e]

  # Peak RSS during the call, sampled every 2 ms (ru_maxrss is a process-lifetime
  # high-water mark that input generation may already have set).
  page = os.sysconf("SC_PAGE_SIZE")
  rss = lambda: int(open("/proc/self/statm").read().split()[1]) * page
  before = rss()
  peak = [before]
  done = threading.Event()

  def sample():
    while not done.is_set():
      peak[0] = max(peak[0], rss())
      time.sleep(0.002)

  th = threading.Thread(target=sample, daemon=True)
  th.start()
  t0 = time.perf_counter()
  if mode == "stream":
    match(Source(a), Source(b), moments_a=ma, moments_b=mb, block_a=512, chunk=256)
  else:
    match(a, b, moments_a=ma, moments_b=mb)
  secs = time.perf_counter() - t0
  done.set()
  th.join()
  after = max(peak[0], rss())
  out = dict(mode=mode, extra_bytes=after - before, seconds=secs)
  if on_accel:
    # Device memory beyond the inputs: the allocator's high-water mark (nothing
    # but the inputs was allocated on the device before the call) minus them.
    out["host_extra_bytes"] = out["extra_bytes"]
    out["extra_bytes"] = dev.memory_stats()["peak_bytes_in_use"] - dev_before
  print(json.dumps(out))


def bench_memory(t, n):
  out = dict(T=t, N=n, full_matrix_bytes=4.0 * n * n)
  for mode in ("stream", "arrays"):
    res = subprocess.run([sys.executable, __file__, "--memory-child", mode, str(t), str(n)],
                         capture_output=True, text=True, check=True)
    r = json.loads(res.stdout.strip().splitlines()[-1])
    out[f"{mode}_extra_bytes"] = r["extra_bytes"]
    out[f"{mode}_s"] = r["seconds"]
    out[f"{mode}_ratio"] = r["extra_bytes"] / out["full_matrix_bytes"]
  return out


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--full", action="store_true", help="the issue's sizes")
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--only", default="1234", help="which parts to run, e.g. 13")
  p.add_argument("--precision", default="",
                 help="a lax.DotAlgorithmPreset name for our Gram dots in (1)-(3), e.g. "
                      "BF16_BF16_F32_X6 (default: full float32); the roofline stays float32")
  p.add_argument("--memory-child", nargs=3, help=argparse.SUPPRESS)
  args = p.parse_args()
  if args.memory_child:
    mode, t, n = args.memory_child
    _memory_child(mode, int(t), int(n))
    return
  res = {"machine": f"{os.cpu_count()} CPU cores, " + (accelerator() or "no accelerator"),
         "full": args.full, "precision": args.precision or "float32 (HIGHEST)"}
  print(res["machine"], flush=True)
  if "1" in args.only:
    res["roofline"] = r = bench_roofline(16384, 4096, args.repeats, args.precision)
    print(f"(1) roofline  T={r['T']} N={r['N']}: matmul {r['matmul_s']:.2f}s, match "
          f"{r['match_given_moments_s']:.2f}s (moments given) / {r['match_s']:.2f}s (incl. "
          f"moments) -> wall ratio {r['roofline_given_moments']:.2f} / "
          f"{r['roofline_with_moments']:.2f}; CPU-time ratio "
          f"{r['roofline_given_moments_cpu']:.2f} / {r['roofline_with_moments_cpu']:.2f}; "
          f"matmul {r['matmul_tflops']:.1f} TFLOP/s", flush=True)
    if "matmul_default_precision_s" in r:
      print(f"    (the same matmul at the default precision, TF32 on a GPU: "
            f"{r['matmul_default_precision_s']:.4f}s)", flush=True)
  if "2" in args.only:
    t, n = (16384, 4096) if args.full else (8192, 2048)
    res["baseline"] = r = bench_baseline(t, n, args.repeats, args.precision)
    print(f"(2) vs np.corrcoef+argmax T={t} N={n}: {r['corrcoef_s']:.2f}s vs {r['match_s']:.2f}s "
          f"-> speed-up {r['speedup']:.1f}x wall, {r['speedup_cpu']:.1f}x CPU time (same best "
          f"neighbour: {r['same_neighbours']:.4f})",
          flush=True)
    if "torch_corrcoef_s" in r:
      print(f"    vs torch.corrcoef on the GPU: {r['torch_corrcoef_s']:.3f}s -> speed-up "
            f"{r['speedup_vs_torch']:.1f}x (same best neighbour: "
            f"{r['same_neighbours_torch']:.4f})", flush=True)
  if "3" in args.only:
    t, n = (262144, 4096) if args.full else (131072, 2048)
    res["sketch"] = r = bench_sketch(t, n, width=2048,
                                          candidates=4, repeats=args.repeats,
                                          precision=args.precision)
    print(f"(3) sketch T={t} N={n} width={r['width']} c={r['candidates']}: exact "
          f"{r['exact_s']:.2f}s, sketch {r['sketch_s']:.2f}s -> speed-up {r['speedup']:.1f}x wall, "
          f"{r['speedup_cpu']:.1f}x CPU time (flop ratio {r['flop_ratio']:.1f}x); recall {r['recovered']}/{r['exact_mutual_pairs']}"
          f" = {r['recall']:.4f}, false pairs {r['false_pairs']}, planted found exactly "
          f"{r['planted_found_exact']}/{r['planted']}", flush=True)
    print(f"    vs float64 r of the exact mutual pairs: max |r - r64| exact "
          f"{r['exact_max_err_vs_f64']:.2e}, sketch {r['sketch_max_err_vs_f64']:.2e}; sketch "
          f"pairs within 1e-5 of r64: {r['recovered_vs_f64']}/{r['exact_mutual_pairs']}", flush=True)
    print("    sketch phases (s): " + ", ".join(f"{k} {v:.4g}" for k, v in r["phases_s"].items()),
          flush=True)
  if "4" in args.only:
    res["memory"] = r = bench_memory(512, 32768)
    print(f"(4) memory N=32768 T=512: full matrix {r['full_matrix_bytes'] / 2**30:.2f} GiB; "
          f"ours beyond inputs: streaming {r['stream_extra_bytes'] / 2**20:.0f} MiB "
          f"({r['stream_ratio']:.1%}), in-memory {r['arrays_extra_bytes'] / 2**20:.0f} MiB "
          f"({r['arrays_ratio']:.1%})", flush=True)
  print(json.dumps(res, indent=1))


if __name__ == "__main__":
  main()
