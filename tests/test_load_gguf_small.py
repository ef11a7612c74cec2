"""GGUF files the tests write (``gguf`` package) vs Hugging Face's GGUF reader.

``load_model("x.gguf")`` on tiny random Gemma 2 / Gemma 3 / Qwen2 / Llama models,
written as llama.cpp's converter writes them (norms as 1 + w, llama's q/k
permutation, the tokenizer in the metadata), against
``AutoModelForCausalLM.from_pretrained(dir, gguf_file=...)``; where the GGUF states
something transformers' reader drops (Gemma 2 soft-caps, Gemma 3 rope scaling),
against the PyTorch model the file was written from. Unsupported files are refused
from the architecture alone.
"""

import time

import numpy as np
import pytest
import torch
import transformers

from gguf_helpers import vocabulary, write_gguf
from load_helpers import TOL, assert_parity, hf_forward, max_diff, randomize
from rosetta_jax.models import check_model, gguf_io, load_model

VOCAB = 100
# head_dim 256 = query_pre_attn_scalar: transformers' GGUF reader assumes 256 for
# every Gemma file, llama.cpp the head size; the two agree here (and on every real
# size but 27B, tested apart below).
GEMMA = dict(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=6, num_attention_heads=2,
             num_key_value_heads=1, head_dim=256, intermediate_size=80,
             max_position_embeddings=64, sliding_window=4, query_pre_attn_scalar=256)


def _batch(seed=0, seq=11):
  rng = np.random.default_rng(seed)
  tokens = rng.integers(5, VOCAB, size=(3, seq)).astype(np.int64)
  mask = np.ones_like(tokens)
  mask[1, seq - 3:] = 0
  mask[2, :3] = 0
  tokens[mask == 0] = 0
  return tokens, mask


def _downs(m):
  return [layer.mlp.down_proj for layer in m.model.layers]


def _model(kind, seed=0, **overrides):
  if kind == "gemma2":
    cfg = transformers.Gemma2Config(**dict(GEMMA, **overrides))
    return randomize(transformers.Gemma2ForCausalLM(cfg), seed=seed, norm_center=0.0)
  if kind == "gemma3":
    cfg = transformers.Gemma3TextConfig(**dict(GEMMA, **overrides))
    return randomize(transformers.Gemma3ForCausalLM(cfg), seed=seed, norm_center=0.0)
  kw = dict(vocab_size=VOCAB, hidden_size=48, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, intermediate_size=80, max_position_embeddings=64,
            rope_theta=500.0, **overrides)
  if kind == "qwen2":
    return randomize(transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**kw)), seed=seed)
  return randomize(transformers.LlamaForCausalLM(transformers.LlamaConfig(**kw)), seed=seed)


