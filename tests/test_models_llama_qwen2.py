"""Llama and Qwen2 ports vs Hugging Face (tiny random configs) through load_model."""

import jax
import numpy as np
import pytest
import transformers
from jax.sharding import Mesh, PartitionSpec as P

from load_helpers import assert_parity, padded_batch, randomize
from rosetta_jax.models import llama, load_model, qwen2


def _hf(kind, **overrides):
  kw = dict(vocab_size=101, hidden_size=48, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, intermediate_size=80, max_position_embeddings=64,
            rope_theta=500.0)
  kw.update(overrides)
  if kind == "llama":
    cfg, cls = transformers.LlamaConfig(**kw), transformers.LlamaForCausalLM
  else:
    cfg, cls = transformers.Qwen2Config(**kw), transformers.Qwen2ForCausalLM
  return randomize(cls(cfg), seed=3)


def _downs(m):
  return [layer.mlp.down_proj for layer in m.model.layers]


@pytest.mark.parametrize("kind,overrides", [
    ("llama", {}),
    ("llama", {"tie_word_embeddings": True, "head_dim": 16, "attention_bias": True}),
    ("qwen2", {}),
    ("qwen2", {"tie_word_embeddings": True, "num_key_value_heads": 1}),
])
def test_parity(tmp_path, kind, overrides):
  hf = _hf(kind, **overrides)
  hf.save_pretrained(tmp_path)
  ours = load_model(tmp_path)
  cls = llama.LlamaConfig if kind == "llama" else qwen2.Qwen2Config
  assert type(ours.config) is cls
  assert ours.config.qkv_bias == (kind == "qwen2" or overrides.get("attention_bias", False))
  tokens, mask = padded_batch(101)
  assert_parity(ours, hf, _downs(hf), tokens, mask)


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_parity_sharded_checkpoint_on_mesh(tmp_path, kind):
  # 4 heads / 2 kv heads on a 4-wide model axis: q splits, k/v fall back; 80 neurons split.
  hf = _hf(kind)
  hf.save_pretrained(tmp_path, max_shard_size="30KB")
  assert (tmp_path / "model.safetensors.index.json").exists()
  mesh = Mesh(np.array(jax.devices()[:8]).reshape(2, 4), ("data", "model"))
  ours = load_model(tmp_path, mesh=mesh)
  layer = ours.params["layers_1"]
  assert layer["mlp"]["up_proj"]["kernel"].sharding.spec == P(None, "model")
  assert layer["mlp"]["down_proj"]["kernel"].sharding.spec == P("model", None)
  assert layer["self_attn"]["q_proj"]["kernel"].sharding.spec == P(None, "model")
  assert layer["self_attn"]["k_proj"]["kernel"].sharding.spec == P()
  tokens, mask = padded_batch(101, seed=5)
  assert_parity(ours, hf, _downs(hf), tokens, mask)


def test_qwen2_sliding_window_is_rejected():
  cfg = transformers.Qwen2Config(vocab_size=101, hidden_size=48, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2,
                                 intermediate_size=80, use_sliding_window=True,
                                 sliding_window=4, max_window_layers=0)
  with pytest.raises(ValueError, match="sliding"):
    qwen2.Qwen2Config.from_hf(cfg)


def test_llama_rope_scaling_is_rejected():
  cfg = transformers.LlamaConfig(vocab_size=101, hidden_size=48, num_hidden_layers=2,
                                 num_attention_heads=4, intermediate_size=80,
                                 rope_scaling={"rope_type": "linear", "factor": 2.0})
  with pytest.raises(ValueError, match="rope_type"):
    llama.LlamaConfig.from_hf(cfg)
