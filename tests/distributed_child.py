"""One process of the two-process tests (tests/test_distributed_multiprocess.py).

    python tests/distributed_child.py ART PROCESS PORT STORES OUT [--slow-commits]

Joins a 2-process run on 127.0.0.1:PORT (CPU collectives), records the tiny pair
saved in ART into STORES/a and STORES/b (each process its own shard), matches them
over the global data:2 x model:2 mesh (two fake CPU devices per process), in memory
and streamed from the stores, with the permutation null, and writes OUT/p{PROCESS}.npz.
"""

import dataclasses
import json
import os
import sys
import time

ART, PROCESS, PORT, STORES, OUT = sys.argv[1:6]
SLOW = "--slow-commits" in sys.argv[6:]
PROCESS = int(PROCESS)

import flax.serialization  # noqa: E402
import numpy as np  # noqa: E402

from rosetta_jax import distributed  # noqa: E402

info = distributed.initialize(f"127.0.0.1:{PORT}", 2, PROCESS, timeout_s=60, heartbeat_s=10)

import rosetta_jax as rj  # noqa: E402
from rosetta_jax import sharding  # noqa: E402
from rosetta_jax import store as S  # noqa: E402
from rosetta_jax.data.corpus import Document  # noqa: E402
from rosetta_jax.data.tokenizer import Tokenizer  # noqa: E402
from rosetta_jax.models.base import Model  # noqa: E402
from rosetta_jax.models.gpt_neox import GPTNeoX, GPTNeoXConfig  # noqa: E402
from rosetta_jax.recording import record  # noqa: E402

spec = json.load(open(os.path.join(ART, "spec.json")))
cfg = GPTNeoXConfig(**spec["config"])
tok = Tokenizer.load(os.path.join(ART, "tok"))
docs = [Document(*d) for d in spec["docs"]]
models = {}
for name in ("a", "b"):
  params = flax.serialization.msgpack_restore(
      open(os.path.join(ART, f"{name}.msgpack"), "rb").read())
  models[name] = Model(name, GPTNeoX(cfg), params, cfg, tok)

if SLOW:
  real_commit = S.StoreWriter.commit

  def slow_commit(self, units_done, moments):
    real_commit(self, units_done, moments)
    print("COMMIT", units_done, flush=True)
    time.sleep(0.4)
  S.StoreWriter.commit = slow_commit

sites = spec["sites"]
stores = {n: record(m, docs, sites, os.path.join(STORES, n), barrier_timeout_s=30,
                    **spec["settings"]) for n, m in models.items()}
print("RECORDED", type(stores["a"]).__name__, flush=True)

class Counting:
  """A store site that counts the units read through it."""

  def __init__(self, src):
    self.src, self.read_units = src, 0
    self.num_units, self.num_neurons = src.num_units, src.num_neurons

  def read(self, start, stop):
    self.read_units += stop - start
    return self.src.read(start, stop)

  def moments(self):
    return self.src.moments()


mesh = sharding.mesh_from_flag("data:2,model:2")
assert sharding.spans_processes(mesh)
with distributed.deadline(60, "matching"):
  arrays = {n: np.concatenate([s.site(x).read(0, s.units_done) for x in sites], axis=1)
            for n, s in stores.items()}
  mem = rj.match(arrays["a"], arrays["b"], k=2, mesh=mesh, block_a=16, block_b=16, chunk=64)
  counted = [Counting(stores[n].site(sites[1])) for n in ("a", "b")]
  streamed = rj.match(*counted, k=2, mesh=mesh, block_a=16, chunk=64)
  doc_ids = np.repeat(np.arange(len(docs)), np.diff(stores["a"].documents["unit_offsets"]))
  null = rj.find_rosetta({s: stores["a"].site(s) for s in sites},
                         {s: stores["b"].site(s) for s in sites}, mesh=mesh,
                         null_permutation=3, doc_ids=doc_ids, block_a=16, chunk=64)
os.makedirs(OUT, exist_ok=True)
np.savez(os.path.join(OUT, f"p{PROCESS}.npz"),
         **{f"mem_{f.name}": getattr(mem, f.name) for f in dataclasses.fields(mem)},
         **{f"str_{f.name}": getattr(streamed, f.name) for f in dataclasses.fields(streamed)},
         read_units=np.array([c.read_units for c in counted]), num_units=counted[0].num_units,
         null_a=null.neuron_a, null_b=null.neuron_b, null_r=null.r,
         fingerprints=np.array([stores[n].fingerprint for n in ("a", "b")]))
distributed.barrier("child:done", 60)
print("DONE", info.index, info.count, flush=True)