def _hf_gguf(path):
  return transformers.AutoModelForCausalLM.from_pretrained(
      str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()


@pytest.mark.parametrize("kind", ["gemma2", "gemma3", "qwen2", "llama"])
def test_gguf_matches_transformers_gguf_reader(tmp_path, kind):
  from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint
  path = tmp_path / f"tiny-{kind}.gguf"
  gemma = kind.startswith("gemma")
  # Gemma files carry a SentencePiece vocabulary; the others state their vocab_size.
  write_gguf(path, _model(kind, seed=1), kind, tokens=VOCAB if gemma else None,
             extra=None if gemma else {"vocab_size": VOCAB})
  # The config, key for key, as transformers' GGUF reader derives it.
  ref_config = load_gguf_checkpoint(str(path), return_tensors=False)["config"]
  assert gguf_io.hf_config_dict(gguf_io.read_header(path)) == ref_config
  ours = load_model(path)  # the file itself, no directory or gguf_file=
  assert ours.name == str(path)
  if gemma:
    assert ours.tokenizer is not None and len(ours.tokenizer) == VOCAB
    assert ours.tokenizer.convert_ids_to_tokens(7) == vocabulary(VOCAB)[7]
    # The class is named directly (no second full parse): the same tokenizer as
    # AutoTokenizer builds from the file.
    auto = transformers.AutoTokenizer.from_pretrained(str(tmp_path), gguf_file=path.name)
    assert type(ours.tokenizer) is type(auto)
    assert ours.tokenizer.backend_tokenizer.to_str() == auto.backend_tokenizer.to_str()
    assert ours.tokenizer.init_kwargs == auto.init_kwargs
  if kind == "gemma3":
    assert ours.config.layer_types.count("full_attention") == 1  # layer 5 of 6
  hf = _hf_gguf(path)
  assert_parity(ours, hf, _downs(hf), *_batch(seed=2))


def test_gemma2_gguf_softcaps_are_read_from_the_file(tmp_path):
  # transformers' GGUF reader keeps Gemma2Config's 50 / 30; llama.cpp and the port
  # read the file's values. Reference: the PyTorch model the file was written from.
  model = _model("gemma2", seed=3, attn_logit_softcapping=2.0, final_logit_softcapping=3.0)
  path = tmp_path / "capped.gguf"
  write_gguf(path, model, "gemma2")
  ours = load_model(path)
  assert (ours.config.attn_logit_softcapping, ours.config.final_logit_softcapping) == (2.0, 3.0)
  assert ours.tokenizer is None  # the file carries no vocabulary
  tokens, mask = _batch(seed=4)
  assert_parity(ours, model, _downs(model), tokens, mask)
  # llama.cpp's defaults when the keys are absent: 50 and 30.
  write_gguf(tmp_path / "bare.gguf", model, "gemma2",
             skip_keys=("attn_logit_softcapping", "final_logit_softcapping"))
  cfg = check_model(tmp_path / "bare.gguf")
  assert (cfg.attn_logit_softcapping, cfg.final_logit_softcapping) == (50.0, 30.0)


def test_gemma3_gguf_linear_rope_scaling(tmp_path):
  # The 4B-27B files state rope.scaling.type=linear; transformers' GGUF reader drops it.
  model = _model("gemma3", seed=5, rope_scaling={"rope_type": "linear", "factor": 8.0},
                 rope_theta=300.0)
  path = tmp_path / "scaled.gguf"
  write_gguf(path, model, "gemma3", tokens=VOCAB)
  ours = load_model(path)
  assert (ours.config.rotary_base, ours.config.rotary_linear_factor) == (300.0, 8.0)
  assert (ours.config.local_rotary_base, ours.config.local_rotary_linear_factor) == (1e4, 1.0)
  tokens, mask = _batch(seed=6, seq=14)
  assert_parity(ours, model, _downs(model), tokens, mask)
  # ... and it matters: transformers' reading of the same file differs from the model.
  ref, _ = hf_forward(model, _downs(model), tokens, mask)
  dropped, _ = hf_forward(_hf_gguf(path), _downs(model), tokens, mask)
  assert max_diff(dropped, ref, mask) > 10 * TOL


def test_gemma_27b_attention_scale_follows_llama_cpp(tmp_path):
  # llama.cpp scales a 27B model (46 layers for Gemma 2) by (hidden / heads) ** -0.5.
  small = dict(hidden_size=32, num_attention_heads=2, num_key_value_heads=1, head_dim=8,
               intermediate_size=16, vocab_size=VOCAB)
  write_gguf(tmp_path / "g27.gguf", _model("gemma2", num_hidden_layers=46, **small), "gemma2")
  assert check_model(tmp_path / "g27.gguf").query_pre_attn_scalar == 16
  write_gguf(tmp_path / "g9.gguf", _model("gemma2", num_hidden_layers=4, **small), "gemma2")
  assert check_model(tmp_path / "g9.gguf").query_pre_attn_scalar == 8


def test_unknown_gemma_key_is_refused(tmp_path):
  path = tmp_path / "odd.gguf"
  write_gguf(path, _model("gemma2", num_hidden_layers=2), "gemma2",
             extra={"attention.new_switch": 1})
  with pytest.raises(ValueError, match=r"odd\.gguf.*gemma2\.attention\.new_switch"):
    load_model(path)


def test_unsupported_architecture_is_refused_from_the_header(tmp_path, monkeypatch):
  """A 262144-token vocabulary and a 64 MiB tensor: refused without parsing either."""
  import gguf
  path = tmp_path / "big-mamba.gguf"
  w = gguf.GGUFWriter(str(path), "mamba")
  w.add_block_count(2)
  w.add_token_list([f"t{i}" for i in range(262144)])
  w.add_tensor("token_embd.weight", np.zeros((65536, 256), np.float32))
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()

  def forbidden(*a, **k):
    raise AssertionError("the full GGUF parse ran before the architecture check")
  monkeypatch.setattr(gguf, "GGUFReader", forbidden)
  monkeypatch.setattr(gguf_io, "read_header", forbidden)
  import transformers.modeling_gguf_pytorch_utils as tg
  monkeypatch.setattr(tg, "load_gguf_checkpoint", forbidden)
  start = time.perf_counter()
  with pytest.raises(ValueError, match=r"big-mamba\.gguf: GGUF architecture 'mamba' is not "
                                       r"supported.*gemma2"):
    load_model(path)
  assert time.perf_counter() - start < 1.0


def test_gguf_path_forms(tmp_path):
  model = _model("gemma2", seed=7, num_hidden_layers=2)
  write_gguf(tmp_path / "m.gguf", model, "gemma2")
  a = load_model(tmp_path / "m.gguf")
  b = load_model(str(tmp_path), gguf_file="m.gguf")
  c = load_model(str(tmp_path / "m.gguf"))
  for other in (b, c):
    np.testing.assert_array_equal(np.asarray(a.params["layers_1"]["mlp"]["up_proj"]["kernel"]),
                                  np.asarray(other.params["layers_1"]["mlp"]["up_proj"]["kernel"]))
  with pytest.raises(FileNotFoundError, match=r"GGUF file .*nope\.gguf' does not exist"):
    load_model(tmp_path / "nope.gguf")
