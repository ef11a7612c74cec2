"""Rebuilds the embedded, domain-labelled corpus from Debian packages.

    apt-get install -y bible-kjv python3.11-doc pari-doc maxima-doc
    python -m rosetta_jax.data.build_corpus            # writes data/corpus/

Sources (all real text; licences in data/corpus/NOTICE):
  prose: the King James Bible (``bible-kjv``), one document per chapter.
  code:  the Python 3.11 standard library ``.py`` sources (this interpreter's).
  docs:  the Python 3.11 documentation reST sources (``python3.11-doc``).
  math:  the PARI/GP manuals' TeX (``pari-doc``) and the Maxima manual (``maxima-doc``).
  legal: the licence texts in ``/usr/share/common-licenses``.

Long files are cut on blank lines into documents of at most ``MAX_CHARS``
characters. Each domain is sampled deterministically (by a hash of the document
id) down to its character budget, so the corpus is a few MB compressed and the
rebuild is reproducible on any machine with the same package versions.
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import json
import lzma
import os
import re
import subprocess
import sysconfig

from absl import app, flags, logging

from rosetta_jax.io import atomic_open

MAX_CHARS = 3000
MIN_CHARS = 200
BUDGET = {"prose": 1_500_000, "code": 1_500_000, "docs": 1_200_000, "math": 1_200_000,
          "legal": 600_000}
OUT_DIR = os.path.join(os.path.dirname(__file__), "corpus")

_FLAGS = flags.DEFINE_string("out_dir", OUT_DIR, "Where to write corpus.jsonl.xz.")


def split_text(text: str, max_chars: int = MAX_CHARS) -> list[str]:
  """Cuts text on blank lines into pieces of at most ``max_chars`` (a longer
  paragraph is cut on line breaks)."""
  pieces, cur = [], ""
  for para in re.split(r"\n\s*\n", text):
    para = para.strip("\n")
    if not para.strip():
      continue
    while len(para) > max_chars:
      cut = para.rfind("\n", 0, max_chars)
      cut = cut if cut > 0 else max_chars
      if cur:
        pieces.append(cur)
        cur = ""
      pieces.append(para[:cut])
      para = para[cut:].lstrip("\n")
    if cur and len(cur) + 2 + len(para) > max_chars:
      pieces.append(cur)
      cur = ""
    cur = f"{cur}\n\n{para}" if cur else para
  if cur:
    pieces.append(cur)
  return pieces


def _read(path: str) -> str:
  opener = gzip.open if path.endswith(".gz") else open
  with opener(path, "rt", encoding="utf-8", errors="replace") as f:
    return f.read()


def _files(domain: str) -> list[tuple[str, str]]:
  """(document-id prefix, text) for every source file of a domain."""
  if domain == "prose":
    text = subprocess.run(["bible", "-f", "Genesis1:1-Revelation22:21"], check=True,
                          capture_output=True, text=True).stdout
    chapters: dict[str, list[str]] = {}
    for line in text.splitlines():
      m = re.match(r"^(\w+?)(\d+):(\d+) (.*)$", line)
      if m:
        chapters.setdefault(f"{m.group(1)}{m.group(2)}", []).append(m.group(4))
    return [(f"kjv/{k}", " ".join(v)) for k, v in chapters.items()]
  if domain == "code":
    root = sysconfig.get_paths()["stdlib"]
    paths = sorted(p for p in glob.glob(f"{root}/**/*.py", recursive=True)
                   if "site-packages" not in p and "/test" not in p and "idle_test" not in p)
    return [("stdlib/" + os.path.relpath(p, root), _read(p)) for p in paths]
  if domain == "docs":
    root = "/usr/share/doc/python3.11/html/_sources"
    paths = sorted(glob.glob(f"{root}/**/*.rst.txt", recursive=True))
    paths = [p for p in paths if "/whatsnew/" not in p and "/c-api/" not in p]
    return [("pydoc/" + os.path.relpath(p, root), _read(p)) for p in paths]
  if domain == "math":
    tex = sorted(glob.glob("/usr/share/pari/doc/users*.tex") +
                 glob.glob("/usr/share/pari/doc/tutorial*.tex"))
    info = sorted(glob.glob("/usr/share/info/maxima.info-*.gz"))
    return ([("pari/" + os.path.basename(p), _read(p)) for p in tex] +
            [("maxima/" + os.path.basename(p), _read(p)) for p in info])
  if domain == "legal":
    paths = sorted(p for p in glob.glob("/usr/share/common-licenses/*") if os.path.isfile(p))
    return [("licenses/" + os.path.basename(p), _read(p)) for p in paths]
  raise ValueError(domain)


def _key(doc_id: str) -> str:
  return hashlib.sha256(doc_id.encode()).hexdigest()


def build_domain(domain: str) -> list[dict]:
  docs = []
  for prefix, text in _files(domain):
    for i, piece in enumerate(split_text(text)):
      if len(piece) >= MIN_CHARS:
        docs.append({"id": f"{domain}/{prefix}#{i}", "domain": domain, "text": piece})
  if not docs:
    raise RuntimeError(f"no documents for domain {domain!r}: is its Debian package installed?")
  docs.sort(key=lambda d: _key(d["id"]))
  out, total = [], 0
  for d in docs:
    if total >= BUDGET[domain]:
      break
    out.append(d)
    total += len(d["text"])
  logging.info("%s: %d documents, %d chars (of %d available)", domain, len(out), total,
               len(docs))
  return sorted(out, key=lambda d: d["id"])


def main(argv):
  del argv
  os.makedirs(_FLAGS.value, exist_ok=True)
  docs = [d for domain in BUDGET for d in build_domain(domain)]
  path = os.path.join(_FLAGS.value, "corpus.jsonl.xz")
  with atomic_open(path, "wb") as raw, lzma.open(raw, "wt", encoding="utf-8", preset=9) as f:
    for d in docs:
      f.write(json.dumps(d, ensure_ascii=False) + "\n")
  logging.info("wrote %d documents to %s (%d bytes)", len(docs), path, os.path.getsize(path))


if __name__ == "__main__":
  app.run(main)
