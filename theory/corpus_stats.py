"""The utility exponent alpha, from the corpus's own rank-frequency law.

alpha is fixed here, from token statistics alone, before any Rosetta count is
seen: the frequency of the r-th most frequent unit (word or word n-gram) falls as
``r ** -alpha``. The fit is least squares on log frequency vs log rank over
log-spaced ranks in ``[rank_min, rank_max]`` (log spacing keeps the long tail from
dominating), where ``rank_max`` defaults to the last rank still seen at least
``min_count`` times (below that, finite-sample flattening biases the slope). The
CI is alpha +- 1.96 bootstrap standard errors (documents resampled, full-data
rank window kept).
"""

from __future__ import annotations

import collections
import re
from typing import Sequence

import numpy as np
from scipy import sparse

_WORD = re.compile(r"\w+|[^\w\s]", re.UNICODE)


def units(text: str, ngram: int = 1) -> list[str]:
  """Lower-cased words and punctuation of ``text``, joined into n-grams."""
  words = _WORD.findall(text.lower())
  if ngram == 1:
    return words
  return [" ".join(words[i:i + ngram]) for i in range(len(words) - ngram + 1)]


def rank_frequencies(texts: Sequence[str], ngram: int = 1) -> np.ndarray:
  """Counts of every distinct unit, most frequent first.

  Raises:
    ValueError: no texts, or no units in them.
  """
  if not texts:
    raise ValueError("no texts to count")
  counts = collections.Counter()
  for t in texts:
    counts.update(units(t, ngram))
  if not counts:
    raise ValueError("the texts contain no words")
  return np.sort(np.fromiter(counts.values(), dtype=np.int64))[::-1]


def fit_zipf(counts: np.ndarray, rank_min: int = 1, rank_max: int | None = None,
             min_count: int = 10, points: int = 40) -> float:
  """alpha of ``count(r) ∝ r ** -alpha`` over a rank window.

  Args:
    counts: [V] counts sorted in decreasing order.
    rank_min: first rank of the window (1-based).
    rank_max: last rank; default the last rank with count >= min_count.
    points: log-spaced ranks in the window.

  Raises:
    ValueError: unsorted counts or a window with fewer than 3 distinct ranks.
  """
  counts = np.asarray(counts, dtype=np.float64)
  if counts.ndim != 1 or np.any(np.diff(counts) > 0):
    raise ValueError("counts must be a 1-d array in decreasing order")
  if rank_max is None:
    rank_max = int(np.sum(counts >= min_count))
  rank_max = min(rank_max, len(counts))
  ranks = np.unique(np.round(np.geomspace(rank_min, max(rank_max, rank_min), points)).astype(int))
  if len(ranks) < 3:
    raise ValueError(f"rank window [{rank_min}, {rank_max}] is too small for a fit "
                     f"(min_count={min_count}: too few frequent units?)")
  x, y = np.log(ranks), np.log(counts[ranks - 1])
  x = x - x.mean()
  return float(-np.sum(x * (y - y.mean())) / np.sum(x ** 2))


def estimate_alpha(texts: Sequence[str], ngram: int = 1, rank_min: int = 1,
                   min_count: int = 10, bootstrap: int = 200, seed: int = 0) -> dict:
  """alpha with a document-bootstrap CI.

  Args:
    texts: documents (list of strings).
    ngram: 1 for words; n for word n-grams.

  Returns:
    dict ``alpha``, ``ci`` (alpha +- 1.96 bootstrap s.e.), ``rank_max`` (of the full fit),
    ``num_units`` (tokens), ``vocab``.
  """
  if not texts:
    raise ValueError("no texts to count")
  per_doc = [collections.Counter(units(t, ngram)) for t in texts]
  out = estimate_alpha_counts(per_doc, rank_min=rank_min, min_count=min_count,
                              bootstrap=bootstrap, seed=seed)
  out["ngram"] = ngram
  return out


def estimate_alpha_counts(per_doc: Sequence[collections.Counter], rank_min: int = 1,
                          min_count: int = 10, bootstrap: int = 200, seed: int = 0) -> dict:
  """``estimate_alpha`` on per-document unit counts (words, n-grams or token ids).

  Returns:
    dict ``alpha``, ``ci``, ``rank_max``, ``num_units``, ``vocab`` (distinct
    units) and ``types_above_floor`` (units seen >= ``min_count`` times: the
    ``rank_max`` of the fit).

  Raises:
    ValueError: no units at all.
  """
  # One [documents, types] count matrix: a resample's totals are its document
  # multiplicities times the matrix (the same integers as adding the Counters).
  index: dict = {}
  rows, cols, vals = [], [], []
  for d, c in enumerate(per_doc):
    for unit, n in c.items():
      rows.append(d)
      cols.append(index.setdefault(unit, len(index)))
      vals.append(n)
  if not index:
    raise ValueError("the texts contain no units")
  mat = sparse.csr_matrix((np.asarray(vals, np.int64), (rows, cols)),
                          shape=(len(per_doc), len(index)))
  counts = np.sort(np.asarray(mat.sum(axis=0)).ravel())[::-1]
  counts = counts[counts > 0]
  alpha = fit_zipf(counts, rank_min=rank_min, min_count=min_count)
  rank_max = int(np.sum(counts >= min_count))
  rng = np.random.default_rng(seed)
  samples = []
  mat_t = mat.T.tocsr()
  for _ in range(bootstrap):
    w = np.bincount(rng.integers(0, len(per_doc), len(per_doc)), minlength=len(per_doc))
    sc = np.sort(mat_t @ w.astype(np.int64))[::-1]
    sc = sc[sc > 0]
    try:
      samples.append(fit_zipf(sc, rank_min=rank_min, rank_max=rank_max))
    except ValueError:
      continue
  # Normal CI from the bootstrap standard error: resampling documents duplicates
  # them, which biases the percentile interval (it excluded the estimate).
  se = float(np.std(samples)) if len(samples) > 1 else float("nan")
  ci = [alpha - 1.96 * se, alpha + 1.96 * se]
  return {"alpha": alpha, "ci": ci, "rank_max": rank_max, "num_units": int(counts.sum()),
          "vocab": int(len(counts)), "types_above_floor": rank_max, "min_count": min_count}


def corpus_alpha(split: str = "all", ngram: int = 1, bootstrap: int = 200) -> dict:
  """``estimate_alpha`` on the embedded corpus (``rosetta_jax.data.corpus``)."""
  from rosetta_jax.data.corpus import load_corpus   # lazy: the corpus is optional here
  docs = load_corpus(split)
  out = estimate_alpha([d.text for d in docs], ngram=ngram, bootstrap=bootstrap)
  out["split"] = split
  return out


def token_counts(tokenizer, texts: Sequence[str]) -> list[collections.Counter]:
  """Per-document token-id counts under ``tokenizer`` (a ``rosetta_jax.data.tokenizer``)."""
  return [collections.Counter(ids.tolist()) for ids in tokenizer.encode_ids(list(texts))]


def corpus_token_alpha(tokenizer, split: str = "train", min_count: int = 10,
                       bootstrap: int = 200) -> dict:
  """``estimate_alpha_counts`` over the tokens of the embedded corpus's ``split``.

  The units the zoo study correlates over are its tokenizer's tokens (identical
  tokenizers: canonical spans are tokens), and the zoo learns from the train split.
  """
  from rosetta_jax.data.corpus import load_corpus   # lazy: the corpus is optional here
  docs = load_corpus(split)
  out = estimate_alpha_counts(token_counts(tokenizer, [d.text for d in docs]),
                              min_count=min_count, bootstrap=bootstrap)
  out["split"] = split
  return out
