"""Chunk-row checksums of the activation store (``store.py``).

A site's array is [units, neurons], chunked into rows of ``cu`` units. Row r
covers units [r * cu, min((r + 1) * cu, units)) across all neurons; its
checksum is the CRC32C of those units' values, C order, in the stored dtype
(float32 or bfloat16 bytes): exactly the bytes of the contiguous [rows, neurons]
slice that the writer holds in memory and a reader gets back, so neither side
ever re-reads or copies data to hash it. CRC32C (the Castagnoli polynomial of
iSCSI, ext4 and zarr v3's ``crc32c`` codec) runs in hardware, 7-14 GB/s per core
on the 2-core test machine, and continues across buffers
(``crc32c(b, crc32c(a)) == crc32c(a + b)``), so a row that spans two recording
batches is hashed in two pieces, and the last, partial row of an unfinished
recording resumes from its committed value.
"""

from __future__ import annotations

import numpy as np
from crc32c import crc32c

ALGORITHM = "crc32c/rows"


def num_rows(units: int, cu: int) -> int:
  """Chunk rows that hold ``units`` units (the last may be partial)."""
  return -(-int(units) // int(cu))


def row_crcs(x: np.ndarray, cu: int) -> np.ndarray:
  """[ceil(len(x) / cu)] uint32 CRC32C of each row of ``cu`` units of x [u, n]
  (C-contiguous; its first unit starts a row)."""
  x = np.ascontiguousarray(x)
  return np.fromiter((crc32c(_bytes(x[s:s + cu])) for s in range(0, x.shape[0], cu)),
                     np.uint32, count=num_rows(x.shape[0], cu))


def _bytes(x: np.ndarray) -> np.ndarray:
  """The bytes of a C-contiguous array as a flat uint8 view (no copy; bfloat16
  has no buffer-protocol format of its own)."""
  return x.reshape(-1).view(np.uint8)


class RowHasher:
  """The running CRC32C of each chunk row of one site, fed in unit order.

  Args:
    cu: units per chunk row.
    total: the array's total units (the last row may be short).
    committed: the CRCs of a resumed store (``num_rows(position, cu)`` of them;
      the last is that of a partial row if ``position`` is inside a row).
    position: units already hashed (a resumed store's ``units_done``).
  """

  def __init__(self, cu: int, total: int, committed=(), position: int = 0):
    self.cu, self.total, self.position = int(cu), int(total), int(position)
    committed = [int(c) for c in np.asarray(committed, np.uint32)]
    if len(committed) != num_rows(position, cu):
      raise ValueError(f"{len(committed)} row checksums for {position} units in rows of {cu}")
    partial = position % self.cu != 0 and position != self.total
    self._done = committed[:-1] if partial else committed
    self._open = committed[-1] if partial else 0

  def update(self, start: int, values: np.ndarray, what: str = "") -> None:
    """Hashes ``values`` [u, n] (C-contiguous, the stored dtype) at units
    [start, start + u); ``start`` must be the units hashed so far."""
    if start != self.position:
      raise ValueError(f"{what}: units must be written in order: expected a write at "
                       f"unit {self.position}, got {start}")
    u = values.shape[0]
    if start + u > self.total:
      raise ValueError(f"{what}: units [{start}, {start + u}) exceed the {self.total} units")
    i = 0
    while i < u:
      pos = self.position
      row_end = min((pos // self.cu + 1) * self.cu, self.total)
      take = min(row_end - pos, u - i)
      self._open = crc32c(_bytes(values[i:i + take]), self._open)
      i += take
      self.position += take
      if self.position == row_end:
        self._done.append(self._open)
        self._open = 0

  def crcs(self) -> np.ndarray:
    """[num_rows(position)] uint32: the finished rows and the open one, if any."""
    out = list(self._done)
    if self.position % self.cu != 0 and self.position != self.total:
      out.append(self._open)
    return np.asarray(out, np.uint32)
