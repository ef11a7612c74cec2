"""Gemma 2 and Gemma 3 ports vs Hugging Face (tiny random configs) through load_model.

Sequences are longer than the sliding window and the batch is padded on both sides,
so local and global layers differ; each parity test also checks that what it
exercises matters (the window, the soft-caps, the rotary bases), so a port that
ignored it could not pass.
"""

import dataclasses
import json

import jax
import numpy as np
import pytest
import transformers
from jax.sharding import Mesh, PartitionSpec as P

from load_helpers import TOL, assert_parity, hf_forward, max_diff, randomize
from rosetta_jax.models import gemma, load_model

VOCAB = 101
TEXT = dict(vocab_size=VOCAB, hidden_size=48, num_hidden_layers=4, num_attention_heads=4,
            num_key_value_heads=2, head_dim=16, intermediate_size=80,
            max_position_embeddings=64, sliding_window=4, query_pre_attn_scalar=24)


def long_padded_batch(seed: int = 0, seq: int = 12):
  """tokens [3, seq]: a full row, a right-padded row, a left-padded row (all > window)."""
  rng = np.random.default_rng(seed)
  tokens = rng.integers(5, VOCAB, size=(3, seq)).astype(np.int64)
  mask = np.ones((3, seq), np.int64)
  mask[1, seq - 3:] = 0
  mask[2, :3] = 0
  tokens[mask == 0] = 0
  return tokens, mask


def _downs(m):
  inner = m.model.language_model if hasattr(m.model, "language_model") else m.model
  return [layer.mlp.down_proj for layer in inner.layers]


def _gemma2(**overrides):
  kw = dict(TEXT, attn_logit_softcapping=2.0, final_logit_softcapping=3.0, rope_theta=500.0)
  kw.update(overrides)
  return randomize(transformers.Gemma2ForCausalLM(transformers.Gemma2Config(**kw)), seed=3,
                   norm_center=0.0)


def _gemma3_config(**overrides):
  kw = dict(TEXT, sliding_window_pattern=2, rope_theta=500.0, rope_local_base_freq=20.0,
            rope_scaling={"rope_type": "linear", "factor": 4.0})
  kw.update(overrides)
  return transformers.Gemma3TextConfig(**kw)


def _gemma3(**overrides):
  return randomize(transformers.Gemma3ForCausalLM(_gemma3_config(**overrides)), seed=5,
                   norm_center=0.0)


def _differs(ours, changes, hf, tokens, mask):
  """max |logits| difference between HF and our model with ``changes`` to its config."""
  cfg = dataclasses.replace(ours.config, **changes)
  logits, _ = ours.module.__class__(cfg).apply({"params": ours.params}, tokens, mask)
  ref, _ = hf_forward(hf, _downs(hf), tokens, mask)
  return max_diff(logits, ref, mask)


def test_gemma2_parity(tmp_path):
  hf = _gemma2()
  hf.save_pretrained(tmp_path)
  ours = load_model(tmp_path)
  assert type(ours.config) is gemma.Gemma2Config
  assert ours.config.layer_types == ("sliding_attention", "full_attention") * 2
  assert ours.config.query_pre_attn_scalar == 24.0
  tokens, mask = long_padded_batch()
  assert_parity(ours, hf, _downs(hf), tokens, mask)
  # What the batch exercises matters: the window, each soft-cap, the attention scale.
  for change in ({"sliding_window": 10 ** 6}, {"attn_logit_softcapping": None},
                 {"final_logit_softcapping": None}, {"query_pre_attn_scalar": 16.0}):
    assert _differs(ours, change, hf, tokens, mask) > 10 * TOL, change


def test_gemma2_biases_untied_custom_layer_types(tmp_path):
  hf = _gemma2(attention_bias=True, tie_word_embeddings=False, num_key_value_heads=1,
               num_hidden_layers=3, attn_logit_softcapping=None, final_logit_softcapping=None,
               layer_types=["full_attention", "sliding_attention", "sliding_attention"])
  hf.save_pretrained(tmp_path)
  ours = load_model(tmp_path)
  assert ours.config.attention_bias and not ours.config.tie_word_embeddings
  assert "lm_head" in ours.params and "bias" in ours.params["layers_0"]["self_attn"]["o_proj"]
  tokens, mask = long_padded_batch(seed=1)
  assert_parity(ours, hf, _downs(hf), tokens, mask)


