"""Tokenizers with UTF-8 byte offsets, for the zoo and for Hugging Face models.

Every tokenizer the project uses is wrapped in ``Tokenizer``, whose ``encode``
returns token ids and each token's byte span in the UTF-8 encoding of the text:
the common currency of cross-tokenizer alignment (``data/align.py``).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Iterable, Sequence

import numpy as np
import tokenizers
from tokenizers import decoders, models, pre_tokenizers, processors, trainers

from rosetta_jax.io import atomic_write_text

PAD = "<|pad|>"
EOS = "<|endoftext|>"
FILENAME = "tokenizer.json"


@dataclasses.dataclass(frozen=True)
class Encoding:
  """Token ids and their byte spans.

  Attributes:
    ids: [n] int32 token ids.
    offsets: [n, 2] int64 byte offsets [start, end) into ``text.encode("utf-8")``;
      special tokens have an empty span.
    special: [n] bool, True for special tokens (BOS, CLS, SEP...).
  """
  ids: np.ndarray
  offsets: np.ndarray
  special: np.ndarray


def char_to_byte_offsets(text: str, offsets: np.ndarray) -> np.ndarray:
  """Converts character offsets into UTF-8 byte offsets.

  Args:
    text: the encoded text.
    offsets: [n, 2] character offsets.

  Returns:
    [n, 2] int64 byte offsets.
  """
  lens = np.fromiter((len(c.encode("utf-8")) for c in text), dtype=np.int64, count=len(text))
  cum = np.concatenate([[0], np.cumsum(lens)])
  return cum[np.asarray(offsets, dtype=np.int64).reshape(-1, 2)]


class Tokenizer:
  """A fast tokenizer that reports byte offsets.

  Wraps a ``tokenizers.Tokenizer`` (the zoo's own BPE) or a transformers
  ``PreTrainedTokenizerFast`` (real models).
  """

  def __init__(self, backend: tokenizers.Tokenizer, name: str = "tokenizer",
               add_special_tokens: bool = False):
    self.backend = backend
    self.name = name
    self.add_special_tokens = add_special_tokens

  @classmethod
  def from_transformers(cls, tok, add_special_tokens: bool = True) -> "Tokenizer":
    """Wraps a transformers tokenizer; raises if it is not a fast (offset) tokenizer."""
    backend = getattr(tok, "backend_tokenizer", None) or getattr(tok, "_tokenizer", None)
    if backend is None:
      raise ValueError(
          f"tokenizer {type(tok).__name__} has no fast backend, so no offsets: "
          "alignment needs a fast tokenizer (tokenizer.json)")
    return cls(backend, getattr(tok, "name_or_path", "hf"), add_special_tokens)

  @classmethod
  def load(cls, directory: str) -> "Tokenizer":
    path = os.path.join(directory, FILENAME)
    if not os.path.exists(path):
      raise FileNotFoundError(f"no {FILENAME} in {directory}")
    with open(path, encoding="utf-8") as f:
      text = f.read()
    try:
      backend = tokenizers.Tokenizer.from_str(text)
    except Exception as e:  # tokenizers raises a bare Exception ("EOF while parsing ...")
      raise ValueError(f"{path} is not a readable tokenizer ({e}; {len(text)} bytes): "
                       "the file is damaged or was cut short; delete it (a zoo "
                       "directory retrains it)") from e
    return cls(backend, directory)

  def save(self, directory: str) -> None:
    """Writes ``directory/tokenizer.json`` atomically (temporary file + rename)."""
    atomic_write_text(os.path.join(directory, FILENAME), self.backend.to_str())

  @property
  def vocab_size(self) -> int:
    return self.backend.get_vocab_size(with_added_tokens=True)

  @property
  def pad_id(self) -> int:
    for tok in (PAD, "<pad>", "[PAD]", "<|endoftext|>", "</s>"):
      i = self.backend.token_to_id(tok)
      if i is not None:
        return i
    return 0

  def encode(self, text: str) -> Encoding:
    """Encodes one text. Returns ids, byte offsets and the special-token mask."""
    enc = self.backend.encode(text, add_special_tokens=self.add_special_tokens)
    ids = np.asarray(enc.ids, dtype=np.int32)
    special = np.asarray(enc.special_tokens_mask, dtype=bool)
    offsets = char_to_byte_offsets(text, np.asarray(enc.offsets, dtype=np.int64))
    offsets[special] = 0
    return Encoding(ids, offsets.reshape(-1, 2), special)

  def encode_ids(self, texts: Sequence[str]) -> list[np.ndarray]:
    """Token ids only, batched (fast path for training)."""
    encs = self.backend.encode_batch(list(texts), add_special_tokens=self.add_special_tokens)
    return [np.asarray(e.ids, dtype=np.int32) for e in encs]

  def decode(self, ids: Iterable[int]) -> str:
    return self.backend.decode(list(ids))


def train_bpe(texts: Iterable[str], vocab_size: int = 2048,
              split_digits: bool = False) -> Tokenizer:
  """Trains a byte-level BPE (GPT-2 style) on texts.

  Args:
    texts: training texts.
    vocab_size: target vocabulary size, including the 256 bytes and specials.
    split_digits: every digit its own pre-token (as Llama's tokenizers do), so no
      merge spans two digits.
  """
  tok = tokenizers.Tokenizer(models.BPE())
  byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.pre_tokenizer = (pre_tokenizers.Sequence([
      pre_tokenizers.Digits(individual_digits=True), byte_level]) if split_digits
                       else byte_level)
  tok.decoder = decoders.ByteLevel()
  tok.post_processor = processors.ByteLevel(trim_offsets=False)
  trainer = trainers.BpeTrainer(
      vocab_size=vocab_size, special_tokens=[EOS, PAD],
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
  tok.train_from_iterator(texts, trainer=trainer)
  return Tokenizer(tok, "zoo-bpe-digits" if split_digits else "zoo-bpe")
