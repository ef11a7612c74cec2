"""Cross-tokenizer alignment: tokens -> canonical text units, and pooling within units.

Models with different tokenizers read the same documents as different tokens. To
compare their neurons unit by unit, every token is placed on its UTF-8 byte span
(``Tokenizer.encode`` gives byte offsets) and the text is cut into *canonical
spans*: the byte ranges between boundaries that every tokenizer shares.

Definitions (per document):

* A tokenizer's *boundaries* are the starts and ends of its non-special,
  non-empty tokens, minus any position that lies strictly inside one of its
  tokens. The exception matters for byte-level BPEs, which can split a multi-byte
  character into several tokens that all report the character's whole span (so
  two tokens share one span), or report overlapping spans.
* The *canonical boundaries* are the intersection of all tokenizers' boundaries.
  They cut the byte axis into intervals (the text before the first and after the
  last canonical boundary are intervals too). An interval holding tokens
  of every tokenizer is a *unit*; an interval holding tokens of some tokenizers
  only (e.g. whitespace one tokenizer drops and another keeps) is merged into
  the unit before it (or after it, at the start of the document); an interval
  holding no token at all (text every tokenizer skips) is not a unit.
* Special tokens (BOS, CLS, SEP...) and tokens with an empty span map to -1: they
  belong to no unit. Padding never reaches the aligner.

With a single tokenizer (or identical ones) units are tokens, except that tokens
sharing one byte span (a split multi-byte character) form one unit.

Each model's activations are then pooled within units (``mean``, ``max`` or
``last`` token), so all models yield the same number of units per document.
Pooling is one segment reduction (``pool_segments``), usable inside ``jax.jit``.

Long documents (more tokens than a model's context) are cut into *windows* at
unit boundaries (``windows``): each window is at most ``max_len`` tokens of that
model, holds whole units only and starts a fresh context. Units are fixed by the
alignment, independent of any model's context length, so no text is dropped and
every model still yields the same units; only the context a token sees depends
on where its model's windows fall.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

POOLINGS = ("mean", "max", "last")


@dataclasses.dataclass(frozen=True)
class Alignment:
  """The units of one document, shared by several tokenizers.

  Attributes:
    doc_id: the document's id (for error messages).
    num_units: U, the number of units.
    spans: [U, 2] int64 byte span [start, end) of each unit.
    token_units: one [n_tokens_t] int32 array per tokenizer, the unit of each
      token or -1 (special or empty-span tokens).
  """
  doc_id: str
  num_units: int
  spans: np.ndarray
  token_units: tuple[np.ndarray, ...]


def _valid_tokens(enc, doc_id: str, tok_index: int) -> np.ndarray:
  """[n] bool: tokens that carry text (non-special, non-empty byte span)."""
  offsets = getattr(enc, "offsets", None)
  if offsets is None:
    raise ValueError(f"document {doc_id!r}: tokenizer {tok_index} gives no byte offsets "
                     "(alignment needs a fast tokenizer with offsets)")
  offsets = np.asarray(offsets)
  n = len(enc.ids)
  if offsets.shape != (n, 2):
    raise ValueError(f"document {doc_id!r}: tokenizer {tok_index} gives offsets of shape "
                     f"{offsets.shape} for {n} tokens; expected ({n}, 2)")
  special = np.asarray(enc.special, dtype=bool)
  valid = ~special & (offsets[:, 1] > offsets[:, 0])
  if not valid.any() and (~special).any():
    raise ValueError(f"document {doc_id!r}: tokenizer {tok_index} gives no byte offsets "
                     "(every token has an empty span); alignment needs a fast tokenizer")
  return valid


def _boundaries(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
  """Sorted boundary positions of one tokenizer: token starts and ends that lie
  strictly inside no token."""
  cand = np.unique(np.concatenate([starts, ends]))
  order = np.argsort(starts, kind="stable")
  s_sorted, e_prefix_max = starts[order], np.maximum.accumulate(ends[order])
  # Tokens with start < p are the first k in start order; p is inside one of them
  # iff the largest end among them exceeds p.
  k = np.searchsorted(s_sorted, cand, side="left")
  inside = (k > 0) & (e_prefix_max[np.maximum(k - 1, 0)] > cand)
  return cand[~inside]


def align_encodings(encodings: Sequence, doc_id: str = "?") -> Alignment:
  """Aligns one document's encodings (one per tokenizer) on canonical spans.

  Args:
    encodings: ``Encoding``-like objects with ``ids`` [n], ``offsets`` [n, 2]
      UTF-8 byte offsets and ``special`` [n] bool, one per tokenizer.
    doc_id: named in errors.

  Returns:
    The document's ``Alignment``.

  Raises:
    ValueError: naming the document, if a tokenizer gives no offsets or the
      tokenizers share no boundary (no unit).
  """
  if not encodings:
    raise ValueError("align needs at least one tokenizer")
  valids, bounds = [], None
  for t, enc in enumerate(encodings):
    valid = _valid_tokens(enc, doc_id, t)
    off = np.asarray(enc.offsets, dtype=np.int64)
    b = _boundaries(off[valid, 0], off[valid, 1])
    bounds = b if bounds is None else np.intersect1d(bounds, b, assume_unique=True)
    valids.append(valid)
  if len(bounds) == 0:
    raise ValueError(f"document {doc_id!r}: the tokenizers share no token boundary "
                     "(is it empty?)")
  # Intervals: before the first shared boundary, between consecutive ones, after
  # the last (text that some tokenizer's offsets do not reach). Interval of a
  # token: the number of shared boundaries <= its start.
  n_int = len(bounds) + 1
  intervals, counts = [], []
  for enc, valid in zip(encodings, valids):
    start = np.asarray(enc.offsets, dtype=np.int64)[:, 0]
    iv = np.where(valid, np.searchsorted(bounds, start, side="right"), -1)
    intervals.append(iv)
    counts.append(np.bincount(iv[iv >= 0], minlength=n_int))
  counts = np.stack(counts)
  full = (counts > 0).all(axis=0)
  if not full.any():
    raise ValueError(f"document {doc_id!r}: no span between shared boundaries holds "
                     "tokens of every tokenizer")
  # Unit of each interval: full intervals are numbered in order; partial ones go
  # to the previous unit (or unit 0 when they precede the first).
  unit_of_interval = np.maximum(np.cumsum(full) - 1, 0).astype(np.int32)
  num_units = int(full.sum())
  token_units = tuple(np.where(iv >= 0, unit_of_interval[np.maximum(iv, 0)], -1)
                      .astype(np.int32) for iv in intervals)
  spans = np.stack([np.full(num_units, np.iinfo(np.int64).max),
                    np.full(num_units, -1)], axis=1).astype(np.int64)
  for enc, tu in zip(encodings, token_units):
    off = np.asarray(enc.offsets, dtype=np.int64)
    m = tu >= 0
    np.minimum.at(spans[:, 0], tu[m], off[m, 0])
    np.maximum.at(spans[:, 1], tu[m], off[m, 1])
  return Alignment(doc_id, num_units, spans, token_units)


def align(texts: Sequence[str], tokenizers: Sequence, doc_ids: Sequence[str] | None = None
          ) -> list[Alignment]:
  """Aligns documents across tokenizers.

  Args:
    texts: D document texts.
    tokenizers: tokenizers with ``encode(text) -> Encoding`` (byte offsets).
    doc_ids: D ids named in errors; default the document's index.

  Returns:
    D ``Alignment``s; ``alignments[d].token_units[t]`` maps tokenizer t's tokens of
    document d ([n_tokens]) to unit indices or -1.
  """
  if doc_ids is None:
    doc_ids = [str(i) for i in range(len(texts))]
  if len(doc_ids) != len(texts):
    raise ValueError(f"{len(texts)} texts but {len(doc_ids)} doc ids")
  return [align_encodings([tok.encode(text) for tok in tokenizers], doc_id)
          for text, doc_id in zip(texts, doc_ids)]


def check_unit_counts(doc_ids: Sequence[str], counts_a: Sequence[int],
                      counts_b: Sequence[int], what: str = "the two models") -> None:
  """Raises ValueError naming the first document whose unit counts differ."""
  if len(counts_a) != len(counts_b) or len(doc_ids) != len(counts_a):
    raise ValueError(f"{what} cover different numbers of documents "
                     f"({len(counts_a)} vs {len(counts_b)})")
  a, b = np.asarray(counts_a), np.asarray(counts_b)
  bad = np.flatnonzero(a != b)
  if bad.size:
    i = int(bad[0])
    raise ValueError(f"document {doc_ids[i]!r}: {what} have different unit counts "
                     f"({a[i]} vs {b[i]}); align them with the same tokenizers")


# ----------------------------------------------------------------------------
# Pooling
# ----------------------------------------------------------------------------


def pool_segments(acts, segments, num_segments: int, how: str = "mean"):
  """Pools token activations within segments (units), as one segment reduction.

  Args:
    acts: [..., n] activations of tokens (any leading shape, e.g. [batch, seq]).
    segments: [...] int segment (unit) of each token; -1 = excluded (padding,
      special tokens).
    num_segments: static number of output rows S; ids must be < S.
    how: "mean", "max" or "last" (the token with the highest flat position).

  Returns:
    [S, n] float32 pooled activations (zeros for segments with no token).
  """
  if how not in POOLINGS:
    raise ValueError(f"unknown pooling {how!r}; expected one of {POOLINGS}")
  n = acts.shape[-1]
  x = jnp.reshape(acts, (-1, n)).astype(jnp.float32)
  seg = jnp.reshape(segments, (-1,)).astype(jnp.int32)
  keep = seg >= 0
  # Excluded tokens go to an extra dump segment that is dropped.
  seg = jnp.where(keep, seg, num_segments)
  total = num_segments + 1
  if how == "mean":
    sums = jax.ops.segment_sum(x, seg, total)[:num_segments]
    cnt = jax.ops.segment_sum(keep.astype(jnp.float32), seg, total)[:num_segments]
    return sums / jnp.maximum(cnt, 1.0)[:, None]
  if how == "max":
    mx = jax.ops.segment_max(x, seg, total)[:num_segments]
    return jnp.where(jnp.isneginf(mx), 0.0, mx)
  pos = jnp.arange(x.shape[0], dtype=jnp.int32)
  last = jax.ops.segment_max(jnp.where(keep, pos, -1), seg, total)[:num_segments]
  return jnp.where((last >= 0)[:, None], x[jnp.maximum(last, 0)], 0.0)


def pool(acts, token_units, num_units: int, how: str = "mean") -> np.ndarray:
  """Pools one document's token activations into its units.

  Args:
    acts: [n_tokens, n] activations of one model on one document.
    token_units: [n_tokens] unit of each token (``Alignment.token_units[t]``) or -1.
    num_units: U.
    how: "mean", "max" or "last".

  Returns:
    [U, n] float32 numpy array.
  """
  acts = np.asarray(acts)
  token_units = np.asarray(token_units)
  if acts.ndim != 2 or acts.shape[0] != token_units.shape[0]:
    raise ValueError(f"acts {acts.shape} and token_units {token_units.shape} disagree: "
                     "expected [n_tokens, neurons] and [n_tokens]")
  if token_units.size and token_units.max() >= num_units:
    raise ValueError(f"token unit {token_units.max()} is out of range for {num_units} units")
  present = np.bincount(token_units[token_units >= 0], minlength=num_units) > 0
  if not present.all():
    raise ValueError(f"unit {int(np.flatnonzero(~present)[0])} has no token")
  return np.asarray(pool_segments(acts, token_units, num_units, how))


# ----------------------------------------------------------------------------
# Windows for long documents
# ----------------------------------------------------------------------------


def windows(token_units: np.ndarray, max_len: int, doc_id: str = "?") -> list[tuple[int, int]]:
  """Cuts one model's tokens of a document into context windows at unit boundaries.

  Greedy: each window is the longest run of at most ``max_len`` tokens that does
  not split a unit. Special tokens stay where they are.

  Args:
    token_units: [n] unit of each token or -1.
    max_len: the context length (tokens per window).
    doc_id: named in errors.

  Returns:
    [(start, stop)] token ranges covering [0, n) in order.

  Raises:
    ValueError: a unit spans more than ``max_len`` tokens.
  """
  tu = np.asarray(token_units)
  n = tu.shape[0]
  if n == 0:
    return []
  if max_len < 1:
    raise ValueError(f"max_len must be positive, got {max_len}")
  # A cut before token i is allowed iff every unit before it ends before every
  # unit after it starts.
  pmax = np.maximum.accumulate(tu)
  smin = np.minimum.accumulate(np.where(tu < 0, np.iinfo(np.int32).max, tu)[::-1])[::-1]
  cuts = np.flatnonzero(pmax[:-1] < smin[1:]) + 1
  cuts = np.append(cuts, n)
  out, a = [], 0
  while a < n:
    j = np.searchsorted(cuts, a + max_len, side="right") - 1
    b = int(cuts[j]) if j >= 0 else a
    if b <= a:
      raise ValueError(f"document {doc_id!r}: a unit at token {a} spans more than "
                       f"max_len={max_len} tokens")
    out.append((a, b))
    a = b
  return out
