"""Idempotent producers: what one partition remembers of each producer, and its snapshots.

Theory of operation
-------------------
A batch from an idempotent producer carries, in its header, a producer id,
an epoch and the sequence number of its first record; its records are
numbered on from there (``last_seq = base_sequence + last_offset_delta``,
modulo 2^31). For each producer id a partition remembers the epoch and the
last five batches it appended: (first_seq, last_seq, base_offset,
last_offset, timestamp). Before an append writes anything, ``check`` holds
each producer batch against that (Kafka's rules):

* same epoch and the same sequence range as a remembered batch: a
  *duplicate* (a retry of a batch that was written). If every batch of the
  append is one, nothing is written and the append answers with the original
  offsets; a request mixing new and duplicate batches is refused with
  DUPLICATE_SEQUENCE_NUMBER (a producer never sends one).
* an epoch below the known one: INVALID_PRODUCER_EPOCH; the producer was
  fenced by a newer instance. (Kafka 2.7+ answers the same case on produce
  with this code too; PRODUCER_FENCED is what InitProducerId answers.)
* an epoch above the known one: the producer was bumped; its sequence must
  restart at 0, else OUT_OF_ORDER_SEQUENCE_NUMBER.
* the same epoch: the first sequence must follow the last one remembered
  (``last_seq + 1`` modulo 2^31), else OUT_OF_ORDER_SEQUENCE_NUMBER.
* an unknown producer id: accepted whatever its sequence. That is Kafka's
  behaviour since 2.5, and what lets a producer go on after retention removed
  every batch (and so the state) it had in this partition.

Several batches of one append are checked in order, each against the state
the previous ones would leave. Batches without a producer id (-1) are not
checked. Only after the write succeeded does ``update`` record them.

Snapshot file ``<offset, 20 digits>.snapshot`` (the state after every batch
below ``offset``), written temp-fsync-rename when a segment rolls and on a
clean close; the newest two are kept::

    magic     3 bytes  b"FPS"
    version   u8       1
    crc       u32      CRC32C of everything after this field
    body      msgpack  [offset, [[producer_id, epoch, [[first_seq, last_seq,
                        base_offset, last_offset, timestamp], ...]], ...]]

Opening a log loads the newest valid snapshot at or below the log end (ones
above it describe batches recovery cut off, and are deleted) and replays the
batch headers from its offset on; with no snapshot it replays every header of
the log. Replaying needs the headers only, never the records.
"""

from __future__ import annotations

import logging
import os
import struct
from pathlib import Path
from typing import Iterable, NamedTuple

import crc32c
import msgpack

from protocol.errors import (
    DuplicateSequenceNumberError,
    InvalidProducerEpochError,
    InvalidRequestError,
    OutOfOrderSequenceNumberError,
)

from . import fsio, paths

log = logging.getLogger(__name__)

SEQ_MOD = 1 << 31
REMEMBERED_BATCHES = 5
SNAPSHOTS_KEPT = 2
_MAGIC = b"FPS"
_VERSION = 1
_PREFIX = struct.Struct(">3sBI")


class CorruptSnapshotError(Exception):
    """A snapshot file does not parse or fails its CRC."""


class BatchMetadata(NamedTuple):
    """One remembered batch of a producer."""

    first_seq: int
    last_seq: int
    base_offset: int
    last_offset: int
    timestamp: int


class ProducerBatch(NamedTuple):
    """A batch of an append, as the producer checks see it."""

    producer_id: int
    epoch: int
    first_seq: int
    last_seq: int
    base_offset: int
    last_offset: int
    timestamp: int

    @property
    def metadata(self) -> BatchMetadata:
        return BatchMetadata(self.first_seq, self.last_seq, self.base_offset, self.last_offset, self.timestamp)


