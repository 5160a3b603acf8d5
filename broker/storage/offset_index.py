"""``OffsetIndex``: the sparse offset -> file position index of one segment (``.index``).

Theory of operation
-------------------
File format: 8-byte entries back to back, no header::

    relative_offset  u32  batch base offset minus the segment's base offset
    position         u32  byte position of that batch in the segment's .log

An entry is added each time at least ``index_interval_bytes`` of batches were
written since the previous one, so an entry always points at the start of a
batch and finding an offset costs one binary search plus a scan of at most
about one interval of batch headers. Both columns strictly increase. The
first batch of a segment (position 0) needs no entry: a lookup below the first
entry answers position 0.
"""

from __future__ import annotations

import struct
from bisect import bisect_right

from .sparse_index import IndexMismatch, SparseIndex

MAX_RELATIVE_OFFSET = (1 << 32) - 1


class OffsetIndex(SparseIndex):
    ENTRY = struct.Struct(">II")
    KEY_TYPE = "I"

    @classmethod
    def load(cls, path, base_offset):
        index = super().load(path, base_offset)
        positions = index._values
        for i in range(1, len(positions)):
            if positions[i] <= positions[i - 1]:
                raise IndexMismatch(f"{path.name}: positions out of order at entry {i}")
        return index

    def append(self, offset: int, position: int) -> None:
        """Record that the batch with base ``offset`` starts at ``position``."""
        rel = offset - self.base_offset
        keys = self._keys
        if keys and rel <= keys[-1]:
            raise ValueError(f"index offset {offset} not above the last entry")
        keys.append(rel)
        self._values.append(position)

    def lookup(self, offset: int) -> tuple[int, int]:
        """(base offset, position) of the last indexed batch starting at or before ``offset``.

        (segment base offset, 0) when no entry is that low.
        """
        i = self._floor(offset - self.base_offset)
        if i < 0:
            return self.base_offset, 0
        return self.base_offset + self._keys[i], self._values[i]

    def lookup_position(self, position: int) -> tuple[int, int]:
        """(base offset, position) of the last indexed batch starting at or before ``position``."""
        i = bisect_right(self._values, position) - 1
        if i < 0:
            return self.base_offset, 0
        return self.base_offset + self._keys[i], self._values[i]

    def last(self) -> tuple[int, int] | None:
        """(base offset, position) of the last entry, or None if empty."""
        if not self._keys:
            return None
        return self.base_offset + self._keys[-1], self._values[-1]

    def truncate_to(self, offset: int) -> None:
        """Drop the entries for batches at or after ``offset``."""
        self._truncate(self._below(offset - self.base_offset) + 1)
