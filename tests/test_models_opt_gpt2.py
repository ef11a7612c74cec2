"""OPT and GPT-2 ports vs Hugging Face (tiny random configs) through load_model."""

import jax
import numpy as np
import pytest
import transformers
from jax.sharding import Mesh, PartitionSpec as P

from load_helpers import assert_parity, padded_batch, randomize
from rosetta_jax.models import gpt2, load_model, opt


def _opt(**overrides):
  kw = dict(vocab_size=103, hidden_size=40, num_hidden_layers=2, num_attention_heads=4,
            ffn_dim=72, max_position_embeddings=32, word_embed_proj_dim=40)
  kw.update(overrides)
  return randomize(transformers.OPTForCausalLM(transformers.OPTConfig(**kw)), seed=6)


def _gpt2(**overrides):
  kw = dict(vocab_size=103, n_embd=40, n_layer=3, n_head=4, n_inner=None, n_positions=32)
  kw.update(overrides)
  return randomize(transformers.GPT2LMHeadModel(transformers.GPT2Config(**kw)), seed=7)


def _opt_downs(m):
  return [layer.fc2 for layer in m.model.decoder.layers]


def _gpt2_downs(m):
  return [block.mlp.c_proj for block in m.transformer.h]


@pytest.mark.parametrize("overrides", [
    {},
    # OPT-350m style: projected embeddings, post-norm layers, untied head.
    {"word_embed_proj_dim": 24, "do_layer_norm_before": False, "tie_word_embeddings": False},
])
def test_opt_parity(tmp_path, overrides):
  hf = _opt(**overrides)
  hf.save_pretrained(tmp_path)
  ours = load_model(tmp_path)
  assert isinstance(ours.config, opt.OPTConfig)
  tokens, mask = padded_batch(103)
  assert_parity(ours, hf, _opt_downs(hf), tokens, mask)


@pytest.mark.parametrize("overrides", [{}, {"n_inner": 56, "activation_function": "relu"}])
def test_gpt2_parity(tmp_path, overrides):
  hf = _gpt2(**overrides)
  hf.save_pretrained(tmp_path)
  ours = load_model(tmp_path)
  assert isinstance(ours.config, gpt2.GPT2Config)
  assert ours.neurons_per_layer == (overrides.get("n_inner") or 160)
  tokens, mask = padded_batch(103, seed=1)
  assert_parity(ours, hf, _gpt2_downs(hf), tokens, mask)


@pytest.mark.parametrize("family", ["opt", "gpt2"])
def test_parity_sharded_checkpoint_on_mesh(tmp_path, family):
  # 4 heads and 72 / 160 neurons on a 4-wide model axis; vocab 103 does not split.
  hf = _opt() if family == "opt" else _gpt2()
  hf.save_pretrained(tmp_path, max_shard_size="20KB")
  assert (tmp_path / "model.safetensors.index.json").exists()
  mesh = Mesh(np.array(jax.devices()[:8]).reshape(2, 4), ("data", "model"))
  ours = load_model(tmp_path, mesh=mesh)
  if family == "opt":
    layer, up, down, emb = ours.params["layers_0"], "fc1", "fc2", "embed_tokens"
    q = layer["self_attn"]["q_proj"]["kernel"]
  else:
    layer, up, down, emb = ours.params["h_0"]["mlp"], "c_fc", "c_proj", "wte"
    q = ours.params["h_0"]["attn"]["q_proj"]["kernel"]
  assert layer[up]["kernel"].sharding.spec == P(None, "model")
  assert layer[down]["kernel"].sharding.spec == P("model", None)
  assert q.sharding.spec == P(None, "model")
  assert ours.params[emb]["embedding"].sharding.spec == P(None, None)  # 103 % 4 != 0
  tokens, mask = padded_batch(103, seed=3)
  downs = _opt_downs(hf) if family == "opt" else _gpt2_downs(hf)
  assert_parity(ours, hf, downs, tokens, mask)
