"""Meshes, parameter specs, sharded matching and sharded stores, in one process.

The suite runs with 8 fake CPU devices (conftest's XLA_FLAGS); meshes over the first
1, 2, 4 and 8 of them stand in for a node's accelerators. Real two-process runs are
in test_distributed_multiprocess.py.
"""

import os
import socket
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

import rosetta_jax as rj
from rosetta_jax import distributed, sharding
from rosetta_jax import store as S
from rosetta_jax import store_shards
from rosetta_jax.analysis import bootstrap
from rosetta_jax.data.corpus import Document, load_corpus
from rosetta_jax.data.tokenizer import train_bpe
from rosetta_jax.models import presets
from rosetta_jax.models.registry import family_of_config
from rosetta_jax.recording import record

sys.path.insert(0, os.path.dirname(__file__))
from test_record import make_model  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SITES = ("layer_0/mlp", "layer_1/mlp")
SETTINGS = dict(batch_size=4, max_len=48, progress=False, commit_interval_s=0)


def test_parse_mesh():
  assert sharding.parse_mesh("") == (None, None)
  assert sharding.parse_mesh(None) == (None, None)
  assert sharding.parse_mesh("data:4,model:2") == (4, 2)
  assert sharding.parse_mesh("model:8") == (None, 8)
  assert sharding.parse_mesh("data:2") == (2, 1)
  assert sharding.parse_mesh("data:-1, model:2") == (None, 2)
  for bad, msg in (("data:4;model:2", "bad entry"), ("data:0", "size 0"),
                   ("data:2,data:2", "twice"), ("pipe:2", "bad entry"),
                   ("data:-1,model:-1", "at most one")):
    with pytest.raises(ValueError, match=msg):
      sharding.parse_mesh(bad)


def test_make_mesh_over_ordered_devices():
  devs = jax.devices()
  mesh = sharding.make_mesh(2, 4, devices=devs[::-1])        # any order in, ordered out
  assert [d.id for d in mesh.devices.flat] == sorted(d.id for d in devs)
  assert dict(sharding.mesh_from_flag("data:-1,model:2").shape) == {"data": 4, "model": 2}
  assert dict(sharding.mesh_from_flag("").shape) == {"data": 1, "model": 1}
  assert not sharding.spans_processes(mesh)
  assert sharding.describe_mesh(mesh) == {"shape": {"data": 2, "model": 4},
                                          "platform": "cpu", "devices": 8, "processes": 1}
  with pytest.raises(ValueError, match="needs 16 devices"):
    sharding.mesh_from_flag("data:4,model:4")


@pytest.mark.parametrize("preset", ["pythia-70m", "opt-125m", "qwen2.5-0.5b", "gpt2",
                                    "gemma-3-270m", "smollm2-135m", "all-minilm-l6-v2"])
def test_param_specs_every_family(preset):
  cfg = presets.PRESETS[preset]
  fam = family_of_config(cfg).name
  shapes = presets.param_shapes(cfg)
  mesh = sharding.make_mesh(2, 4)
  tp = sharding.param_specs(fam, shapes, mesh, cfg)
  fs = sharding.param_specs(fam, shapes, mesh, cfg, fsdp=True)
  from rosetta_jax.models.partition import flat_paths
  leaves = flat_paths(shapes)
  total = sum(int(np.prod(x.shape)) * 4 for x in leaves.values())
  split_tp = sum("model" in tuple(s) for s in tp.values())
  assert split_tp >= 2                                      # the MLP at least is split
  for path, x in leaves.items():
    assert "data" not in tuple(tp[path])                    # TP: replicated over data
    for dim, ax in zip(x.shape, tuple(fs[path])):
      if ax is not None:
        assert dim % sharding.axis_size(mesh, ax) == 0, (path, x.shape, fs[path])
  b_tp = sharding.param_bytes_per_device(fam, shapes, mesh, cfg)
  b_fs = sharding.param_bytes_per_device(fam, shapes, mesh, cfg, fsdp=True)
  assert total / 4 <= b_tp < total           # model:4 splits most bytes, not all
  assert b_fs <= b_tp / 1.8                  # and fully sharded about halves that again


