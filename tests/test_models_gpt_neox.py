"""GPT-NeoX (Pythia) port vs Hugging Face GPTNeoXForCausalLM, through load_model."""

import jax
import numpy as np
import pytest
import transformers
from jax.sharding import Mesh

from load_helpers import assert_parity, padded_batch, randomize
from rosetta_jax.models import gpt_neox, load_model


def _hf(**overrides):
  kw = dict(vocab_size=97, hidden_size=48, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=72, max_position_embeddings=64, rotary_pct=0.5)
  kw.update(overrides)
  cfg = transformers.GPTNeoXConfig(**kw)
  return randomize(transformers.GPTNeoXForCausalLM(cfg), seed=1)


def _downs(m):
  return [layer.mlp.dense_4h_to_h for layer in m.gpt_neox.layers]


@pytest.mark.parametrize("overrides", [{}, {"use_parallel_residual": False,
                                            "tie_word_embeddings": True}])
def test_parity(tmp_path, overrides):
  hf = _hf(**overrides)
  hf.save_pretrained(tmp_path)
  ours = load_model(tmp_path)
  assert isinstance(ours.config, gpt_neox.GPTNeoXConfig)
  assert ours.neurons_per_layer == 72 and ours.num_layers == 2
  tokens, mask = padded_batch(97)
  assert_parity(ours, hf, _downs(hf), tokens, mask)


def test_parity_sharded_checkpoint_on_mesh(tmp_path):
  hf = _hf(num_attention_heads=3)  # 3 heads, 72 neurons: a 4-wide model axis splits the
  hf.save_pretrained(tmp_path, max_shard_size="20KB")  # neurons but not the heads
  assert (tmp_path / "model.safetensors.index.json").exists()
  mesh = Mesh(np.array(jax.devices()[:8]).reshape(2, 4), ("data", "model"))
  ours = load_model(tmp_path, mesh=mesh)
  fc = ours.params["layers_0"]["mlp"]["dense_h_to_4h"]["kernel"]
  assert fc.sharding.spec == jax.sharding.PartitionSpec(None, "model")
  qkv = ours.params["layers_0"]["attention"]["query_key_value"]["kernel"]
  assert qkv.sharding.spec == jax.sharding.PartitionSpec()  # 3 heads do not split in 4
  tokens, mask = padded_batch(97, seed=2)
  assert_parity(ours, hf, _downs(hf), tokens, mask)
