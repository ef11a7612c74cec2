"""The embedded, domain-labelled corpus and the document split.

``load_corpus("heldout")`` returns the documents the study records activations
on; ``load_corpus("train")`` those the zoo trains on. The split is by document,
deterministic (a hash of the document id), and identical on every machine.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import lzma
import os
from typing import Iterable, Sequence

DEFAULT_PATH = os.path.join(os.path.dirname(__file__), "corpus", "corpus.jsonl.xz")
HELDOUT_FRACTION = 0.15
SPLITS = ("train", "heldout", "all")


@dataclasses.dataclass(frozen=True)
class Document:
  """One document: a stable id, its text, and its domain label."""
  doc_id: str
  text: str
  domain: str


def _heldout(doc_id: str) -> bool:
  h = int.from_bytes(hashlib.sha256(doc_id.encode()).digest()[:8], "little")
  return (h / 2 ** 64) < HELDOUT_FRACTION


def read_jsonl(path: str) -> list[Document]:
  """Reads documents from a ``.jsonl`` or ``.jsonl.xz`` file of
  ``{"id", "text", "domain"}`` records.

  Raises:
    FileNotFoundError: the file does not exist.
    ValueError: a record lacks a field, or the file holds no documents.
  """
  if not os.path.exists(path):
    raise FileNotFoundError(f"corpus file not found: {path}")
  opener = lzma.open if path.endswith(".xz") else open
  docs = []
  with opener(path, "rt", encoding="utf-8") as f:
    for line_no, line in enumerate(f, 1):
      if not line.strip():
        continue
      rec = json.loads(line)
      missing = {"id", "text", "domain"} - set(rec)
      if missing:
        raise ValueError(f"{path}:{line_no}: record lacks {sorted(missing)}")
      docs.append(Document(rec["id"], rec["text"], rec["domain"]))
  if not docs:
    raise ValueError(f"corpus {path} holds no documents")
  return docs


def load_corpus(split: str = "heldout", path: str | None = None,
                domains: Sequence[str] | None = None) -> list[Document]:
  """Loads a split of the embedded corpus (or of a corpus file of the same format).

  Args:
    split: "train", "heldout" or "all".
    path: a ``.jsonl[.xz]`` corpus; default the embedded one.
    domains: keep only these domains.

  Returns:
    Documents sorted by id.
  """
  if split not in SPLITS:
    raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
  docs = read_jsonl(path or DEFAULT_PATH)
  if split != "all":
    want = split == "heldout"
    docs = [d for d in docs if _heldout(d.doc_id) == want]
  if domains is not None:
    unknown = set(domains) - {d.domain for d in docs}
    if unknown:
      raise ValueError(f"no documents of domain(s) {sorted(unknown)} in split {split!r}")
    docs = [d for d in docs if d.domain in set(domains)]
  if not docs:
    raise ValueError(f"split {split!r} of the corpus is empty")
  return sorted(docs, key=lambda d: d.doc_id)


def corpus_hash(docs: Iterable[Document]) -> str:
  """A content hash of documents (ids, domains and texts), for manifests."""
  h = hashlib.sha256()
  for d in docs:
    for part in (d.doc_id, d.domain, d.text):
      h.update(part.encode())
      h.update(b"\0")
  return h.hexdigest()[:16]


def domains_of(docs: Iterable[Document]) -> list[str]:
  """Sorted distinct domain labels."""
  return sorted({d.domain for d in docs})
