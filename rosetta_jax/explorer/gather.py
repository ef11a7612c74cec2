"""Streaming per-neuron summaries for the explorer's cards.

Two passes over each (model, site) that has neurons to show, reading the store
in chunks of units and keeping only those neurons' columns:

1. ``summarize_site``: per neuron its top-k units, a seeded sample of units from
   each activation band (equal-width intervals of [min, max], the lowest band
   holding the bulk of typical units), a histogram whose bins nest in the bands,
   and its activation statistics (mean, std, skew, excess kurtosis, frequency of
   x > 0, and the domain statistics of ``analysis/selectivity``: the preferred
   domain and DSI of the shifted activation x - min).
2. ``gather_units``: every neuron's activation on the units the cards need (the
   context windows of all members of every row it belongs to).

When a site's selected columns fit in ``cache_bytes`` the first pass keeps them
and the second reads no store. Memory otherwise: one chunk of the site plus
O(neurons x (k + bands x samples + bins)).

Sampling is keyed by a hash of (model, site, neuron, unit), so it does not depend
on chunk sizes or on which other neurons are shown.
"""

from __future__ import annotations

import dataclasses
import zlib
from typing import Mapping, Sequence

import numpy as np

from rosetta_jax.match.sources import as_source, source_moments


@dataclasses.dataclass(frozen=True)
class CardConfig:
  """What a card shows.

  Attributes:
    top_k: top-activating contexts per neuron.
    bands: activation bands (equal-width intervals of [min, max]).
    samples_per_band: contexts sampled from each band.
    hist_bins: histogram bins (a multiple of ``bands``, so bins nest in bands).
    before: units of context shown before the marked unit.
    after: units of context shown after it.
    seed: seed of the band samples.
    chunk_bytes: store bytes read per chunk (bounds memory).
    cache_bytes: keep a site's selected columns in memory up to this size
      (saves the second pass over the store).
    digits: significant digits of the values and statistics written into the cards.
    act_digits: significant digits of the per-unit activations (the colours and
      tooltips) in the cards' unit tables.
  """
  top_k: int = 10
  bands: int = 4
  samples_per_band: int = 4
  hist_bins: int = 40
  before: int = 8
  after: int = 3
  seed: int = 0
  chunk_bytes: int = 64 << 20
  cache_bytes: int = 256 << 20
  digits: int = 4
  act_digits: int = 3

  def __post_init__(self):
    if self.top_k < 1 or self.bands < 1 or self.samples_per_band < 0:
      raise ValueError("CardConfig: top_k and bands must be >= 1, samples_per_band >= 0")
    if self.hist_bins % self.bands:
      raise ValueError(f"CardConfig: hist_bins={self.hist_bins} must be a multiple of "
                       f"bands={self.bands}")
    if self.before < 0 or self.after < 0:
      raise ValueError("CardConfig: before and after must be >= 0")


@dataclasses.dataclass(frozen=True)
class NeuronSummary:
  """One neuron's pass-1 results (units are global unit indices).

  Attributes:
    top_units, top_values: [<= top_k] the highest activations, descending.
    band_units, band_values: per band (lowest first) the sampled units and
      their activations, descending.
    band_counts: [bands] units in each band.
    hist: [hist_bins] counts over [lo, hi] (equal widths).
    lo, hi: the activation range (min, max).
    stats: {mean, std, min, max, skew, kurtosis, frequency, dsi} (NaN: constant).
    domain: index of the preferred domain (-1 for a constant neuron).
  """
  top_units: np.ndarray
  top_values: np.ndarray
  band_units: tuple[np.ndarray, ...]
  band_values: tuple[np.ndarray, ...]
  band_counts: np.ndarray
  hist: np.ndarray
  lo: float
  hi: float
  stats: dict
  domain: int


