"""``TimeIndex``: the sparse timestamp -> offset index of one segment (``.timeindex``).

Theory of operation
-------------------
File format: 12-byte entries back to back, no header::

    timestamp        i64  largest batch timestamp (ms) seen in the segment so far
    relative_offset  u32  base offset of the first batch that reached it, minus
                          the segment's base offset

Entries are added at the same points as the offset index entries (and once
more when the segment is rolled or closed), and only when the segment's
largest timestamp grew since the last entry: timestamps strictly increase and
offsets never decrease. An entry ``(T, o)`` therefore means "every batch
before ``o`` has a timestamp below ``T``", so the search for the first batch
with timestamp >= ``t`` may start at the last entry whose ``T < t``. The last
entry also gives a reopened segment its largest timestamp.

A batch's timestamp is its broker append time when it has one, else its
``max_timestamp``.
"""

from __future__ import annotations

import struct

from .sparse_index import SparseIndex


class TimeIndex(SparseIndex):
    ENTRY = struct.Struct(">qI")
    KEY_TYPE = "q"

    @property
    def last_timestamp(self) -> int:
        """The last entry's timestamp; -1 if there is none."""
        return self._keys[-1] if self._keys else -1

    def maybe_append(self, timestamp: int, offset: int) -> bool:
        """Add ``(timestamp, offset)`` if ``timestamp`` is above the last entry's (and >= 0)."""
        if timestamp <= (self._keys[-1] if self._keys else -1):
            return False
        self._append(timestamp, offset - self.base_offset)
        return True

    def lookup(self, timestamp: int) -> int:
        """The offset from which to scan for the first batch with timestamp >= ``timestamp``."""
        i = self._below(timestamp)
        if i < 0:
            return self.base_offset
        return self.base_offset + self._values[i]

    def last(self) -> tuple[int, int] | None:
        """(timestamp, offset) of the last entry, or None if empty."""
        if not self._keys:
            return None
        return self._keys[-1], self.base_offset + self._values[-1]

    def truncate_to(self, offset: int) -> None:
        """Drop the entries that name a batch at or after ``offset``."""
        keep = len(self._values)
        rel = offset - self.base_offset
        while keep and self._values[keep - 1] >= rel:
            keep -= 1
        self._truncate(keep)
