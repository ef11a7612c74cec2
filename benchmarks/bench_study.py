"""Each stage of a study's pair against its irreducible cost, as ratios taken in one run.

  python benchmarks/bench_study.py --workdir=runs/tiny --pair=w128-s0s1

Reads a finished study workdir (its config.json, models and stores) and, for one pair:

* record: re-records model A's studied sites into a temporary store, against the
  forward passes alone (the same windows through the jitted model at the measured
  forward throughput, best of 3);
* match, null, identity, bootstrap: ``pairs.match_pair`` into a temporary workdir
  (nothing cached), against one exact Gram [N_a, T] x [T, N_b] in float32 at the
  matmul roofline of that shape on this machine (best of 3); the null is compared
  with ``permutations`` Grams;
* report: the scaling section and page of the workdir's (cached) results.

Prints one table; every ratio is ours / irreducible, measured in this run.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from rosetta_jax import recording
from rosetta_jax.io import read_json
from rosetta_jax.report.html import Report
from rosetta_jax.studies import config as config_lib
from rosetta_jax import pairs
from rosetta_jax.studies import context, scaling

WORKDIR = flags.DEFINE_string("workdir", "runs/tiny", "A finished study workdir.")
PAIR = flags.DEFINE_string("pair", None, "Pair label (default: the largest pair).")


def _best(fn, n=3) -> float:
  out = []
  for _ in range(n):
    t = time.perf_counter()
    fn()
    out.append(time.perf_counter() - t)
  return min(out)


def gram_seconds(t: int, na: int, nb: int) -> float:
  """One float32 [na, t] x [t, nb] product, jitted, best of 3 (the roofline here)."""
  key = jax.random.PRNGKey(0)
  a = jax.random.normal(key, (t, na), jnp.float32)
  b = jax.random.normal(jax.random.fold_in(key, 1), (t, nb), jnp.float32)
  f = jax.jit(lambda x, y: x.T @ y)
  f(a, b).block_until_ready()
  return _best(lambda: f(a, b).block_until_ready())


def forward_seconds(model, docs, cfg) -> float:
  """The recording's windows through the jitted forward pass alone, best of 3."""
  ids = [np.asarray(x, np.int32) for x in model.tokenizer.encode_ids([d.text for d in docs])]
  length = min(cfg.record_len, model.config.max_position_embeddings)
  windows = [x[s:s + length] for x in ids for s in range(0, max(len(x), 1), length)]
  batch = cfg.record_batch
  padded = np.zeros((len(windows), length), np.int32)
  for i, w in enumerate(windows):
    padded[i, :len(w)] = w
  sites = model.mlp_sites()
  f = lambda x: model(x, sites=sites)[1]             # the model's own jitted forward
  jax.block_until_ready(f(jnp.asarray(padded[:batch])))

  def run():
    for s in range(0, len(padded) - batch + 1, batch):
      jax.block_until_ready(f(jnp.asarray(padded[s:s + batch])))
  return _best(run)


def main(argv):
  del argv
  wd = WORKDIR.value
  rec = read_json(os.path.join(wd, "config.json"), what="the workdir's config")
  cfg = config_lib.from_dict(config_lib.StudyConfig, rec["config"])
  ctx = context.load_context(cfg, wd, rec["models"], progress=False)
  pair = (next(p for p in ctx.pairs if p.label == PAIR.value) if PAIR.value
          else max(ctx.pairs, key=lambda p: p.size))
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    t = time.perf_counter()
    store = recording.record(pair.a, ctx.docs, pair.a.mlp_sites(), os.path.join(tmp, "acts"),
                             batch_size=cfg.record_batch,
                             max_len=min(cfg.record_len, pair.a.config.max_position_embeddings),
                             pooling=cfg.pooling, progress=False)
    t_record = time.perf_counter() - t
    rows.append(("record (model A)", t_record, forward_seconds(pair.a, ctx.docs, cfg),
                 "forward passes"))
    fresh = context.Context(cfg, tmp, ctx.models, ctx.pairs, ctx.stores, ctx.docs,
                            ctx.weights, {}, progress=False)
    res = pairs.match_pair(fresh, pair)
    gram = gram_seconds(store.units_done, pair.a.num_neurons, pair.b.num_neurons)
    s = res.seconds
    rows.append(("match (top-k)", s["match"], gram, "one exact Gram"))
    rows.append((f"null ({res.permutations} permutations)", s["null"],
                 res.permutations * gram, f"{res.permutations} Grams"))
    if "identity" in s:
      rows.append(("unit-identity null", s["identity"], gram, "one exact Gram"))
    rows.append((f"bootstrap ({len(res.boot_counts)} resamples)", s["bootstrap"], gram,
                 "one exact Gram"))
  result = scaling.run(ctx)            # the workdir's cached pairs (computes any missing)
  t = time.perf_counter()
  rep = Report(scaling.TITLE)
  scaling.section(rep, result)
  with tempfile.TemporaryDirectory() as tmp:
    rep.write(os.path.join(tmp, "report.html"))
  rows.append(("report (section + page)", time.perf_counter() - t, float("nan"), "-"))
  print(f"pair {pair.label}: N_a = {pair.a.num_neurons}, N_b = {pair.b.num_neurons}, "
        f"T = {res.units} units, {jax.device_count()} {jax.devices()[0].platform} device(s)")
  print(f"{'stage':32s} {'ours (s)':>10s} {'irreducible (s)':>16s} {'ratio':>8s}  irreducible")
  for name, ours, floor, what in rows:
    print(f"{name:32s} {ours:10.3f} {floor:16.3f} {ours / floor:8.2f}  {what}")


if __name__ == "__main__":
  app.run(main)
