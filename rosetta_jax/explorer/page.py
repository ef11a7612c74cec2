"""The explorer page: one HTML file with its CSS, script and row index inline.

The row index (format ``rosetta_jax.explorer.index/1``, docs/explorer.md) is
columnar JSON, gzip-compressed and base64-encoded inside the page, inflated by
the browser's ``DecompressionStream``. Nothing is fetched from the network.
"""

from __future__ import annotations

import html
import importlib.resources
import os
from typing import Any, Mapping, Sequence

from rosetta_jax.explorer import cards as cards_lib
from rosetta_jax.explorer.rows import KINDS

INDEX_FORMAT = "rosetta_jax.explorer.index/1"
BOOT_START = 'RJ.boot("'
BUILT = ("kurtosis", "dsi", "frequency", "skew")


def static(name: str) -> str:
  """The text of a file shipped in ``rosetta_jax/explorer/static``."""
  return importlib.resources.files("rosetta_jax.explorer").joinpath("static", name).read_text(
      encoding="utf-8")


def index_payload(rows: Sequence, ids: Sequence[str], members: Sequence, tokens: Sequence[str],
                  domains: Sequence[str], title: str, synthetic: bool, shard_size: int,
                  meta: Mapping[str, Any]) -> dict:
  """The page's row index (columnar; one entry per row).

  Args:
    rows: the ``Row``s.
    ids: their ids.
    members: per row [(header dict, NeuronSummary)] of each member (as in the card).
    tokens: per row the top units' texts, for text search.
    domains: domain names.
    title, synthetic, shard_size, meta: as in ``build_explorer``.
  """
  models, sites, groups = {}, {}, {}
  supplied: dict[str, None] = {}
  for heads, _ in members:
    for h in heads:
      for k in h["metrics"]:
        supplied.setdefault(k, None)
  metric_names = list(supplied) + [m for m in BUILT if m not in supplied]
  dom_idx = {d: i for i, d in enumerate(domains)}
  mem, met = [], []
  for heads, sums in members:
    row_mem, row_met = [], []
    for h, s in zip(heads, sums):
      row_mem.append([models.setdefault(h["model"], len(models)),
                      sites.setdefault(h["site"], len(sites)), h["neuron"], h["depth"],
                      dom_idx.get(h["domain"], -1) if h["domain"] is not None else -1, h["r"]])
      row_met.append([h["metrics"][k] if k in h["metrics"]
                      else cards_lib.rounded(s.stats.get(k), 4) for k in metric_names])
    mem.append(row_mem)
    met.append(row_met)
  for d in (h["domain"] for heads, _ in members for h in heads):
    if d is not None and d not in dom_idx:
      dom_idx[d] = len(dom_idx)
  # A member's domain named by the row but absent from the documents is appended.
  for row_mem, (heads, _) in zip(mem, members):
    for m, h in zip(row_mem, heads):
      if h["domain"] is not None:
        m[4] = dom_idx[h["domain"]]
  for r in rows:
    groups.setdefault(r.group, len(groups))
  return {
      "format": INDEX_FORMAT, "title": title, "synthetic": bool(synthetic), "meta": dict(meta),
      "kinds": list(KINDS), "models": list(models), "sites": list(sites),
      "groups": list(groups),
      "domains": list(dom_idx), "metrics": metric_names, "shard_size": int(shard_size),
      "rows": {"id": list(ids), "kind": [KINDS.index(r.kind) for r in rows],
               "group": [groups[r.group] for r in rows],
               "r": [cards_lib.rounded(r.r, 4) for r in rows],
               "rank": [r.rank for r in rows], "mem": mem, "met": met, "tok": list(tokens)},
  }


def render_page(index: dict) -> str:
  """The HTML of the page for a row index."""
  title = html.escape(index["title"])
  return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
          "<meta name='viewport' content='width=device-width,initial-scale=1'>"
          f"<link rel='icon' href='data:,'><title>{title}</title>"
          f"<style>{static('explorer.css')}</style></head>"
          "<body class='rj'><header><h1 id='title'></h1><span id='banner'></span>"
          "<span id='summary' class='counts'></span></header>"
          "<div id='controls'></div><div id='main'><div id='list'><div id='lhead' class='lhead'>"
          "</div><div id='lbody'><div id='spacer'></div></div></div>"
          "<div id='card'><div class='empty'>Click a row, or open a link such as "
          "<code>#r=r0</code> or <code>#n=MODEL|layer_3/mlp|59</code>.</div></div></div>"
          f"<script>{static('explorer.js')}</script>"
          f"<script>{BOOT_START}{cards_lib.encode(index)}\");</script></body></html>")


def write_page(path: str, index: dict) -> int:
  """Writes the page; returns its size in bytes."""
  body = render_page(index).encode("utf-8")
  tmp = f"{path}.tmp"
  with open(tmp, "wb") as f:
    f.write(body)
  os.replace(tmp, path)
  return len(body)


def read_index(path: str) -> dict:
  """The row index inside an explorer page."""
  with open(path, encoding="utf-8") as f:
    text = f.read()
  i = text.rfind(BOOT_START)
  if i < 0:
    raise ValueError(f"{path} is not an explorer page (no row index)")
  j = text.index('"', i + len(BOOT_START))
  return cards_lib.decode(text[i + len(BOOT_START):j])
