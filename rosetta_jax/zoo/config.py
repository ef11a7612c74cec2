"""The embedded model zoo's typed config (the studies' configs: ``studies/config.py``)."""

from __future__ import annotations

import dataclasses
from typing import Any

from rosetta_jax.models import gpt_neox, llama

# The zoo's architectures: GPT-NeoX (LayerNorm, GELU MLP, partial rotary, byte-level
# BPE of ``vocab_size``) and a Llama-style decoder (RMSNorm, SwiGLU MLP, full rotary,
# untied embeddings, its own byte-level BPE of ``llama_vocab_size`` trained on the
# same corpus with every digit split, as Llama's tokenizers do, so its token
# boundaries differ and units are aligned by byte span).
FAMILIES = ("gpt_neox", "llama")


@dataclasses.dataclass(frozen=True)
class ZooConfig:
  """The embedded zoo: one or more architectures, two (or more) seeds per width.

  Attributes:
    widths: residual widths, one model size each; MLP width is ``4 * width``.
    num_layers: layers of every model (sizes differ in width, like a width sweep).
    head_dim: attention head size; heads = width // head_dim.
    seeds: training seeds per size (different init and data order).
    vocab_size: size of the byte-level BPE trained on the corpus.
    seq_len: training context length.
    batch_size: sequences per step (per seed).
    steps: optimiser steps per model.
    lr: peak AdamW learning rate (warmup then cosine decay).
    warmup: warmup steps.
    weight_decay: AdamW weight decay.
    ckpt_every: steps between orbax checkpoints (resume granularity).
    families: architectures trained at every width (``FAMILIES``); each has its own
      tokenizer, and every width gets pairs across seeds within each family and
      pairs across families (same seed).
    llama_vocab_size: size of the Llama-style family's own BPE.
  """
  widths: tuple[int, ...] = (16, 32, 48, 64, 96, 128)
  num_layers: int = 2
  head_dim: int = 16
  seeds: tuple[int, ...] = (0, 1)
  vocab_size: int = 2048
  seq_len: int = 64
  batch_size: int = 16
  steps: int = 300
  lr: float = 3e-3
  warmup: int = 30
  weight_decay: float = 0.1
  ckpt_every: int = 100
  families: tuple[str, ...] = ("gpt_neox",)
  llama_vocab_size: int = 1536

  def model_config(self, width: int, family: str = "gpt_neox"):
    """The model config of one width of one family (MLP neurons: ``4 * width``)."""
    if width % self.head_dim:
      raise ValueError(f"width {width} is not a multiple of head_dim {self.head_dim}")
    heads = width // self.head_dim
    if family == "gpt_neox":
      return gpt_neox.GPTNeoXConfig(
          vocab_size=self.vocab_size, hidden_size=width, num_layers=self.num_layers,
          num_heads=heads, intermediate_size=4 * width,
          max_position_embeddings=self.seq_len, rotary_pct=0.25)
    if family == "llama":
      return llama.LlamaConfig(
          vocab_size=self.llama_vocab_size, hidden_size=width, num_layers=self.num_layers,
          num_heads=heads, num_kv_heads=heads, head_dim=self.head_dim,
          intermediate_size=4 * width, rms_norm_eps=1e-6, hidden_act="silu",
          tie_word_embeddings=False, max_position_embeddings=self.seq_len)
    raise ValueError(f"families: unknown family {family!r}; expected one of {FAMILIES}")

  def vocab_for(self, family: str) -> int:
    return self.llama_vocab_size if family == "llama" else self.vocab_size

  def __post_init__(self):
    if len(self.seeds) < 2:
      raise ValueError("the zoo needs at least two seeds per size to find Rosetta neurons")
    if self.steps < 1 or self.ckpt_every < 1:
      raise ValueError(f"steps ({self.steps}) and ckpt_every ({self.ckpt_every}) must be >= 1")
    if len(set(self.widths)) != len(self.widths):
      raise ValueError(f"duplicate widths in {self.widths}")
    if not self.families or len(set(self.families)) != len(self.families):
      raise ValueError(f"families: give distinct families, got {self.families}")
    for f in self.families:
      if f not in FAMILIES:
        raise ValueError(f"families: unknown family {f!r}; expected one of {FAMILIES}")


def to_dict(cfg: Any) -> dict:
  """A JSON-ready dict of a (nested) config dataclass."""
  return dataclasses.asdict(cfg)


def record(cfg: ZooConfig) -> dict:
  """``to_dict(cfg)`` as workdirs and zoo directories record it: a GPT-NeoX-only zoo
  leaves out the family fields, so zoos written before there were families match."""
  d = to_dict(cfg)
  if tuple(cfg.families) == ("gpt_neox",):
    d.pop("families")
    d.pop("llama_vocab_size")
  return d
