"""The explorer's input rows: one per Rosetta pair, null pair, control or anchor.

A ``Row`` names the neurons it shows (``Member``: model, site, neuron index
within the site, relative depth) and what the run measured about them (r,
selectivity metrics, preferred domain). Rows come from a ``Matches`` table
(``rows_from_matches``, ``anchor_rows``), from explicit control neurons
(``control_rows``), or from a JSON file (``save_rows`` / ``load_rows``; the format
is in docs/explorer.md), so a study can hand them over without the explorer
reading its caches.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

KINDS = ("rosetta", "null", "control", "anchor")
ROWS_FORMAT = "rosetta_jax.explorer.rows/1"


def _clean_metrics(metrics: Mapping[str, Any] | None, what: str) -> dict[str, float]:
  out = {}
  for k, v in (metrics or {}).items():
    try:
      out[str(k)] = float(v)
    except (TypeError, ValueError):
      raise ValueError(f"{what}: metric {k!r} is not a number ({v!r})") from None
  return out


@dataclasses.dataclass(frozen=True)
class Member:
  """One neuron of a row.

  Attributes:
    model: the model's name (a key of the ``sources`` given to the builder).
    site: the site, e.g. ``layer_3/mlp``.
    neuron: the neuron's index within the site.
    depth: relative depth (layer + 0.5) / num_layers in (0, 1); None: derived by
      the builder from the site and the model's layer count.
    r: Pearson r with the row's first member (None for the first member itself
      and where unknown).
    metrics: selectivity metrics of this neuron ({name: value}), shown in the
      table and the card; the builder adds its own activation statistics.
    domain: the neuron's preferred domain; None: the builder derives it (the
      domain of highest mean shifted activation, as ``analysis/selectivity``).
  """
  model: str
  site: str
  neuron: int
  depth: float | None = None
  r: float | None = None
  metrics: Mapping[str, float] = dataclasses.field(default_factory=dict)
  domain: str | None = None

  def __post_init__(self):
    if not isinstance(self.neuron, (int, np.integer)) or self.neuron < 0:
      raise ValueError(f"member {self.model}:{self.site}: neuron must be a non-negative "
                       f"int, got {self.neuron!r}")
    object.__setattr__(self, "neuron", int(self.neuron))
    where = f"member {self.model}:{self.site}:{self.neuron}"
    object.__setattr__(self, "metrics", _clean_metrics(self.metrics, where))
    for name in ("depth", "r"):
      v = getattr(self, name)
      if v is not None:
        object.__setattr__(self, name, float(v))

  @property
  def key(self) -> tuple[str, str, int]:
    return (self.model, self.site, self.neuron)

  def to_dict(self) -> dict:
    d = {"model": self.model, "site": self.site, "neuron": self.neuron}
    for k in ("depth", "r", "domain"):
      if getattr(self, k) is not None:
        d[k] = getattr(self, k)
    if self.metrics:
      d["metrics"] = dict(self.metrics)
    return d


@dataclasses.dataclass(frozen=True)
class Row:
  """One entry of the explorer's list and one card.

  Attributes:
    kind: "rosetta" (a pair), "null" (a pair of the permutation null), "control"
      (non-Rosetta neurons, e.g. matched on layer and frequency) or "anchor" (a
      neuron of the anchor model with a partner in every other model).
    members: the neurons, the first one being the row's reference (model A, or
      the anchor); a control may have a single member.
    r: the row's r (a pair's r; for an anchor the smallest r to its partners;
      None where there is none, e.g. controls).
    group: what the row belongs to, e.g. the model pair ``"zoo-w32 vs zoo-w64"``.
    rank: the pair's rank from the matcher (1 for best buddies), if known.
    id: a stable id (default: assigned by the builder from the row's position).
  """
  kind: str
  members: tuple[Member, ...]
  r: float | None = None
  group: str = ""
  rank: int | None = None
  id: str | None = None

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f"row kind must be one of {KINDS}, got {self.kind!r}")
    members = tuple(self.members)
    if not members:
      raise ValueError(f"a {self.kind} row needs at least one member")
    if not all(isinstance(m, Member) for m in members):
      raise ValueError("row members must be Member instances")
    if len({m.key for m in members}) != len(members):
      raise ValueError(f"row has a neuron twice: {[m.key for m in members]}")
    object.__setattr__(self, "members", members)
    if self.r is not None:
      object.__setattr__(self, "r", float(self.r))
    if self.id is not None and not _ID_OK(self.id):
      raise ValueError(f"row id {self.id!r}: use letters, digits, '-', '_' and '.' only")

  def to_dict(self) -> dict:
    d: dict[str, Any] = {"kind": self.kind, "members": [m.to_dict() for m in self.members]}
    if self.r is not None:
      d["r"] = self.r
    if self.group:
      d["group"] = self.group
    if self.rank is not None:
      d["rank"] = int(self.rank)
    if self.id is not None:
      d["id"] = self.id
    return d

  @staticmethod
  def from_dict(d: Mapping, where: str = "row") -> "Row":
    try:
      members = tuple(Member(**{k: v for k, v in m.items()}) for m in d["members"])
      return Row(kind=d["kind"], members=members, r=d.get("r"), group=d.get("group", ""),
                 rank=d.get("rank"), id=d.get("id"))
    except (KeyError, TypeError) as e:
      raise ValueError(f"{where}: not a row ({e}); see docs/explorer.md") from None


def _ID_OK(s: str) -> bool:  # pylint: disable=invalid-name
  return bool(s) and all(c.isalnum() or c in "-_." for c in s)


def _float_or_none(x) -> float | None:
  x = float(x)
  return None if math.isnan(x) else x


def rows_from_matches(matches, kind: str = "rosetta", group: str | None = None,
                      depths: Mapping[str, Mapping[str, float]] | None = None,
                      metrics: Mapping[tuple[str, str, int], Mapping[str, float]] | None = None,
                      domains: Mapping[tuple[str, str, int], str] | None = None) -> list[Row]:
  """One two-member row per pair of a ``Matches`` table.

  Args:
    matches: a ``rosetta_jax.match.Matches`` (``find_rosetta``'s output).
    kind: "rosetta" or "null" (a table matched with ``null_permutation``).
    group: the rows' group; default ``"<model_a> vs <model_b>"`` per row.
    depths: optional {model: {site: relative depth}}.
    metrics: optional {(model, site, neuron): {metric: value}}.
    domains: optional {(model, site, neuron): preferred domain}.
  """
  if kind not in ("rosetta", "null"):
    raise ValueError(f"rows_from_matches: kind must be 'rosetta' or 'null', got {kind!r}")
  depths, metrics, domains = depths or {}, metrics or {}, domains or {}

  def member(model, site, neuron, r=None):
    key = (str(model), str(site), int(neuron))
    return Member(key[0], key[1], key[2], depth=depths.get(key[0], {}).get(key[1]), r=r,
                  metrics=metrics.get(key, {}), domain=domains.get(key))
  out = []
  for i in range(len(matches)):
    r = _float_or_none(matches.r[i])
    a = member(matches.model_a[i], matches.site_a[i], matches.neuron_a[i])
    b = member(matches.model_b[i], matches.site_b[i], matches.neuron_b[i], r)
    out.append(Row(kind, (a, b), r=r, group=group or f"{a.model} vs {b.model}",
                   rank=int(matches.rank[i])))
  return out


def anchor_rows(matches, group: str = "anchors",
                depths: Mapping[str, Mapping[str, float]] | None = None,
                metrics: Mapping[tuple[str, str, int], Mapping[str, float]] | None = None,
                domains: Mapping[tuple[str, str, int], str] | None = None) -> list[Row]:
  """One row per anchor neuron of a ``find_rosetta_zoo`` table: the anchor, then its
  partner in every other model (in the table's model order); r is the smallest."""
  depths, metrics, domains = depths or {}, metrics or {}, domains or {}
  by_anchor: dict[tuple, list] = {}
  for i in range(len(matches)):
    key = (str(matches.model_a[i]), str(matches.site_a[i]), int(matches.neuron_a[i]))
    by_anchor.setdefault(key, []).append(i)

  def member(key, r=None):
    return Member(*key, depth=depths.get(key[0], {}).get(key[1]), r=r,
                  metrics=metrics.get(key, {}), domain=domains.get(key))
  out = []
  for key, idx in by_anchor.items():
    partners = [member((str(matches.model_b[i]), str(matches.site_b[i]),
                        int(matches.neuron_b[i])), _float_or_none(matches.r[i])) for i in idx]
    rs = [p.r for p in partners if p.r is not None]
    out.append(Row("anchor", (member(key), *partners), r=min(rs) if rs else None, group=group))
  return out


def control_rows(model: str, site_neurons: Iterable[tuple[str, int]], group: str = "",
                 partner: Sequence[tuple[str, str, int, float]] | None = None,
                 depths: Mapping[str, float] | None = None,
                 metrics: Mapping[tuple[str, str, int], Mapping[str, float]] | None = None,
                 ) -> list[Row]:
  """Control rows: non-Rosetta neurons of ``model`` (e.g. ``controls.matched_control``).

  Args:
    model: the model.
    site_neurons: (site, neuron) of each control neuron.
    group: the rows' group.
    partner: optional per control (model, site, neuron, r) of its best (non-mutual)
      neighbour in the other model, shown side by side like a pair's partner.
    depths: optional {site: relative depth} of ``model``.
    metrics: optional {(model, site, neuron): {metric: value}}.
  """
  depths, metrics = depths or {}, metrics or {}
  out = []
  for i, (site, n) in enumerate(site_neurons):
    key = (model, str(site), int(n))
    mem = [Member(*key, depth=depths.get(key[1]), metrics=metrics.get(key, {}))]
    r = None
    if partner is not None:
      pm, ps, pn, r = partner[i]
      r = _float_or_none(r)
      mem.append(Member(str(pm), str(ps), int(pn), r=r))
    out.append(Row("control", tuple(mem), r=r, group=group or f"{model} controls"))
  return out


def save_rows(path: str, rows: Sequence[Row], meta: Mapping | None = None) -> str:
  """Writes rows as JSON (``{"format", "meta", "rows": [...]}``; docs/explorer.md)."""
  payload = {"format": ROWS_FORMAT, "meta": dict(meta or {}), "rows": [r.to_dict() for r in rows]}
  tmp = f"{path}.tmp.{os.getpid()}"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(payload, f)
  os.replace(tmp, path)
  return path


def load_rows(path: str) -> tuple[list[Row], dict]:
  """Reads a rows file written by ``save_rows`` (or by hand: docs/explorer.md).

  Returns:
    (rows, meta).
  """
  with open(path, encoding="utf-8") as f:
    payload = json.load(f)
  got = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
  if got != ROWS_FORMAT:
    raise ValueError(f"{path}: not an explorer rows file (expected format {ROWS_FORMAT!r}, "
                     f"got {got!r})")
  rows = [Row.from_dict(d, f"{path}: rows[{i}]") for i, d in enumerate(payload["rows"])]
  return rows, dict(payload.get("meta", {}))
