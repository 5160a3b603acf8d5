"""``PartitionLog``: the append-only log of one partition, as a list of segments.

Theory of operation
-------------------
On disk a partition is a directory of segments (``Segment``), each named by
its base offset; the last one is *active* and takes the appends. Offsets are
contiguous from ``log_start_offset`` (the first segment's base) to
``log_end_offset`` (the next offset to assign).

Append: the producer's buffer (whole, already CRC-checked batches) gets its
base offsets, and for LogAppendTime topics its append time, patched in place,
in fields outside the CRC, then goes to the active segment in one
``os.write`` loop: per-batch work only, no copy. If the active segment would
grow past ``segment.bytes``, is older than ``segment.ms``, or could not index
the new offsets, a new segment is started first. One append never spans two
segments, so an append bigger than ``segment.bytes`` makes a segment of its
own (as in Kafka). A failed write is cut off the file again, and nothing in
memory changes, so the log stays valid and appendable.

Idempotent producers: before writing, the producer batches of an append are
checked against the partition's ``ProducerState``; a retried batch is not
written again but answered with its original offsets (see
``producer_state``). The state is snapshotted beside the log at each roll
and at close, and rebuilt at open from the newest snapshot plus the batch
headers after it.

Retention (``mark_expired_segments``) and the cleaner's swap
(``replace_segments``) change the segment list from the front or the middle;
both run on the appending thread and only rename files there, leaving the
slow unlinking to any thread (``fsio.remove_files``).

Read: an index lookup plus a scan of a few batch headers find the batch
holding the offset and how many whole batches fit the byte budget; the answer
is a list of ``FileRange`` for ``os.sendfile``, at least one batch long.

Threads: ``append``, ``read``, ``roll``, ``truncate_to``, ``close``,
``delete``, ``mark_expired_segments`` and ``replace_segments`` run on one
thread (the broker's event loop). The cleaner reads closed segments from
another (``segments()`` and ``generation`` tell it what it read), and
``flush`` may run on another at the same time: under a short lock it takes a ``dup`` of the active
segment's fd and the list of segments rolled since the last flush (synced by
name), and it fsyncs with no lock held, so an append never waits for a disk
flush.
"""

from __future__ import annotations

import bisect
import errno
import logging
import os
import threading
import time
from pathlib import Path
from typing import Callable

from protocol.batch import (
    LOG_OVERHEAD,
    NO_TIMESTAMP,
    BatchHeader,
    patch_base_offset,
    patch_log_append_time,
    split_batches,
)
from protocol.errors import (
    CorruptMessageError,
    MessageTooLargeError,
    OffsetOutOfRangeError,
    RecordListTooLargeError,
)

from . import fsio, paths
from .batch_reader import MAX_RELATIVE_OFFSET, batch_timestamp, iter_headers
from .config import LogConfig
from .errors import (
    CorruptLogError,
    DiskFullError,
    LogFlushError,
    LogOfflineError,
    LogReadError,
    LogWriteError,
)
from .log_housekeeping import LogHousekeeping
from .log_loader import load_segments
from .producer_state import ProducerState, check_sequence_fields, producer_batch
from .results import AppendResult, FileRange, ReadResult
from .segment import Segment

log = logging.getLogger(__name__)

_DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


