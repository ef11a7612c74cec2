"""The streaming recorder (rosetta_jax/recording.py) on a tiny random GPT-NeoX."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap

import flax.serialization
import jax
import numpy as np
import pytest

from rosetta_jax import store as S
from rosetta_jax.data import align as A
from rosetta_jax.data.corpus import Document, load_corpus
from rosetta_jax.data.tokenizer import Tokenizer, train_bpe
from rosetta_jax.models.base import Model
from rosetta_jax.models.gpt_neox import GPTNeoX, GPTNeoXConfig
from rosetta_jax.recording import record

SITES = ("layer_0/mlp", "layer_1/mlp")
SETTINGS = dict(batch_size=4, max_len=48, progress=False, commit_interval_s=0)


def make_model(tok, seed=0, name="tiny"):
  cfg = GPTNeoXConfig(vocab_size=tok.vocab_size, hidden_size=32, num_layers=2, num_heads=4,
                      intermediate_size=64, max_position_embeddings=256)
  module = GPTNeoX(cfg)
  params = module.init(jax.random.PRNGKey(seed), np.zeros((1, 8), np.int32))["params"]
  return Model(name, module, params, cfg, tok)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  base = load_corpus("heldout")[:14]
  docs = [Document(d.doc_id, d.text[:400], d.domain) for d in base]
  docs.append(Document("zz-multibyte", "naïve café: 日本語のテキスト, ümlaut ✓ " * 3, "prose"))
  tok = train_bpe([d.text for d in docs], vocab_size=300)
  other = train_bpe([d.text for d in docs[5:]], vocab_size=700)
  model = make_model(tok)
  root = tmp_path_factory.mktemp("record")
  baseline = record(model, docs, SITES, str(root / "baseline"), align_with=[other], **SETTINGS)
  return dict(docs=docs, tok=tok, other=other, model=model, root=root, baseline=baseline)


def read_all(store):
  return {s: store.site(s).read(0, store.site(s).num_units) for s in store.sites}


def assert_bit_identical(a, b):
  assert a.units_done == b.units_done == a.total_units
  xa, xb = read_all(a), read_all(b)
  for s in a.sites:
    np.testing.assert_array_equal(xa[s], xb[s])
    ma, mb = a.site(s).moments(), b.site(s).moments()
    assert ma.count == mb.count
    for f in ("mean", "m2", "min", "max"):
      np.testing.assert_array_equal(getattr(ma, f), getattr(mb, f))
    # The chunk checksums, taken while writing, are those of the data read back.
    np.testing.assert_array_equal(a.checksums(s), b.checksums(s))
  a.verify()
  b.verify()


def slow_reference(model, docs, other, max_len, how):
  """Per document and window: an unpadded forward pass, then per-unit pooling by loops."""
  out = {s: [] for s in SITES}
  for d in docs:
    al = A.align([d.text], [model.tokenizer, other], [d.doc_id])[0]
    tu, ids = al.token_units[0], model.tokenizer.encode(d.text).ids
    acts = {s: np.zeros((len(ids), model.neurons_per_layer), np.float64) for s in SITES}
    for a, b in A.windows(tu, max_len):
      # Right-padding to max_len (masked) leaves a causal model's real tokens as
      # they are, and compiles one shape.
      tokens, mask = np.zeros((1, max_len), np.int32), np.zeros((1, max_len), np.int32)
      tokens[0, :b - a], mask[0, :b - a] = ids[a:b], 1
      _, sites = model(tokens, mask, SITES)
      for s in SITES:
        acts[s][a:b] = np.asarray(sites[s][0, :b - a])
    for s in SITES:
      for u in range(al.num_units):
        rows = acts[s][tu == u]
        out[s].append({"mean": rows.mean(0), "max": rows.max(0), "last": rows[-1]}[how])
  return {s: np.stack(v) for s, v in out.items()}, al


def test_record_equals_slow_reference_and_moments(tiny):
  st, model, docs = tiny["baseline"], tiny["model"], tiny["docs"]
  ref, _ = slow_reference(model, docs, tiny["other"], SETTINGS["max_len"], "mean")
  got = read_all(st)
  for s in SITES:
    assert got[s].shape == ref[s].shape
    np.testing.assert_allclose(got[s], ref[s], rtol=1e-5, atol=1e-5)
    m, x = st.site(s).moments(), got[s].astype(np.float64)
    assert m.count == x.shape[0]
    np.testing.assert_allclose(m.mean, np.mean(x, 0), rtol=1e-6, atol=0)
    np.testing.assert_allclose(m.var, np.var(x, 0), rtol=1e-6, atol=0)
    np.testing.assert_array_equal(m.min, x.min(0))
    np.testing.assert_array_equal(m.max, x.max(0))
  counts = [A.align([d.text], [model.tokenizer, tiny["other"]])[0].num_units for d in docs]
  np.testing.assert_array_equal(np.diff(st.documents["unit_offsets"]), counts)
  assert st.documents["doc_ids"] == [d.doc_id for d in docs]
  assert st.documents["domains"] == [d.domain for d in docs]
  assert st.manifest["settings"]["pooling"] == "mean"


def test_last_pooling_bfloat16(tiny, tmp_path):
  model, docs = tiny["model"], tiny["docs"][:6]
  st = record(model, docs, SITES, str(tmp_path), align_with=[tiny["other"]], pooling="last",
              dtype="bfloat16", **SETTINGS)
  ref, _ = slow_reference(model, docs, tiny["other"], SETTINGS["max_len"], "last")
  for s in SITES:
    x = st.site(s).read(0, st.units_done)
    np.testing.assert_allclose(x, ref[s], rtol=1e-2, atol=1e-2)  # bfloat16 rounding
    m = st.site(s).moments()
    np.testing.assert_allclose(m.var, np.var(x.astype(np.float64), 0), rtol=1e-6, atol=0)


def test_crash_before_commit_then_resume_is_bit_identical(tiny, tmp_path, monkeypatch):
  """Batch 3's rows reach disk but its commit never happens; resume rewrites them."""
  calls = {"n": 0}
  real_commit = S.StoreWriter.commit

  def failing_commit(self, units_done, moments):
    calls["n"] += 1
    if calls["n"] == 3:
      raise RuntimeError("simulated crash")
    real_commit(self, units_done, moments)

  monkeypatch.setattr(S.StoreWriter, "commit", failing_commit)
  path = str(tmp_path / "s")
  with pytest.raises(RuntimeError, match="simulated crash"):  # strictly serial this time
    record(tiny["model"], tiny["docs"], SITES, path, align_with=[tiny["other"]], overlap=False,
           **SETTINGS)
  monkeypatch.setattr(S.StoreWriter, "commit", real_commit)
  partial = S.open_store(path)
  assert 0 < partial.units_done < partial.total_units
  assert partial.site(SITES[0]).num_units == partial.units_done
  resumed = record(tiny["model"], tiny["docs"], SITES, path, align_with=[tiny["other"]],
                   **SETTINGS)
  assert_bit_identical(resumed, tiny["baseline"])