def _chunk_units(num_neurons: int, cfg: CardConfig) -> int:
  # At most 8192 units: after a site's first chunk few entries pass the running
  # thresholds, so smaller chunks cost little and keep the arrays in cache.
  return int(max(256, min(8192, cfg.chunk_bytes // max(4 * num_neurons, 1))))


def _keys(units: np.ndarray, salt: np.ndarray, seed: int) -> np.ndarray:
  """Uniform [0, 1) keys, a splitmix64 hash of (unit, neuron salt, seed): [c, n]."""
  with np.errstate(over="ignore"):
    z = (units.astype(np.uint64)[:, None] * np.uint64(0x9E3779B97F4A7C15)
         + salt.astype(np.uint64)[None, :] * np.uint64(0xD1B54A32D192ED03)
         + np.uint64(seed & 0xFFFFFFFF))
    z ^= z >> np.uint64(30)
    z *= np.uint64(0xBF58476D1CE4E5B9)
    z ^= z >> np.uint64(27)
    z *= np.uint64(0x94D049BB133111EB)
    z ^= z >> np.uint64(31)
  return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def neuron_salt(model: str, site: str, neurons: np.ndarray) -> np.ndarray:
  base = zlib.crc32(f"{model}|{site}".encode()) << 20
  return (np.uint64(base) + np.asarray(neurons, np.uint64)).astype(np.uint64)


def _best_per_group(group, p, u, m):
  """Positions of the m entries of smallest (p, u) in each group."""
  order = np.lexsort((u, p, group))
  g = group[order]
  start = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
  rank = np.arange(len(g)) - np.repeat(start, np.diff(np.r_[start, len(g)]))
  return order[rank < m]


class _Best:
  """Per group the m entries of smallest (p, unit), merged chunk by chunk.

  Chunks arrive in unit order, so an entry of a new chunk that only ties the
  m-th best ``p`` of a full group never enters it (the kept unit is lower):
  ``offer`` filters with a strict threshold.
  """

  def __init__(self, num_groups: int, m: int):
    self.num_groups, self.m = num_groups, m
    self.g = np.zeros(0, np.int64)
    self.p = np.zeros(0)
    self.u = np.zeros(0, np.int64)
    self.v = np.zeros(0, np.float32)
    self.thr = np.full(num_groups, np.inf)     # p of the m-th best, once a group is full

  def offer(self, g, p, u, v) -> None:
    keep = p < self.thr[g]
    if not keep.any():
      return
    g, p, u, v = (np.concatenate([a, b[keep]]) for a, b in
                  ((self.g, g), (self.p, p), (self.u, u), (self.v, v)))
    sel = _best_per_group(g, p, u, self.m)
    self.g, self.p, self.u, self.v = g[sel], p[sel], u[sel], v[sel]
    cnt = np.bincount(self.g, minlength=self.num_groups)
    worst = np.full(self.num_groups, -np.inf)
    np.maximum.at(worst, self.g, self.p)
    self.thr = np.where(cnt >= self.m, worst, np.inf)

  def lists(self) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per group (units, values), by value descending then unit."""
    order = np.lexsort((self.u, -self.v.astype(np.float64), self.g))
    g, u, v = self.g[order], self.u[order], self.v[order]
    b = np.searchsorted(g, np.arange(self.num_groups + 1))
    return [(u[b[i]:b[i + 1]], v[b[i]:b[i + 1]]) for i in range(self.num_groups)]


def _offer_top(top: _Best, x: np.ndarray, units: np.ndarray, k: int) -> None:
  """Offers a chunk's candidates for each column's top-k: values above the chunk's
  k-th largest, and of the ties at it the lowest units, as many as needed."""
  c, n = x.shape
  if c > k:
    kth = np.partition(x, c - k, axis=0)[c - k]
    above = x > kth
    tie = x == kth
    need = k - above.sum(0)
    mask = above | (tie & (np.cumsum(tie, axis=0) <= need))
  else:
    mask = np.ones(x.shape, bool)
  r, col = np.nonzero(mask)
  vals = x[r, col]
  top.offer(col, -vals.astype(np.float64), units[r], vals)


def _offer_bands(bands: _Best, x: np.ndarray, units: np.ndarray, band: np.ndarray,
                 key: np.ndarray, m: int) -> None:
  """Offers a chunk's candidates for each (band, column)'s m smallest keys.

  A provisional cut near the expected m-th smallest key of the chunk's group
  (keys are uniform) keeps the candidates few; a group it leaves short of
  min(m, its chunk count) is redone with the exact running threshold."""
  c, n = x.shape
  g = band * n + np.arange(n)
  cnt = np.bincount(g.ravel(), minlength=bands.num_groups)
  cut = 3.0 * (m + 2)
  tau = np.where(cnt > cut, np.minimum(bands.thr, cut / np.maximum(cnt, 1)), bands.thr)
  mask = key < tau[g]
  got = np.bincount(g[mask], minlength=bands.num_groups)
  short = (got < np.minimum(m, cnt)) & (tau < bands.thr)
  if short.any():
    mask |= short[g] & (key < bands.thr[g])
  r, col = np.nonzero(mask)
  bands.offer(g[r, col], key[r, col], units[r], x[r, col])


def summarize_site(src, cols: Sequence[int], unit_domain: np.ndarray, num_domains: int,
                   cfg: CardConfig, salt: np.ndarray, cache: bool = True):
  """Pass 1 over one site for the neurons ``cols``.

  Args:
    src: an ``ActivationSource`` [T, N] (a store site or an array).
    cols: sorted neuron indices within the site.
    unit_domain: [T] domain index of each unit.
    num_domains: K.
    cfg: the ``CardConfig``.
    salt: [len(cols)] uint64 per-neuron hash salt (``neuron_salt``).
    cache: keep the [T, len(cols)] columns when they fit in ``cfg.cache_bytes``.

  Returns:
    ({col: NeuronSummary}, cached [T, len(cols)] float32 array or None).
  """
  src = as_source(src)
  cols = np.asarray(cols, np.int64)
  t, n = int(src.num_units), len(cols)
  if t == 0:
    raise ValueError("summarize_site: the source has no units")
  mom = source_moments(src)
  mean = np.asarray(mom.mean, np.float64)[cols]
  lo = np.asarray(mom.min, np.float64)[cols]
  hi = np.asarray(mom.max, np.float64)[cols]
  width = hi - lo
  nbins, nb, ns, k = cfg.hist_bins, cfg.bands, cfg.samples_per_band, cfg.top_k
  per_band = nbins // nb
  scale = np.where(width > 0, nbins / np.where(width > 0, width, 1.0), 0.0)
  s2, s3, s4, pos = (np.zeros(n) for _ in range(4))
  dom_sum, dom_n = np.zeros((num_domains, n)), np.zeros(num_domains)
  hist = np.zeros(n * nbins, np.int64)
  top = _Best(n, k)
  bands = _Best(nb * n, ns) if ns else None
  keep = cache and t * n * 4 <= cfg.cache_bytes
  parts = []
  chunk = _chunk_units(src.num_neurons, cfg)
  for c0 in range(0, t, chunk):
    c1 = min(t, c0 + chunk)
    x = np.asarray(src.read(c0, c1), np.float32)[:, cols]           # [c, n]
    if keep:
      parts.append(x)
    units = np.arange(c0, c1, dtype=np.int64)
    xd = x.astype(np.float64)
    d = xd - mean
    d2 = d * d
    s2 += d2.sum(0)
    s3 += (d2 * d).sum(0)
    s4 += (d2 * d2).sum(0)
    pos += (x > 0).sum(0)
    dom = unit_domain[c0:c1]
    dom_n += np.bincount(dom, minlength=num_domains)
    for j in np.unique(dom):
      dom_sum[j] += (xd[dom == j] - lo).sum(0)
    bins = np.clip(np.floor((xd - lo) * scale), 0, nbins - 1).astype(np.int64)
    hist += np.bincount((bins + np.arange(n) * nbins).ravel(), minlength=n * nbins)
    _offer_top(top, x, units, k)
    if bands is not None:
      _offer_bands(bands, x, units, bins // per_band, _keys(units, salt, cfg.seed), ns)
  cached = np.concatenate(parts) if keep else None
  out = {}
  var = s2 / t
  with np.errstate(invalid="ignore", divide="ignore"):
    skew = np.where(var > 0, (s3 / t) / var ** 1.5, np.nan)
    kurt = np.where(var > 0, (s4 / t) / var ** 2 - 3.0, np.nan)
    mu = np.where(dom_n[:, None] > 0, dom_sum / np.maximum(dom_n, 1)[:, None], np.nan)
  hist = hist.reshape(n, nbins)
  top_lists = top.lists()
  band_lists = bands.lists() if bands is not None else None
  empty = (np.zeros(0, np.int64), np.zeros(0, np.float32))
  for c in range(n):
    ti, tv = top_lists[c]
    per = [band_lists[j * n + c] if band_lists is not None else empty for j in range(nb)]
    constant = not width[c] > 0
    m = mu[:, c]
    present = ~np.isnan(m)
    if constant or not present.any():
      dsi, pref = float("nan"), -1
    else:
      mmax = float(np.nanmax(m))
      rest = (float(np.nansum(m)) - mmax) / max(int(present.sum()) - 1, 1)
      dsi = (mmax - rest) / (mmax + rest) if mmax + rest != 0 else float("nan")
      pref = int(np.argmax(np.where(present, m, -np.inf)))
    stats = {"mean": float(mean[c]), "std": float(np.sqrt(var[c])), "min": float(lo[c]),
             "max": float(hi[c]), "skew": float(skew[c]), "kurtosis": float(kurt[c]),
             "frequency": float(pos[c] / t), "dsi": dsi}
    if constant:
      stats.update(skew=float("nan"), kurtosis=float("nan"))
    out[int(cols[c])] = NeuronSummary(
        ti, tv, tuple(u for u, _ in per), tuple(v for _, v in per),
        hist[c].reshape(nb, per_band).sum(1), hist[c], float(lo[c]), float(hi[c]), stats, pref)
  return out, cached


def gather_units(src, cols: Sequence[int], wanted: Mapping[int, np.ndarray], cfg: CardConfig,
                 cached: np.ndarray | None = None) -> dict[int, np.ndarray]:
  """Pass 2: each neuron's activations on its wanted units.

  Args:
    src: the site's ``ActivationSource``.
    cols: the neurons of pass 1 (the columns of ``cached``).
    wanted: {col: sorted unique unit indices}.
    cfg: the ``CardConfig`` (chunk size).
    cached: pass 1's [T, len(cols)] columns, if it kept them.

  Returns:
    {col: float32 activations aligned with ``wanted[col]``}.
  """
  cols = list(int(c) for c in cols)
  where = {c: j for j, c in enumerate(cols)}
  if cached is not None:
    return {c: cached[np.asarray(u, np.int64), where[c]] for c, u in wanted.items()}
  src = as_source(src)
  none = [np.zeros(0, np.int64)]
  flat_u = np.concatenate([np.asarray(u, np.int64) for u in wanted.values()] or none)
  flat_c = np.concatenate([np.full(len(u), c, np.int64) for c, u in wanted.items()] or none)
  order = np.argsort(flat_u, kind="stable")
  flat_u, flat_c = flat_u[order], flat_c[order]
  vals = np.zeros(len(flat_u), np.float32)
  chunk = _chunk_units(src.num_neurons, cfg)
  starts = np.arange(0, src.num_units, chunk)
  for c0 in starts:
    a, b = np.searchsorted(flat_u, [c0, c0 + chunk])
    if a == b:
      continue                      # no unit wanted here: skip the read
    x = np.asarray(src.read(int(c0), int(min(c0 + chunk, src.num_units))), np.float32)
    vals[a:b] = x[flat_u[a:b] - c0, flat_c[a:b]]
  out_sorted = np.empty_like(vals)
  out_sorted[order] = vals
  out, s = {}, 0
  for c, u in wanted.items():
    out[c] = out_sorted[s:s + len(u)]
    s += len(u)
  return out
