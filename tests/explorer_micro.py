"""A micro run for the explorer tests: two tiny GPT-NeoX models, recorded and matched.

Model B is model A with the MLP neurons of every layer permuted (the same
function, neurons relabelled), so the true Rosetta pairs are known: neuron n of A
pairs with neuron perm[n] of B at r = 1, and a pair's two neurons fire on the same
text. In the last layer, B's copies of ``SCRAMBLED`` neurons get fresh input
weights, so those neurons of A lose their partner (the parallel-residual MLP of
the last layer feeds nothing that the other neurons read). The
document-permutation null gives unrelated pairs through the same code path, and
A's unpaired neurons serve as controls.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from rosetta_jax import explorer
from rosetta_jax.analysis import vocab as vocab_lib
from rosetta_jax.data.corpus import Document, load_corpus
from rosetta_jax.data.tokenizer import train_bpe
from rosetta_jax.match import find_rosetta
from rosetta_jax.models.base import Model
from rosetta_jax.models.gpt_neox import GPTNeoX, GPTNeoXConfig
from rosetta_jax.recording import record

NEURONS = 48
SCRAMBLED = 8
SETTINGS = dict(batch_size=4, max_len=64, progress=False)


@dataclasses.dataclass
class MicroRun:
  docs: list
  models: dict
  stores: dict
  perms: dict          # {site: [N] B's index of A's neuron n}
  scrambled: np.ndarray  # A's neurons of the last layer whose copy in B was replaced
  rosetta: object      # Matches
  null: object         # Matches
  rows: list
  units: object
  vocab: dict
  summary: object      # ExplorerSummary
  out_dir: str


def micro_docs() -> list:
  pool = load_corpus("heldout")
  docs = []
  for dom in ("code", "prose", "math", "docs"):
    docs += [Document(d.doc_id, d.text[:360], d.domain) for d in pool if d.domain == dom][:4]
  return docs


def permuted(model: Model, perms: dict, name: str, scramble=None) -> Model:
  """``model`` with each layer's MLP neurons permuted: new neuron perm[n] = old n;
  ``scramble`` = (site, neurons, seed): those neurons' input weights are redrawn."""
  params = jax.tree_util.tree_map(lambda x: x, model.params)
  for site, perm in perms.items():
    layer = int(site.split("/")[0].split("_")[1])
    mlp = dict(params[f"layers_{layer}"]["mlp"])
    inv = np.argsort(perm)                                   # old index of new neuron j
    fc, out = dict(mlp["dense_h_to_4h"]), dict(mlp["dense_4h_to_h"])
    fc["kernel"], fc["bias"] = fc["kernel"][:, inv], fc["bias"][inv]
    if scramble is not None and scramble[0] == site:
      new = perm[np.asarray(scramble[1])]
      noise = np.random.default_rng(scramble[2]).normal(size=(fc["kernel"].shape[0], len(new)))
      fc["kernel"] = fc["kernel"].at[:, new].set(noise * float(np.std(fc["kernel"])))
    out["kernel"] = out["kernel"][inv, :]
    mlp["dense_h_to_4h"], mlp["dense_4h_to_h"] = fc, out
    layer_p = dict(params[f"layers_{layer}"])
    layer_p["mlp"] = mlp
    params = {**params, f"layers_{layer}": layer_p}
  return Model(name, model.module, params, model.config, model.tokenizer)


def make_micro_run(root: str, build: bool = True, title: str = "micro run") -> MicroRun:
  docs = micro_docs()
  tok = train_bpe([d.text for d in docs], vocab_size=300)
  cfg = GPTNeoXConfig(vocab_size=tok.vocab_size, hidden_size=32, num_layers=2, num_heads=4,
                      intermediate_size=NEURONS, max_position_embeddings=128)
  module = GPTNeoX(cfg)
  params = module.init(jax.random.PRNGKey(0), np.zeros((1, 8), np.int32))["params"]
  a = Model("micro-a", module, params, cfg, tok)
  rng = np.random.default_rng(0)
  perms = {s: rng.permutation(NEURONS) for s in a.mlp_sites()}
  scrambled = np.sort(rng.choice(NEURONS, SCRAMBLED, replace=False))
  b = permuted(a, perms, "micro-b", (a.mlp_sites()[-1], scrambled, 1))
  stores = {m.name: record(m, docs, None, f"{root}/acts/{m.name}", **SETTINGS) for m in (a, b)}
  acts = {n: {s: st.site(s) for s in st.sites} for n, st in stores.items()}
  ros = find_rosetta(acts["micro-a"], acts["micro-b"], model_a="micro-a", model_b="micro-b",
                     within_layer=True)
  offs = stores["micro-a"].documents["unit_offsets"]
  doc_of = np.repeat(np.arange(len(docs)), np.diff(offs))
  null = find_rosetta(acts["micro-a"], acts["micro-b"], model_a="micro-a", model_b="micro-b",
                      within_layer=True, null_permutation=0, doc_ids=doc_of)
  paired = {(s, int(n)) for s, n in zip(ros.site_a, ros.neuron_a)}
  controls = [(s, n) for s in a.mlp_sites() for n in range(NEURONS) if (s, n) not in paired][:4]
  rows = (explorer.rows_from_matches(ros) + explorer.rows_from_matches(null, kind="null")
          + explorer.control_rows("micro-a", controls))
  units = explorer.unit_text(docs, [tok], stores["micro-a"])
  vocab = {m.name: vocab_lib.vocab_projection(m, k=5) for m in (a, b)}
  summary = None
  if build:
    summary = explorer.build_explorer(f"{root}/explorer", rows, stores, units, vocab=vocab,
                                      title=title, num_layers={"micro-a": 2, "micro-b": 2})
  return MicroRun(docs, {"micro-a": a, "micro-b": b}, stores, perms, scrambled, ros, null, rows,
                  units, vocab, summary, f"{root}/explorer")


_CACHE: dict = {}


def shared_micro_run(tmp_path_factory) -> MicroRun:
  """One micro run per test session, shared by the explorer test modules."""
  if "run" not in _CACHE:
    _CACHE["run"] = make_micro_run(str(tmp_path_factory.mktemp("explorer")))
  return _CACHE["run"]
