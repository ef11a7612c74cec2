"""A whole study survives SIGKILL at a random point.

``python -m experiments.scaling`` on a micro zoo (2 widths x 2 seeds, 1 layer)
runs once uninterrupted; then, in a second workdir, it is killed with SIGKILL at
a random point and re-run to completion. The point: a phase drawn at random
(training with its checkpoint writes, recording with its store commits, or
matching, the bootstrap and the report), then a random delay into it. The two
workdirs must agree: the same config.json, the same results.json apart from its
timing fields, byte-identical pair tables and identical pair results, and
stores with the same content ids (which include every chunk's checksum) that
pass ``Store.verify``.

The draw is made afresh each run and printed; ``ROSETTA_JAX_KILL_AT=recording,1.5``
replays one (phase, seconds). The processes share a JAX compilation cache in the
test's temporary directory, so only the first compiles.
"""
import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np

from rosetta_jax import io as io_lib
from rosetta_jax import store as store_lib
from rosetta_jax import pairs
from rosetta_jax.studies import config, context
from rosetta_jax.zoo.config import ZooConfig

CFG = config.StudyConfig(
    zoo=ZooConfig(widths=(16, 32), num_layers=1, vocab_size=300, seq_len=32, batch_size=8,
                  steps=40, warmup=10, ckpt_every=20),
    record_docs=40, record_chars=300, record_len=32, bootstrap=20, candidates=2,
    null_permutations=2, budgets=(), untrained=False)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _env(cache: str) -> dict:
  env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=cache,
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1")
  env.pop("ROSETTA_JAX_VERBOSE", None)
  env.pop("XLA_FLAGS", None)            # the binary's own device setup, as a user runs it
  return env


def _cmd(cfg_path: str, workdir: str) -> list[str]:
  return [sys.executable, "-m", "experiments.scaling", f"--config={cfg_path}",
          f"--workdir={workdir}", "--noprogress", "--noexplorer"]


def _phase(workdir: str) -> str:
  """Where a killed run had got to (for the failure message)."""
  if os.path.exists(os.path.join(workdir, "results.json")):
    return "finished"
  if os.path.isdir(os.path.join(workdir, "pairs")):
    return f"matching ({len(os.listdir(os.path.join(workdir, 'pairs')))} pair files)"
  if os.path.isdir(os.path.join(workdir, "acts")):
    return f"recording ({len(os.listdir(os.path.join(workdir, 'acts')))} stores begun)"
  return "training"


def _strip_timing(x):
  if isinstance(x, dict):
    return {k: _strip_timing(v) for k, v in x.items() if k != "seconds"}
  if isinstance(x, list):
    return [_strip_timing(v) for v in x]
  return x


def _pairs(workdir: str) -> dict:
  folder = os.path.join(workdir, "pairs")
  return {f: open(os.path.join(folder, f), "rb").read() for f in sorted(os.listdir(folder))
          if f.endswith(".tsv")}


def _pair_results(workdir: str) -> dict:
  folder = os.path.join(workdir, "pairs")
  out = {}
  for f in sorted(os.listdir(folder)):
    if f.endswith(".npz"):
      r = pairs.PairResult.load(os.path.join(folder, f))
      out[f] = (_strip_timing(r.summary()), r.boot_counts, r.members_a, r.members_b, r.raw_r,
                r.null_r)
  return out


PHASES = {"training": 8.0, "recording": 3.0, "matching": 1.5}   # rough warm lengths (s)


def _reached(workdir: str, phase: str) -> bool:
  if phase == "training":
    return True
  stores = store_lib.find_stores(os.path.join(workdir, "acts")) if os.path.isdir(
      os.path.join(workdir, "acts")) else []
  if phase == "recording":
    return bool(stores)
  done = 0
  for s in stores:
    try:
      done += bool(io_lib.read_json(os.path.join(s, store_lib.MANIFEST)).get("complete"))
    except (ValueError, OSError):
      pass
  return done == 2 * len(CFG.zoo.widths)


def _kill(cfg_path, work, env, phase, delay):
  """Runs the study, SIGKILLs it ``delay`` s after it reaches ``phase``; returns its
  exit status, stderr and the seconds it ran after reaching the phase."""
  p = subprocess.Popen(_cmd(cfg_path, work), cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, text=True)
  while p.poll() is None and not _reached(work, phase):
    time.sleep(0.02)
  t0 = time.monotonic()
  try:
    p.wait(timeout=delay)
  except subprocess.TimeoutExpired:
    p.send_signal(signal.SIGKILL)
  err = p.communicate()[1]
  return p.returncode, err, time.monotonic() - t0


def test_sigkill_at_a_random_point_then_resume_is_identical(tmp_path):
  cfg_path = str(tmp_path / "cfg.json")
  io_lib.write_json(cfg_path, config.to_dict(CFG))
  env = _env(str(tmp_path / "jax_cache"))
  ref = str(tmp_path / "ref")
  full = subprocess.run(_cmd(cfg_path, ref), cwd=ROOT, env=env, capture_output=True, text=True)
  assert full.returncode == 0, full.stderr[-3000:]

  given = os.environ.get("ROSETTA_JAX_KILL_AT")
  if given:
    phase, delay = given.split(",")[0], float(given.split(",")[1])
  else:
    rng = random.Random()
    phase = rng.choice(sorted(PHASES))
    delay = rng.uniform(0.0, PHASES[phase])
  for attempt in range(3):
    work = str(tmp_path / f"killed{attempt}")
    rc, err, left = _kill(cfg_path, work, env, phase, delay)
    how = (f"killed {delay:.2f}s into {phase} (ROSETTA_JAX_KILL_AT={phase},{delay:.2f}), "
           f"at {_phase(work)}, rc {rc}")
    print(how)
    if rc != 0:
      break
    delay = random.uniform(0.0, 0.8 * left)      # it finished first: a point inside the phase
  assert rc == -signal.SIGKILL, f"{how}: {err[-3000:]}"

  done = subprocess.run(_cmd(cfg_path, work), cwd=ROOT, env=env, capture_output=True, text=True)
  assert done.returncode == 0, f"{how}: resume failed: {done.stderr[-3000:]}"
  read = lambda w, f: json.load(open(os.path.join(w, f)))
  assert read(work, "config.json") == read(ref, "config.json")
  got, want = read(work, "results.json"), read(ref, "results.json")
  assert _strip_timing(got) == _strip_timing(want), how
  assert _pairs(work) == _pairs(ref) and len(_pairs(ref)) == len(CFG.zoo.widths), how
  a, b = _pair_results(work), _pair_results(ref)
  assert a.keys() == b.keys(), how
  for f in a:
    assert a[f][0] == b[f][0], (how, f)
    for x, y in zip(a[f][1:], b[f][1:]):
      np.testing.assert_array_equal(x, y, err_msg=f"{how}: {f}")
  # The resumed stores hold what an uninterrupted recording holds, and verify.
  stores = store_lib.find_stores(os.path.join(work, "acts"))
  assert len(stores) == 2 * len(CFG.zoo.widths)
  for s in stores:
    st = store_lib.Store(s)
    other = store_lib.Store(os.path.join(ref, "acts", os.path.basename(s)))
    assert st.fingerprint == other.fingerprint, (how, s)
    st.verify()
