"""A workdir's explorer inputs on disk, so ``python -m experiments.explore`` can
(re)build the page without re-running any study.

Layout (``W/explorer/inputs/``, docs/explorer.md)::

    inputs.json     {"format", "title", "stores": {model: dir}, "num_layers",
                     "vocab": {model: file}, "meta"}
    rows.json       the rows (``save_rows``)
    units.npz       the unit texts (``UnitText.save``)
    vocab-<i>.npz   optional vocabulary projections (``analysis.vocab.save_projections``)

Store directories are kept relative to the workdir when they lie inside it.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping, Sequence

from rosetta_jax.explorer.build import ExplorerSummary, build_explorer
from rosetta_jax.explorer.gather import CardConfig
from rosetta_jax.explorer.rows import Row, load_rows, save_rows
from rosetta_jax.explorer.units import UnitText

INPUTS_FORMAT = "rosetta_jax.explorer.inputs/1"


def inputs_dir(workdir: str) -> str:
  return os.path.join(workdir, "explorer", "inputs")


def _rel(workdir: str, path: str) -> str:
  path = os.path.abspath(path)
  root = os.path.abspath(workdir)
  return os.path.relpath(path, root) if path.startswith(root + os.sep) else path


def save_inputs(workdir: str, rows: Sequence[Row], stores: Mapping[str, Any], units: UnitText,
                vocab: Mapping[str, Mapping[str, Any]] | None = None,
                num_layers: Mapping[str, int] | None = None,
                title: str = "rosetta_jax explorer", meta: Mapping | None = None) -> str:
  """Writes the inputs of a workdir's explorer; returns the inputs directory.

  Args:
    workdir: the run's workdir.
    rows: the ``Row``s.
    stores: {model: ``Store`` or store directory}.
    units: the ``UnitText``.
    vocab: optional {model: {site: VocabProjection}}.
    num_layers: optional {model: layer count}.
    title, meta: as in ``build_explorer``.
  """
  from rosetta_jax.analysis import vocab as vocab_lib  # pylint: disable=g-import-not-at-top
  d = inputs_dir(workdir)
  os.makedirs(d, exist_ok=True)
  save_rows(os.path.join(d, "rows.json"), rows)
  units.save(os.path.join(d, "units.npz"))
  vfiles = {}
  for i, (model, proj) in enumerate((vocab or {}).items()):
    vfiles[model] = f"vocab-{i}.npz"
    vocab_lib.save_projections(os.path.join(d, vfiles[model]), proj)
  info = {"format": INPUTS_FORMAT, "title": title,
          "stores": {m: _rel(workdir, getattr(s, "path", s)) for m, s in stores.items()},
          "num_layers": dict(num_layers or {}), "vocab": vfiles, "meta": dict(meta or {})}
  tmp = os.path.join(d, "inputs.json.tmp")
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(info, f, indent=1)
  os.replace(tmp, os.path.join(d, "inputs.json"))
  return d


def load_inputs(workdir: str) -> dict:
  """The saved inputs as ``build_explorer`` keyword arguments (rows, sources, units,
  vocab, num_layers, title, meta).

  Raises:
    FileNotFoundError: no inputs saved in the workdir (naming the expected file).
  """
  from rosetta_jax import store as store_lib  # pylint: disable=g-import-not-at-top
  from rosetta_jax.analysis import vocab as vocab_lib  # pylint: disable=g-import-not-at-top
  d = inputs_dir(workdir)
  path = os.path.join(d, "inputs.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"no explorer inputs at {path}: a study writes them with "
                            "rosetta_jax.explorer.save_inputs (docs/explorer.md)")
  with open(path, encoding="utf-8") as f:
    info = json.load(f)
  if info.get("format") != INPUTS_FORMAT:
    raise ValueError(f"{path}: format {info.get('format')!r}, expected {INPUTS_FORMAT!r}")
  rows, _ = load_rows(os.path.join(d, "rows.json"))
  sources = {m: store_lib.open_store(p if os.path.isabs(p) else os.path.join(workdir, p))
             for m, p in info["stores"].items()}
  vocab = {m: vocab_lib.load_projections(os.path.join(d, f)) for m, f in info["vocab"].items()}
  return {"rows": rows, "sources": sources, "units": UnitText.load(os.path.join(d, "units.npz")),
          "vocab": vocab or None, "num_layers": info["num_layers"] or None,
          "title": info["title"], "meta": info["meta"]}


def build_workdir(workdir: str, config: CardConfig = CardConfig(), progress: bool = False,
                  **overrides) -> ExplorerSummary:
  """Builds ``W/explorer`` from the inputs saved in ``W/explorer/inputs``."""
  kw = {**load_inputs(workdir), **overrides}
  return build_explorer(os.path.join(workdir, "explorer"), kw.pop("rows"), kw.pop("sources"),
                        kw.pop("units"), config=config, progress=progress, **kw)