def test_gemma3_parity(tmp_path):
  hf = _gemma3()
  hf.save_pretrained(tmp_path)
  ours = load_model(tmp_path)
  cfg = ours.config
  assert type(cfg) is gemma.Gemma3Config and cfg.qk_norm
  assert (cfg.rotary_base, cfg.rotary_linear_factor, cfg.local_rotary_base) == (500.0, 4.0, 20.0)
  assert cfg.attn_logit_softcapping is None and cfg.final_logit_softcapping is None
  tokens, mask = long_padded_batch(seed=2)
  assert_parity(ours, hf, _downs(hf), tokens, mask)
  for change in ({"sliding_window": 10 ** 6}, {"local_rotary_base": 500.0},
                 {"rotary_linear_factor": 1.0}):
    assert _differs(ours, change, hf, tokens, mask) > 10 * TOL, change


def test_gemma3_default_pattern_and_final_softcap(tmp_path):
  # Seven layers with Gemma 3's own pattern: layers 0-4 local, 5 global, 6 local.
  hf = _gemma3(num_hidden_layers=7, sliding_window_pattern=6, rope_scaling=None,
               final_logit_softcapping=4.0)
  hf.save_pretrained(tmp_path)
  ours = load_model(tmp_path)
  assert ours.config.layer_types == ("sliding_attention",) * 5 + (
      "full_attention", "sliding_attention")
  tokens, mask = long_padded_batch(seed=3)
  assert_parity(ours, hf, _downs(hf), tokens, mask)


def test_gemma3_multimodal_checkpoint_loads_its_text_decoder(tmp_path):
  text = dict(TEXT, sliding_window_pattern=2, rope_theta=500.0, rope_local_base_freq=20.0,
              rope_scaling={"rope_type": "linear", "factor": 4.0})
  vision = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=1,
                num_attention_heads=2, image_size=28, patch_size=14)
  cfg = transformers.Gemma3Config(text_config=text, vision_config=vision,
                                  mm_tokens_per_image=4, image_token_index=100,
                                  boi_token_index=98, eoi_token_index=99)
  hf = randomize(transformers.Gemma3ForConditionalGeneration(cfg), seed=6, norm_center=0.0)
  hf.save_pretrained(tmp_path)
  ours = load_model(tmp_path)
  assert type(ours.config) is gemma.Gemma3Config and ours.config.rotary_linear_factor == 4.0
  tokens, mask = long_padded_batch(seed=4)
  tokens = np.minimum(tokens, 97)  # text tokens only
  assert_parity(ours, hf, _downs(hf), tokens, mask)


def test_gemma2_sharded_checkpoint_on_mesh(tmp_path):
  # 4 heads / 2 kv heads on a 4-wide model axis: q splits, k/v fall back; 80 neurons split.
  hf = _gemma2()
  hf.save_pretrained(tmp_path, max_shard_size="30KB")
  assert (tmp_path / "model.safetensors.index.json").exists()
  mesh = Mesh(np.array(jax.devices()[:8]).reshape(2, 4), ("data", "model"))
  ours = load_model(tmp_path, mesh=mesh)
  layer = ours.params["layers_1"]
  assert layer["mlp"]["up_proj"]["kernel"].sharding.spec == P(None, "model")
  assert layer["mlp"]["down_proj"]["kernel"].sharding.spec == P("model", None)
  assert layer["self_attn"]["q_proj"]["kernel"].sharding.spec == P(None, "model")
  assert layer["self_attn"]["k_proj"]["kernel"].sharding.spec == P()
  assert ours.params["embed_tokens"]["embedding"].sharding.spec == P(None, None)  # 101 rows
  tokens, mask = long_padded_batch(seed=5)
  assert_parity(ours, hf, _downs(hf), tokens, mask)