class ProducerEntry:
    """A producer's epoch and its last few batches, oldest first."""

    __slots__ = ("epoch", "batches")

    def __init__(self, epoch: int, batches: list[BatchMetadata] | None = None) -> None:
        self.epoch = epoch
        self.batches = batches or []

    def __repr__(self) -> str:
        return f"ProducerEntry(epoch={self.epoch}, batches={self.batches})"

    @property
    def last_seq(self) -> int:
        return self.batches[-1].last_seq

    @property
    def last_offset(self) -> int:
        return self.batches[-1].last_offset

    def find(self, first_seq: int, last_seq: int) -> BatchMetadata | None:
        for b in self.batches:
            if b.first_seq == first_seq and b.last_seq == last_seq:
                return b
        return None

    def add(self, batch: BatchMetadata) -> None:
        self.batches.append(batch)
        if len(self.batches) > REMEMBERED_BATCHES:
            del self.batches[0]


class ProducerState:
    """The producers of one partition, and the snapshot files in its ``directory``.

    Not thread-safe: used from the log's appending thread only.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._producers: dict[int, ProducerEntry] = {}

    def __len__(self) -> int:
        return len(self._producers)

    def get(self, producer_id: int) -> ProducerEntry | None:
        return self._producers.get(producer_id)

    # -- checking and recording appends -----------------------------------------

    def check(self, batches: list[ProducerBatch]) -> tuple[BatchMetadata, BatchMetadata] | None:
        """Validate an append's producer batches, in order, before anything is written.

        Returns None if they may be appended, or (first, last) remembered
        batches if every one is a duplicate. Raises InvalidProducerEpochError,
        OutOfOrderSequenceNumberError or DuplicateSequenceNumberError.
        """
        pending: dict[int, tuple[int, int]] = {}  # producer id -> (epoch, last_seq) so far
        duplicates: list[BatchMetadata] = []
        for b in batches:
            pid = b.producer_id
            entry = self._producers.get(pid)
            if pid in pending:
                epoch, last_seq = pending[pid]
            elif entry is not None:
                epoch, last_seq = entry.epoch, entry.last_seq
                if b.epoch == epoch:
                    dup = entry.find(b.first_seq, b.last_seq)
                    if dup is not None:
                        duplicates.append(dup)
                        continue
            else:
                epoch = last_seq = None
            if epoch is not None:
                if b.epoch < epoch:
                    raise InvalidProducerEpochError(
                        f"producer {pid} epoch {b.epoch} is older than the current epoch {epoch}"
                    )
                if b.epoch > epoch:
                    if b.first_seq != 0:
                        raise OutOfOrderSequenceNumberError(
                            f"producer {pid}: new epoch {b.epoch} must start at sequence 0, not {b.first_seq}"
                        )
                elif b.first_seq != (last_seq + 1) % SEQ_MOD:
                    raise OutOfOrderSequenceNumberError(
                        f"producer {pid} epoch {epoch}: expected sequence {(last_seq + 1) % SEQ_MOD}, "
                        f"got {b.first_seq}"
                    )
            pending[pid] = (b.epoch, b.last_seq)
        if not duplicates:
            return None
        if len(duplicates) != len(batches):
            raise DuplicateSequenceNumberError("the request mixes duplicate and new batches")
        return duplicates[0], duplicates[-1]

    def update(self, batches: Iterable[ProducerBatch]) -> None:
        """Record batches that were appended (or replayed from the log)."""
        producers = self._producers
        for b in batches:
            entry = producers.get(b.producer_id)
            if entry is None or entry.epoch != b.epoch:
                entry = producers[b.producer_id] = ProducerEntry(b.epoch)
            entry.add(b.metadata)

    def evict_below(self, offset: int) -> int:
        """Forget producers whose last batch is below ``offset`` (it left the log). Returns how many."""
        gone = [pid for pid, e in self._producers.items() if e.last_offset < offset]
        for pid in gone:
            del self._producers[pid]
        return len(gone)

    def clear(self) -> None:
        self._producers = {}

    # -- snapshots ---------------------------------------------------------------

    def snapshot_offsets(self) -> list[int]:
        """Offsets of the snapshot files present, ascending."""
        found = []
        try:
            entries = list(self.directory.iterdir())
        except FileNotFoundError:
            return []
        for entry in entries:
            offset = paths.parse_snapshot_file(entry)
            if offset is not None:
                found.append(offset)
        return sorted(found)

    def write_snapshot(self, offset: int) -> None:
        """Write the state as of ``offset`` (temp, fsync, rename); keep the newest two. Raises OSError."""
        producers = [
            [pid, e.epoch, [list(b) for b in e.batches]] for pid, e in self._producers.items()
        ]
        body = msgpack.packb([offset, producers], use_bin_type=True)
        data = _PREFIX.pack(_MAGIC, _VERSION, crc32c.crc32c(body)) + body
        fsio.atomic_write(paths.snapshot_file(self.directory, offset), data)
        for old in self.snapshot_offsets()[:-SNAPSHOTS_KEPT]:
            self._remove(old)

    def delete_snapshots_above(self, offset: int) -> None:
        """Remove snapshots of offsets above ``offset`` (state the log no longer has)."""
        for o in self.snapshot_offsets():
            if o > offset:
                self._remove(o)

    def load_snapshot(self, log_end: int) -> int | None:
        """Load the newest valid snapshot at or below ``log_end``; returns its offset.

        Deletes snapshots above ``log_end`` and invalid ones. None (and an
        empty state) if there is none: replay the whole log then.
        """
        self.clear()
        self.delete_snapshots_above(log_end)
        for offset in reversed(self.snapshot_offsets()):
            path = paths.snapshot_file(self.directory, offset)
            try:
                self._producers = _read_snapshot(path, offset)
                return offset
            except (OSError, CorruptSnapshotError) as exc:
                log.warning("%s: ignoring producer state snapshot: %s", path, exc)
                self._remove(offset)
        return None

    def _remove(self, offset: int) -> None:
        try:
            os.unlink(paths.snapshot_file(self.directory, offset))
        except FileNotFoundError:
            pass


def _read_snapshot(path: Path, offset: int) -> dict[int, ProducerEntry]:
    data = path.read_bytes()
    if len(data) < _PREFIX.size:
        raise CorruptSnapshotError("too short")
    magic, version, crc = _PREFIX.unpack_from(data)
    body = memoryview(data)[_PREFIX.size :]
    if magic != _MAGIC or version != _VERSION:
        raise CorruptSnapshotError(f"unknown format {magic!r} version {version}")
    if crc32c.crc32c(body) != crc:
        raise CorruptSnapshotError("CRC mismatch")
    try:
        stored_offset, producers = msgpack.unpackb(body, raw=False)
        out = {}
        for pid, epoch, batches in producers:
            metas = [BatchMetadata(*map(int, b)) for b in batches]
            if not metas or not isinstance(pid, int) or not isinstance(epoch, int):
                raise ValueError("empty or malformed producer entry")
            out[pid] = ProducerEntry(epoch, metas[-REMEMBERED_BATCHES:])
    except (ValueError, TypeError) as exc:
        raise CorruptSnapshotError(f"malformed body: {exc}") from None
    if stored_offset != offset:
        raise CorruptSnapshotError(f"holds offset {stored_offset}, not the one it is named for")
    return out


def producer_batch(header, base_offset: int, timestamp: int) -> ProducerBatch:
    """The ProducerBatch of a batch header whose records start at ``base_offset``."""
    delta = header.last_offset_delta
    return ProducerBatch(
        header.producer_id,
        header.producer_epoch,
        header.base_sequence,
        (header.base_sequence + delta) % SEQ_MOD,
        base_offset,
        base_offset + delta,
        timestamp,
    )


def check_sequence_fields(header) -> None:
    """An idempotent batch must carry a sequence and an epoch. Raises InvalidRequestError."""
    if header.base_sequence < 0 or header.producer_epoch < 0:
        raise InvalidRequestError(
            f"batch of producer {header.producer_id} lacks a sequence number or epoch"
        )
