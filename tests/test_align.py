"""Cross-tokenizer alignment, pooling and windows (rosetta_jax/data/align.py)."""

from types import SimpleNamespace

import numpy as np
import pytest

from rosetta_jax.data import align as A
from rosetta_jax.data.corpus import load_corpus
from rosetta_jax.data.tokenizer import train_bpe


def enc(spans, special=()):
  """A hand-built encoding from byte spans; indices in ``special`` are specials."""
  off = np.asarray(spans, dtype=np.int64).reshape(-1, 2)
  sp = np.zeros(len(off), bool)
  sp[list(special)] = True
  return SimpleNamespace(ids=np.arange(len(off), dtype=np.int32), offsets=off, special=sp)


@pytest.fixture(scope="module")
def corpus_and_tokenizers():
  docs = load_corpus("heldout")[:60]
  texts = [d.text[:700] for d in docs]
  texts.append("naïve café: 日本語のテキスト, ümlaut ✓ done")  # multi-byte characters
  small = train_bpe(texts[:30], vocab_size=300)
  large = train_bpe(texts[20:], vocab_size=900)
  return texts, small, large


# ---------------------------------------------------------------------------
# Hand-built examples
# ---------------------------------------------------------------------------


def test_two_tokenizers_hand_built():
  # "hello world": A = hello| world ; B = hel|lo| wor|ld ; plus a BOS special in B.
  a = enc([(0, 5), (5, 11)])
  b = enc([(0, 0), (0, 3), (3, 5), (5, 9), (9, 11)], special=[0])
  al = A.align_encodings([a, b], "doc")
  assert al.num_units == 2
  np.testing.assert_array_equal(al.spans, [[0, 5], [5, 11]])
  np.testing.assert_array_equal(al.token_units[0], [0, 1])
  np.testing.assert_array_equal(al.token_units[1], [-1, 0, 0, 1, 1])


def test_whitespace_dropping_tokenizer_and_partial_interval():
  # A covers the space as its own token; C (BERT-like) drops it.
  a = enc([(0, 1), (1, 2), (2, 3)])
  c = enc([(0, 1), (2, 3)])
  al = A.align_encodings([a, c], "doc")
  assert al.num_units == 2
  np.testing.assert_array_equal(al.token_units[0], [0, 0, 1])  # space merged backward
  np.testing.assert_array_equal(al.token_units[1], [0, 1])
  np.testing.assert_array_equal(al.spans, [[0, 2], [2, 3]])


def test_shared_and_overlapping_spans():
  # Two tokens with the same span (a split multi-byte char) and an overlap.
  al = A.align_encodings([enc([(0, 3), (0, 3), (3, 4), (3, 6), (5, 8)])], "doc")
  np.testing.assert_array_equal(al.token_units[0], [0, 0, 1, 1, 1])
  np.testing.assert_array_equal(al.spans, [[0, 3], [3, 8]])


def test_identical_tokenizers_reduce_to_tokens(corpus_and_tokenizers):
  texts, small, _ = corpus_and_tokenizers
  ascii_text = "def f(x):\n    return x + 1  # plain ascii"
  e = small.encode(ascii_text)
  for al in (A.align([ascii_text], [small])[0], A.align([ascii_text], [small, small])[0]):
    assert al.num_units == len(e.ids)
    for tu in al.token_units:
      np.testing.assert_array_equal(tu, np.arange(len(e.ids)))


def test_multibyte_split_tokens_share_a_unit(corpus_and_tokenizers):
  _, small, _ = corpus_and_tokenizers
  text = "日本語"
  e = small.encode(text)
  assert len(e.ids) > 3  # the byte-level BPE splits the characters
  al = A.align([text], [small])[0]
  assert al.num_units == 3
  assert [text.encode()[s:t].decode() for s, t in al.spans] == ["日", "本", "語"]


# ---------------------------------------------------------------------------
# Two trained BPEs vs a slow reference
# ---------------------------------------------------------------------------


def slow_align(encodings):
  """Reference: python sets and loops, same definition as align.py's docstring."""
  per_tok, bsets = [], []
  for e in encodings:
    toks = [(int(s), int(t)) for (s, t), sp in zip(e.offsets, e.special) if not sp and t > s]
    pts = {p for st in toks for p in st}
    bsets.append({p for p in pts if not any(s < p < t for s, t in toks)})
    per_tok.append(toks)
  shared = sorted(set.intersection(*bsets))
  def interval(start):
    return sum(1 for b in shared if b <= start)
  n_int = len(shared) + 1
  present = [[False] * n_int for _ in encodings]
  for k, toks in enumerate(per_tok):
    for s, _ in toks:
      present[k][interval(s)] = True
  unit_of, u = {}, -1
  for i in range(n_int):
    if all(p[i] for p in present):
      u += 1
      unit_of[i] = u
    else:
      unit_of[i] = max(u, 0)
  maps = []
  for e in encodings:
    maps.append([unit_of[interval(int(s))] if (not sp and t > s) else -1
                 for (s, t), sp in zip(e.offsets, e.special)])
  return u + 1, maps