# Real config.json files (gemma-2-2b, gemma-3-1b-pt; sizes cut down) load unchanged.
REAL_GEMMA2 = {
    "architectures": ["Gemma2ForCausalLM"], "attention_bias": False,
    "attention_dropout": 0.0, "attn_logit_softcapping": 50.0, "bos_token_id": 2,
    "cache_implementation": "hybrid", "eos_token_id": 1, "final_logit_softcapping": 30.0,
    "head_dim": 16, "hidden_act": "gelu_pytorch_tanh", "hidden_activation": "gelu_pytorch_tanh",
    "hidden_size": 48, "initializer_range": 0.02, "intermediate_size": 80,
    "max_position_embeddings": 8192, "model_type": "gemma2", "num_attention_heads": 4,
    "num_hidden_layers": 2, "num_key_value_heads": 2, "pad_token_id": 0,
    "query_pre_attn_scalar": 16, "rms_norm_eps": 1e-06, "rope_theta": 10000.0,
    "sliding_window": 4096, "torch_dtype": "float32", "transformers_version": "4.42.4",
    "use_cache": True, "vocab_size": VOCAB}
REAL_GEMMA3 = {
    "architectures": ["Gemma3ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
    "attn_logit_softcapping": None, "bos_token_id": 2, "cache_implementation": "hybrid",
    "eos_token_id": [1, 106], "final_logit_softcapping": None, "head_dim": 16,
    "hidden_activation": "gelu_pytorch_tanh", "hidden_size": 48, "initializer_range": 0.02,
    "intermediate_size": 80, "max_position_embeddings": 32768, "model_type": "gemma3_text",
    "num_attention_heads": 4, "num_hidden_layers": 7, "num_key_value_heads": 1,
    "pad_token_id": 0, "query_pre_attn_scalar": 16, "rms_norm_eps": 1e-06,
    "rope_local_base_freq": 10000, "rope_scaling": None, "rope_theta": 1000000,
    "sliding_window": 512, "sliding_window_pattern": 6, "torch_dtype": "bfloat16",
    "transformers_version": "4.50.0.dev0", "use_cache": True, "vocab_size": VOCAB}


@pytest.mark.parametrize("raw,cls", [(REAL_GEMMA2, gemma.Gemma2Config),
                                     (REAL_GEMMA3, gemma.Gemma3Config)])
def test_real_config_json_is_accepted(tmp_path, raw, cls):
  (tmp_path / "config.json").write_text(json.dumps(raw))
  hf_config = transformers.AutoConfig.from_pretrained(tmp_path)
  cfg = cls.from_hf(hf_config)
  assert cfg.num_layers == raw["num_hidden_layers"]
  if cls is gemma.Gemma3Config:
    assert cfg.layer_types[5] == "full_attention" and cfg.layer_types.count("full_attention") == 1
    assert (cfg.rotary_base, cfg.local_rotary_base) == (1e6, 1e4)
  else:
    assert (cfg.attn_logit_softcapping, cfg.final_logit_softcapping) == (50.0, 30.0)


@pytest.mark.parametrize("factory,field", [
    (lambda: _gemma3_config(attn_logit_softcapping=10.0), "attn_logit_softcapping"),
    (lambda: _gemma3_config(use_bidirectional_attention=True), "use_bidirectional_attention"),
    (lambda: _gemma3_config(rope_scaling={"rope_type": "yarn", "factor": 4.0,
                                          "original_max_position_embeddings": 16}), "yarn"),
    (lambda: transformers.Gemma2Config(**TEXT, rope_scaling={"rope_type": "linear",
                                                             "factor": 2.0}), "rope_type"),
    (lambda: transformers.Gemma2Config(**TEXT, use_bidirectional_attention=True),
     "use_bidirectional_attention"),
])
def test_unsupported_fields_are_refused(factory, field):
  hf_config = factory()
  cls = gemma.Gemma2Config if hf_config.model_type == "gemma2" else gemma.Gemma3Config
  with pytest.raises(ValueError, match=field):
    cls.from_hf(hf_config)