def test_sharded_params_run_like_replicated():
  tok = train_bpe(["some text to train on, " * 20], vocab_size=120)
  model = make_model(tok)
  mesh = sharding.make_mesh(2, 4)
  for fsdp in (False, True):
    placed = sharding.shard_params("gpt_neox", model.params, mesh, model.config, fsdp=fsdp)
    specs = sharding.param_specs("gpt_neox", model.params, mesh, model.config, fsdp=fsdp)
    from rosetta_jax.models.partition import flat_paths
    per_dev = {}
    for path, x in flat_paths(placed).items():
      assert x.sharding.spec == specs[path] or (tuple(x.sharding.spec) == ()
                                                and not any(specs[path]))
      for sh in x.addressable_shards:
        per_dev[sh.device.id] = per_dev.get(sh.device.id, 0) + sh.data.nbytes
    assert max(per_dev.values()) == sharding.param_bytes_per_device(
        "gpt_neox", model.params, mesh, model.config, fsdp=fsdp)
    if not fsdp:
      continue                  # the forward pass: once, on the fully sharded layout
    tokens = np.arange(16, dtype=np.int32).reshape(2, 8) % tok.vocab_size
    want = model.module.apply({"params": model.params}, tokens, None, sites=SITES)[1]
    got = jax.jit(lambda p, t: model.module.apply({"params": p}, t, None, sites=SITES)[1])(
        placed, tokens)
    for s in SITES:
      np.testing.assert_allclose(np.asarray(got[s]), np.asarray(want[s]), atol=1e-5, rtol=1e-5)


def _data(t=301, na=37, nb=29, seed=0):
  rng = np.random.default_rng(seed)
  z = rng.standard_normal((t, 12))
  a = z @ rng.standard_normal((12, na)) + 0.5 * rng.standard_normal((t, na))
  b = z @ rng.standard_normal((12, nb)) + 0.5 * rng.standard_normal((t, nb))
  a[:, 5] = 2.0                                            # a constant neuron
  return a.astype(np.float32), b.astype(np.float32)


MESHES = [(2, 1), (1, 2), (4, 1), (2, 2), (8, 1), (4, 2), (1, 8)]


def _same(got, want):
  for f in ("a_to_b_idx", "b_to_a_idx"):
    np.testing.assert_array_equal(getattr(got, f), getattr(want, f))
  for f in ("a_to_b_r", "b_to_a_r"):
    np.testing.assert_allclose(getattr(got, f), getattr(want, f), atol=1e-6, rtol=0)
  np.testing.assert_array_equal(got.excluded_a, want.excluded_a)


def test_match_on_1_2_4_8_devices_equals_one():
  a, b = _data()
  want = rj.match(a, b, k=3, block_a=8, block_b=8, chunk=32)
  want_s = rj.match(rj_source(a), rj_source(b), k=3, block_a=8, chunk=32)
  _same(want_s, want)
  for shape in MESHES:
    mesh = sharding.make_mesh(*shape)
    _same(rj.match(a, b, k=3, block_a=8, block_b=8, chunk=32, mesh=mesh), want)
    if shape in ((2, 2), (8, 1), (1, 8)):     # the streaming driver (from sources)
      _same(rj.match(rj_source(a), rj_source(b), k=3, block_a=8, chunk=32, mesh=mesh), want)


def rj_source(x):
  from rosetta_jax.match.sources import ArraySource
  return ArraySource(x)


