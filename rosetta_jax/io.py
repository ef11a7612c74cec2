"""Files the project writes: always to a temporary name in the same folder, then renamed.

A process killed mid-write leaves the old file (or none), never half a file. Reads
of JSON name the file and the remedy when it is damaged.
"""

from __future__ import annotations

import json
import os
import tempfile

import numpy as np


def atomic_write(path: str, data: bytes | str) -> str:
  """Writes ``data`` to ``path`` through a temporary file and ``os.replace``."""
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path), suffix=".tmp")
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data.encode("utf-8") if isinstance(data, str) else data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise
  return path


def json_default(x):
  """JSON encoding of numpy scalars and arrays."""
  if isinstance(x, np.integer):
    return int(x)
  if isinstance(x, np.floating):
    return float(x)
  if isinstance(x, np.bool_):
    return bool(x)
  if isinstance(x, np.ndarray):
    return x.tolist()
  if isinstance(x, tuple):
    return list(x)
  raise TypeError(f"not JSON serialisable: {type(x)}")


def write_json(path: str, obj, indent: int | None = 1) -> str:
  """``obj`` as JSON at ``path``, atomically."""
  return atomic_write(path, json.dumps(obj, indent=indent, default=json_default))


def read_json(path: str, what: str = "a JSON file"):
  """The JSON at ``path``; a damaged file is an error naming it."""
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise ValueError(f"{path}: {what} that is not valid JSON ({e}); it may have been cut "
                     f"short: delete it and re-run") from None


def save_npz(path: str, **arrays) -> str:
  """Compressed ``.npz`` at ``path``, atomically."""
  import io as _io  # pylint: disable=g-import-not-at-top
  buf = _io.BytesIO()
  np.savez_compressed(buf, **arrays)
  return atomic_write(path, buf.getvalue())
