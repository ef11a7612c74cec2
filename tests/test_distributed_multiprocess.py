"""Two real processes on loopback (jax.distributed, Gloo CPU collectives): record a
tiny pair into per-process shards and match it over the global mesh; the results
equal a single-process run. A process killed mid-recording resumes on re-run to
the same store.

The children (tests/distributed_child.py) run with hard time-outs and time-outs
of their own (coordinator 60 s, heartbeat 10 s, barriers 30 s), so a failure ends
the test instead of hanging it.
"""

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time

import flax.serialization
import jax
import numpy as np
import pytest

import rosetta_jax as rj
from rosetta_jax import store as S
from rosetta_jax.data.corpus import Document, load_corpus
from rosetta_jax.data.tokenizer import train_bpe
from rosetta_jax.recording import record

sys.path.insert(0, os.path.dirname(__file__))
from test_record import make_model  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHILD = os.path.join(ROOT, "tests", "distributed_child.py")
SITES = ["layer_0/mlp", "layer_1/mlp"]
SETTINGS = dict(batch_size=4, max_len=48, progress=False, commit_interval_s=0)
HARD_TIMEOUT = 90


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def child_env():
  env = dict(os.environ)
  env.update(XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu",
             PYTHONPATH=ROOT + os.pathsep + env.get("PYTHONPATH", ""))
  return env


