"""Domain specialisation of Rosetta neurons, and text galleries of their top units.

Each neuron's *preferred domain* is the argmax of its domain means
(``selectivity.domain_means``). ``domain_shares`` turns a set of neurons into the
share per domain; ``matched_controls`` draws non-Rosetta neurons from the same
layers in the same numbers (a layer-only draw; the domains study now compares
with ``analysis.controls.matched_control``, matched on frequency too, and with
the null-paired neurons).
"""

from __future__ import annotations

import html

import numpy as np


def domain_shares(preferred, num_domains: int) -> np.ndarray:
  """[(B,) K] share of neurons preferring each domain (preferred: [(B,) n] ints, -1 = none)."""
  p = np.atleast_2d(np.asarray(preferred))
  out = np.stack([(p == k).sum(-1) for k in range(num_domains)], -1).astype(np.float64)
  tot = out.sum(-1, keepdims=True)
  out = out / np.where(tot > 0, tot, 1)
  return out[0] if np.ndim(preferred) == 1 else out


def matched_controls(is_rosetta, layer, seed: int = 0, exclude=None) -> np.ndarray:
  """Indices of non-Rosetta neurons, as many per layer as Rosetta ones (seeded).

  Args:
    is_rosetta: [N] bool.
    layer: [N] int layer of each neuron.
    seed: sampling seed.
    exclude: optional [N] bool of neurons never to draw (e.g. constant).

  Returns:
    Sorted indices; a layer with fewer non-Rosetta neurons than Rosetta ones gives all.
  """
  ros = np.asarray(is_rosetta, bool)
  layer = np.asarray(layer)
  bad = np.zeros_like(ros) if exclude is None else np.asarray(exclude, bool)
  rng = np.random.default_rng(seed)
  picks = []
  for l in np.unique(layer):
    pool = np.flatnonzero((layer == l) & ~ros & ~bad)
    want = int(np.sum((layer == l) & ros))
    picks.append(rng.choice(pool, size=min(want, len(pool)), replace=False))
  return np.sort(np.concatenate(picks)) if picks else np.zeros(0, np.int64)


def snippet_html(text: str, span: tuple[int, int], context: int = 40) -> str:
  """Escaped HTML of ``text`` around a byte span, the span inside ``<mark>``.

  Args:
    text: the document.
    span: [start, end) UTF-8 byte offsets of the unit.
    context: bytes of context on each side.
  """
  b = text.encode("utf-8")
  s, e = int(span[0]), int(span[1])
  dec = lambda x: html.escape(x.decode("utf-8", errors="replace")).replace("\n", "&#8629;")
  pre = ("&hellip;" if s - context > 0 else "") + dec(b[max(0, s - context):s])
  post = dec(b[e:e + context]) + ("&hellip;" if e + context < len(b) else "")
  return f"{pre}<mark>{dec(b[s:e])}</mark>{post}"
