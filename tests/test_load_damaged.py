"""Damaged and wrong inputs: each a clear error naming the file (and tensor or field),
raised before any parameter is placed on a device."""

import json
import shutil

import numpy as np
import pytest
import torch
import transformers

from gguf_helpers import write_gguf
from load_helpers import randomize
from rosetta_jax.models import check_model, hf, load_model

VOCAB = 97


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  """A saved tiny Gemma 2 checkpoint (safetensors) and its PyTorch model."""
  cfg = transformers.Gemma2Config(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2,
                                  num_attention_heads=2, num_key_value_heads=1, head_dim=16,
                                  intermediate_size=48, max_position_embeddings=64)
  model = randomize(transformers.Gemma2ForCausalLM(cfg), seed=11, norm_center=0.0)
  path = tmp_path_factory.mktemp("tiny")
  model.save_pretrained(path)
  return path, model


@pytest.fixture
def no_placement(monkeypatch):
  """Fails the test if load_model places any parameter (the error must come first)."""
  def forbidden(*a, **k):
    raise AssertionError("a parameter was placed before the error was raised")
  monkeypatch.setattr(hf.jax, "device_put", forbidden)


def _copy(tiny, dst):
  shutil.copytree(tiny[0], dst)
  return dst


def _cut(path, size):
  data = path.read_bytes()
  path.write_bytes(data[:size])
  return len(data)