def test_null_and_bootstrap_on_a_mesh_equal_one():
  a, b = _data(seed=1)
  doc_ids = np.repeat(np.arange(28), 11)[:a.shape[0]]
  acts_a = {"layer_0/mlp": a[:, :20], "layer_1/mlp": a[:, 20:]}
  acts_b = {"layer_0/mlp": b[:, :15], "layer_1/mlp": b[:, 15:]}
  kw = dict(null_permutation=7, doc_ids=doc_ids, block_a=8, block_b=8, chunk=32)
  want = rj.find_rosetta(acts_a, acts_b, **kw)
  want_res = rj.match(a, b, k=4, block_a=8, block_b=8, chunk=32)
  weights = bootstrap.bootstrap_weights(28, 20, seed=0)
  st = bootstrap.doc_stats(a, b, doc_ids, want_res.a_to_b_idx, want_res.b_to_a_idx)
  want_counts = bootstrap.resample_counts(st, weights)
  assert len(want) > 0 and want_counts.std() > 0
  for shape in [(2, 2), (8, 1)]:
    mesh = sharding.make_mesh(*shape)
    got = rj.find_rosetta(acts_a, acts_b, mesh=mesh, **kw)
    np.testing.assert_array_equal(got.neuron_a, want.neuron_a)
    np.testing.assert_array_equal(got.neuron_b, want.neuron_b)
    np.testing.assert_allclose(got.r, want.r, atol=1e-6, rtol=0)
    res = rj.match(a, b, k=4, block_a=8, block_b=8, chunk=32, mesh=mesh)
    st_m = bootstrap.doc_stats(a, b, doc_ids, res.a_to_b_idx, res.b_to_a_idx)
    np.testing.assert_array_equal(bootstrap.resample_counts(st_m, weights), want_counts)


@pytest.fixture(scope="module")
def tiny():
  base = load_corpus("heldout")[:9]
  docs = [Document(d.doc_id, d.text[:300], d.domain) for d in base]
  tok = train_bpe([d.text for d in docs], vocab_size=300)
  return docs, make_model(tok)


def read_all(store):
  return np.concatenate([store.site(s).read(0, store.units_done) for s in SITES], axis=1)


def test_split_documents():
  docs = [Document(str(i), "x" * n, "prose") for i, n in enumerate([5, 5, 100, 1, 1, 1, 90])]
  r = store_shards.split_documents(docs, 2)
  assert r == [(0, 3), (3, 7)]
  r3 = store_shards.split_documents(docs, 7)
  assert r3 == [(i, i + 1) for i in range(7)]
  with pytest.raises(ValueError, match="cannot be split"):
    store_shards.split_documents(docs, 8)


def test_sharded_store_equals_single_and_resumes(tiny, tmp_path):
  docs, model = tiny
  one = record(model, docs, SITES, str(tmp_path / "one"), **SETTINGS)
  path = str(tmp_path / "sharded")
  s1 = record(model, docs, SITES, path, processes=(1, 3), **SETTINGS)
  assert isinstance(s1, S.Store) and s1.complete                  # its own shard
  with pytest.raises(FileNotFoundError, match="not every shard is complete"):
    S.open_store(path)
  with pytest.raises(ValueError, match="another number of processes"):
    record(model, docs, SITES, path, processes=(0, 2), **SETTINGS)
  with pytest.raises(ValueError, match="incomplete.*00000-of-00003 \\(not started\\)"):
    store_shards.commit(path, 3, {"corpus_hash": "", "doc_ids": []})
  record(model, docs, SITES, path, processes=(0, 3), **SETTINGS)
  full = record(model, docs, SITES, path, processes=(2, 3), **SETTINGS)  # last one commits
  assert isinstance(full, store_shards.ShardedStore)
  again = S.open_store(path, verify=True)
  assert again.fingerprint == full.fingerprint
  assert again.documents["doc_ids"] == one.documents["doc_ids"]
  np.testing.assert_array_equal(again.documents["unit_offsets"], one.documents["unit_offsets"])
  # Other batch boundaries (each shard batches its own documents): float32 noise only.
  np.testing.assert_allclose(read_all(again), read_all(one), atol=1e-6, rtol=0)
  site = again.site(SITES[0])
  b = int(again.shard_starts[1])
  np.testing.assert_array_equal(site.read(b - 3, b + 4),
                                np.concatenate([again.shards[0].site(SITES[0]).read(b - 3, b),
                                                again.shards[1].site(SITES[0]).read(0, 4)]))
  for s in SITES:
    mo, ms = one.moments()[s], again.moments()[s]
    assert mo.count == ms.count
    np.testing.assert_allclose(ms.mean, mo.mean, rtol=0, atol=1e-7)
    np.testing.assert_allclose(ms.m2, mo.m2, rtol=1e-5)
  # Re-running any process is a no-op resume; a damaged shard is refused.
  assert record(model, docs, SITES, path, processes=(1, 3), **SETTINGS).fingerprint == full.fingerprint
  with pytest.raises(ValueError, match="single-process store"):
    record(model, docs, SITES, str(tmp_path / "one"), processes=(0, 2), **SETTINGS)
  res_one = rj.match(one.site(SITES[1]), one.site(SITES[1]), k=1)
  res_sh = rj.match(again.site(SITES[1]), again.site(SITES[1]), k=1)
  _same(res_sh, res_one)


