"""Per-neuron selectivity and monosemanticity, streamed over units, bootstrappable.

One pass over a [T, N] activation source (a store site, or an array) accumulates,
per *document*, the sufficient statistics of every neuron (vectorised in JAX over
neurons, one jitted step per chunk of units), plus a running top-m of units per
neuron. A second pass over the held-out half of the documents scores the
token + domain predictor fitted on the other half. Every metric is then a
function of document-weighted sums, so a document-bootstrap resample (a weight
vector over documents, ``bootstrap.bootstrap_weights``) recomputes all metrics
for all neurons with a few [B, D] x [D, N] matmuls.

Metrics (formulas in docs/polarization.md), x = a neuron's activation over units:

* ``kurtosis``: excess kurtosis m4 / m2^2 - 3 (central moments).
* ``hoyer``: (sqrt(T) - |x|_1 / |x|_2) / (sqrt(T) - 1), in [0, 1]; 1 = one unit.
* ``frequency``: fraction of units with x > 0 (the neuron "fires").
* ``dsi``: domain selectivity index (mu_max - mu_rest) / (mu_max + mu_rest) of
  the domain means mu_d of the shifted activation x - min(x); mu_rest is the mean
  of the other domains' means. In [0, 1].
* ``domain_entropy`` / ``token_entropy``: entropy of the domains / unit texts of
  the neuron's top-m activating units, normalised by log(#domains) / log(m).
* ``explanation``: R^2 on held-out documents (odd index) of the predictor
  x_hat = mu_domain + shrunk mean residual of the unit's token, fitted on the
  even-index documents.

A constant neuron (zero variance) gets NaN for every metric and ``constant=True``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from rosetta_jax import io as io_lib
from rosetta_jax.match import sources

METRICS = ("kurtosis", "hoyer", "frequency", "dsi", "domain_entropy", "token_entropy",
           "explanation")
# +1: larger means more selective / monosemantic; -1: smaller means more selective.
SELECTIVE_SIGN = {"kurtosis": 1, "hoyer": 1, "frequency": -1, "dsi": 1, "domain_entropy": -1,
                  "token_entropy": -1, "explanation": 1}


@dataclasses.dataclass(frozen=True)
class UnitLabels:
  """What each unit is: its document, domain and token (unit text) id.

  Attributes:
    doc_index: [T] int document index (0..D-1), documents contiguous.
    doc_domain: [D] int domain index of each document.
    domains: the domain names (index -> name).
    token: [T] int id of each unit's text (0..V-1).
    vocab: V unit texts (id -> text), for galleries.
  """
  doc_index: np.ndarray
  doc_domain: np.ndarray
  domains: tuple[str, ...]
  token: np.ndarray
  vocab: tuple[str, ...] = ()

  @property
  def num_units(self) -> int:
    return int(self.doc_index.shape[0])

  @property
  def num_docs(self) -> int:
    return int(self.doc_domain.shape[0])

  @property
  def num_tokens(self) -> int:
    return int(self.token.max()) + 1 if self.token.size else 0

  @property
  def test_doc(self) -> np.ndarray:
    """[D] bool: documents held out to score the explanation predictor (odd index)."""
    return np.arange(self.num_docs) % 2 == 1

  @staticmethod
  def build(unit_offsets, doc_domains: Sequence[str], unit_texts: Sequence[str]) -> "UnitLabels":
    """From per-document unit offsets [D + 1], domain names [D] and unit texts [T]."""
    offs = np.asarray(unit_offsets, np.int64)
    if offs.ndim != 1 or offs[0] != 0 or np.any(np.diff(offs) < 0):
      raise ValueError("unit_offsets must be a non-decreasing [D + 1] array starting at 0")
    if len(doc_domains) != len(offs) - 1:
      raise ValueError(f"{len(doc_domains)} domains for {len(offs) - 1} documents")
    if len(unit_texts) != offs[-1]:
      raise ValueError(f"{len(unit_texts)} unit texts for {offs[-1]} units")
    names = tuple(sorted(set(doc_domains)))
    vocab: dict[str, int] = {}
    token = np.fromiter((vocab.setdefault(t, len(vocab)) for t in unit_texts), np.int64,
                        count=len(unit_texts))
    return UnitLabels(np.repeat(np.arange(len(offs) - 1), np.diff(offs)),
                      np.array([names.index(d) for d in doc_domains], np.int64), names,
                      token, tuple(vocab))


@dataclasses.dataclass(frozen=True)
class NeuronStats:
  """Per-document sums of every neuron ([D, N] each; y = x - center).

  Attributes:
    n: [D] units per document.
    s1, s2, s3, s4: sums of y, y^2, y^3, y^4.
    sabs: sum of |x|; pos: count of x > 0; shifted: sum of x - xmin.
    test_sse, test_s1, test_s2: on held-out documents, sums of (y - y_hat)^2, y, y^2
      (zero on the fitting documents).
    top_units: [N, m] unit indices of each neuron's top-m activations (desc).
    top_values: [N, m] their activations.
    center, xmin: [N] the full-data mean and minimum.
    constant: [N] bool, zero variance.
    labels: the ``UnitLabels``.
  """
  n: np.ndarray
  s1: np.ndarray
  s2: np.ndarray
  s3: np.ndarray
  s4: np.ndarray
  sabs: np.ndarray
  pos: np.ndarray
  shifted: np.ndarray
  test_sse: np.ndarray
  test_s1: np.ndarray
  test_s2: np.ndarray
  top_units: np.ndarray
  top_values: np.ndarray
  center: np.ndarray
  xmin: np.ndarray
  constant: np.ndarray
  labels: UnitLabels

  SUMS = ("s1", "s2", "s3", "s4", "sabs", "pos", "shifted", "test_sse", "test_s1", "test_s2")

  @property
  def num_neurons(self) -> int:
    return int(self.center.shape[0])

  def save(self, path: str) -> None:
    arrays = {f: getattr(self, f) for f in ("n", *self.SUMS, "top_units", "top_values",
                                             "center", "xmin", "constant")}
    io_lib.atomic_write_npz(path, **arrays)

  @staticmethod
  def load(path: str, labels: UnitLabels) -> "NeuronStats":
    with np.load(path) as z:
      return NeuronStats(**{k: z[k] for k in z.files}, labels=labels)


# ----------------------------------------------------------------------------
# The streaming passes (jitted per chunk, vectorised over neurons)
# ----------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("num_docs", "num_tokens", "m"))
def _pass1_chunk(x, valid, doc, tok_fit, center, xmin, top_v, top_i, unit0, *, num_docs,
                 num_tokens, m):
  """Per-document sums of one chunk [c, N], token sums of fitting units, top-m merge."""
  seg = lambda v: jax.ops.segment_sum(v, doc, num_segments=num_docs)
  y = jnp.where(valid[:, None], x - center, 0.0)
  y2 = y * y
  vf = valid[:, None].astype(x.dtype)
  sums = (seg(y), seg(y2), seg(y2 * y), seg(y2 * y2), seg(jnp.abs(x) * vf),
          seg((x > 0) * vf), seg((x - xmin) * vf))
  # Fitting units only (tok_fit == num_tokens for held-out and padding units).
  tok_sum = jax.ops.segment_sum(y, tok_fit, num_segments=num_tokens + 1)[:num_tokens]
  # Running top-m per neuron: [N, m] merged with the chunk's [N, c].
  cand_v = jnp.concatenate([top_v, jnp.where(valid[None, :], x.T, -jnp.inf)], axis=1)
  ids = unit0 + jnp.arange(x.shape[0], dtype=jnp.int32)
  cand_i = jnp.concatenate([top_i, jnp.broadcast_to(ids, (x.shape[1], x.shape[0]))], axis=1)
  v, pos = jax.lax.top_k(cand_v, m)
  return sums, tok_sum, v, jnp.take_along_axis(cand_i, pos, axis=1)


@functools.partial(jax.jit, static_argnames=("num_docs",))
def _pass2_chunk(x, valid, doc, tok, dom, center, mu_dom, delta, *, num_docs):
  """Held-out sums of the squared residual of the token + domain predictor."""
  seg = lambda v: jax.ops.segment_sum(v, doc, num_segments=num_docs)
  y = jnp.where(valid[:, None], x - center, 0.0)
  pred = mu_dom[dom] + delta[tok]
  r = jnp.where(valid[:, None], y - pred, 0.0)
  return seg(r * r), seg(y), seg(y * y)


def _fit_additive(s_grp, g_tok, g_dom, g_n, num_tokens, num_domains, shrink, iters):
  """Least-squares y ~ mu_domain + delta_token from (token, domain) group sums.

  Backfitting: alternate domain means of y - delta and ridge-shrunk token means of
  y - mu (``shrink`` pseudo-units pull an unseen or rare token's delta to 0).
  s_grp [G, N] sums of y per group; returns mu [K, N], delta [V, N].
  """
  from scipy import sparse  # pylint: disable=g-import-not-at-top
  gid = np.arange(len(g_n))
  to_dom = sparse.csr_matrix((np.ones(len(g_n)), (g_dom, gid)), shape=(num_domains, len(g_n)))
  to_tok = sparse.csr_matrix((np.ones(len(g_n)), (g_tok, gid)), shape=(num_tokens, len(g_n)))
  n_dom = to_dom @ g_n
  n_tok = to_tok @ g_n
  delta = np.zeros((num_tokens, s_grp.shape[1]))
  for _ in range(iters):
    mu = (to_dom @ (s_grp - g_n[:, None] * delta[g_tok])) / np.maximum(n_dom, 1)[:, None]
    delta = (to_tok @ (s_grp - g_n[:, None] * mu[g_dom])) / (n_tok + shrink)[:, None]
  return mu, delta


def neuron_stats(source, labels: UnitLabels, top_m: int = 32, chunk: int = 2048,
                 shrink: float = 1.0, iters: int = 10) -> NeuronStats:
  """Streams a [T, N] source (store site, ConcatSource or array) into ``NeuronStats``.

  Args:
    source: activations over the units of ``labels``.
    labels: document, domain and token of each unit.
    top_m: top-activating units kept per neuron (for the entropies and galleries).
    chunk: units per jitted step (fixed shape; the last chunk is padded).
    shrink: pseudo-count of the token effect (delta_t = sum resid / (n_t + shrink)).
    iters: backfitting iterations of the additive token + domain fit.

  Raises:
    ValueError: unit counts differ, or non-finite activations (names the neuron).
  """
  src = sources.as_source(source)
  t, n_neu = src.num_units, src.num_neurons
  if t != labels.num_units:
    raise ValueError(f"source has {t} units but the labels describe {labels.num_units}")
  if t < 2:
    raise ValueError("need at least two units")
  top_m = min(top_m, t)
  mom = sources.source_moments(src)
  if hasattr(mom, "check_finite"):
    mom.check_finite("selectivity source")
  center = np.asarray(mom.mean, np.float32)
  xmin = np.asarray(mom.min, np.float32)
  constant = ~(np.asarray(mom.var) > 0)
  d, v = labels.num_docs, labels.num_tokens
  test_doc = labels.test_doc
  fit_unit = ~test_doc[labels.doc_index]
  dom_of_unit = labels.doc_domain[labels.doc_index]
  # Fitting units are grouped by (token, domain): the additive fit only needs each
  # group's count and sum. Groups are numbered compactly (no V x K table).
  k_dom = len(labels.domains)
  key = labels.token * k_dom + dom_of_unit
  gkeys, group = np.unique(key[fit_unit], return_inverse=True)
  g = len(gkeys)
  group_tok, group_dom = gkeys // k_dom, gkeys % k_dom
  group_n = np.bincount(group, minlength=g).astype(np.float64)
  tok_fit = np.full(t, g, np.int32)
  tok_fit[fit_unit] = group
  acc = [np.zeros((d, n_neu)) for _ in range(7)]
  tok_sum = np.zeros((g, n_neu))
  top_v = jnp.full((n_neu, top_m), -jnp.inf, jnp.float32)
  top_i = jnp.full((n_neu, top_m), -1, jnp.int32)

  def padded(s):
    e = min(s + chunk, t)
    x = np.zeros((chunk, n_neu), np.float32)
    x[:e - s] = src.read(s, e)
    valid = np.zeros(chunk, bool)
    valid[:e - s] = True
    if not np.all(np.isfinite(x[:e - s])):
      bad = np.argwhere(~np.isfinite(x[:e - s]))[0]
      raise ValueError(f"non-finite activation at unit {s + bad[0]}, neuron {bad[1]}")
    idx = lambda a, fill: np.concatenate([a[s:e], np.full(chunk - (e - s), fill, a.dtype)])
    return x, valid, idx

  for s in range(0, t, chunk):
    x, valid, idx = padded(s)
    sums, ts, top_v, top_i = _pass1_chunk(
        x, valid, idx(labels.doc_index.astype(np.int32), 0), idx(tok_fit, g), center, xmin,
        top_v, top_i, np.int32(s), num_docs=d, num_tokens=g, m=top_m)
    for a, b in zip(acc, sums):
      a += np.asarray(b, np.float64)
    tok_sum += np.asarray(ts, np.float64)
  n = np.bincount(labels.doc_index, minlength=d).astype(np.float64)
  mu_dom, delta = _fit_additive(tok_sum, group_tok, group_dom, group_n, v,
                                len(labels.domains), shrink, iters)
  test = [np.zeros((d, n_neu)) for _ in range(3)]
  mu_dom32, delta32 = jnp.asarray(mu_dom, jnp.float32), jnp.asarray(delta, jnp.float32)
  for s in range(0, t, chunk):
    e = min(s + chunk, t)
    if not np.any(test_doc[labels.doc_index[s:e]]):
      continue
    x, valid, idx = padded(s)
    valid &= np.concatenate([test_doc[labels.doc_index[s:e]], np.zeros(chunk - (e - s), bool)])
    out = _pass2_chunk(x, valid, idx(labels.doc_index.astype(np.int32), 0),
                       idx(labels.token.astype(np.int32), 0), idx(dom_of_unit.astype(np.int32), 0),
                       center, mu_dom32, delta32, num_docs=d)
    for a, b in zip(test, out):
      a += np.asarray(b, np.float64)
  return NeuronStats(n, *acc, *test, top_units=np.asarray(top_i), top_values=np.asarray(top_v),
                     center=center, xmin=xmin, constant=constant, labels=labels)


# ----------------------------------------------------------------------------
# Metrics from the sums (full data or document-bootstrap weights)
# ----------------------------------------------------------------------------


def _entropy(counts: np.ndarray, norm: float) -> np.ndarray:
  """Normalised entropy along the last axis of non-negative counts."""
  tot = counts.sum(-1, keepdims=True)
  p = counts / np.where(tot > 0, tot, 1)
  with np.errstate(divide="ignore", invalid="ignore"):
    h = -np.where(p > 0, p * np.log(p), 0.0).sum(-1)
  return h / norm if norm > 0 else np.zeros_like(h)


def domain_means(stats: NeuronStats, weights=None) -> np.ndarray:
  """[(B,) domains, N] mean shifted activation per domain (NaN for an absent domain)."""
  w = np.ones((1, len(stats.n))) if weights is None else np.atleast_2d(weights)
  lab = stats.labels
  onehot = np.eye(len(lab.domains))[lab.doc_domain]                 # [D, K]
  num = np.einsum("bd,dk,dn->bkn", w, onehot, stats.shifted)
  den = (w * stats.n) @ onehot                                      # [B, K]
  with np.errstate(invalid="ignore", divide="ignore"):
    mu = num / den[:, :, None]
  mu = np.where(den[:, :, None] > 0, mu, np.nan)
  return mu[0] if weights is None or np.ndim(weights) == 1 else mu


def metrics(stats: NeuronStats, weights=None, block: int = 32) -> dict[str, np.ndarray]:
  """Every metric of every neuron.

  Args:
    stats: from ``neuron_stats``.
    weights: None (full data) or [B, D] document multiplicities (bootstrap).
    block: resamples evaluated together.

  Returns:
    {metric: [N]} (or [B, N] with weights), plus ``preferred_domain`` (int).
    Constant neurons are NaN (preferred domain -1).
  """
  single = weights is None
  w = np.ones((1, len(stats.n))) if single else np.asarray(weights, np.float64)
  if w.ndim != 2 or w.shape[1] != len(stats.n):
    raise ValueError(f"weights must be [B, {len(stats.n)}], got {w.shape}")
  if len(w) > block:   # bounds the [B, N, m] top-m arrays
    parts = [metrics(stats, w[i:i + block], block) for i in range(0, len(w), block)]
    return {k_: np.concatenate([p[k_] for p in parts]) for k_ in parts[0]}
  n = (w @ stats.n)[:, None]
  e1, e2, e3, e4 = ((w @ getattr(stats, f"s{i}")) / n for i in range(1, 5))
  mu2 = e2 - e1 ** 2
  mu4 = e4 - 4 * e1 * e3 + 6 * e1 ** 2 * e2 - 3 * e1 ** 4
  c = stats.center.astype(np.float64)
  raw2 = (w @ stats.s2) + 2 * c * (w @ stats.s1) + c ** 2 * n    # sum x^2
  l1 = w @ stats.sabs
  sq = np.sqrt(n)
  out = {}
  with np.errstate(invalid="ignore", divide="ignore"):
    out["kurtosis"] = np.where(mu2 > 0, mu4 / mu2 ** 2 - 3, np.nan)
    out["hoyer"] = (sq - l1 / np.sqrt(raw2)) / (sq - 1)
    out["frequency"] = (w @ stats.pos) / n
    mu = domain_means(stats, w)                                     # [B, K, N]
    mu_max = np.nanmax(mu, axis=1)
    k_present = np.sum(~np.isnan(mu), axis=1)
    mu_rest = (np.nansum(mu, axis=1) - mu_max) / np.maximum(k_present - 1, 1)
    out["dsi"] = (mu_max - mu_rest) / (mu_max + mu_rest)
    out["preferred_domain"] = np.argmax(np.where(np.isnan(mu), -np.inf, mu), axis=1)
    test = stats.labels.test_doc.astype(np.float64)
    nt = (w * test) @ stats.n
    sst = (w @ stats.test_s2) - (w @ stats.test_s1) ** 2 / np.maximum(nt, 1)[:, None]
    out["explanation"] = 1 - (w @ stats.test_sse) / sst
  # Top-m entropies, each top unit weighted by its document's multiplicity.
  lab = stats.labels
  top = stats.top_units
  ok = top >= 0
  tu = np.maximum(top, 0)
  top_doc = lab.doc_index[tu]                                       # [N, m]
  uw = w[:, top_doc] * ok                                           # [B, N, m]
  k = len(lab.domains)
  dom = lab.doc_domain[top_doc]
  dcount = np.stack([(uw * (dom == j)).sum(-1) for j in range(k)], -1)
  out["domain_entropy"] = _entropy(dcount, np.log(k))
  m = top.shape[1]
  tok = lab.token[tu]                                               # [N, m]
  same = (tok[:, :, None] == tok[:, None, :]) & ok[:, None, :]      # [N, m, m]
  first = ~np.any(np.tril(same, -1), axis=-1)                       # first occurrence
  tcount = np.einsum("bnj,nij->bni", uw, same.astype(np.float64)) * first
  out["token_entropy"] = _entropy(tcount, np.log(m))
  bad = stats.constant[None, :] | (n <= 1)
  for key in METRICS:
    out[key] = np.where(bad, np.nan, out[key])
  out["preferred_domain"] = np.where(bad, -1, out["preferred_domain"])
  return {k_: v[0] for k_, v in out.items()} if single else out