class PartitionLog(LogHousekeeping):
    """The log of one partition in ``directory``, opened (or created) on construction.

    ``recover=True`` (after an unclean shutdown) checks the newest segment
    batch by batch and cuts off a torn tail. Blocks on disk I/O; raises OSError
    if the directory cannot be read.
    """

    def __init__(
        self,
        directory: Path,
        config: LogConfig,
        *,
        clock: Callable[[], float] = time.time,
        recover: bool = True,
        topic: str | None = None,
        partition: int | None = None,
    ) -> None:
        self.directory = Path(directory)
        parsed = paths.parse_partition_dir(self.directory)
        self.topic = topic if topic is not None else (parsed[0] if parsed else self.directory.name)
        self.partition = partition if partition is not None else (parsed[1] if parsed else 0)
        self._config = config
        self._clock = clock
        self._lock = threading.Lock()  # segment list and fd bookkeeping shared with flush()
        self._segments: list[Segment] = load_segments(
            self.directory, config.index_interval_bytes, recover=recover
        )
        self._bases = [s.base_offset for s in self._segments]
        self._unflushed: list[Segment] = []  # rolled since the last flush
        self._dir_dirty = True  # the directory may be new: sync it on the first flush
        self._offline = False
        self._closed = False
        self._final_offsets = (0, 0, 0)  # start, end, size once closed
        self._appended_messages = 0  # written only by the appending thread
        self._flushed_messages = 0  # written only by flush()
        self.last_flush_ms = int(clock() * 1000)
        self.first_unflushed_ms: int | None = None  # clock at the first append since a flush
        self.generation = 0  # bumped by truncate_to: a cleaning that began before is stale
        active = self._segments[-1]
        if active.size and active.rolling_timestamp_ms is None:
            active.rolling_timestamp_ms = self.last_flush_ms
        self.producers = ProducerState(self.directory)
        self._load_producer_state()

    def __repr__(self) -> str:
        return f"PartitionLog({self.topic!r}, {self.partition}, {self.log_start_offset}..{self.log_end_offset})"

    # -- state -----------------------------------------------------------------

    @property
    def config(self) -> LogConfig:
        return self._config

    def reconfigure(self, config: LogConfig) -> None:
        """Apply new topic settings from the next append on."""
        self._config = config
        for seg in self._segments:
            seg.index_interval_bytes = config.index_interval_bytes

    @property
    def log_start_offset(self) -> int:
        if not self._segments:
            return self._final_offsets[0]
        return self._segments[0].base_offset

    @property
    def log_end_offset(self) -> int:
        if not self._segments:
            return self._final_offsets[1]
        return self._segments[-1].next_offset

    @property
    def size_bytes(self) -> int:
        if not self._segments:
            return self._final_offsets[2]
        return sum(s.size for s in self._segments)

    @property
    def unflushed_messages(self) -> int:
        """Records appended since the last completed flush (for flush.messages)."""
        return self._appended_messages - self._flushed_messages

    @property
    def oldest_unflushed_ms(self) -> int | None:
        """Clock (ms) of the oldest append not known to be flushed, or None (for flush.ms).

        Errs on the old side when a flush races an append.
        """
        if self._appended_messages == self._flushed_messages:
            return None
        first = self.first_unflushed_ms
        return first if first is not None else self.last_flush_ms

    def segments(self) -> list[Segment]:
        return list(self._segments)

    def _check_usable(self, appending: bool = False) -> None:
        if self._closed:
            raise LogOfflineError(f"log {self.topic}-{self.partition} is closed")
        if appending and self._offline:
            raise LogOfflineError()

    # -- append ----------------------------------------------------------------

    def append(self, data, batches: list[tuple[int, BatchHeader]] | None = None) -> AppendResult:
        """Assign offsets to the batches in ``data`` and write them; returns the offsets given.

        ``data`` is a writable buffer of whole batches back to back (a
        read-only one is copied first); ``batches`` its already verified
        ``split_batches`` result, if the caller has it. Raises
        CorruptMessageError (bad batch), MessageTooLargeError (a batch above
        max.message.bytes; nothing written), DiskFullError or LogWriteError (the
        write failed and was undone). Blocks on the write (not on fsync).
        """
        if self._closed or self._offline:
            self._check_usable(appending=True)
        view = memoryview(data)
        if type(data) is not bytearray and (view.readonly or view.format != "B" or view.ndim != 1):
            view = memoryview(bytearray(view.cast("B") if view.ndim != 1 else view))
        if batches is None:
            batches = split_batches(view)
        config = self._config
        max_size = config.max_message_bytes
        now_ms = int(self._clock() * 1000)
        stamp = now_ms if config.message_timestamp_type == "LogAppendTime" else NO_TIMESTAMP
        # Offsets do not depend on a roll (a new segment starts at the log end offset),
        # so one pass checks and patches the batches before anything is written.
        seg = self._segments[-1]
        first = offset = seg.next_offset
        expected_pos = 0
        records = 0
        producer_batches = None
        for pos, h in batches:
            size = h.batch_length + LOG_OVERHEAD
            if size > max_size:
                raise MessageTooLargeError(
                    f"record batch of {size} bytes exceeds max.message.bytes={max_size}"
                )
            if pos != expected_pos:
                raise CorruptMessageError("batches do not cover the data back to back")
            if h.last_offset_delta != h.record_count - 1:
                # Only compaction leaves gaps inside a batch; producers never send them.
                raise CorruptMessageError("batch offsets are not consecutive (last_offset_delta)")
            if h.producer_id >= 0:
                check_sequence_fields(h)
                if producer_batches is None:
                    producer_batches = []
                ts = stamp if stamp != NO_TIMESTAMP else h.max_timestamp
                producer_batches.append(producer_batch(h, offset, ts))
            patch_base_offset(view, pos, offset)
            patch_log_append_time(view, pos, stamp)
            offset += h.last_offset_delta + 1
            records += h.record_count
            expected_pos = pos + size
        if expected_pos != len(view) or not batches:
            raise CorruptMessageError("batches do not cover the data back to back")
        if producer_batches is not None:
            duplicate = self.producers.check(producer_batches)
            if duplicate is not None:
                head, tail = duplicate
                append_time = head.timestamp if stamp != NO_TIMESTAMP else NO_TIMESTAMP
                return AppendResult(head.base_offset, tail.last_offset, append_time, True)

        started = seg.rolling_timestamp_ms
        if seg.size and (
            seg.size + expected_pos > config.segment_bytes
            or (started is not None and now_ms - started > config.segment_ms)
            or offset - 1 - seg.base_offset > MAX_RELATIVE_OFFSET
        ) or offset - first - 1 > MAX_RELATIVE_OFFSET:
            seg = self._roll_for(offset - first)
        previous_size = seg.size
        try:
            seg.append(view, batches, first, offset, stamp, now_ms)
        except OSError as exc:
            self._undo_write(seg, previous_size, exc)
        if producer_batches is not None:
            self.producers.update(producer_batches)
        if self.first_unflushed_ms is None:
            self.first_unflushed_ms = now_ms
        self._appended_messages += records
        return AppendResult(first, offset - 1, stamp)

    def _undo_write(self, seg: Segment, size: int, exc: OSError) -> None:
        try:
            seg.truncate_file(size)
        except OSError as undo_exc:
            self._offline = True
            raise LogOfflineError(
                f"write to {seg.log_path} failed ({exc}) and could not be undone ({undo_exc})"
            ) from exc
        cls = DiskFullError if exc.errno in _DISK_FULL else LogWriteError
        raise cls(f"write to {seg.log_path} failed: {exc}") from exc

    def _roll_for(self, offsets: int) -> Segment:
        """Roll for an append of ``offsets`` offsets, which must fit one segment's index."""
        if offsets - 1 > MAX_RELATIVE_OFFSET:
            raise RecordListTooLargeError("the batches span more offsets than a segment can index")
        return self._roll() if self._segments[-1].size else self._segments[-1]

    def roll(self) -> None:
        """Start a new active segment at the log end offset (nothing if the active one is empty).

        Raises LogWriteError or DiskFullError.
        """
        self._check_usable(appending=True)
        if self._segments[-1].size:
            self._roll()

    def _roll(self) -> Segment:
        old = self._segments[-1]
        try:
            old.finalize()
            new = Segment.create(self.directory, old.next_offset, self._config.index_interval_bytes)
        except OSError as exc:
            cls = DiskFullError if exc.errno in _DISK_FULL else LogWriteError
            raise cls(f"cannot roll {self.directory}: {exc}") from exc
        with self._lock:
            self._segments.append(new)
            self._bases.append(new.base_offset)
            self._unflushed.append(old)
            self._dir_dirty = True
            old.release_file()
        self._snapshot_producers()
        return new

    def _snapshot_producers(self) -> None:
        end = self.log_end_offset
        if self._snapshot_offset == end:
            return  # the newest snapshot already describes this state
        try:
            self.producers.write_snapshot(end)
            self._snapshot_offset = end
        except OSError as exc:  # only costs a longer replay at the next open
            log.warning("%s: cannot write the producer state snapshot: %s", self.directory, exc)

    # -- read ------------------------------------------------------------------

    def read(self, offset: int, max_bytes: int) -> ReadResult:
        """Whole batches from the one holding ``offset``, within ``max_bytes`` but at least one.

        Empty at the log end. Raises OffsetOutOfRangeError outside
        [log_start_offset, log_end_offset], CorruptLogError if the file does not
        parse. Reads a few batch headers; never the payloads.
        """
        self._check_usable()
        end_offset = self.log_end_offset
        start_offset = self.log_start_offset
        if offset < start_offset or offset > end_offset:
            raise OffsetOutOfRangeError(
                f"offset {offset} is outside {self.topic}-{self.partition}'s log "
                f"[{start_offset}, {end_offset}]"
            )
        ranges: list[FileRange] = []
        if offset == end_offset:
            return ReadResult(ranges, end_offset, start_offset)
        segments = self._segments[bisect.bisect_right(self._bases, offset) - 1 :]
        remaining = max_bytes
        try:
            start = segments[0].position_of(offset)
            if start is None:  # offset in a gap after the segment's last batch
                segments = segments[1:]
                start = 0
            for seg in segments:
                if start < seg.size:
                    end = seg.read_end(start, remaining, min_one=not ranges)
                    if end > start:
                        ranges.append(FileRange(seg.file, start, end - start))
                        remaining -= end - start
                    if end < seg.size:
                        break
                start = 0
        except CorruptMessageError as exc:
            raise CorruptLogError(f"{self.topic}-{self.partition}: {exc}") from exc
        except OSError as exc:
            raise LogReadError(f"{self.topic}-{self.partition}: {exc}") from exc
        return ReadResult(ranges, end_offset, start_offset)

    def offset_for_timestamp(self, timestamp_ms: int) -> tuple[int, int] | None:
        """(base offset, timestamp) of the first batch with timestamp >= ``timestamp_ms``, or None.

        A batch's timestamp is its append time if stamped, else its max timestamp.
        """
        self._check_usable()
        try:
            for seg in self._segments:
                if seg.max_timestamp >= timestamp_ms:
                    found = seg.find_timestamp(timestamp_ms)
                    if found is not None:
                        return found
        except CorruptMessageError as exc:
            raise CorruptLogError(f"{self.topic}-{self.partition}: {exc}") from exc
        except OSError as exc:
            raise LogReadError(f"{self.topic}-{self.partition}: {exc}") from exc
        return None

    # -- producer state --------------------------------------------------------

    def _load_producer_state(self) -> None:
        """Load the newest snapshot at or below the log end and replay the headers after it."""
        producers = self.producers
        start = self._snapshot_offset = producers.load_snapshot(self.log_end_offset)
        if start is None:
            start = self.log_start_offset
        update = producers.update
        active = self._segments[-1]
        for seg in self._segments:
            if seg.next_offset <= start:
                continue
            found = seg.find(start) if seg.base_offset <= start else None
            position = found[0] if found is not None else 0
            try:
                for _, h in iter_headers(seg.fd, position, seg.size):
                    if h.producer_id >= 0 and h.base_offset >= start:
                        update((producer_batch(h, h.base_offset, batch_timestamp(h)),))
            finally:
                if seg is not active:
                    seg.release_file()
        producers.evict_below(self.log_start_offset)

    # -- truncate, flush, close ------------------------------------------------

    def truncate_to(self, offset: int) -> None:
        """Drop every batch at and after the one holding ``offset``.

        Below the log start, the log is emptied and restarts at ``offset``.
        Durable when it returns. Raises LogWriteError.
        """
        self._check_usable()
        if offset >= self.log_end_offset:
            return
        self.generation += 1
        i = bisect.bisect_right(self._bases, offset) - 1
        try:
            if i < 0:
                fresh = Segment.create(self.directory, offset, self._config.index_interval_bytes)
                kept, dropped = [fresh], self._segments
            else:
                kept, dropped = self._segments[: i + 1], self._segments[i + 1 :]
            with self._lock:
                self._segments = kept
                self._bases = [s.base_offset for s in kept]
                self._unflushed = [s for s in self._unflushed if s not in dropped]
            for seg in reversed(dropped):
                seg.delete()
            active = kept[-1]
            active.truncate_to(offset)
            os.fsync(active.fd)
            fsio.fsync_dir(self.directory)
            self._load_producer_state()
        except (OSError, CorruptMessageError) as exc:
            raise LogWriteError(f"cannot truncate {self.directory}: {exc}") from exc

    def flush(self) -> None:
        """fsync everything appended so far: the active .log, segments rolled since, the directory.

        Safe to call from another thread while appends continue (no lock is
        held while syncing). Raises LogFlushError.
        """
        started_ms = int(self._clock() * 1000)
        with self._lock:
            if not self._segments:
                return
            rolled = self._unflushed
            self._unflushed = []
            dir_dirty = self._dir_dirty
            self._dir_dirty = False
            appended = self._appended_messages
            active = self._segments[-1]
            # Hold the file object while dup'ing: without a reference it could be closed
            # (and its fd number reused) between fileno() and dup().
            file = active.file
            fds = [os.dup(file.fileno())] if active not in rolled else []
        try:
            for fd in fds:
                os.fsync(fd)
            for seg in rolled:
                # Rolled segments are synced by name: they may have let go of their fd.
                for path in (seg.log_path, *seg.index_paths()):
                    try:
                        fsio.fsync_path(path)
                    except FileNotFoundError:
                        pass
            if dir_dirty:
                try:
                    fsio.fsync_dir(self.directory)
                except FileNotFoundError:
                    pass  # the log was deleted meanwhile
        except OSError as exc:
            with self._lock:
                self._unflushed = rolled + self._unflushed
                self._dir_dirty = self._dir_dirty or dir_dirty
            raise LogFlushError(f"cannot flush {self.directory}: {exc}") from exc
        finally:
            for fd in fds:
                os.close(fd)
        self._flushed_messages = appended
        self.last_flush_ms = int(self._clock() * 1000)
        # Appends since the flush began are younger than its start: counting them from
        # then flushes them early rather than late.
        self.first_unflushed_ms = None if self._appended_messages == appended else started_ms

    def close(self) -> None:
        """Write the index files, flush, and let go of the files.

        A segment file still referenced by a FileRange stays open until that is
        dropped. Raises LogFlushError or LogWriteError.
        """
        if self._closed:
            return
        active = self._segments[-1]
        try:
            active.finalize()
        except OSError as exc:
            raise LogWriteError(f"cannot write the indexes of {active.log_path}: {exc}") from exc
        with self._lock:
            self._unflushed.append(active)
            self._dir_dirty = True
        self.flush()
        self._snapshot_producers()
        self._forget_segments()

    def _forget_segments(self) -> None:
        with self._lock:
            self._closed = True
            self._final_offsets = (self.log_start_offset, self.log_end_offset, self.size_bytes)
            self._segments = []
            self._bases = []
            self._unflushed = []

    def delete(self) -> None:
        """Remove the partition's directory (renamed first, so a crash cannot half-keep it)."""
        if not self._closed:
            self._forget_segments()
        if self.directory.exists():
            fsio.rename_and_remove(
                self.directory, paths.deletion_dir(self.directory.parent, self.directory)
            )

