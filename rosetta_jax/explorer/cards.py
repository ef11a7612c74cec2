"""Cards: each row's neurons, contexts and statistics as one JSON document.

A card (format ``rosetta_jax.explorer.card/1``, documented in docs/explorer.md)
holds one table of units (the union of every member's context windows, in unit
order) with the text and every member's activation on each unit, so any member's
contexts can be coloured by any member's activation. Contexts point into that
table as ``[centre, start, stop, value]``.

Cards are written in shards (``cards/sNNNNN.js``): gzip-compressed JSON in base64,
wrapped in a call the page's script defines, ``RJ.shard(k, "...")``, because a page
opened from ``file://`` may load scripts but not fetch files.
"""

from __future__ import annotations

import base64
import gzip
import json
import math
import os
import re
from typing import Mapping, Sequence

import numpy as np

from rosetta_jax.explorer.gather import CardConfig, NeuronSummary

CARD_FORMAT = "rosetta_jax.explorer.card/1"
SHARD_RE = re.compile(r'^RJ\.shard\((\d+), "([A-Za-z0-9+/=]*)"\);\s*$')


def rounded(x, digits: int):
  """A float rounded to ``digits`` significant digits; NaN/inf -> None (JSON null)."""
  if x is None:
    return None
  x = float(x)
  if not math.isfinite(x):
    return None
  return float(f"{x:.{digits}g}")


def windows(units: np.ndarray, unit_offsets: np.ndarray, before: int, after: int):
  """[n, 2] unit ranges [start, stop) around each unit, clipped to its document."""
  units = np.asarray(units, np.int64)
  doc = np.searchsorted(unit_offsets, units, side="right") - 1
  start = np.maximum(units - before, unit_offsets[doc])
  stop = np.minimum(units + after + 1, unit_offsets[doc + 1])
  return np.stack([start, stop], axis=1)


def context_units(summary: NeuronSummary, unit_offsets, cfg: CardConfig) -> np.ndarray:
  """The sorted units of all of a neuron's context windows (top and band samples)."""
  centres = np.concatenate([summary.top_units, *summary.band_units]).astype(np.int64)
  if centres.size == 0:
    return centres
  w = windows(centres, unit_offsets, cfg.before, cfg.after)
  return np.unique(np.concatenate([np.arange(a, b) for a, b in w]))


def band_edges(summary: NeuronSummary, bands: int) -> np.ndarray:
  return summary.lo + (summary.hi - summary.lo) * np.arange(bands + 1) / bands


def make_card(row, row_id: str, members: Sequence[dict], summaries: Sequence[NeuronSummary],
              acts: Sequence, unit_ids: np.ndarray, texts: Sequence[str], doc_of: np.ndarray,
              docs: Mapping[int, tuple[str, str]], num_units: int, cfg: CardConfig,
              unit_offsets: np.ndarray) -> dict:
  """One card.

  Args:
    row: the ``Row``.
    row_id: its id.
    members: per member the JSON header (model, site, layer, neuron, depth, r,
      domain, metrics, stats, vocab).
    summaries: per member its ``NeuronSummary``.
    acts: per member a function ``units -> activations``.
    unit_ids: the card's sorted unit table (global unit indices).
    texts: the text of each of those units.
    doc_of: the document index of each of those units.
    docs: {document index: (doc id, domain)} of those documents.
    num_units: T (for percentiles).
    cfg: the ``CardConfig``.
    unit_offsets: [D + 1] document unit offsets.
  """
  dg = cfg.digits
  pos = lambda u: np.searchsorted(unit_ids, u)

  def contexts(units, values):
    if len(units) == 0:
      return []
    w = windows(units, unit_offsets, cfg.before, cfg.after)
    return [[int(pos(u)), int(pos(a)), int(pos(b - 1)) + 1, rounded(v, dg)]
            for u, v, (a, b) in zip(units.tolist(), values.tolist(), w.tolist())]

  out_members = []
  for head, s in zip(members, summaries):
    edges = band_edges(s, cfg.bands)
    below = np.concatenate([[0], np.cumsum(s.band_counts)])
    bands = [{"lo": rounded(edges[j], dg), "hi": rounded(edges[j + 1], dg),
              "units": int(s.band_counts[j]),
              "pct": [rounded(100.0 * below[j] / num_units, dg),
                      rounded(100.0 * below[j + 1] / num_units, dg)],
              "samples": contexts(s.band_units[j], s.band_values[j])}
             for j in range(cfg.bands)]
    out_members.append({**head,
                        "stats": {k: rounded(v, dg) for k, v in s.stats.items()},
                        "hist": {"lo": rounded(s.lo, dg), "hi": rounded(s.hi, dg),
                                 "counts": s.hist.tolist()},
                        "top": contexts(s.top_units, s.top_values),
                        "bands": bands})
  return {
      "format": CARD_FORMAT, "id": row_id, "kind": row.kind, "group": row.group,
      "r": rounded(row.r, dg), "rank": row.rank,
      "members": out_members,
      "units": {"runs": unit_runs(unit_ids, doc_of), "text": list(texts),
                "act": [[rounded(v, cfg.act_digits) for v in np.asarray(f(unit_ids)).tolist()]
                        for f in acts]},
      "docs": {str(d): list(v) for d, v in docs.items()},
  }


def unit_runs(unit_ids: np.ndarray, doc_of: np.ndarray) -> list[list[int]]:
  """[[first unit, length, document index], ...]: the sorted unit table as runs of
  consecutive units within one document."""
  u = np.asarray(unit_ids, np.int64)
  if u.size == 0:
    return []
  d = np.asarray(doc_of, np.int64)
  brk = np.flatnonzero((np.diff(u) != 1) | (np.diff(d) != 0)) + 1
  starts = np.r_[0, brk]
  lens = np.diff(np.r_[starts, len(u)])
  return [[int(u[s]), int(n), int(d[s])] for s, n in zip(starts, lens)]


def expand_runs(runs) -> tuple[list[int], list[int]]:
  """(unit, document) of every position of a card's unit table."""
  units, docs = [], []
  for start, n, d in runs:
    units.extend(range(start, start + n))
    docs.extend([d] * n)
  return units, docs


def encode(payload) -> str:
  """JSON -> gzip -> base64 (what the page's ``RJ.inflateJSON`` reverses)."""
  raw = json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
  packed = gzip.compress(raw.encode("utf-8"), compresslevel=6, mtime=0)
  return base64.b64encode(packed).decode("ascii")


def decode(b64: str):
  return json.loads(gzip.decompress(base64.b64decode(b64)).decode("utf-8"))


def shard_path(out_dir: str, k: int) -> str:
  return os.path.join(out_dir, "cards", f"s{k:05d}.js")


def write_shard(out_dir: str, k: int, cards: Mapping[str, dict]) -> int:
  """Writes shard k; returns its size in bytes."""
  path = shard_path(out_dir, k)
  body = f'RJ.shard({k}, "{encode(dict(cards))}");\n'.encode("ascii")
  tmp = f"{path}.tmp"
  with open(tmp, "wb") as f:
    f.write(body)
  os.replace(tmp, path)
  return len(body)


def read_shard(out_dir: str, k: int) -> dict:
  """The cards of shard k ({row id: card})."""
  path = shard_path(out_dir, k)
  with open(path, encoding="ascii") as f:
    m = SHARD_RE.match(f.read())
  if not m or int(m.group(1)) != k:
    raise ValueError(f"{path} is not an explorer card shard")
  return decode(m.group(2))