def test_two_bpes_match_reference(corpus_and_tokenizers):
  texts, small, large = corpus_and_tokenizers
  assert small.vocab_size != large.vocab_size
  ids = [f"d{i}" for i in range(len(texts))]
  als = A.align(texts, [small, large], ids)
  coarser = 0
  for text, al in zip(texts, als):
    encs = [small.encode(text), large.encode(text)]
    n, maps = slow_align(encs)
    assert al.num_units == n
    for tu, ref in zip(al.token_units, maps):
      np.testing.assert_array_equal(tu, ref)
    # Units tile the text in order, and each is the union of its tokens' spans.
    b = text.encode()
    assert al.spans[0, 0] == 0 and al.spans[-1, 1] == len(b)
    np.testing.assert_array_equal(al.spans[1:, 0], al.spans[:-1, 1])
    coarser += al.num_units < len(encs[1].ids)
  assert coarser > len(texts) // 2  # the larger vocabulary's tokens are merged often


def test_errors_name_the_document(corpus_and_tokenizers):
  _, small, large = corpus_and_tokenizers
  no_offsets = SimpleNamespace(ids=np.zeros(2, np.int32), offsets=None, special=np.zeros(2, bool))
  with pytest.raises(ValueError, match="'doc-7'.*no byte offsets"):
    A.align_encodings([enc([(0, 2), (2, 4)]), no_offsets], "doc-7")
  zeros = enc([(0, 0), (0, 0)])
  with pytest.raises(ValueError, match="'doc-8'.*no byte offsets"):
    A.align_encodings([enc([(0, 2), (2, 4)]), zeros], "doc-8")
  with pytest.raises(ValueError, match="'empty-doc'.*share no token boundary"):
    A.align([""], [small, large], ["empty-doc"])
  with pytest.raises(ValueError, match="'b'.*different unit counts"):
    A.check_unit_counts(["a", "b"], [3, 4], [3, 5])


# ---------------------------------------------------------------------------
# Pooling
# ---------------------------------------------------------------------------


def slow_pool(acts, tu, n_units, how):
  out = np.zeros((n_units, acts.shape[1]), np.float64)
  for u in range(n_units):
    rows = [i for i in range(len(tu)) if tu[i] == u]
    x = acts[rows].astype(np.float64)
    out[u] = {"mean": x.mean(0), "max": x.max(0), "last": x[-1]}[how]
  return out


@pytest.mark.parametrize("how", A.POOLINGS)
def test_pool_equals_slow_reference(corpus_and_tokenizers, how):
  texts, small, large = corpus_and_tokenizers
  rng = np.random.default_rng(0)
  for text in (texts[3], texts[-1]):
    al = A.align([text], [small, large])[0]
    for tu in al.token_units:
      acts = rng.normal(size=(len(tu), 7)).astype(np.float32)
      got = A.pool(acts, tu, al.num_units, how)
      np.testing.assert_allclose(got, slow_pool(acts, tu, al.num_units, how), rtol=1e-6,
                                 atol=1e-6)


def test_pool_segments_batched_with_padding():
  rng = np.random.default_rng(1)
  acts = rng.normal(size=(2, 5, 3)).astype(np.float32)
  seg = np.array([[0, 0, 1, -1, -1], [-1, 2, 2, 2, 3]])
  got = np.asarray(A.pool_segments(acts, seg, 10, "mean"))
  flat, s = acts.reshape(-1, 3), seg.reshape(-1)
  for u in range(4):
    np.testing.assert_allclose(got[u], flat[s == u].mean(0), rtol=1e-6)
  np.testing.assert_array_equal(got[4:], 0)
  with pytest.raises(ValueError, match="unknown pooling"):
    A.pool_segments(acts, seg, 10, "median")


# ---------------------------------------------------------------------------
# Windows
# ---------------------------------------------------------------------------


def test_windows_cut_at_unit_boundaries(corpus_and_tokenizers):
  texts, small, large = corpus_and_tokenizers
  al = A.align([texts[0]], [small, large])[0]
  tu = al.token_units[0]
  ws = A.windows(tu, 17)
  assert ws[0][0] == 0 and ws[-1][1] == len(tu)
  assert all(b - a <= 17 and a < b for a, b in ws)
  assert all(ws[i][1] == ws[i + 1][0] for i in range(len(ws) - 1))
  for a, _ in ws[1:]:  # no unit straddles a cut
    before, after = tu[:a][tu[:a] >= 0], tu[a:][tu[a:] >= 0]
    assert before.max() < after.min()
  with pytest.raises(ValueError, match="'long'.*spans more than max_len=2"):
    A.windows(np.array([0, 0, 0, 1]), 2, "long")
