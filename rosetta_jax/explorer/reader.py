"""Reading a built explorer back: rows, cards, exports, and ``rj.explore``.

``open_explorer(path)`` (or ``rj.explore(workdir)``) returns an ``Explorer``:
its rows, ``card(key)`` (a ``Card`` that renders inline in Jupyter, drawn by the
page's own script), ``export(key, path, format)`` as JSON or Parquet, and
``open()`` in a web browser. Layouts: docs/explorer.md.
"""

from __future__ import annotations

import html
import json
import os
import re
import uuid
import webbrowser
from typing import Sequence

from rosetta_jax import io as io_lib
from rosetta_jax.explorer import cards as cards_lib
from rosetta_jax.explorer import page

_QUERY_LAYER = re.compile(r"^(?:l|layer_?)(\d+)$", re.I)
_QUERY_NEURON = re.compile(r"^(?:n|neuron_?|#)(\d+)$", re.I)


def resolve(path: str) -> str:
  """The explorer directory of a workdir, an explorer directory or its index.html."""
  path = os.fspath(path)
  for cand in (path, os.path.join(path, "explorer")):
    if os.path.isfile(cand) and cand.endswith(".html"):
      cand = os.path.dirname(cand)
    if os.path.isfile(os.path.join(cand, "index.html")) and \
        os.path.isfile(os.path.join(cand, "explorer.json")):
      return cand
  raise FileNotFoundError(f"no explorer at {path} (expected index.html and explorer.json "
                          f"there or in {os.path.join(path, 'explorer')}); build one with "
                          "python -m experiments.explore --workdir=...")


class Card:
  """One card's data; renders inline in Jupyter with the page's own script."""

  def __init__(self, data: dict):
    self.data = data

  @property
  def id(self) -> str:
    return self.data["id"]

  def __repr__(self) -> str:
    ms = ", ".join(f"{m['model']}:{m['site']}:{m['neuron']}" for m in self.data["members"])
    r = self.data.get("r")
    return f"Card({self.id}, {self.data['kind']}, r={r if r is None else round(r, 4)}, [{ms}])"

  def to_json(self) -> str:
    return json.dumps(self.data, ensure_ascii=False)

  def _repr_html_(self) -> str:
    uid = f"rj-{uuid.uuid4().hex[:10]}"
    data = json.dumps(self.data, ensure_ascii=False).replace("</", "<\\/")
    return (f"<div class='rj' id='{uid}'>card {html.escape(self.id)} (needs JavaScript)</div>"
            f"<style>{page.static('explorer.css')}</style>"
            f"<script>{page.static('explorer.js')}\n"
            f"RJ.renderCard(document.getElementById('{uid}'), {data}, {{link: false}});</script>")

  def records(self) -> list[dict]:
    """The card's contexts as long-format records: one per (context, unit).

    Columns: row_id, member (index of the neuron whose context it is), model,
    site, neuron, section ("top" or "band<j>", j = 0 the lowest band), rank (within
    the section), context_value, unit (global unit index), offset (from the
    marked unit), centre, text, doc_id, domain, then ``act_<j>`` the activation of
    member j on the unit.
    """
    d, out = self.data, []
    units, docs = d["units"], d["docs"]
    unit_of, doc_of = cards_lib.expand_runs(units["runs"])
    for mi, m in enumerate(d["members"]):
      sections = [("top", m["top"])] + [(f"band{j}", b["samples"])
                                         for j, b in enumerate(m["bands"])]
      for name, ctxs in sections:
        for rank, (c, a, b, v) in enumerate(ctxs):
          for p in range(a, b):
            doc = docs.get(str(doc_of[p]), ["", ""])
            rec = {"row_id": d["id"], "member": mi, "model": m["model"], "site": m["site"],
                   "neuron": m["neuron"], "section": name, "rank": rank, "context_value": v,
                   "unit": unit_of[p], "offset": p - c, "centre": p == c,
                   "text": units["text"][p], "doc_id": doc[0], "domain": doc[1]}
            for j in range(len(d["members"])):
              rec[f"act_{j}"] = units["act"][j][p]
            out.append(rec)
    return out


