"""One partition's fetched records, kept as columns until they are handed out.

A fetch brings thousands of records per partition. Making a ConsumerRecord
for each of them at once and keeping them in a list costs an object per
record that stays alive until the user gets to it, and the cyclic garbage
collector walks all of them again and again while they wait. So the fetcher
keeps the decoded columns (the lists msgpack made: offsets, timestamps, keys,
values, headers) and ``RecordColumns.iterate`` makes each ConsumerRecord only
when iteration reaches it, with C calls only (``map`` of ``tuple.__new__`` over
a ``zip`` of the columns). A record the user drops is freed at once, its
memory reused for the next one, and the collector never sees a backlog.

The iterator's position is read back from the offsets column's list iterator
(``__length_hint__``): ``zip`` pulls exactly one item from it per record it
makes, so the number of records handed out is known without Python code per
record. Moving that list iterator to its end ends the iteration.
"""

from __future__ import annotations

from itertools import repeat
from typing import Iterator

from .structs import ConsumerRecord

_tuple_new = tuple.__new__  # map(_tuple_new, repeat(ConsumerRecord), rows): C calls only


class RecordColumns:
    """Records of one partition as five equal-length lists."""

    __slots__ = ("topic", "partition", "offsets", "timestamps", "keys", "values", "headers")

    def __init__(self, topic: str, partition: int) -> None:
        self.topic = topic
        self.partition = partition
        self.offsets: list = []
        self.timestamps: list = []
        self.keys: list = []
        self.values: list = []
        self.headers: list = []

    def __len__(self) -> int:
        return len(self.offsets)

    def extend(self, offsets, timestamps, keys, values, headers) -> None:
        """Append one batch's columns (sequences of equal length)."""
        self.offsets.extend(offsets)
        self.timestamps.extend(timestamps)
        self.keys.extend(keys)
        self.values.extend(values)
        self.headers.extend(headers)

    def _columns(self) -> tuple:
        return self.offsets, self.timestamps, self.keys, self.values, self.headers

    def iterate(self, start: int = 0) -> tuple[Iterator[int], Iterator[ConsumerRecord]]:
        """(cursor, records): the ConsumerRecords from index ``start`` on, made
        one at a time, and the offsets column's list iterator, whose
        ``__length_hint__()`` is the number of records not yet made."""
        its = [iter(c) for c in self._columns()]
        if start:
            for it in its:
                it.__setstate__(start)
        records = map(_tuple_new, repeat(ConsumerRecord),
                      zip(repeat(self.topic), repeat(self.partition), *its))
        return its[0], records

    def slice(self, start: int, end: int) -> list[ConsumerRecord]:
        """The ConsumerRecords at indexes [start, end), as a list."""
        return list(map(_tuple_new, repeat(ConsumerRecord), zip(
            repeat(self.topic), repeat(self.partition), *(c[start:end] for c in self._columns())
        )))

    def to_list(self) -> list[ConsumerRecord]:
        return self.slice(0, len(self.offsets))