def launch(art, stores, out, slow=False):
  port = free_port()
  extra = ["--slow-commits"] if slow else []
  return [subprocess.Popen([sys.executable, CHILD, str(art), str(i), str(port), str(stores),
                            str(out)] + extra, cwd=ROOT, env=child_env(), text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
          for i in range(2)]


def wait_all(procs, timeout=HARD_TIMEOUT):
  deadline, outs = time.monotonic() + timeout, []
  try:
    for p in procs:
      out, _ = p.communicate(timeout=max(1, deadline - time.monotonic()))
      outs.append(out)
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
  return outs


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
  base = load_corpus("heldout")[:10]
  docs = [Document(d.doc_id, d.text[:300], d.domain) for d in base]
  tok = train_bpe([d.text for d in docs], vocab_size=300)
  models = {"a": make_model(tok, 0, "a"), "b": make_model(tok, 1, "b")}
  art = tmp_path_factory.mktemp("art")
  tok.save(str(art / "tok"))
  for n, m in models.items():
    (art / f"{n}.msgpack").write_bytes(flax.serialization.msgpack_serialize(
        jax.tree_util.tree_map(np.asarray, m.params)))
  (art / "spec.json").write_text(json.dumps({
      "config": dataclasses.asdict(models["a"].config), "sites": SITES,
      "settings": SETTINGS, "docs": [(d.doc_id, d.text, d.domain) for d in docs]}))
  root = tmp_path_factory.mktemp("single")
  single = {n: record(m, docs, SITES, str(root / n), **SETTINGS) for n, m in models.items()}
  return dict(docs=docs, models=models, art=art, single=single,
              two=tmp_path_factory.mktemp("two"))


def read_all(store):
  return np.concatenate([store.site(s).read(0, store.units_done) for s in SITES], axis=1)


def reference(single, docs):
  a, b = read_all(single["a"]), read_all(single["b"])
  mem = rj.match(a, b, k=2)
  streamed = rj.match(single["a"].site(SITES[1]), single["b"].site(SITES[1]), k=2)
  doc_ids = np.repeat(np.arange(len(docs)), np.diff(single["a"].documents["unit_offsets"]))
  null = rj.find_rosetta({s: single["a"].site(s) for s in SITES},
                         {s: single["b"].site(s) for s in SITES}, null_permutation=3,
                         doc_ids=doc_ids)
  return mem, streamed, null


def run_two(pair):
  """The uninterrupted two-process run (once per module)."""
  if "out" not in pair:
    stores, out = pair["two"] / "stores", pair["two"] / "out"
    outs = wait_all(launch(pair["art"], stores, out))
    assert all("DONE" in o for o in outs), "\n----\n".join(o[-3000:] for o in outs)
    pair["out"] = [dict(np.load(out / f"p{i}.npz")) for i in range(2)]
    pair["stores"] = stores
  return pair["out"]


def test_two_processes_record_and_match_like_one(pair):
  outs = run_two(pair)
  mem, streamed, null = reference(pair["single"], pair["docs"])
  for got in outs:                              # both processes hold the whole result
    for prefix, want in (("mem", mem), ("str", streamed)):
      for f in ("a_to_b_idx", "b_to_a_idx"):
        np.testing.assert_array_equal(got[f"{prefix}_{f}"], getattr(want, f))
      for f in ("a_to_b_r", "b_to_a_r"):
        np.testing.assert_allclose(got[f"{prefix}_{f}"], getattr(want, f), atol=1e-6, rtol=0)
    np.testing.assert_array_equal(got["null_a"], null.neuron_a)
    np.testing.assert_array_equal(got["null_b"], null.neuron_b)
    np.testing.assert_allclose(got["null_r"], null.r, atol=1e-6, rtol=0)
  assert len(null) > 0 and (mem.a_to_b_idx[:, 0] >= 0).all()
  # Streaming over data:2, each process read about half of the units of each pass
  # (4 panels of A's 64 neurons: block_a=16; B is read once per panel), not all.
  t = int(outs[0]["num_units"])
  for got in outs:
    for read in got["read_units"]:
      assert 0.45 * 4 * t <= read <= 0.55 * 4 * t + 2, (read, t)
  # The sharded store holds exactly the single-process recording's units.
  for n in ("a", "b"):
    sharded = S.open_store(str(pair["stores"] / n))
    assert type(sharded).__name__ == "ShardedStore" and len(sharded.shards) == 2
    assert all(s.units_done > 0 for s in sharded.shards)
    one = pair["single"][n]
    assert sharded.documents["doc_ids"] == one.documents["doc_ids"]
    np.testing.assert_array_equal(sharded.documents["unit_offsets"],
                                  one.documents["unit_offsets"])
    np.testing.assert_allclose(read_all(sharded), read_all(one), atol=1e-6, rtol=0)
    for s in SITES:
      np.testing.assert_allclose(sharded.moments()[s].mean, one.moments()[s].mean,
                                 atol=1e-9, rtol=0)
    sharded.verify()
  assert (outs[0]["fingerprints"] == outs[1]["fingerprints"]).all()


@pytest.mark.slow
def test_killed_process_resumes_to_the_same_store(pair, tmp_path):
  want = run_two(pair)[0]
  stores, out = tmp_path / "stores", tmp_path / "out"
  procs = launch(pair["art"], stores, out, slow=True)
  lines, commits = [], 0
  try:
    t0 = time.monotonic()
    for line in procs[1].stdout:         # kill process 1 after its 2nd commit of model a
      lines.append(line)
      commits += line.startswith("COMMIT")
      if commits == 2 or time.monotonic() - t0 > HARD_TIMEOUT:
        os.kill(procs[1].pid, signal.SIGKILL)
        break
    procs[1].wait(timeout=10)
    # Process 0 must not hang: the heartbeat or its barrier time-out ends it.
    out0 = wait_all(procs[:1], timeout=HARD_TIMEOUT)[0]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
  assert commits == 2 and procs[1].returncode == -signal.SIGKILL, "".join(lines)[-3000:]
  assert procs[0].returncode != 0 and "DONE" not in out0, out0[-3000:]
  shard1 = S.open_store(str(stores / "a" / "shards" / "00001-of-00002"))
  assert 0 < shard1.units_done < shard1.total_units           # killed mid-shard
  with pytest.raises(FileNotFoundError, match="not every shard is complete"):
    S.open_store(str(stores / "a"))
  outs = wait_all(launch(pair["art"], stores, out))              # the same command again
  assert all("DONE" in o for o in outs), "\n----\n".join(o[-3000:] for o in outs)
  for n in ("a", "b"):
    resumed, clean = S.open_store(str(stores / n)), S.open_store(str(pair["stores"] / n))
    assert resumed.fingerprint == clean.fingerprint
    np.testing.assert_array_equal(read_all(resumed), read_all(clean))
    resumed.verify()
  got = dict(np.load(out / "p0.npz"))
  for key in ("mem_a_to_b_idx", "mem_b_to_a_idx", "null_a", "null_b"):
    np.testing.assert_array_equal(got[key], want[key])


@pytest.mark.slow
def test_record_binary_on_two_processes(pair, tmp_path):
  """``experiments.record`` with the process flags and --mesh: two processes, one store."""
  import torch
  import transformers
  from rosetta_jax.data.tokenizer import Tokenizer
  hf_dir = tmp_path / "hf"
  tok = Tokenizer.load(str(pair["art"] / "tok"))
  cfg = transformers.GPTNeoXConfig(vocab_size=tok.vocab_size, hidden_size=32,
                                   num_hidden_layers=2, num_attention_heads=4,
                                   intermediate_size=64, max_position_embeddings=128)
  torch.manual_seed(0)
  transformers.GPTNeoXForCausalLM(cfg).save_pretrained(hf_dir)
  transformers.PreTrainedTokenizerFast(tokenizer_object=tok.backend).save_pretrained(hf_dir)
  args = [sys.executable, "-m", "experiments.record", f"--model={hf_dir}", "--max_docs=6",
          "--max_chars=300", "--batch_size=2", "--max_len=64", "--noprogress"]
  port = free_port()
  procs = [subprocess.Popen(args + [f"--workdir={tmp_path / 'two'}", "--mesh=model:2",
                                    f"--coordinator=127.0.0.1:{port}", "--num_processes=2",
                                    f"--process_id={i}"], cwd=ROOT, env=child_env(),
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
           for i in range(2)]
  outs = wait_all(procs)
  assert all(p.returncode == 0 for p in procs), "\n----\n".join(o[-3000:] for o in outs)
  one = subprocess.run(args + [f"--workdir={tmp_path / 'one'}"], cwd=ROOT, env=child_env(),
                       capture_output=True, text=True, timeout=HARD_TIMEOUT)
  assert one.returncode == 0, one.stderr[-3000:]
  results = json.loads((tmp_path / "two" / "results.json").read_text())
  two = S.open_store(results["store"])
  single = S.open_store(str(tmp_path / "one" / "store"))
  assert type(two).__name__ == "ShardedStore" and two.units_done == single.units_done
  assert two.documents["doc_ids"] == single.documents["doc_ids"]
  for s in single.sites:        # tensor parallel over 2 devices: float32 rounding only
    np.testing.assert_allclose(two.site(s).read(0, two.units_done),
                               single.site(s).read(0, single.units_done), atol=1e-5, rtol=1e-5)