def test_safetensors_cut_in_half(tiny, tmp_path, no_placement):
  d = _copy(tiny, tmp_path / "m")
  f = d / "model.safetensors"
  _cut(f, f.stat().st_size // 2)
  with pytest.raises(ValueError, match=rf"{f}: truncated safetensors file: tensor "
                                       r"'model\.[\w.]+' \[\d+(, \d+)*\] ends at data byte"):
    load_model(d)
  with pytest.raises(ValueError, match=str(f)):
    check_model(d)


def test_safetensors_cut_to_100_bytes(tiny, tmp_path, no_placement):
  d = _copy(tiny, tmp_path / "m")
  f = d / "model.safetensors"
  _cut(f, 100)
  with pytest.raises(ValueError, match=rf"{f}: truncated or corrupt safetensors file: its "
                                       r"header claims \d+ bytes but the file has 100 bytes"):
    load_model(d)


def test_safetensors_corrupt_header(tiny, tmp_path, no_placement):
  d = _copy(tiny, tmp_path / "m")
  f = d / "model.safetensors"
  data = bytearray(f.read_bytes())
  data[8:12] = b"#!@$"  # the header's JSON, broken
  f.write_bytes(bytes(data))
  with pytest.raises(ValueError, match=rf"{f}: corrupt safetensors file: its \d+-byte header "
                                       "is not valid JSON"):
    load_model(d)


def test_safetensors_header_disagrees_with_shape(tiny, tmp_path, no_placement):
  from safetensors.numpy import load_file
  d = _copy(tiny, tmp_path / "m")
  f = d / "model.safetensors"
  tensors = load_file(f)
  name = sorted(tensors)[0]
  header = {name: {"dtype": "F32", "shape": [5, 5], "data_offsets": [0, 96]}}
  raw = json.dumps(header).encode()
  f.write_bytes(len(raw).to_bytes(8, "little") + raw + bytes(96))
  with pytest.raises(ValueError, match=rf"{f}: corrupt safetensors header: tensor "
                                       rf"'{name}' \[5, 5\] F32 needs 100 bytes"):
    load_model(d)


def test_invalid_config_json(tiny, tmp_path, no_placement):
  d = _copy(tiny, tmp_path / "m")
  (d / "config.json").write_text('{"model_type": "gemma2", "hidden_size": 32,,}')
  with pytest.raises(ValueError, match=rf"{d / 'config.json'} is not valid JSON \(.* at line 1 "
                                       r"column \d+\)"):
    load_model(d)
  (d / "config.json").write_bytes(b"\xff\xfe{}")
  with pytest.raises(ValueError, match=rf"{d / 'config.json'} is not valid JSON: byte 0"):
    load_model(d)


def test_invalid_shard_index(tiny, tmp_path, no_placement):
  d = _copy(tiny, tmp_path / "m")
  (d / "model.safetensors.index.json").write_text("{not json")
  with pytest.raises(ValueError, match=r"model\.safetensors\.index\.json is not valid JSON"):
    load_model(d)


def test_weights_without_config(tiny, tmp_path, no_placement):
  d = _copy(tiny, tmp_path / "m")
  (d / "config.json").unlink()
  with pytest.raises(FileNotFoundError, match=rf"{d / 'config.json'} is missing: .* holds "
                                              r"weights \(model\.safetensors\) but no config"):
    load_model(d)


def _bin_dir(tiny, d):
  d.mkdir()
  shutil.copy(tiny[0] / "config.json", d)
  torch.save(tiny[1].state_dict(), d / "pytorch_model.bin")
  return d


def test_torch_bin_truncated_or_garbage(tiny, tmp_path, no_placement):
  d = _bin_dir(tiny, tmp_path / "bin")
  f = d / "pytorch_model.bin"
  _cut(f, f.stat().st_size // 2)
  with pytest.raises(ValueError, match=rf"{f}: cannot read this PyTorch checkpoint, it is "
                                       "truncated or corrupt"):
    load_model(d)
  f.write_text("this is not a checkpoint\n" * 10)
  with pytest.raises(ValueError, match=rf"{f}: cannot read this PyTorch checkpoint"):
    load_model(d)


def test_tokenizer_larger_than_vocabulary(tiny, tmp_path, no_placement):
  from tokenizers import Tokenizer, models, pre_tokenizers
  d = _copy(tiny, tmp_path / "m")
  vocab = {f"w{i}": i for i in range(VOCAB + 3)}
  vocab["[UNK]"] = VOCAB + 3
  tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
  tok.pre_tokenizer = pre_tokenizers.Whitespace()
  transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]").save_pretrained(d)
  with pytest.raises(ValueError, match=rf"the tokenizer \({d / 'tokenizer.json'}.*\) has 101 "
                                       rf"tokens but the model's vocabulary \({d / 'config.json'}"
                                       r"\) has 97"):
    load_model(d)


def test_corrupt_tokenizer_json(tiny, tmp_path, no_placement):
  d = _copy(tiny, tmp_path / "m")
  (d / "tokenizer.json").write_text('{"version": "1.0", "model": {"type": "Nope"}}')
  with pytest.raises(ValueError, match=rf"{d}: cannot load the tokenizer \(tokenizer\.json\)"):
    load_model(d)


# ----------------------------------------------------------------------------
# GGUF
# ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_gguf(tiny, tmp_path_factory):
  path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
  write_gguf(path, tiny[1], "gemma2", tokens=VOCAB)
  return path


def test_text_file_renamed_gguf(tmp_path, no_placement):
  f = tmp_path / "notes.gguf"
  f.write_text("hello, these are my notes about the model\n")
  with pytest.raises(ValueError, match=rf"{f} is not a GGUF file: it starts with b'hell', "
                                       "not b'GGUF'"):
    load_model(f)
  f.write_text("hi")  # shorter than any header
  with pytest.raises(ValueError, match=rf"{f} is not a GGUF file"):
    load_model(f)


def test_gguf_cut_in_half(tiny_gguf, tmp_path, no_placement):
  f = tmp_path / "half.gguf"
  shutil.copy(tiny_gguf, f)
  size = _cut(f, tiny_gguf.stat().st_size // 2)
  with pytest.raises(ValueError, match=rf"{f}: truncated GGUF file: tensor 'blk\.\d+\.[\w.]+' "
                                       rf".* but the file has {size // 2} bytes"):
    load_model(f)


def test_gguf_cut_in_the_metadata(tiny_gguf, tmp_path, no_placement):
  f = tmp_path / "short.gguf"
  shutil.copy(tiny_gguf, f)
  _cut(f, 300)  # inside the metadata (the vocabulary)
  with pytest.raises(ValueError, match=rf"{f}: truncated or corrupt GGUF file: cannot read .* "
                                       r"at byte \d+ \(the file has 300 bytes\)"):
    load_model(f)


def test_gguf_corrupt_counts(tiny_gguf, tmp_path, no_placement):
  f = tmp_path / "counts.gguf"
  data = bytearray(tiny_gguf.read_bytes())
  data[8:16] = (10 ** 15).to_bytes(8, "little")  # tensor count
  f.write_bytes(bytes(data))
  with pytest.raises(ValueError, match=rf"{f}: corrupt GGUF header: 1000000000000000 tensors"):
    load_model(f)


def test_gguf_vocabulary_larger_than_embedding(tiny, tmp_path, no_placement):
  f = tmp_path / "wrongtok.gguf"
  write_gguf(f, tiny[1], "gemma2", tokens=VOCAB + 20, extra={"vocab_size": VOCAB})
  with pytest.raises(ValueError, match=rf"{f}: tokenizer\.ggml\.tokens has 117 tokens but "
                                       r"the embedding token_embd\.weight has 97 rows"):
    load_model(f)


def test_plain_file_is_not_a_model(tiny, tmp_path):
  with pytest.raises(ValueError, match=r"model\.safetensors is a file, but not a GGUF file"):
    load_model(tiny[0] / "model.safetensors")