CHILD = """
import dataclasses, json, sys, time
import flax.serialization
from rosetta_jax import store as S
from rosetta_jax.data.corpus import Document
from rosetta_jax.data.tokenizer import Tokenizer
from rosetta_jax.models.base import Model
from rosetta_jax.models.gpt_neox import GPTNeoX, GPTNeoXConfig
from rosetta_jax.recording import record

art = sys.argv[1]
spec = json.load(open(f"{art}/spec.json"))
cfg = GPTNeoXConfig(**spec["config"])
params = flax.serialization.msgpack_restore(open(f"{art}/params.msgpack", "rb").read())
model = Model("tiny", GPTNeoX(cfg), params, cfg, Tokenizer.load(f"{art}/tok"))
docs = [Document(*d) for d in spec["docs"]]
real_commit = S.StoreWriter.commit
def slow_commit(self, units_done, moments):
  real_commit(self, units_done, moments)
  print("COMMIT", units_done, flush=True)
  time.sleep(0.3)
S.StoreWriter.commit = slow_commit
record(model, docs, spec["sites"], spec["store"], align_with=[Tokenizer.load(f"{art}/other")],
       **spec["settings"])
print("DONE", flush=True)
"""


def test_sigkill_then_resume_is_bit_identical(tiny, tmp_path):
  art, path = tmp_path / "art", str(tmp_path / "store")
  tiny["tok"].save(str(art / "tok"))
  tiny["other"].save(str(art / "other"))
  model = tiny["model"]
  (art / "params.msgpack").write_bytes(flax.serialization.msgpack_serialize(
      jax.tree_util.tree_map(np.asarray, model.params)))
  (art / "spec.json").write_text(json.dumps({
      "config": dataclasses.asdict(model.config), "sites": list(SITES), "store": path,
      "settings": SETTINGS,
      "docs": [(d.doc_id, d.text, d.domain) for d in tiny["docs"]]}))
  (art / "child.py").write_text(textwrap.dedent(CHILD))
  proc = subprocess.Popen([sys.executable, str(art / "child.py"), str(art)],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
  commits = 0
  try:
    for line in proc.stdout:
      commits += line.startswith("COMMIT")
      if commits == 3:
        os.kill(proc.pid, signal.SIGKILL)
        break
  finally:
    proc.kill()
    proc.wait()
  assert commits == 3 and proc.returncode == -signal.SIGKILL
  partial = S.open_store(path)
  assert 0 < partial.units_done < partial.total_units
  resumed = record(model, tiny["docs"], SITES, path, align_with=[tiny["other"]], **SETTINGS)
  assert_bit_identical(resumed, tiny["baseline"])


def test_mismatched_recordings_raise(tiny):
  path = str(tiny["root"] / "baseline")
  model, docs, other = tiny["model"], tiny["docs"], tiny["other"]
  # Re-running the identical recording is a no-op resume (through the curated API).
  import rosetta_jax as rj
  assert rj.record(model, docs, SITES, path, align_with=[other], **SETTINGS).complete
  with pytest.raises(ValueError, match="different recording.*model"):
    record(make_model(tiny["tok"], seed=1), docs, SITES, path, align_with=[other], **SETTINGS)
  with pytest.raises(ValueError, match="corpus_hash"):
    record(model, docs[:-1], SITES, path, align_with=[other], **SETTINGS)
  with pytest.raises(ValueError, match="settings"):
    record(model, docs, SITES, path, align_with=[other], pooling="max", **SETTINGS)
  with pytest.raises(ValueError, match="documents_hash|settings"):
    record(model, docs, SITES, path, align_with=None, **SETTINGS)
  with pytest.raises(ValueError, match="sites"):
    record(model, docs, SITES[:1], path, align_with=[other], **SETTINGS)


def test_bad_input_errors(tiny, tmp_path):
  model, docs = tiny["model"], tiny["docs"][:3]
  with pytest.raises(ValueError, match="out of range"):
    record(model, docs, ["layer_5/mlp"], str(tmp_path / "a"), **SETTINGS)
  with pytest.raises(ValueError, match="max_position_embeddings"):
    record(model, docs, SITES, str(tmp_path / "b"), **{**SETTINGS, "max_len": 1024})
  with pytest.raises(ValueError, match="'empty'"):
    record(model, [Document("empty", "", "prose")], SITES, str(tmp_path / "c"), **SETTINGS)
  bad = jax.tree_util.tree_map(lambda x: x, model.params)
  bad["layers_0"]["mlp"]["dense_h_to_4h"]["bias"] = (
      bad["layers_0"]["mlp"]["dense_h_to_4h"]["bias"].at[3].set(np.nan))
  nan_model = Model("nan", model.module, bad, model.config, model.tokenizer)
  with pytest.raises(ValueError, match="'layer_0/mlp': neuron 3 is NaN"):
    record(nan_model, docs, SITES, str(tmp_path / "d"), **SETTINGS)


def test_hf_tokenizer_and_binary_smoke(tiny, tmp_path):
  """``python -m experiments.record`` on a tiny random HF checkpoint with a fast tokenizer."""
  import torch
  import transformers
  hf_dir, workdir = tmp_path / "hf", tmp_path / "work"
  cfg = transformers.GPTNeoXConfig(
      vocab_size=tiny["tok"].vocab_size, hidden_size=32, num_hidden_layers=2,
      num_attention_heads=4, intermediate_size=64, max_position_embeddings=128)
  torch.manual_seed(0)
  transformers.GPTNeoXForCausalLM(cfg).save_pretrained(hf_dir)
  transformers.PreTrainedTokenizerFast(tokenizer_object=tiny["tok"].backend).save_pretrained(
      hf_dir)
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.record", f"--model={hf_dir}", f"--workdir={workdir}",
       "--max_docs=4", "--max_chars=300", "--batch_size=2", "--max_len=64",
       f"--align_with={hf_dir}"], cwd=repo, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  results = json.loads((workdir / "results.json").read_text())
  assert json.loads((workdir / "config.json").read_text())["config"]["max_len"] == 64
  st = S.open_store(results["store"])
  assert st.complete and results["units"] == st.units_done > 100
  assert results["sites"] == {"layer_0/mlp": 64, "layer_1/mlp": 64}
  x = st.site("layer_1/mlp").read(0, st.units_done)
  assert np.isfinite(x).all() and x.std() > 0
  # Aligned with its own tokenizer only: units are tokens (the tokenizer adds no
  # specials), minus tokens sharing one byte span.
  docs = load_corpus("heldout")[:4]
  n_tokens = sum(len(tiny["tok"].encode(d.text[:300]).ids) for d in docs)
  assert 0.9 * n_tokens <= st.units_done <= n_tokens


def test_batch_sharded_over_eight_devices(tiny, tmp_path):
  """Inputs split over a ("data", "model") mesh of 8 fake CPU devices give the same store."""
  from jax.sharding import NamedSharding, PartitionSpec as P
  from rosetta_jax.sharding import make_mesh
  assert len(jax.devices()) == 8
  mesh = make_mesh(data=8, model=1)
  kw = {**SETTINGS, "batch_size": 8}
  docs, model = tiny["docs"][:6], tiny["model"]
  plain = record(model, docs, SITES, str(tmp_path / "plain"), **kw)
  sharded = record(model, docs, SITES, str(tmp_path / "sharded"),
                   batch_sharding=NamedSharding(mesh, P("data", None)), **kw)
  assert sharded.units_done == plain.units_done
  for s in SITES:
    np.testing.assert_allclose(sharded.site(s).read(0, sharded.units_done),
                               plain.site(s).read(0, plain.units_done), rtol=1e-5, atol=1e-6)
