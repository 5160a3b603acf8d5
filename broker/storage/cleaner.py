"""The log cleaner: compaction for topics whose ``cleanup.policy`` includes ``compact``.

Theory of operation
-------------------
A pass over one log (Kafka's LogCleaner, much simplified):

1. *Choose.* Only closed segments are ever cleaned, never the active one.
   The cleaner remembers (in memory; after a restart everything is dirty
   once) the offset up to which it last cleaned each log; the closed
   segments from there on are *dirty*. A log with no dirty segment is
   skipped, so a tombstone that ages past ``delete.retention.ms`` after its
   segment was cleaned goes at the next pass that new closed segments bring.
2. *Map.* Read the dirty segments in order and record each key's newest
   offset in an ``OffsetMap`` of bounded size. When the map is full, stop at
   the last segment that fit entirely: only the log up to there is cleaned
   this pass, the rest waits for the next (Kafka does the same). If not even
   one segment fits, the log is marked uncleanable until the broker restarts,
   as Kafka does; ``dedupe_buffer_size`` must grow. Mapping whole segments
   only is what makes dropping an old tombstone safe: when a tombstone was
   first cleaned its key was in the map, so every older record of that key
   went in the same pass.
3. *Rewrite.* Every closed segment from the log start up to that point is
   read again, in groups of consecutive segments that fit in one segment
   (``segment.bytes``, and offsets within the index's reach). A record stays
   unless a newer record of its key exists in the map, it has no key (as in
   Kafka's cleaner; Kafka also refuses them at produce, which Ferry cannot
   do without decoding records on the append path), or it is a tombstone
   (value None) whose timestamp (its append time if stamped) is more than
   ``delete.retention.ms`` before the pass's ``now_ms``. A group from which nothing goes is
   left as it is. Otherwise the kept batches are written, in order, to
   ``<base>.log.cleaned`` with fresh ``.index.cleaned`` and
   ``.timeindex.cleaned``, all fsynced.
4. *Swap* (``commit``, on the log's own thread): ``PartitionLog.replace_segments``
   renames the cleaned files into place (see ``log_housekeeping``; a crash
   from its commit point on is completed at open, one before it leaves the
   old segments as they were).

Offsets never change. A batch whose records all stay and that starts where
the previous kept batch ended is copied byte for byte. Any other kept batch is
re-encoded from its decoded columns: the records keep their offsets through
the ``offset_deltas`` column and their timestamps through ``first_timestamp``
and the timestamp deltas; attributes, codec, producer id and epoch and the
append time are kept; ``max_timestamp`` is recomputed. So that batches still
chain exactly inside a segment (what recovery checks, since the CRC does not
cover ``base_offset``), a re-encoded batch starts where the previous kept
batch ended, taking in the offsets of the records removed before it, and its
``base_sequence`` moves back by as many, so that its last sequence
(``base_sequence + last_offset_delta``) stays what the producer sent. Gaps
remain only between segments, which nothing requires to be contiguous.

Memory: the map (``dedupe_buffer_size`` bytes) plus one batch at a time, and
about a megabyte of output buffered. I/O: every byte read or written goes
through the ``Throttler`` (``io_max_bytes_per_second``).

Threads: ``prepare`` runs on any thread while the log keeps serving (it only
reads closed segments, through its own file descriptors, and writes new
files); ``commit`` must run on the log's appending thread.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
import weakref
from pathlib import Path
from typing import Callable

from protocol.batch import (
    DEFAULT_MAX_UNCOMPRESSED,
    NO_TIMESTAMP,
    BatchHeader,
    assemble,
    compress_payload,
    decode_payload,
    encode_payload,
    parse_header,
)
from protocol.errors import CorruptMessageError

from . import fsio, paths
from .batch_reader import MAX_RELATIVE_OFFSET, iter_headers
from .config import LogConfig
from .errors import CorruptLogError, LogWriteError
from .offset_map import OffsetMap
from .partition_log import PartitionLog
from .producer_state import SEQ_MOD
from .segment import Segment
from .throttler import Throttler

log = logging.getLogger(__name__)

DEFAULT_DEDUPE_BUFFER_SIZE = 128 << 20  # Kafka's log.cleaner.dedupe.buffer.size
_WRITE_CHUNK = 1 << 20


class CleaningStopped(Exception):
    """The cleaner was asked to stop (the broker is shutting down); nothing was left behind."""


def compacts(config: LogConfig) -> bool:
    return "compact" in config.cleanup_policy.split(",")


@dataclasses.dataclass
class CleanStats:
    segments_read: int = 0
    groups_swapped: int = 0
    bytes_read: int = 0
    bytes_written: int = 0
    records_removed: int = 0
    tombstones_removed: int = 0


@dataclasses.dataclass
class CleanedGroup:
    old: list[Segment]
    new: Segment


@dataclasses.dataclass
class CleanPlan:
    """A cleaning ready to swap in: what ``prepare`` hands to ``commit``."""

    log: PartitionLog
    generation: int
    groups: list[CleanedGroup]
    clean_up_to: int  # the base offset of the first segment not cleaned this pass
    stats: CleanStats


class LogCleaner:
    """Cleans compacted logs; remembers per log how far it got (in memory).

    ``clock`` and ``sleep`` pace the I/O (monotonic seconds); the time that
    ages tombstones is the ``now_ms`` passed to ``prepare``. ``should_stop``
    is polled once per batch: when it turns true, ``prepare`` raises
    CleaningStopped.
    """

    def __init__(
        self,
        *,
        dedupe_buffer_size: int = DEFAULT_DEDUPE_BUFFER_SIZE,
        io_max_bytes_per_second: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        max_uncompressed: int = DEFAULT_MAX_UNCOMPRESSED,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> None:
        self.dedupe_buffer_size = dedupe_buffer_size
        self.should_stop = should_stop
        self.throttler = Throttler(io_max_bytes_per_second, clock=clock, sleep=sleep)
        self.max_uncompressed = max_uncompressed
        self._cleaned_up_to: "weakref.WeakKeyDictionary[PartitionLog, int]" = weakref.WeakKeyDictionary()
        self._uncleanable: "weakref.WeakSet[PartitionLog]" = weakref.WeakSet()

    # -- choosing --------------------------------------------------------------

    def cleaned_up_to(self, plog: PartitionLog) -> int:
        """The offset below which ``plog`` was cleaned by this cleaner (-1: never)."""
        return self._cleaned_up_to.get(plog, -1)

    def dirty_segments(self, plog: PartitionLog) -> list[Segment]:
        """The closed segments not cleaned since they were written (any thread)."""
        start = self.cleaned_up_to(plog)
        return [s for s in plog.segments()[:-1] if s.base_offset >= start]

    def needs_cleaning(self, plog: PartitionLog) -> bool:
        return (
            compacts(plog.config) and plog not in self._uncleanable and bool(self.dirty_segments(plog))
        )

    # -- the pass --------------------------------------------------------------

    def clean(self, plog: PartitionLog, now_ms: int) -> CleanStats | None:
        """``prepare``, ``commit`` and the unlinking in one thread; None if there was nothing to do."""
        plan = self.prepare(plog, now_ms)
        if plan is None:
            return None
        fsio.remove_files(self.commit(plan))
        return plan.stats

    def prepare(self, plog: PartitionLog, now_ms: int) -> CleanPlan | None:
        """Map and rewrite (any thread); None if the log needs no cleaning.

        Raises CorruptLogError if a batch does not decode, LogWriteError if
        the cleaned files cannot be written; either way nothing is left behind.
        """
        config = plog.config
        generation = plog.generation
        segments = plog.segments()
        closed = segments[:-1]
        start = self.cleaned_up_to(plog)
        dirty = [s for s in closed if s.base_offset >= start]
        if not compacts(config) or not dirty or plog in self._uncleanable:
            return None
        stats = CleanStats()
        self.throttler.reset()
        offset_map = OffsetMap.for_memory(self.dedupe_buffer_size)
        try:
            mapped = self._build_map(offset_map, dirty, stats)
        except FileNotFoundError:
            return None  # retention or a truncation took a segment meanwhile
        if not mapped:
            log.error(
                "%s: segment %d has more keys than the cleaner's map holds (%d): not cleaning "
                "this log until a restart; raise log_cleaner_dedupe_buffer_size",
                plog.directory, dirty[0].base_offset, offset_map.capacity,
            )
            self._uncleanable.add(plog)
            return None
        upto = closed.index(dirty[0]) + mapped
        cleanable = closed[:upto]
        plan = CleanPlan(plog, generation, [], segments[upto].base_offset, stats)
        try:
            for group in _groups(cleanable, config.segment_bytes):
                new = self._rewrite(plog.directory, group, offset_map, now_ms, config, stats)
                if new is not None:
                    plan.groups.append(CleanedGroup(group, new))
        except FileNotFoundError:
            self.discard(plan)
            return None
        except BaseException:
            self.discard(plan)
            raise
        stats.segments_read = len(cleanable)
        return plan

    def commit(self, plan: CleanPlan) -> list[Path]:
        """Swap the cleaned segments in (on the log's thread); returns the old files to unlink.

        If the log changed meanwhile, the stale part of the plan is dropped.
        Raises LogWriteError.
        """
        files: list[Path] = []
        for i, group in enumerate(plan.groups):
            try:
                doomed = plan.log.replace_segments(group.old, group.new, plan.generation)
            except LogWriteError:
                self.discard(plan, plan.groups[i + 1 :])
                raise
            if doomed is None:
                log.info("%s: the log changed while it was cleaned; trying again later", plan.log.directory)
                self.discard(plan, plan.groups[i + 1 :])
                return files
            files.extend(doomed)
            plan.stats.groups_swapped += 1
        self._cleaned_up_to[plan.log] = plan.clean_up_to
        s = plan.stats
        if s.groups_swapped:
            log.info(
                "%s: cleaned %d segment(s) into %d: %d record(s) and %d tombstone(s) removed, "
                "%d bytes read, %d written",
                plan.log.directory, s.segments_read, s.groups_swapped, s.records_removed,
                s.tombstones_removed, s.bytes_read, s.bytes_written,
            )
        return files

    def discard(self, plan: CleanPlan, groups: list[CleanedGroup] | None = None) -> None:
        """Remove the cleaned files of ``groups`` (default: all of the plan's)."""
        for group in plan.groups if groups is None else groups:
            new = group.new
            fsio.remove_files([new.log_path, *map(paths.cleaned_file, new.index_paths())])

    # -- mapping ---------------------------------------------------------------

    def _batches(self, seg: Segment, stats: CleanStats):
        """(header, bytes) of each batch of a closed segment, read through a private fd.

        Raises CorruptLogError, or OSError (e.g. the segment was deleted meanwhile).
        """
        fd = os.open(seg.log_path, os.O_RDONLY)
        try:
            for pos, h in iter_headers(fd, 0, seg.size):
                if self.should_stop():
                    raise CleaningStopped()
                raw = os.pread(fd, h.size, pos)
                if len(raw) != h.size:
                    raise CorruptLogError(f"{seg.log_path}: batch at {pos} is cut short")
                stats.bytes_read += len(raw)
                self.throttler.tick(len(raw))
                yield h, raw
        except CorruptMessageError as exc:
            raise CorruptLogError(f"{seg.log_path}: {exc}") from exc
        finally:
            os.close(fd)

    def _columns(self, raw: bytes, h: BatchHeader, seg: Segment) -> list:
        try:
            return decode_payload(raw, 0, h, self.max_uncompressed)
        except CorruptMessageError as exc:
            raise CorruptLogError(f"{seg.log_path}: batch at offset {h.base_offset}: {exc}") from exc

    def _build_map(self, offset_map: OffsetMap, dirty: list[Segment], stats: CleanStats) -> int:
        """Put the keys of ``dirty`` in the map; returns how many segments fit entirely."""
        for i, seg in enumerate(dirty):
            for h, raw in self._batches(seg, stats):
                keys, _, _, _, deltas = self._columns(raw, h, seg)
                if keys is None:
                    continue
                base = h.base_offset
                for j, key in enumerate(keys):
                    if key is not None:
                        offset = base + (deltas[j] if deltas is not None else j)
                        if not offset_map.put(key, offset):
                            return i
        return len(dirty)

    # -- rewriting -------------------------------------------------------------

    def _rewrite(
        self,
        directory: Path,
        group: list[Segment],
        offset_map: OffsetMap,
        now_ms: int,
        config: LogConfig,
        stats: CleanStats,
    ) -> Segment | None:
        """Write the cleaned form of ``group``; None (and no files) if nothing would go."""
        base = group[0].base_offset
        log_path, index_path, time_path = paths.segment_files(directory, base)
        cleaned = paths.cleaned_file(log_path)
        removed_before = stats.records_removed + stats.tombstones_removed
        written: list[tuple[int, BatchHeader]] = []
        pending = bytearray()
        position = 0
        expected = base
        try:
            fd = os.open(cleaned, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        except OSError as exc:
            raise LogWriteError(f"cannot write {cleaned}: {exc}") from exc
        try:
            for seg in group:
                for h, raw in self._batches(seg, stats):
                    out = self._clean_batch(raw, h, seg, expected, offset_map, now_ms, config, stats)
                    if out is None:
                        continue
                    header = h if out is raw else parse_header(out)
                    written.append((position, header))
                    pending += out
                    position += len(out)
                    expected = header.next_offset
                    if len(pending) >= _WRITE_CHUNK:
                        self._write(fd, pending, stats)
                        pending.clear()
            unchanged = stats.records_removed + stats.tombstones_removed == removed_before
            if not unchanged:
                self._write(fd, pending, stats)
                os.fsync(fd)
        except FileNotFoundError:
            os.close(fd)
            fsio.remove_files([cleaned])
            raise
        except OSError as exc:
            os.close(fd)
            fsio.remove_files([cleaned])
            raise LogWriteError(f"cannot write {cleaned}: {exc}") from exc
        except BaseException:
            os.close(fd)
            fsio.remove_files([cleaned])
            raise
        os.close(fd)
        if unchanged:
            fsio.remove_files([cleaned])
            return None
        try:
            new = Segment.from_written(directory, base, config.index_interval_bytes, cleaned, written)
            new.write_indexes_to(paths.cleaned_file(index_path), paths.cleaned_file(time_path))
        except OSError as exc:
            fsio.remove_files([paths.cleaned_file(p) for p in (log_path, index_path, time_path)])
            raise LogWriteError(f"cannot write the indexes of {cleaned}: {exc}") from exc
        return new

    def _write(self, fd: int, data: bytearray, stats: CleanStats) -> None:
        fsio.write_all(fd, data)
        stats.bytes_written += len(data)
        self.throttler.tick(len(data))

    def _clean_batch(
        self,
        raw: bytes,
        h: BatchHeader,
        seg: Segment,
        expected: int,
        offset_map: OffsetMap,
        now_ms: int,
        config: LogConfig,
        stats: CleanStats,
    ) -> bytes | None:
        """The batch to write for ``raw`` (``raw`` itself if unchanged), or None if nothing stays."""
        keys, values, ts_deltas, headers, deltas = self._columns(raw, h, seg)
        count = len(values)
        base = h.base_offset
        keep = []
        for i in range(count):
            key = keys[i] if keys is not None else None
            delta = deltas[i] if deltas is not None else i
            if key is None:
                stats.records_removed += 1
                continue
            newest = offset_map.get(key)
            if newest is not None and newest > base + delta:
                stats.records_removed += 1
                continue
            if values[i] is None:
                if h.log_append_time != NO_TIMESTAMP:
                    ts = h.log_append_time
                else:
                    ts = h.first_timestamp + (ts_deltas[i] if ts_deltas is not None else 0)
                if now_ms - ts > config.delete_retention_ms:
                    stats.tombstones_removed += 1
                    continue
            keep.append(i)
        shift = base - expected
        if len(keep) == count and shift == 0:
            return raw
        if not keep:
            return None

        def pick(column):
            return None if column is None else [column[i] for i in keep]

        new_deltas = [(deltas[i] if deltas is not None else i) + shift for i in keep]
        kept_ts = pick(ts_deltas)
        payload = encode_payload(
            pick(keys),
            pick(values),
            kept_ts if kept_ts is not None and any(kept_ts) else None,
            pick(headers),
            None if new_deltas == list(range(len(keep))) else new_deltas,
        )
        first_ts = h.first_timestamp
        return assemble(
            compress_payload(h.attributes & 0x07, payload),
            attributes=h.attributes,
            last_offset_delta=h.last_offset_delta + shift,
            record_count=len(keep),
            first_timestamp=first_ts,
            max_timestamp=first_ts + max(kept_ts) if kept_ts else first_ts,
            producer_id=h.producer_id,
            producer_epoch=h.producer_epoch,
            base_sequence=(h.base_sequence - shift) % SEQ_MOD if h.base_sequence >= 0 else -1,
            base_offset=expected,
            log_append_time=h.log_append_time,
        )


def _groups(segments: list[Segment], segment_bytes: int) -> list[list[Segment]]:
    """Consecutive runs of ``segments`` that fit one segment together."""
    groups: list[list[Segment]] = []
    current: list[Segment] = []
    size = 0
    for seg in segments:
        if current and (
            size + seg.size > segment_bytes
            or seg.next_offset - 1 - current[0].base_offset > MAX_RELATIVE_OFFSET
        ):
            groups.append(current)
            current, size = [], 0
        current.append(seg)
        size += seg.size
    if current:
        groups.append(current)
    return groups
