"""A study run's explorer: rows from the pipeline's pair results, then the page.

``write_explorer(ctx)`` takes a ``studies.context.Context``: every pair's Rosetta
pairs (``PairResult.matches``) and its first null permutation's pairs
(``PairResult.null_matches``, kind "null"), its matched control (kind "control": per
model, as many non-Rosetta neurons as it has Rosetta ones, in the same layers and
matched on activation frequency, by ``analysis.controls.pair_matched_control``
with the study's seed: the very draw the polarization study compares its full-data
Rosetta set with), the anchors (``match.rosetta.anchors`` of each
model's Rosetta masks, when every pair of three or more models was matched), the
decoders' vocabulary projections (``ctx.vocab``); it saves them as the workdir's
explorer inputs and builds ``W/explorer/index.html``.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from rosetta_jax.analysis import controls, selectivity as sel, stats
from rosetta_jax.explorer.inputs import build_workdir, save_inputs
from rosetta_jax.explorer.rows import Member, Row, control_rows, rows_from_matches
from rosetta_jax.explorer.units import unit_text
from rosetta_jax.match import rosetta


def anchor_rows_of(results, models, depths) -> list[Row]:
  """One row per anchor neuron: the anchor, then its partner in every other model."""
  names = [m.name for m in models]
  by = {(r.model_a, r.model_b): r for r in results}
  if len(names) < 3 or any((x, y) not in by and (y, x) not in by
                           for i, x in enumerate(names) for y in names[i + 1:]):
    return []
  rows = []
  for m in models:
    sides = []                       # (pair result, this model's side)
    for y in names:
      if y != m.name:
        sides.append((by[(m.name, y)], "a") if (m.name, y) in by else (by[(y, m.name)], "b"))
    mask = rosetta.anchors([r.mask_a if s == "a" else r.mask_b for r, s in sides])
    offsets = sides[0][0].offsets_a if sides[0][1] == "a" else sides[0][0].offsets_b
    sites = m.mlp_sites()
    for n in np.flatnonzero(mask):
      site = int(np.searchsorted(offsets, n, side="right") - 1)
      members = [Member(m.name, sites[site], int(n - offsets[site]),
                        depth=depths[m.name].get(sites[site]))]
      for r, s in sides:
        mine, theirs = (r.idx_a, r.idx_b) if s == "a" else (r.idx_b, r.idx_a)
        j = int(np.flatnonzero(mine == n)[0])
        other = r.model_b if s == "a" else r.model_a
        o_sites, o_off = (r.sites_b, r.offsets_b) if s == "a" else (r.sites_a, r.offsets_a)
        k = int(theirs[j])
        os_ = int(np.searchsorted(o_off, k, side="right") - 1)
        members.append(Member(other, o_sites[os_], int(k - o_off[os_]),
                              depth=depths[other].get(o_sites[os_]), r=float(r.r[j])))
      rows.append(Row("anchor", tuple(members), r=min(x.r for x in members[1:]),
                      group=f"anchors of {m.name}"))
  return rows


CONTROL_BINS = 10     # as the polarization study's matched control


def matched_control_rows(results, frequency, seed: int, depths=None) -> list[Row]:
  """One single-member "control" row per neuron of each pair's matched control.

  Args:
    results: ``PairResult``s.
    frequency: {model name: [N] activation frequency of its studied neurons}
      (``selectivity.metrics(...)["frequency"]``; NaN for constant neurons).
    seed: the study's seed; the draw is ``pair_matched_control(..., (seed,))``.
    depths: optional {model: {site: relative depth}}.

  Returns:
    Rows grouped ``"<pair label> (control)"``, model A's neurons then B's, each
    neuron once (a neuron drawn twice under replacement is listed once).
  """
  depths = depths or {}
  rows = []
  for r in results:
    freq = np.concatenate([frequency[r.model_a], frequency[r.model_b]])
    ros = np.concatenate([r.mask_a, r.mask_b])
    idx, _ = controls.pair_matched_control(r.offsets_a, r.offsets_b, freq, ros, (seed,),
                                           bins=CONTROL_BINS, on_short="replace")
    for model, sites, offsets, lo in ((r.model_a, r.sites_a, r.offsets_a, 0),
                                      (r.model_b, r.sites_b, r.offsets_b, r.neurons_a)):
      mine = np.unique(idx[(idx >= lo) & (idx < lo + offsets[-1])]) - lo
      site = np.searchsorted(offsets, mine, side="right") - 1
      rows += control_rows(model, [(sites[s], int(n - offsets[s])) for s, n in zip(site, mine)],
                           group=f"{r.label} (control)", depths=depths.get(model))
  return rows


def write_explorer(ctx, progress: bool = False) -> str:
  """Saves ``ctx``'s explorer inputs into ``W/explorer/inputs`` and builds the page.

  Returns:
    The page's path, ``W/explorer/index.html``.
  """
  models = ctx.unique_models
  depths = {m.name: stats.relative_depths(m.mlp_sites(), m.num_layers) for m in models}
  results = [ctx.result(p) for p in ctx.pairs]
  rows = []
  for r in results:
    rows += rows_from_matches(r.matches, group=r.label, depths=depths)
    # The first null permutation's pairs through the same cards: what chance pairs
    # look like beside the real ones.
    rows += rows_from_matches(r.null_matches, kind="null", group=f"{r.label} (null)",
                              depths=depths)
  frequency = {m.name: sel.metrics(ctx.neuron_stats(m))["frequency"] for m in models}
  rows += matched_control_rows(results, frequency, ctx.cfg.seed, depths)
  rows += anchor_rows_of(results, models, depths)
  units = unit_text(ctx.docs, [m.tokenizer for m in models], next(iter(ctx.stores.values())))
  vocab = {m.name: v for m in models if (v := ctx.vocab(m))}
  save_inputs(ctx.workdir, rows, ctx.stores, units, vocab=vocab or None,
              num_layers={m.name: m.num_layers for m in models},
              title=f"rosetta_jax explorer: {ctx.models}",
              meta={"models": ctx.models, "criterion": dataclasses.asdict(ctx.cfg.criterion)})
  build_workdir(ctx.workdir, progress=progress)
  return os.path.join(ctx.workdir, "explorer", "index.html")
