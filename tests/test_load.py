"""load_model: file formats, the HF cache, dtypes, tokenizers, and its errors."""

import json
import shutil

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from load_helpers import assert_parity, padded_batch, randomize
from rosetta_jax.models import hf as hf_loader
from rosetta_jax.models import load_model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  """A saved tiny GPT-NeoX checkpoint and its PyTorch model."""
  cfg = transformers.GPTNeoXConfig(vocab_size=97, hidden_size=32, num_hidden_layers=2,
                                   num_attention_heads=4, intermediate_size=48,
                                   max_position_embeddings=64)
  model = randomize(transformers.GPTNeoXForCausalLM(cfg), seed=9)
  path = tmp_path_factory.mktemp("tiny")
  model.save_pretrained(path)
  return path, model


def _copy(src, dst):
  shutil.copytree(src, dst)
  return dst


def _downs(m):
  return [layer.mlp.dense_4h_to_h for layer in m.gpt_neox.layers]


def test_pytorch_bin_checkpoint(tiny, tmp_path):
  src, model = tiny
  # transformers 5 writes only safetensors: write the legacy format by hand.
  (tmp_path / "bin").mkdir()
  shutil.copy(src / "config.json", tmp_path / "bin")
  torch.save(model.state_dict(), tmp_path / "bin" / "pytorch_model.bin")
  ours = load_model(tmp_path / "bin")
  tokens, mask = padded_batch(97)
  assert_parity(ours, model, _downs(model), tokens, mask)


def test_hub_cache_offline(tiny, tmp_path, monkeypatch):
  src, model = tiny
  snap = tmp_path / "hub" / "models--acme--tiny-neox" / "snapshots" / "0123abcd"
  shutil.copytree(src, snap)
  (snap.parents[1] / "refs").mkdir()
  (snap.parents[1] / "refs" / "main").write_text("0123abcd")
  monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
  import huggingface_hub.constants as hc
  monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hub"))
  ours = load_model("acme/tiny-neox")
  assert ours.name == "acme/tiny-neox" and ours.num_layers == 2
  with pytest.raises(FileNotFoundError, match="Hugging Face cache"):
    load_model("acme/not-there")


def test_bfloat16(tiny):
  src, model = tiny
  ours = load_model(src, dtype=jnp.bfloat16)
  kernel = ours.params["layers_0"]["mlp"]["dense_h_to_4h"]["kernel"]
  assert kernel.dtype == jnp.bfloat16
  tokens, mask = padded_batch(97)
  logits, _ = ours(tokens, mask)
  with torch.no_grad():
    ref = model(input_ids=torch.as_tensor(tokens), attention_mask=torch.as_tensor(mask)).logits
  err = np.abs(np.asarray(logits) - ref.numpy())[mask.astype(bool)].max()
  assert 0 < err < 0.1 * np.abs(ref.numpy()).max()  # bf16: close, not exact


def test_tokenizer_is_loaded(tiny, tmp_path):
  from tokenizers import Tokenizer, models, pre_tokenizers
  d = _copy(tiny[0], tmp_path / "m")
  vocab = {w: i for i, w in enumerate(["[UNK]", "[PAD]", "hello", "world", "neurons"])}
  tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
  tok.pre_tokenizer = pre_tokenizers.Whitespace()
  fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]",
                                              pad_token="[PAD]")
  fast.save_pretrained(d)
  ours = load_model(d)
  assert ours.tokenizer is not None and ours.tokenizer.is_fast
  assert ours.tokenizer("hello neurons")["input_ids"] == [2, 4]
  assert load_model(tiny[0]).tokenizer is None


def test_missing_directory_and_files(tiny, tmp_path):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    load_model(tmp_path / "nope")
  d = _copy(tiny[0], tmp_path / "noconfig")
  (d / "config.json").unlink()
  with pytest.raises(FileNotFoundError, match="config.json"):
    load_model(d)
  d = _copy(tiny[0], tmp_path / "noweights")
  (d / "model.safetensors").unlink()
  with pytest.raises(FileNotFoundError, match="no weights"):
    load_model(d)


def test_missing_shard(tiny, tmp_path):
  tiny[1].save_pretrained(tmp_path / "s", max_shard_size="10KB")
  shards = sorted((tmp_path / "s").glob("model-*.safetensors"))
  shards[-1].unlink()
  with pytest.raises(FileNotFoundError, match=shards[-1].name):
    load_model(tmp_path / "s")


def _edit_config(d, **changes):
  cfg = json.loads((d / "config.json").read_text())
  cfg.update(changes)
  (d / "config.json").write_text(json.dumps(cfg))


def test_unknown_model_type(tiny, tmp_path):
  d = _copy(tiny[0], tmp_path / "m")
  _edit_config(d, model_type="mamba")
  with pytest.raises(ValueError, match="unknown model_type 'mamba'.*config.json"):
    load_model(d)


def test_shape_mismatch_names_tensor(tiny, tmp_path):
  d = _copy(tiny[0], tmp_path / "m")
  _edit_config(d, intermediate_size=50)
  with pytest.raises(ValueError, match=r"model.safetensors: tensor 'gpt_neox.layers.0.mlp"):
    load_model(d)


def test_unsupported_field_is_named(tiny, tmp_path):
  d = _copy(tiny[0], tmp_path / "m")
  _edit_config(d, rope_scaling={"rope_type": "linear", "factor": 2.0})
  with pytest.raises(ValueError, match="rope"):
    load_model(d)
  d = _copy(tiny[0], tmp_path / "m2")
  _edit_config(d, some_new_switch=True)
  with pytest.raises(ValueError, match="some_new_switch"):
    load_model(d)


def test_unknown_and_missing_tensors(tiny, tmp_path):
  from safetensors.numpy import load_file, save_file
  d = _copy(tiny[0], tmp_path / "extra")
  tensors = load_file(d / "model.safetensors")
  save_file({**tensors, "gpt_neox.adapter.weight": np.zeros(3, np.float32)},
            d / "model.safetensors", metadata={"format": "pt"})
  with pytest.raises(ValueError, match="gpt_neox.adapter.weight"):
    load_model(d)
  d = _copy(tiny[0], tmp_path / "missing")
  del tensors["gpt_neox.final_layer_norm.weight"]
  save_file(tensors, d / "model.safetensors", metadata={"format": "pt"})
  with pytest.raises(ValueError, match="final_layer_norm/scale"):
    load_model(d)


def test_checkpoint_files_order(tiny, tmp_path):
  tiny[1].save_pretrained(tmp_path / "s", max_shard_size="10KB")
  files = hf_loader.checkpoint_files(tmp_path / "s")
  assert len(files) > 1 and all(f.exists() for f in files)


def test_bf16_checkpoint_reads_exactly(tiny, tmp_path):
  import copy
  model = copy.deepcopy(tiny[1]).to(torch.bfloat16)
  model.save_pretrained(tmp_path / "bf16")
  ours = load_model(tmp_path / "bf16")
  want = model.gpt_neox.layers[1].mlp.dense_h_to_4h.weight.detach().float().numpy().T
  got = np.asarray(ours.params["layers_1"]["mlp"]["dense_h_to_4h"]["kernel"])
  assert got.dtype == np.float32 and np.array_equal(got, want)
