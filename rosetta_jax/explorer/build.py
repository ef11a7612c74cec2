"""``build_explorer``: rows + activation stores + unit texts -> an offline explorer page.

Output directory layout (docs/explorer.md)::

    index.html          the page (CSS, script and the row index inline)
    cards/sNNNNN.js     card shards, loaded on demand
    explorer.json       what was built: counts, config, shard layout, sizes

The builder reads each shown neuron's activations from its store, site by site
in chunks of units (``gather.py``), so it never holds a whole site in memory.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any, Mapping, Sequence

import numpy as np

from rosetta_jax.explorer import cards as cards_lib
from rosetta_jax.explorer import page
from rosetta_jax.explorer.gather import CardConfig, gather_units, neuron_salt, summarize_site
from rosetta_jax.explorer.rows import KINDS, Row
from rosetta_jax.explorer.units import UnitText
from rosetta_jax.match.sources import as_source

EXPLORER_FORMAT = "rosetta_jax.explorer/1"
# Activation statistics the builder computes for every shown neuron (card + table).
BUILT_METRICS = ("kurtosis", "dsi", "frequency", "skew")
TOKENS_PER_MEMBER = 5


@dataclasses.dataclass(frozen=True)
class ExplorerSummary:
  """What ``build_explorer`` wrote.

  Attributes:
    path: the explorer directory.
    index_html: path of the page.
    rows: rows per kind.
    shards: number of card shards.
    index_bytes: size of index.html.
    cards_bytes: total size of the card shards.
    seconds: build time.
  """
  path: str
  index_html: str
  rows: dict
  shards: int
  index_bytes: int
  cards_bytes: int
  seconds: float


def _site_source(sources: Mapping, model: str, site: str):
  if model not in sources:
    raise KeyError(f"explorer: model {model!r} has no activation source; given: {sorted(sources)}")
  src = sources[model]
  if hasattr(src, "site") and callable(src.site):      # a Store
    return src.site(site)
  if site not in src:
    raise KeyError(f"explorer: model {model!r} has no site {site!r}; it has {sorted(src)}")
  return as_source(src[site])


def _num_layers(sources: Mapping, model: str, given: Mapping[str, int] | None) -> int | None:
  from rosetta_jax.match.rosetta import site_layer  # pylint: disable=g-import-not-at-top
  if given and model in given:
    return int(given[model])
  src = sources.get(model)
  sites = src.sites if hasattr(src, "sites") else list(src or ())
  layers = []
  for s in sites:
    try:
      layers.append(site_layer(s))
    except ValueError:
      pass
  return max(layers) + 1 if layers else None


def _depth(member, num_layers: int | None) -> float | None:
  from rosetta_jax.match.rosetta import relative_depths  # pylint: disable=g-import-not-at-top
  if member.depth is not None:
    return member.depth
  try:
    return float(relative_depths([member.site], num_layers)[member.site])
  except ValueError:
    return None


def _vocab_of(vocab, model: str, site: str, neuron: int):
  if not vocab or model not in vocab or site not in vocab[model]:
    return None
  proj = vocab[model][site]
  if neuron >= proj.num_neurons:
    raise ValueError(f"explorer: vocab projection of {model}:{site} has {proj.num_neurons} "
                     f"neurons, row asks for neuron {neuron}")
  out = proj.neuron(neuron)
  out["skew"] = cards_lib.rounded(out["skew"], 4)
  out["kurtosis"] = cards_lib.rounded(out["kurtosis"], 4)
  out["top"] = [[t, i, cards_lib.rounded(v, 4)] for t, i, v in out["top"]]
  out["bottom"] = [[t, i, cards_lib.rounded(v, 4)] for t, i, v in out["bottom"]]
  return out


def assign_ids(rows: Sequence[Row]) -> list[str]:
  ids = [r.id if r.id is not None else f"r{i}" for i, r in enumerate(rows)]
  seen: dict[str, int] = {}
  for i, x in enumerate(ids):
    if x in seen:
      raise ValueError(f"explorer: rows {seen[x]} and {i} share the id {x!r}")
    seen[x] = i
  return ids


def build_explorer(out_dir: str, rows: Sequence[Row], sources: Mapping[str, Any],
                   units: UnitText, *, vocab: Mapping[str, Mapping[str, Any]] | None = None,
                   num_layers: Mapping[str, int] | None = None,
                   title: str = "rosetta_jax explorer", config: CardConfig = CardConfig(),
                   shard_size: int = 32, synthetic: bool = False,
                   meta: Mapping[str, Any] | None = None, progress: bool = False
                   ) -> ExplorerSummary:
  """Writes the explorer of ``rows`` into ``out_dir``.

  Args:
    out_dir: the explorer directory (created; an existing explorer is replaced).
    rows: the ``Row``s, in the order the list starts in.
    sources: {model: a ``Store`` (``store.site(name)``) or {site: [T, n] array or
      ``ActivationSource``}}; every source covers the same T units as ``units``.
    units: the ``UnitText`` of those units (``explorer.unit_text``).
    vocab: optional {model: {site: ``analysis.vocab.VocabProjection``}} for the
      decoders' promoted and suppressed tokens.
    num_layers: {model: layer count} for members without a depth (default: one
      more than the largest layer among the model's recorded sites).
    title: the page's title.
    config: what each card shows (``CardConfig``).
    shard_size: cards per shard file.
    synthetic: mark the page as synthetic data (benchmarks).
    meta: JSON-serialisable facts shown nowhere but kept in explorer.json and the
      page's index (e.g. the run's command and commit).
    progress: show a progress bar per site.

  Returns:
    An ``ExplorerSummary``.

  Raises:
    KeyError: a member's model or site has no source.
    ValueError: a source's unit count differs from ``units``; a neuron index out
      of range; duplicate row ids.
  """
  t_start = time.time()
  rows = list(rows)
  if not rows:
    raise ValueError("explorer: no rows to show")
  ids = assign_ids(rows)
  domains = tuple(sorted(set(units.domains)))
  unit_domain = np.asarray([domains.index(units.domains[d]) for d in
                            units.doc_of(np.arange(units.num_units))], np.int64) \
      if units.num_units else np.zeros(0, np.int64)
  need: dict[tuple[str, str], set] = {}
  for r in rows:
    for m in r.members:
      need.setdefault((m.model, m.site), set()).add(m.neuron)

  # Pass 1: per-neuron summaries, site by site.
  summaries, caches, srcs = {}, {}, {}
  items = sorted(need.items())
  if progress:
    from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top
    items = tqdm(items, desc="explorer: summarise", unit="site")
  for (model, site), neurons in items:
    src = _site_source(sources, model, site)
    if int(src.num_units) != units.num_units:
      raise ValueError(f"explorer: {model}:{site} has {src.num_units} units, the unit "
                       f"texts {units.num_units}; record and derive them from the same documents")
    cols = np.array(sorted(neurons), np.int64)
    if cols[-1] >= src.num_neurons:
      raise ValueError(f"explorer: {model}:{site} has {src.num_neurons} neurons; a row "
                       f"asks for neuron {int(cols[-1])}")
    res, cached = summarize_site(src, cols, unit_domain, len(domains), config,
                                 neuron_salt(model, site, cols))
    for c, s in res.items():
      summaries[(model, site, c)] = s
    caches[(model, site)] = (cols, cached)
    srcs[(model, site)] = src

  # The units each card shows, and so each neuron's wanted units.
  offs = units.unit_offsets
  ctx_units = {k: cards_lib.context_units(s, offs, config) for k, s in summaries.items()}
  row_units = [np.unique(np.concatenate([ctx_units[m.key] for m in r.members])) for r in rows]
  wanted: dict[tuple, list] = {}
  for r, u in zip(rows, row_units):
    for m in r.members:
      wanted.setdefault(m.key, []).append(u)
  wanted_u = {k: np.unique(np.concatenate(v)) for k, v in wanted.items()}

  # Pass 2: activations on those units.
  values = {}
  for (model, site), (cols, cached) in caches.items():
    per = {int(c): wanted_u[(model, site, int(c))] for c in cols}
    got = gather_units(srcs[(model, site)], cols, per, config, cached)
    for c, v in got.items():
      values[(model, site, c)] = (per[c], v)

  def lookup(key):
    u_sorted, v = values[key]
    return lambda us: v[np.searchsorted(u_sorted, us)]

  # Cards.
  nl = {m: _num_layers(sources, m, num_layers) for m in {m.model for r in rows for m in r.members}}
  os.makedirs(os.path.join(out_dir, "cards"), exist_ok=True)
  for f in os.listdir(os.path.join(out_dir, "cards")):
    if f.startswith("s") and f.endswith(".js"):
      os.remove(os.path.join(out_dir, "cards", f))
  from rosetta_jax.match.rosetta import site_layer  # pylint: disable=g-import-not-at-top

  def layer(site):
    try:
      return site_layer(site)
    except ValueError:
      return None
  index_mem, index_tok = [], []
  shard, cards_bytes, n_shards = {}, 0, 0
  for i, (r, rid, u) in enumerate(zip(rows, ids, row_units)):
    heads, sums = [], []
    for m in r.members:
      s = summaries[m.key]
      dom = m.domain if m.domain is not None else (domains[s.domain] if s.domain >= 0 else None)
      heads.append({"model": m.model, "site": m.site, "layer": layer(m.site), "neuron": m.neuron,
                    "depth": cards_lib.rounded(_depth(m, nl[m.model]), 4),
                    "r": cards_lib.rounded(m.r, 4), "domain": dom,
                    "metrics": {k: cards_lib.rounded(v, 4) for k, v in m.metrics.items()},
                    "vocab": _vocab_of(vocab, m.model, m.site, m.neuron)})
      sums.append(s)
    doc_of = units.doc_of(u)
    texts = units.unit_strings(u)
    docs = {int(d): (units.doc_ids[d], units.domains[d]) for d in np.unique(doc_of)}
    card = cards_lib.make_card(r, rid, heads, sums, [lookup(m.key) for m in r.members], u,
                               texts, doc_of, docs, units.num_units, config, offs)
    shard[rid] = card
    index_mem.append((heads, sums))
    tok = []
    for s in sums:
      tok += [t.strip() for t in units.unit_strings(s.top_units[:TOKENS_PER_MEMBER])]
    index_tok.append(" \u00b7 ".join(dict.fromkeys(t[:24] for t in tok if t)))
    if len(shard) == shard_size or i == len(rows) - 1:
      cards_bytes += cards_lib.write_shard(out_dir, n_shards, shard)
      n_shards += 1
      shard = {}

  index = page.index_payload(rows, ids, index_mem, index_tok, domains, title, synthetic,
                             shard_size, dict(meta or {}))
  html_path = os.path.join(out_dir, "index.html")
  index_bytes = page.write_page(html_path, index)
  counts = {k: sum(r.kind == k for r in rows) for k in KINDS}
  summary = ExplorerSummary(out_dir, html_path, {k: v for k, v in counts.items() if v}, n_shards,
                            index_bytes, cards_bytes, time.time() - t_start)
  info = {"format": EXPLORER_FORMAT, "title": title, "synthetic": synthetic,
          "rows": summary.rows, "shards": n_shards, "shard_size": shard_size,
          "index_bytes": index_bytes, "cards_bytes": cards_bytes,
          "seconds": round(summary.seconds, 3), "config": dataclasses.asdict(config),
          "num_units": units.num_units, "num_docs": units.num_docs, "meta": dict(meta or {})}
  tmp = os.path.join(out_dir, "explorer.json.tmp")
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(info, f, indent=1)
  os.replace(tmp, os.path.join(out_dir, "explorer.json"))
  return summary
