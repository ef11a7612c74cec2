"""The Rosetta explorer: one offline page per run listing every pair, anchor, null
pair and control, with each neuron's contexts side by side across models.

Build one from typed rows, activation stores and the units' texts::

  from rosetta_jax import explorer
  units = explorer.unit_text(docs, [model_a.tokenizer, model_b.tokenizer], store_a)
  rows = explorer.rows_from_matches(rj.find_rosetta(acts_a, acts_b))
  explorer.build_explorer("W/explorer", rows, {"a": store_a, "b": store_b}, units,
                          vocab={"a": vocab.vocab_projection(model_a)})

then open it with ``rj.explore("W")``. The input contract and the output layout
are in docs/explorer.md.
"""

from rosetta_jax.explorer.build import ExplorerSummary, build_explorer
from rosetta_jax.explorer.gather import CardConfig
from rosetta_jax.explorer.inputs import build_workdir, load_inputs, save_inputs
from rosetta_jax.explorer.reader import Card, Explorer, explore, open_explorer
from rosetta_jax.explorer.rows import (KINDS, Member, Row, anchor_rows, control_rows, load_rows,
                                       rows_from_matches, save_rows)
from rosetta_jax.explorer.units import UnitText, unit_text
from rosetta_jax.explorer.workdir import write_explorer

__all__ = [
    "KINDS", "Card", "CardConfig", "Explorer", "ExplorerSummary", "Member", "Row", "UnitText",
    "anchor_rows", "build_explorer", "build_workdir", "control_rows", "explore", "load_inputs",
    "load_rows", "open_explorer", "rows_from_matches", "save_inputs", "save_rows", "unit_text",
    "write_explorer",
]
