"""Accelerator checks of the exact kernel that the CPU test suite cannot make.

  python benchmarks/gpu_diagnose.py              # (a)-(c)
  python benchmarks/gpu_diagnose.py accuracy     # (d) r vs float64 by unit chunk
  python benchmarks/gpu_diagnose.py rescore      # (e) the sketch's rescoring pass
  python benchmarks/gpu_diagnose.py roofline     # (f) kernel vs matmul by block
  python benchmarks/gpu_diagnose.py algorithms   # (g) tensor-core float32 emulation

(a) column top-k merge: ``lax.top_k`` of a transposed Gram block (the kernel's
    former column merge) and ``merge_topk_cols`` vs NumPy, at the kernel's block
    shape; (b) exact ``match`` both directions vs a full-matrix reference on the
    device at sizes with several blocks and many unit chunks; (c) block and chunk
    sizes vs the float32 matmul roofline. Prints one line per check.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from rosetta_jax.match import Moments, match
from rosetta_jax.match import correlate as cor

HI = jax.lax.Precision.HIGHEST


def median_time(repeats, f):
  """Median wall seconds of ``repeats`` calls of f after one warm-up call."""
  f()
  ts = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    f()
    ts.append(time.perf_counter() - t0)
  return float(np.median(ts))


def check_column_merge(n=2048, k=1, seed=0):
  rng = np.random.default_rng(seed)
  g = rng.standard_normal((n, n), dtype=np.float32)
  vals = np.full((n, k), -np.inf, np.float32)
  idx = np.full((n, k), -1, np.int32)
  want = np.argsort(-g, axis=0, kind="stable")[:k].T            # per column
  old = jax.jit(lambda v, i, x: cor._merge_topk(v, i, x.T, 0, k))(vals, idx, g)
  new = jax.jit(lambda v, i, x: cor.merge_topk_cols(v, i, x, 0, k))(vals, idx, g)
  rows = jax.jit(lambda v, i, x: cor._merge_topk(v, i, x, 0, k))(vals, idx, g)
  want_rows = np.argsort(-g, axis=1, kind="stable")[:, :k]
  print(f"(a) n={n} k={k}: top_k on transposed block agrees {np.mean(np.asarray(old[1]) == want):.4f}, "
        f"merge_topk_cols {np.mean(np.asarray(new[1]) == want):.4f}, top_k rows "
        f"{np.mean(np.asarray(rows[1]) == want_rows):.4f}", flush=True)


def reference(a, b, ma, mb):
  za = (a - jnp.asarray(ma.mean, jnp.float32)) / jnp.sqrt(jnp.asarray(ma.m2, jnp.float32))
  zb = (b - jnp.asarray(mb.mean, jnp.float32)) / jnp.sqrt(jnp.asarray(mb.m2, jnp.float32))
  r = np.asarray(jnp.matmul(za.T, zb, precision=HI))
  return r


def check_exact(t, n, sparse, seed=1, **kw):
  rng = np.random.default_rng(seed)
  if sparse:
    z = (rng.random((t, 256)) < 0.03) * rng.exponential(1.0, (t, 256))
    w = rng.standard_normal((256, 2 * n)) * (rng.random((256, 2 * n)) < 0.05)
    x = np.maximum(z @ w + 0.3 * rng.standard_normal((t, 2 * n)), 0).astype(np.float32)
    a, b = x[:, :n], x[:, n:]
  else:
    a = rng.standard_normal((t, n), dtype=np.float32)
    b = (0.5 * a[:, rng.permutation(n)] + rng.standard_normal((t, n), dtype=np.float32))
  a, b = jnp.asarray(a), jnp.asarray(b)
  ma, mb = Moments.from_device(a), Moments.from_device(b)
  res = match(a, b, k=2, moments_a=ma, moments_b=mb, **kw)
  r = reference(a, b, ma, mb)
  srt_r = np.sort(r, axis=1)
  srt_c = np.sort(r, axis=0)
  clear_r = srt_r[:, -1] - srt_r[:, -2] > 1e-5                  # no near-tie
  clear_c = srt_c[-1] - srt_c[-2] > 1e-5
  ok_r = (res.a_to_b_idx[:, 0] == r.argmax(1))[clear_r].mean()
  ok_c = (res.b_to_a_idx[:, 0] == r.argmax(0))[clear_c].mean()
  err = np.abs(res.a_to_b_r[:, 0] - r.max(1)).max()
  print(f"(b) T={t} N={n} {'sparse' if sparse else 'gaussian'} {kw}: A->B top-1 agrees "
        f"{ok_r:.4f}, B->A {ok_c:.4f}, max |r - ref| {err:.2e}", flush=True)


def sweep(t=16384, n=4096, repeats=5):
  rng = np.random.default_rng(2)
  a = jnp.asarray(rng.standard_normal((t, n), dtype=np.float32))
  b = jnp.asarray(rng.standard_normal((t, n), dtype=np.float32))
  ma, mb = Moments.from_device(a), Moments.from_device(b)
  mm = jax.jit(lambda x, y: jnp.matmul(x.T, y, precision=HI))

  t_mm = median_time(repeats, lambda: mm(a, b).block_until_ready())
  for ba, tc in ((2048, 2048), (4096, 2048), (4096, 4096), (4096, 8192), (4096, 16384)):
    t_k = median_time(repeats, lambda: match(a, b, moments_a=ma, moments_b=mb, block_a=ba, block_b=ba, chunk=tc))
    print(f"(c) T={t} N={n} block={ba} chunk={tc}: match {t_k * 1e3:.2f} ms vs matmul "
          f"{t_mm * 1e3:.2f} ms -> roofline {t_mm / t_k:.2f}", flush=True)


def accuracy(t=262144, n=1024, chunks=(256, 1024, 2048, 8192)):
  """(d) the exact kernel's r against float64 over sparse ReLU activations (the
  benchmark's), by unit chunk size: large T and mostly-zero columns are where
  float32 Gram sums lose digits."""
  import os
  import sys
  sys.path.insert(0, os.path.dirname(__file__))
  from bench_match import pair_r64, sparse_models
  ha, hb, _ = sparse_models(t, n)
  a, b = jnp.asarray(ha), jnp.asarray(hb)
  ma, mb = Moments.from_device(a), Moments.from_device(b)
  for tc in chunks:
    res = match(a, b, moments_a=ma, moments_b=mb, chunk=tc)
    ok = res.a_to_b_idx[:, 0] >= 0
    ia = np.flatnonzero(ok)
    r64 = pair_r64(ha, hb, ia, res.a_to_b_idx[ok, 0])
    err = np.abs(res.a_to_b_r[ok, 0] - r64)
    t0 = time.perf_counter()
    match(a, b, moments_a=ma, moments_b=mb, chunk=tc)
    print(f"(d) T={t} N={n} chunk={tc}: max |r - r64| {err.max():.2e}, median "
          f"{np.median(err):.1e}, > 1e-5: {(err > 1e-5).mean():.4f} ({time.perf_counter() - t0:.3f} s)",
          flush=True)


def rescore(t=262144, n=4096, repeats=5):
  """(e) the device rescoring pass alone: by step size and pair count."""
  from rosetta_jax.match import sketch as sk
  ka, kb = jax.random.split(jax.random.key(0))
  a = jax.random.normal(ka, (t, n), jnp.float32)
  b = jax.random.normal(kb, (t, n), jnp.float32)
  mu = jnp.zeros(n, jnp.float32)
  rng = np.random.default_rng(0)
  cand = jnp.asarray(rng.integers(0, n, (n, 1)), jnp.int32)
  for p in (512, 5120):
    pa = jnp.asarray(np.sort(rng.integers(0, n, p)), jnp.int32)
    pb = jnp.asarray(rng.integers(0, n, p), jnp.int32)
    for step in (2048, 8192, 32768):
      secs = median_time(repeats, lambda: jax.block_until_ready(
          sk._rescore_device(a, b, mu, mu, cand, pa, pb, step=step)))
      gb = (2 * t * n + 2 * t * p) * 4 / 1e9
      print(f"(e) rescore T={t} N={n} pairs={p} step={step}: {secs * 1e3:.2f} ms "
            f"({gb / secs:.0f} GB/s of unavoidable reads)", flush=True)


def roofline(repeats=5):
  """(f) exact kernel vs the float32 matmul at the accelerator chunk, by block
  size and unit count (fixed per-call costs amortise with T)."""
  mm = jax.jit(lambda x, y: jnp.matmul(x.T, y, precision=HI))
  for t in (16384, 65536):
    ka, kb = jax.random.split(jax.random.key(t))
    a = jax.random.normal(ka, (t, 4096), jnp.float32)
    b = jax.random.normal(kb, (t, 4096), jnp.float32)
    ma, mb = Moments.from_device(a), Moments.from_device(b)

    t_mm = median_time(repeats, lambda: mm(a, b).block_until_ready())
    for blk in (2048, 4096):
      t_k = median_time(repeats, lambda: match(a, b, moments_a=ma, moments_b=mb, block_a=blk, block_b=blk,
                              chunk=1024))
      print(f"(f) T={t} N=4096 block={blk} chunk=1024: match {t_k * 1e3:.2f} ms vs matmul "
            f"{t_mm * 1e3:.2f} ms -> roofline {t_mm / t_k:.2f}", flush=True)


ALGORITHMS = (None, "BF16_BF16_F32_X3", "BF16_BF16_F32_X6", "BF16_BF16_F32_X9",
              "TF32_TF32_F32_X3")


def algorithms(repeats=5, t=65536, n=4096, t_acc=262144, n_acc=1024):
  """(g) the Gram dot's algorithm: the float32 matmul and ``match`` at each
  ``lax.DotAlgorithmPreset`` (None: Precision.HIGHEST, the default), and the
  exact route's r against float64 on sparse activations. Decides whether a
  tensor-core float32 emulation can replace the SIMT float32 GEMM."""
  import os
  import sys
  sys.path.insert(0, os.path.dirname(__file__))
  from bench_match import pair_r64, sparse_models
  ka, kb = jax.random.split(jax.random.key(1))
  a = jax.random.normal(ka, (t, n), jnp.float32)
  b = jax.random.normal(kb, (t, n), jnp.float32)
  ma, mb = Moments.from_device(a), Moments.from_device(b)
  ha, hb, _ = sparse_models(t_acc, n_acc)
  sa, sb = jnp.asarray(ha), jnp.asarray(hb)
  msa, msb = Moments.from_device(sa), Moments.from_device(sb)
  for name in ALGORITHMS:
    alg = HI if name is None else getattr(jax.lax.DotAlgorithmPreset, name)
    try:
      mm = jax.jit(lambda x, y: jax.lax.dot_general(
          x, y, (((0,), (0,)), ((), ())), precision=alg, preferred_element_type=jnp.float32))
      t_mm = median_time(repeats, lambda: mm(a, b).block_until_ready())
      t_k = median_time(repeats, lambda: match(a, b, moments_a=ma, moments_b=mb,
                                               precision=None if name is None else alg))
      res = match(sa, sb, moments_a=msa, moments_b=msb, precision=None if name is None else alg)
    except Exception as e:  # pylint: disable=broad-except
      print(f"(g) {name}: not available ({str(e).splitlines()[0][:100]})", flush=True)
      continue
    ok = res.a_to_b_idx[:, 0] >= 0
    r64 = pair_r64(ha, hb, np.flatnonzero(ok), res.a_to_b_idx[ok, 0])
    err = np.abs(res.a_to_b_r[ok, 0] - r64)
    flops = 2.0 * t * n * n
    print(f"(g) {name or 'HIGHEST'}: matmul {flops / t_mm / 1e12:.0f} TFLOP/s, match "
          f"{t_k * 1e3:.1f} ms (T={t}, N={n}; {t_mm / t_k:.2f} of this matmul, "
          f"{flops / t_k / 1e12:.0f} TFLOP/s); r vs float64 (T={t_acc}, N={n_acc} sparse): "
          f"max {err.max():.1e}, > 1e-5: {(err > 1e-5).mean():.4f}", flush=True)


def default_checks():
  """(a)-(c)."""
  for k in (1, 3):
    check_column_merge(k=k)
  check_exact(16384, 4096, sparse=False)
  check_exact(65536, 4096, sparse=True)
  check_exact(16384, 3000, sparse=True, block_a=1024, block_b=2048, chunk=1000)
  sweep()


MODES = {"": default_checks, "accuracy": accuracy, "rescore": rescore,
         "roofline": roofline, "algorithms": algorithms}


if __name__ == "__main__":
  import sys
  mode = " ".join(sys.argv[1:])
  if mode not in MODES:
    sys.exit(f"usage: gpu_diagnose.py [{' | '.join(m for m in MODES if m)}]")
  print(jax.devices()[0].device_kind, flush=True)
  MODES[mode]()
