"""What the two index files have in common: a sorted run of fixed-width entries.

Theory of operation
-------------------
An index file is nothing but entries back to back, each ``(key, value)``
packed big-endian, keys strictly increasing; its size is exactly the number of
entries times the entry width (no preallocation). The whole index lives in two
``array`` objects in memory and is binary-searched there; the file is only
read at open and only appended to while the broker runs:

* entries are added in memory on the append path;
* ``write_pending`` appends the entries not yet in the file (when the segment
  rolls and at close), so the file is always a prefix of the memory copy;
* ``truncate`` cuts memory and file together;
* ``rewrite`` replaces the file atomically after a rebuild.

Indexes are derived data: a missing or malformed file is rebuilt from the
``.log`` by the segment, so ``load`` only has to tell a well-formed file from
a damaged one (``IndexMismatch``); checking it against the log is the
segment's job.
"""

from __future__ import annotations

import os
import struct
from array import array
from bisect import bisect_left, bisect_right
from pathlib import Path

from . import fsio


class IndexMismatch(Exception):
    """An index file is malformed or disagrees with its log: rebuild it."""


class SparseIndex:
    """Sorted fixed-width entries, kept in memory and mirrored to one file."""

    ENTRY: struct.Struct
    KEY_TYPE: str

    def __init__(self, path: Path, base_offset: int) -> None:
        self.path = path
        self.base_offset = base_offset
        self._keys = array(self.KEY_TYPE)
        self._values = array("I")
        self._persisted = 0  # entries already in the file

    @classmethod
    def load(cls, path: Path, base_offset: int):
        """Read the file. Raises FileNotFoundError, or IndexMismatch if it is malformed."""
        with open(path, "rb") as f:
            data = f.read()
        index = cls(path, base_offset)
        width = cls.ENTRY.size
        if len(data) % width:
            raise IndexMismatch(f"{path.name}: size {len(data)} is not a multiple of {width}")
        keys, values = index._keys, index._values
        for key, value in cls.ENTRY.iter_unpack(data):
            keys.append(key)
            values.append(value)
        for i in range(1, len(keys)):
            if keys[i] <= keys[i - 1] or values[i] < values[i - 1]:
                raise IndexMismatch(f"{path.name}: entries out of order at entry {i}")
        index._persisted = len(keys)
        return index

    def __len__(self) -> int:
        return len(self._keys)

    def _append(self, key: int, value: int) -> None:
        if self._keys and key <= self._keys[-1]:
            raise ValueError(f"index key {key} not above the last {self._keys[-1]}")
        self._keys.append(key)
        self._values.append(value)

    def _floor(self, key: int) -> int:
        """Index of the last entry with key <= ``key``; -1 if none."""
        return bisect_right(self._keys, key) - 1

    def _below(self, key: int) -> int:
        """Index of the last entry with key < ``key``; -1 if none."""
        return bisect_left(self._keys, key) - 1

    def _truncate(self, keep: int) -> None:
        """Keep only the first ``keep`` entries, in memory and in the file."""
        if keep >= len(self._keys):
            return
        del self._keys[keep:]
        del self._values[keep:]
        if self._persisted > keep:
            self._persisted = keep
            try:
                os.truncate(self.path, keep * self.ENTRY.size)
            except FileNotFoundError:
                self._persisted = 0

    def _encode(self, start: int, end: int) -> bytes:
        pack = self.ENTRY.pack
        keys, values = self._keys, self._values
        return b"".join(pack(keys[i], values[i]) for i in range(start, end))

    def write_pending(self) -> None:
        """Append the entries the file lacks (creating the file). Raises OSError."""
        end = len(self._keys)
        if self._persisted == end and self.path.exists():
            return
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fsio.write_all(fd, self._encode(self._persisted, end))
        finally:
            os.close(fd)
        self._persisted = end

    def rewrite(self) -> None:
        """Replace the file with every entry (write temp, fsync, rename)."""
        end = len(self._keys)
        fsio.atomic_write(self.path, self._encode(0, end))
        self._persisted = end

    def delete_file(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        self._persisted = 0
