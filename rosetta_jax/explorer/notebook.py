"""Short ``repr``s and inline HTML summaries of the matcher's result objects.

``MatchResult`` and ``Matches`` delegate their ``__repr__`` and ``_repr_html_`` here,
so a notebook shows a few lines (sizes, r distribution, the top pairs) instead of
the raw arrays. The HTML is plain markup with an inline SVG histogram (no script):
it renders in any notebook viewer. Neuron cards with contexts need activations and
unit texts, which these objects do not hold: build an explorer and use
``rj.explore(...).card(...)``.
"""

from __future__ import annotations

import html

import numpy as np

from rosetta_jax.explorer import page

TOP_ROWS = 10


def _q(x: np.ndarray) -> str:
  x = np.asarray(x, np.float64)
  x = x[np.isfinite(x)]
  if not x.size:
    return "none"
  return (f"median {np.median(x):.3f}, [{x.min():.3f}, {x.max():.3f}]")


def histogram_svg(values, bins: int = 30, lo: float = -1.0, hi: float = 1.0,
                  title: str = "") -> str:
  """A small inline SVG histogram of ``values`` over [lo, hi]."""
  v = np.asarray(values, np.float64)
  v = v[np.isfinite(v)]
  counts, _ = np.histogram(v, bins=bins, range=(lo, hi))
  w, h = 300, 60
  top = max(int(counts.max()) if counts.size else 0, 1)
  bars = "".join(
      f"<rect x='{i * w / bins:.2f}' y='{h - c / top * h:.2f}' width='{w / bins * 0.92:.2f}' "
      f"height='{c / top * h:.2f}' fill='#7a9cc6'><title>[{lo + i * (hi - lo) / bins:.3g}, "
      f"{lo + (i + 1) * (hi - lo) / bins:.3g}): {int(c)}</title></rect>"
      for i, c in enumerate(counts))
  return (f"<div style='font-size:11px;color:#555'>{html.escape(title)}</div>"
          f"<svg viewBox='0 0 {w} {h + 10}' preserveAspectRatio='none' "
          f"style='width:320px;height:70px;display:block'>{bars}"
          f"<text x='0' y='{h + 9}' font-size='9' fill='#666'>{lo:g}</text>"
          f"<text x='{w}' y='{h + 9}' font-size='9' fill='#666' text-anchor='end'>{hi:g}</text>"
          "</svg>")


def _cell(c) -> str:
  return html.escape(c if isinstance(c, str) else f"{c:.4g}" if isinstance(c, float) else str(c))


def _table(header, rows) -> str:
  head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
  body = "".join("<tr>" + "".join(f"<td>{_cell(c)}</td>" for c in row) + "</tr>" for row in rows)
  return f"<table class='kv'><tr>{head}</tr>{body}</table>"


def _wrap(title: str, body: str) -> str:
  return (f"<style>{page.static('explorer.css')}</style><div class='rj'>"
          f"<div class='member' style='max-width:720px'><h3>{html.escape(title)}</h3>{body}"
          "</div></div>")


def match_result_repr(res) -> str:
  """A few-line summary of a ``MatchResult``."""
  from rosetta_jax.match.rosetta import mutual_pairs  # pylint: disable=g-import-not-at-top
  na, nb = res.a_to_b_idx.shape[0], res.b_to_a_idx.shape[0]
  ia, _, _ = mutual_pairs(res, k=1)
  return (f"MatchResult(A: {na} neurons, B: {nb} neurons, k={res.k}, units={res.num_units}, "
          f"constant A/B: {len(res.excluded_a)}/{len(res.excluded_b)}, "
          f"mutual best pairs: {len(ia)}, best r A->B: {_q(res.a_to_b_r[:, 0])})")


def match_result_html(res) -> str:
  from rosetta_jax.match.rosetta import mutual_pairs  # pylint: disable=g-import-not-at-top
  ia, jb, r = mutual_pairs(res, k=1)
  order = np.argsort(-r, kind="stable")[:TOP_ROWS]
  na, nb = res.a_to_b_idx.shape[0], res.b_to_a_idx.shape[0]
  body = _table(["", "A", "B"], [["neurons", na, nb],
                                 ["constant (excluded)", len(res.excluded_a), len(res.excluded_b)],
                                 ["best r", _q(res.a_to_b_r[:, 0]), _q(res.b_to_a_r[:, 0])]])
  body += (f"<div class='stats'>k = {res.k}, {res.num_units} units, "
           f"<b>{len(ia)}</b> mutual best pairs</div>")
  body += histogram_svg(res.a_to_b_r[:, 0], title="best r of each A neuron")
  body += histogram_svg(r, title="r of the mutual best pairs")
  body += _table(["neuron A", "neuron B", "r"],
                 [[int(ia[i]), int(jb[i]), float(r[i])] for i in order])
  return _wrap("MatchResult", body)


def matches_repr(m) -> str:
  """A few-line summary of a ``Matches`` table."""
  n = len(m)
  if n == 0:
    return "Matches(0 pairs)"
  models = sorted({(str(a), str(b)) for a, b in zip(m.model_a, m.model_b)})
  pairs = "; ".join(f"{a} vs {b}" for a, b in models[:3]) + (" ..." if len(models) > 3 else "")
  return (f"Matches({n} pairs; {pairs}; r {_q(m.r)}; sites A/B: "
          f"{len(set(m.site_a.tolist()))}/{len(set(m.site_b.tolist()))})")


def matches_html(m) -> str:
  n = len(m)
  if n == 0:
    return _wrap("Matches", "<div class='stats'>no pairs</div>")
  order = np.argsort(-np.asarray(m.r, np.float64), kind="stable")[:TOP_ROWS]
  per_site: dict = {}
  for sa, sb in zip(m.site_a.tolist(), m.site_b.tolist()):
    per_site[(sa, sb)] = per_site.get((sa, sb), 0) + 1
  body = f"<div class='stats'><b>{n}</b> pairs, r {_q(m.r)}</div>"
  body += histogram_svg(m.r, title="r of the pairs")
  body += _table(["model A", "site A", "neuron A", "model B", "site B", "neuron B", "r", "rank"],
                 [[str(m.model_a[i]), str(m.site_a[i]), int(m.neuron_a[i]), str(m.model_b[i]),
                   str(m.site_b[i]), int(m.neuron_b[i]), float(m.r[i]), int(m.rank[i])]
                  for i in order])
  top_sites = sorted(per_site.items(), key=lambda kv: -kv[1])[:TOP_ROWS]
  body += _table(["site A", "site B", "pairs"], [[a, b, c] for (a, b), c in top_sites])
  return _wrap(f"Matches ({n} pairs)", body)
