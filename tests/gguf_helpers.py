"""Writes small GGUF files from tiny Hugging Face models, as llama.cpp's converter does.

``write_gguf`` maps each PyTorch tensor to its GGUF name with the ``gguf`` package's
name table, applies the converter's per-architecture changes (Gemma stores its
norms as ``1 + w``; llama permutes q/k for its rotary layout), and writes the
metadata llama.cpp writes (``convert_hf_to_gguf.py``), plus an optional small
SentencePiece-style vocabulary so the file carries its own tokenizer.
"""

from __future__ import annotations

import gguf
import numpy as np

ARCH_ENUM = {"gemma2": gguf.MODEL_ARCH.GEMMA2, "gemma3": gguf.MODEL_ARCH.GEMMA3,
             "qwen2": gguf.MODEL_ARCH.QWEN2, "llama": gguf.MODEL_ARCH.LLAMA,
             "mamba": gguf.MODEL_ARCH.MAMBA}


def vocabulary(n: int) -> list[str]:
  """Gemma-like pieces: Gemma's 5 specials, then pieces with and without ``▁``."""
  specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
  letters = "abcdefghijklmnopqrstuvwxyz"
  pieces = list(letters) + ["\u2581" + c for c in letters]
  pieces += [f"\u2581{a}{b}" for a in letters for b in letters]
  return (specials + pieces)[:n]


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
  """llama.cpp's q/k permutation (``LlamaModel.permute``)."""
  return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
          .swapaxes(1, 2).reshape(w.shape))


def write_gguf(path, model, arch: str, tokens: int | None = None, extra: dict | None = None,
               skip_keys: tuple[str, ...] = ()) -> None:
  """Writes ``model`` (a tiny transformers causal LM) as a float32 GGUF file.

  Args:
    path: output file.
    model: ``Gemma2ForCausalLM`` / ``Gemma3ForCausalLM`` / ``Qwen2ForCausalLM`` /
      ``LlamaForCausalLM`` (random weights).
    arch: GGUF architecture name.
    tokens: write a vocabulary of this many pieces (None: no tokenizer metadata).
    extra: further metadata {key: value} (str, float, int or bool).
    skip_keys: metadata key suffixes to leave out (e.g. ``"attn_logit_softcapping"``).
  """
  cfg = model.config
  w = gguf.GGUFWriter(str(path), arch)
  w.add_name("tiny-test")
  kv = {
      "context_length": cfg.max_position_embeddings,
      "embedding_length": cfg.hidden_size,
      "block_count": cfg.num_hidden_layers,
      "feed_forward_length": cfg.intermediate_size,
      "attention.head_count": cfg.num_attention_heads,
      "attention.head_count_kv": cfg.num_key_value_heads,
      "attention.layer_norm_rms_epsilon": float(cfg.rms_norm_eps),
  }
  if arch.startswith("gemma"):
    kv["attention.key_length"] = cfg.head_dim
    kv["attention.value_length"] = cfg.head_dim
    kv["attention.sliding_window"] = cfg.sliding_window
  if arch == "gemma2":
    kv["attn_logit_softcapping"] = float(cfg.attn_logit_softcapping)
    kv["final_logit_softcapping"] = float(cfg.final_logit_softcapping)
    kv["rope.freq_base"] = float(cfg.rope_parameters["rope_theta"])
  elif arch == "gemma3":
    kv["rope.freq_base"] = float(cfg.rope_parameters["full_attention"]["rope_theta"])
    full = cfg.rope_parameters["full_attention"]
    if full.get("rope_type") == "linear":
      kv["rope.scaling.type"] = "linear"
      kv["rope.scaling.factor"] = float(full["factor"])
  else:
    kv["rope.freq_base"] = float(cfg.rope_parameters["rope_theta"])
    kv["rope.dimension_count"] = cfg.hidden_size // cfg.num_attention_heads
  kv.update(extra or {})
  for key, value in kv.items():
    if key in skip_keys:
      continue
    full_key = key if key.startswith(("general.", "tokenizer.")) else f"{arch}.{key}"
    if isinstance(value, str):
      w.add_string(full_key, value)
    elif isinstance(value, bool):
      w.add_bool(full_key, value)
    elif isinstance(value, float):
      w.add_float32(full_key, value)
    else:
      w.add_uint32(full_key, int(value))
  if tokens is not None:
    vocab = vocabulary(tokens)
    w.add_tokenizer_model("llama")
    w.add_token_list(vocab)
    w.add_token_scores([0.0] * len(vocab))
    w.add_token_types([3] * 5 + [1] * (len(vocab) - 5))
    w.add_pad_token_id(0)
    w.add_eos_token_id(1)
    w.add_bos_token_id(2)
    w.add_unk_token_id(3)
  names = gguf.get_tensor_name_map(ARCH_ENUM[arch], cfg.num_hidden_layers)
  for name, tensor in model.state_dict().items():
    if cfg.tie_word_embeddings and name == "lm_head.weight":
      continue
    base, suffix = name.rsplit(".", 1)
    gguf_name = names.get_name(base)
    assert gguf_name is not None, name
    data = tensor.detach().float().numpy().copy()
    if arch.startswith("gemma") and name.endswith("norm.weight"):
      data = data + 1.0
    if arch == "llama" and base.endswith("q_proj"):
      data = _permute(data, cfg.num_attention_heads)
    if arch == "llama" and base.endswith("k_proj"):
      data = _permute(data, cfg.num_key_value_heads)
    w.add_tensor(f"{gguf_name}.{suffix}", data)
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()
