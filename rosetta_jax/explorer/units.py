"""The text of every recorded unit: documents, unit offsets and byte spans.

A store holds activations per *unit*, a canonical byte span of a document shared
by the aligned tokenizers (``data/align.py``); it does not keep the text. The
explorer re-derives each unit's byte span from the documents exactly as the
recorder cut them (the same alignment as ``studies/polarization.unit_labels``)
and checks the unit counts against the store's manifest.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class UnitText:
  """Documents and the byte span of each unit in them.

  Attributes:
    doc_ids: D document ids (the store's order).
    domains: D domain labels.
    texts: D document texts.
    unit_offsets: [D + 1] int64 first unit of each document.
    spans: [T, 2] int64 UTF-8 byte span [start, end) of each unit in its document.
  """
  doc_ids: tuple[str, ...]
  domains: tuple[str, ...]
  texts: tuple[str, ...]
  unit_offsets: np.ndarray
  spans: np.ndarray

  def __post_init__(self):
    offs = np.asarray(self.unit_offsets, np.int64)
    spans = np.asarray(self.spans, np.int64).reshape(-1, 2)
    d = len(self.doc_ids)
    if len(self.domains) != d or len(self.texts) != d or offs.shape != (d + 1,):
      raise ValueError(f"UnitText: {d} doc ids, {len(self.domains)} domains, "
                       f"{len(self.texts)} texts and {offs.shape[0]} unit offsets "
                       "(expected D, D, D, D + 1)")
    if offs[0] != 0 or np.any(np.diff(offs) < 0) or offs[-1] != len(spans):
      raise ValueError(f"UnitText: unit_offsets must rise from 0 to the {len(spans)} spans")
    object.__setattr__(self, "unit_offsets", offs)
    object.__setattr__(self, "spans", spans)
    object.__setattr__(self, "doc_ids", tuple(self.doc_ids))
    object.__setattr__(self, "domains", tuple(self.domains))
    object.__setattr__(self, "texts", tuple(self.texts))
    object.__setattr__(self, "_bytes", {})

  @property
  def num_units(self) -> int:
    return int(self.spans.shape[0])

  @property
  def num_docs(self) -> int:
    return len(self.doc_ids)

  def doc_of(self, units) -> np.ndarray:
    """Document index of each unit."""
    return np.searchsorted(self.unit_offsets, np.asarray(units), side="right") - 1

  def _doc_bytes(self, d: int) -> bytes:
    cache = self._bytes  # type: ignore[attr-defined]
    if d not in cache:
      cache[d] = self.texts[d].encode("utf-8")
    return cache[d]

  def unit_strings(self, units: Sequence[int]) -> list[str]:
    """The text shown for each unit: its span plus the gap since the previous unit
    of its document (text no tokenizer kept, e.g. skipped whitespace), so that
    consecutive units read as the document does."""
    out = []
    units = np.asarray(units, np.int64)
    docs = self.doc_of(units)
    for u, d in zip(units.tolist(), docs.tolist()):
      raw = self._doc_bytes(int(d))
      s, e = self.spans[u]
      if u > self.unit_offsets[d]:
        s = min(s, self.spans[u - 1, 1])
      out.append(raw[s:e].decode("utf-8", errors="replace"))
    return out

  def save(self, path: str) -> str:
    """Writes an .npz (no pickles): spans, offsets and the documents as UTF-8 JSON."""
    meta = json.dumps({"doc_ids": self.doc_ids, "domains": self.domains, "texts": self.texts})
    tmp = f"{path}.tmp.{os.getpid()}.npz"
    np.savez(tmp, spans=self.spans, unit_offsets=self.unit_offsets,
             documents=np.frombuffer(meta.encode("utf-8"), np.uint8))
    os.replace(tmp, path)
    return path

  @staticmethod
  def load(path: str) -> "UnitText":
    with np.load(path) as z:
      meta = json.loads(z["documents"].tobytes().decode("utf-8"))
      return UnitText(meta["doc_ids"], meta["domains"], meta["texts"], z["unit_offsets"],
                      z["spans"])


def unit_text(docs: Sequence, tokenizers: Sequence, store=None) -> UnitText:
  """Re-derives the units of ``docs`` as recorded with ``tokenizers`` aligned.

  Args:
    docs: the recorded ``Document``s, in the store's order.
    tokenizers: every tokenizer the recording aligned on (the models' own and
      ``align_with``); duplicates (by content hash) count once.
    store: optional ``Store`` whose documents and unit offsets must agree.

  Raises:
    ValueError: naming the first document whose unit count differs from the store.
  """
  from rosetta_jax import recording  # pylint: disable=g-import-not-at-top
  from rosetta_jax.data import align as align_lib  # pylint: disable=g-import-not-at-top
  toks: dict = {}
  for t in tokenizers:
    toks.setdefault(recording.tokenizer_hash(t), recording.as_tokenizer(t))
  if not toks:
    raise ValueError("unit_text needs at least one tokenizer")
  spans, counts = [], []
  for doc in docs:
    al = align_lib.align_encodings([t.encode(doc.text) for t in toks.values()], doc.doc_id)
    spans.append(al.spans)
    counts.append(al.num_units)
  doc_ids = [d.doc_id for d in docs]
  if store is not None:
    sd = store.documents
    if list(sd["doc_ids"]) != doc_ids:
      raise ValueError(f"the documents given differ from those of store {store.path}")
    align_lib.check_unit_counts(doc_ids, counts, np.diff(sd["unit_offsets"]),
                                what=f"the documents re-aligned and store {store.path}")
  offs = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
  return UnitText(doc_ids, [d.domain for d in docs], [d.text for d in docs], offs,
                  np.concatenate(spans).astype(np.int64) if spans else np.zeros((0, 2), np.int64))
