"""Atomic file writes: a reader (or a process killed mid-write) sees the old file or
the new one, never a truncated one.

Every file the package writes goes through these helpers: the bytes go to a
temporary file in the same directory (so the final rename never crosses a file
system), are flushed and fsynced, and the temporary is renamed over the target
with ``os.replace`` (atomic on POSIX and on Windows). A crash leaves at most a
``<name>.tmp.<pid>`` file beside the target, which the next write replaces and
which readers never open.

    atomic_write_bytes(path, data)
    atomic_write_text(path, text)
    atomic_write_json(path, obj, indent=1)
    atomic_write_npz(path, **arrays)
    with atomic_open(path, "wb") as f: ...        # for writers that want a file
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any, Iterator

import numpy as np

TMP_MARK = ".tmp."    # temporaries are ``<name>.tmp.<pid>``


def temp_path(path: str) -> str:
  """The temporary name ``path`` is written under before the rename."""
  return f"{path}{TMP_MARK}{os.getpid()}"


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "wb", **open_kw) -> Iterator[Any]:
  """Opens a temporary file for writing; on a clean exit it is fsynced and renamed
  to ``path``, on an exception it is removed and ``path`` is left untouched."""
  if mode not in ("w", "wb"):
    raise ValueError(f"atomic_open writes a whole new file: mode 'w' or 'wb', got {mode!r}")
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  tmp = temp_path(path)
  try:
    with open(tmp, mode, **open_kw) as f:
      yield f
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.remove(tmp)
    raise
  _fsync_dir(directory)


def _fsync_dir(directory: str) -> None:
  """Makes the rename itself durable (POSIX; a no-op where directories can't be opened)."""
  try:
    fd = os.open(directory, os.O_RDONLY)
  except OSError:
    return
  try:
    os.fsync(fd)
  except OSError:
    pass
  finally:
    os.close(fd)


def atomic_write_bytes(path: str, data: bytes) -> None:
  """Writes ``data`` to ``path`` atomically."""
  with atomic_open(path, "wb") as f:
    f.write(data)


def atomic_write_text(path: str, text: str, encoding: str = "utf-8") -> None:
  """Writes ``text`` to ``path`` atomically."""
  atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path: str, obj: Any, indent: int | None = 1, **dumps_kw) -> None:
  """Writes ``obj`` as JSON to ``path`` atomically (serialised fully before any
  byte is written, so an unserialisable object leaves no file behind)."""
  atomic_write_text(path, json.dumps(obj, indent=indent, **dumps_kw))


def atomic_write_npz(path: str, compressed: bool = False, **arrays) -> None:
  """Writes ``arrays`` as an ``.npz`` archive to ``path`` atomically. ``path`` is
  used as given (NumPy would append ``.npz`` to a name without it)."""
  with atomic_open(path, "wb") as f:
    (np.savez_compressed if compressed else np.savez)(f, **arrays)


def canonical_json(obj: Any) -> str:
  """``obj`` as JSON with sorted keys and no whitespace (for hashing)."""
  return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def json_roundtrip(obj: Any) -> Any:
  """``obj`` as it will read back from JSON (tuples -> lists, int keys -> str)."""
  return json.loads(json.dumps(obj))


def read_json(path: str, what: str | None = None) -> Any:
  """Reads a JSON file; a truncated or malformed one is a ``ValueError`` naming the
  file (``json`` alone says only "Expecting value: line 1 column 1")."""
  with open(path, encoding="utf-8") as f:
    text = f.read()
  try:
    return json.loads(text)
  except json.JSONDecodeError as e:
    raise ValueError(f"{path}: {what + ' is ' if what else ''}not valid JSON ({e}; "
                     f"{len(text)} bytes): the file is damaged or was cut short; "
                     "delete it to have it rebuilt") from e


def json_default(x):
  """JSON encoding of numpy scalars and arrays (``json.dumps(default=...)``)."""
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


def atomic_write(path: str, data: bytes | str) -> str:
  """``atomic_write_bytes`` or ``atomic_write_text``; returns ``path``."""
  if isinstance(data, str):
    atomic_write_text(path, data)
  else:
    atomic_write_bytes(path, data)
  return path


def write_json(path: str, obj, indent: int | None = 1) -> str:
  """``obj`` (numpy values allowed) as JSON at ``path``, atomically; returns ``path``."""
  atomic_write_json(path, obj, indent=indent, default=json_default)
  return path


def save_npz(path: str, **arrays) -> str:
  """A compressed ``.npz`` at ``path``, atomically; returns ``path``."""
  atomic_write_npz(path, compressed=True, **arrays)
  return path