class Explorer:
  """A built explorer directory."""

  def __init__(self, path: str):
    self.path = resolve(path)
    self.index_html = os.path.join(self.path, "index.html")
    with open(os.path.join(self.path, "explorer.json"), encoding="utf-8") as f:
      self.info = json.load(f)
    self.index = page.read_index(self.index_html)
    self._shards: dict[int, dict] = {}

  @property
  def num_rows(self) -> int:
    return len(self.index["rows"]["id"])

  def members(self, i: int) -> list[tuple[str, str, int]]:
    ix = self.index
    return [(ix["models"][m[0]], ix["sites"][m[1]], int(m[2])) for m in ix["rows"]["mem"][i]]

  def row(self, i: int) -> dict:
    ix, R = self.index, self.index["rows"]
    return {"id": R["id"][i], "kind": ix["kinds"][R["kind"][i]],
            "group": ix["groups"][R["group"][i]], "r": R["r"][i], "members": self.members(i)}

  def find(self, query) -> list[str]:
    """Row ids matching a row id, a (model, site, neuron) tuple, or a query such as
    ``"L3 N59"`` / ``"model:zoo-w64 L1"`` (a member in layer 3 with index 59)."""
    from rosetta_jax.match.rosetta import site_layer  # pylint: disable=g-import-not-at-top
    R = self.index["rows"]
    if isinstance(query, str) and query in R["id"]:
      return [query]
    if isinstance(query, (tuple, list)):
      key = (str(query[0]), str(query[1]), int(query[2]))
      return [R["id"][i] for i in range(self.num_rows) if key in self.members(i)]
    layer = neuron = None
    models = []
    for t in str(query).split():
      if _QUERY_LAYER.match(t):
        layer = int(_QUERY_LAYER.match(t).group(1))
      elif _QUERY_NEURON.match(t):
        neuron = int(_QUERY_NEURON.match(t).group(1))
      elif t.lower().startswith(("model:", "m:")):
        models.append(t.split(":", 1)[1].lower())
      else:
        raise ValueError(f"explorer query {query!r}: cannot read {t!r} (use L<layer>, "
                         "N<neuron>, model:<name>, a row id or a (model, site, neuron) tuple)")

    def layer_of(site):
      try:
        return site_layer(site)
      except ValueError:
        return None
    out = []
    for i in range(self.num_rows):
      mem = self.members(i)
      if not all(any(s in m[0].lower() for m in mem) for s in models):
        continue
      if any((layer is None or layer_of(s) == layer) and (neuron is None or n == neuron)
             for _, s, n in mem):
        out.append(R["id"][i])
    return out

  def _shard(self, k: int) -> dict:
    if k not in self._shards:
      self._shards[k] = cards_lib.read_shard(self.path, k)
    return self._shards[k]

  def card(self, key) -> Card:
    """The card of a row id, a (model, site, neuron) or a query (its first match)."""
    ids = self.find(key)
    if not ids:
      raise KeyError(f"explorer {self.path}: no row matches {key!r}")
    i = self.index["rows"]["id"].index(ids[0])
    return Card(self._shard(i // int(self.index["shard_size"]))[ids[0]])

  def export(self, key, path: str,
             format: str = "json") -> str:  # pylint: disable=redefined-builtin
    """Writes one card as JSON (the card format) or Parquet (``Card.records``).

    Parquet needs ``pyarrow``; the file's metadata key ``rosetta_jax.card`` holds the
    card without its units (members, statistics, vocabulary).
    """
    card = self.card(key)
    if format == "json":
      return io_lib.atomic_write(path, card.to_json())
    if format != "parquet":
      raise ValueError(f"export format must be 'json' or 'parquet', got {format!r}")
    try:
      import pyarrow as pa  # pylint: disable=g-import-not-at-top
      import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise ImportError("Parquet export needs pyarrow (pip install pyarrow); "
                        "JSON export needs nothing") from e
    table = pa.Table.from_pylist(card.records())
    head = {k: v for k, v in card.data.items() if k != "units"}
    table = table.replace_schema_metadata({"rosetta_jax.card": json.dumps(head)})
    with io_lib.atomic_open(path, "wb") as f:
      pq.write_table(table, f)
    return path

  def export_all(self, out_dir: str, format: str = "json",  # pylint: disable=redefined-builtin
                 ids: Sequence[str] | None = None) -> list[str]:
    """Exports every row's card (or ``ids``) as ``<out_dir>/<row id>.<format>``."""
    os.makedirs(out_dir, exist_ok=True)
    ext = "json" if format == "json" else "parquet"
    return [self.export(i, os.path.join(out_dir, f"{i}.{ext}"), format)
            for i in (ids or self.index["rows"]["id"])]

  def url(self, key=None) -> str:
    base = "file://" + os.path.abspath(self.index_html)
    if key is None:
      return base
    ids = self.find(key)
    return base + (f"#r={ids[0]}" if ids else "")

  def open(self, key=None) -> str:
    """Opens the page (at a card) in the default web browser; returns the URL."""
    u = self.url(key)
    webbrowser.open(u)
    return u

  def __repr__(self) -> str:
    rows = ", ".join(f"{v} {k}" for k, v in self.info["rows"].items())
    return f"Explorer({self.path}: {rows}; {self.info['num_units']} units)"

  def _repr_html_(self) -> str:
    rows = ", ".join(f"{v} {html.escape(k)}" for k, v in self.info["rows"].items())
    return (f"<div class='rj'><b>{html.escape(self.info['title'])}</b>: {rows}, "
            f"{self.info['num_units']} units. <a href='{html.escape(self.url())}' "
            f"target='_blank'>open the explorer</a> (or <code>.open()</code>); "
            "<code>.card('L3 N59')</code> shows a card here.</div>")


def open_explorer(path: str) -> Explorer:
  return Explorer(path)


def _in_kernel() -> bool:
  try:
    from IPython import get_ipython  # pylint: disable=g-import-not-at-top
    shell = get_ipython()
    return shell is not None and hasattr(shell, "kernel")
  except ImportError:
    return False


def explore(path: str, open_browser: bool | None = None) -> Explorer:
  """Opens a run's explorer.

  Args:
    path: a workdir (its ``explorer/``), an explorer directory or its index.html.
    open_browser: open the page in a web browser; default: when not in a
      notebook (in a notebook the returned object renders inline).

  Returns:
    The ``Explorer``.
  """
  ex = Explorer(path)
  if open_browser if open_browser is not None else not _in_kernel():
    ex.open()
  return ex
