"""Typed configs and named presets for the embedded model zoo and its study."""

from __future__ import annotations

import dataclasses
import json
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


@dataclasses.dataclass(frozen=True)
class StudyConfig:
  """The scaling study on a zoo (or on a list of models).

  Attributes:
    zoo: the zoo to train (ignored for real models).
    record_docs: held-out documents to record (0 = all).
    record_chars: characters kept from the start of each document (0 = all).
    record_len: context window of the recording forward pass, in tokens.
    record_batch: windows per recording batch.
    depths: relative depths in [0, 1] of the layers to study, each model's
      nearest layer (empty = every layer); for models with 10^5+ neurons, a few
      depth-matched layers buy many more units for the same matching cost.
    pooling: how tokens pool into aligned units ("mean", "max", "last").
    k: mutual-k-NN criterion (1 = best buddies).
    r_min: optional correlation threshold for a match.
    null_threshold: also require r above the strongest pair found under the
      dataset-permutation null (B's documents shuffled), per model pair.
    null_fdr: with ``null_threshold``, use instead the lowest r at which the null
      explains at most this fraction of the real pairs above it (None: the
      strongest null pair; see ``analysis.null.fdr_threshold``).
    bootstrap: document-bootstrap resamples for the CIs.
    candidates: per-neuron candidates kept for the bootstrap re-matching.
    seed: seed of the bootstrap.
  """
  zoo: ZooConfig = ZooConfig()
  record_docs: int = 0
  record_chars: int = 0
  record_len: int = 64
  record_batch: int = 16
  depths: tuple[float, ...] = ()
  pooling: str = "mean"
  k: int = 1
  r_min: float | None = None
  null_threshold: bool = True
  null_fdr: float | None = None
  bootstrap: int = 200
  candidates: int = 8
  seed: int = 0


PRESETS: dict[str, StudyConfig] = {
    # ~3 minutes on 2 CPU cores: 5 sizes (8x neurons), 2 seeds each.
    "tiny": StudyConfig(
        zoo=ZooConfig(widths=(16, 32, 48, 64, 128), num_layers=2, steps=300, batch_size=16,
                      seq_len=64, ckpt_every=100),
        record_docs=0, record_chars=600, record_len=64, bootstrap=200),
    # under an hour on 2 CPU cores: 7 sizes (12x neurons), 3 layers, longer training.
    "default": StudyConfig(
        zoo=ZooConfig(widths=(16, 32, 48, 64, 96, 128, 192), num_layers=3, steps=1000,
                      batch_size=16, seq_len=128, ckpt_every=200, lr=2e-3, warmup=50),
        record_docs=0, record_chars=0, record_len=128, bootstrap=500),
    # the largest zoo that is sensible on one accelerator.
    "paper": StudyConfig(
        zoo=ZooConfig(widths=(32, 64, 128, 192, 256, 384, 512, 768), num_layers=6,
                      head_dim=32, steps=20000, batch_size=64, seq_len=256, vocab_size=8192,
                      ckpt_every=1000, lr=1e-3, warmup=500),
        record_len=256, bootstrap=1000),
}


def get_preset(name: str) -> StudyConfig:
  try:
    return PRESETS[name]
  except KeyError:
    raise ValueError(f"unknown preset {name!r}; expected one of {sorted(PRESETS)}") from None


# StudyConfig fields added later, with the default that reproduces the behaviour
# before them: a workdir whose config.json predates them still matches.
LATER_FIELDS = {"depths": [], "null_fdr": None}


def load_study_config(path: str) -> StudyConfig:
  """A ``StudyConfig`` from a JSON file: a study's config.json (``{"config": {...}}``)
  or the bare dict of ``config_lib.to_dict``; unknown fields are an error."""
  with open(path) as f:
    d = json.load(f)
  d = d.get("config", d)
  zoo = dict(d.pop("zoo", {}))
  for k in ("widths", "seeds"):
    if k in zoo:
      zoo[k] = tuple(zoo[k])
  if "depths" in d:
    d["depths"] = tuple(d["depths"])
  try:
    return StudyConfig(zoo=ZooConfig(**zoo), **d)
  except TypeError as e:
    raise ValueError(f"{path}: not a study config ({e})") from None


def to_dict(cfg: Any) -> dict:
  """A JSON-ready dict of a (nested) config dataclass."""
  return dataclasses.asdict(cfg)
