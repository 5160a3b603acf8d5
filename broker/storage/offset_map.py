"""``OffsetMap``: the cleaner's key -> latest offset table, with a fixed capacity.

Theory of operation
-------------------
The cleaner reads the dirty part of a log and remembers, for every key, the
offset of its newest record; then it rewrites the log keeping only records
that are their key's newest. Keys are opaque bytes of any length, so the map
stores a 16-byte BLAKE2b digest of each key instead (as Kafka stores an MD5):
memory per entry is fixed, and two distinct keys collide with probability
about 2^-128 per pair. The capacity is a number of entries derived from a
byte budget; ``put`` refuses a new key once the map is full, which is how the
cleaner learns to stop reading and clean only the prefix the map covers.
"""

from __future__ import annotations

import hashlib

# What one entry costs in a CPython dict of int -> int (the digest as an int),
# measured with tracemalloc, growth slack included.
BYTES_PER_ENTRY = 128


def key_hash(key: bytes) -> int:
    """The map's identity for ``key``."""
    return int.from_bytes(hashlib.blake2b(key, digest_size=16).digest(), "big")


class OffsetMap:
    """key digest -> newest offset seen, for at most ``capacity`` keys."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("an offset map needs room for at least one key")
        self.capacity = capacity
        self._offsets: dict[int, int] = {}
        self.latest_offset = -1  # the largest offset put so far

    @classmethod
    def for_memory(cls, max_bytes: int) -> "OffsetMap":
        """A map sized to use about ``max_bytes`` of memory when full."""
        return cls(max(1, max_bytes // BYTES_PER_ENTRY))

    def __len__(self) -> int:
        return len(self._offsets)

    @property
    def full(self) -> bool:
        return len(self._offsets) >= self.capacity

    def put(self, key: bytes, offset: int) -> bool:
        """Record that ``key`` has a record at ``offset`` (offsets come in increasing order).

        False, and nothing recorded, if the key is new and the map is full.
        """
        h = key_hash(key)
        offsets = self._offsets
        if h not in offsets and len(offsets) >= self.capacity:
            return False
        offsets[h] = offset
        if offset > self.latest_offset:
            self.latest_offset = offset
        return True

    def get(self, key: bytes) -> int | None:
        """The newest offset recorded for ``key``, or None."""
        return self._offsets.get(key_hash(key))