def test_model_sharded_over_devices_records_like_one(tiny, tmp_path):
  docs, model = tiny
  one = record(model, docs, SITES, str(tmp_path / "one"), **SETTINGS)
  mesh = sharding.local_mesh(2, 4)
  placed = sharding.shard_params("gpt_neox", model.params, mesh, model.config, fsdp=True)
  sharded = type(model)(model.name, model.module, placed, model.config, model.tokenizer)
  got = record(sharded, docs, SITES, str(tmp_path / "sh"),
               batch_sharding=sharding.named(mesh, sharding.BATCH), **SETTINGS)
  np.testing.assert_allclose(read_all(got), read_all(one), atol=1e-5, rtol=1e-5)


def test_initialize_flags_and_environment():
  info = distributed.initialize()
  assert (info.index, info.count, info.source) == (0, 1, "single")
  with pytest.raises(ValueError, match="missing --process_id"):
    distributed.initialize("127.0.0.1:1234", 2)
  with pytest.raises(ValueError, match="must lie in"):
    distributed.initialize("127.0.0.1:1234", 2, 2)
  with pytest.raises(ValueError, match="host:port"):
    distributed.initialize("localhost", 2, 1)
  assert distributed.detect_environment({}) is None
  slurm = {"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "n[1-2]", "SLURM_PROCID": "0",
           "SLURM_LOCALID": "0"}
  assert distributed.detect_environment({**slurm, "SLURM_NTASKS": "1"}) is None
  assert distributed.detect_environment({**slurm, "SLURM_NTASKS": "4"}) == "slurm"
  assert distributed.detect_environment({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "4"}) is None
  assert distributed.detect_environment({"OMPI_MCA_orte_hnp_uri": "1.0;tcp://h:1",
                                         "OMPI_COMM_WORLD_SIZE": "2"}) == "openmpi"
  assert distributed.detect_environment({"TPU_WORKER_HOSTNAMES": "h0,h1"}) == "tpu"
  assert distributed.detect_environment({"TPU_WORKER_HOSTNAMES": "h0"}) is None
  distributed.barrier("one process: no-op", timeout_s=0.1)
  with distributed.deadline(0.01, "nothing"):
    pass


START = textwrap.dedent("""
  import sys
  from rosetta_jax import distributed
  try:
    distributed.initialize("127.0.0.1:" + sys.argv[1], 2, int(sys.argv[2]), timeout_s=3)
  except distributed.DistributedError as e:
    print("DistributedError:", e)
    sys.exit(3)
""")


def test_start_up_times_out_with_a_clear_error():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = str(s.getsockname()[1])
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
  for pid, code, msg in (("1", 3, "nothing answered at 127.0.0.1:"),
                         ("0", distributed.EXIT_TIMEOUT, "not every process reached")):
    p = subprocess.run([sys.executable, "-c", START, port, pid], env=env, cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == code, p.stdout + p.stderr[-2000:]
    assert msg in p.stdout + p.stderr
