"""The embedded model zoo's typed config (the studies' configs: ``studies/config.py``)."""

from __future__ import annotations

import dataclasses
from typing import Any

from rosetta_jax.models import gpt_neox


@dataclasses.dataclass(frozen=True)
class ZooConfig:
  """A family of GPT-NeoX models, two (or more) seeds per width.

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

  def model_config(self, width: int) -> gpt_neox.GPTNeoXConfig:
    if width % self.head_dim:
      raise ValueError(f"width {width} is not a multiple of head_dim {self.head_dim}")
    return gpt_neox.GPTNeoXConfig(
        vocab_size=self.vocab_size, hidden_size=width, num_layers=self.num_layers,
        num_heads=width // self.head_dim, intermediate_size=4 * width,
        max_position_embeddings=self.seq_len, rotary_pct=0.25)

  def __post_init__(self):
    if len(self.seeds) < 2:
      raise ValueError("the zoo needs at least two seeds per size to find Rosetta neurons")
    if self.steps < 1 or self.ckpt_every < 1:
      raise ValueError(f"steps ({self.steps}) and ckpt_every ({self.ckpt_every}) must be >= 1")
    if len(set(self.widths)) != len(self.widths):
      raise ValueError(f"duplicate widths in {self.widths}")


def to_dict(cfg: Any) -> dict:
  """A JSON-ready dict of a (nested) config dataclass."""
  return dataclasses.asdict(cfg)
