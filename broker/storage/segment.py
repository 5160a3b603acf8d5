"""``Segment``: one ``.log`` file of a partition and its two indexes.

Theory of operation
-------------------
File format of ``<base offset, 20 digits>.log``: record batches back to back
(see ``batch_reader`` and ``protocol.batch``), base offsets increasing. The
segment holds the batches whose base offset is at least its own base offset
and below the next segment's. Its ``.index`` (``OffsetIndex``) and
``.timeindex`` (``TimeIndex``) are derived from it and rebuilt whenever they
are missing or disagree with it.

In memory a segment knows its size (the end of its last whole batch: bytes
past it are never served), its next offset, its largest timestamp, and how
many bytes were appended since the last index entry. Appends go to the end of
the file with ``os.write`` on an O_APPEND fd; everything else reads with
``os.pread``, so readers never disturb a file position.

Opening a segment either *loads* it (trust the index files after cheap
checks: well-formed, last entry points at a batch with the right offset, and
the batch headers after the last entry lead exactly to the end of the file) or
*recovers* it (read every batch, check its CRC, cut the file at the first bad
one, rebuild both indexes). A load that finds anything wrong falls back to
recovery.

Only the active segment keeps its file open all the time; an older one opens
it when first read and lets go of it when rolled or loaded, so idle segments
hold no file descriptors.

Thread safety: one thread appends, reads and truncates; ``flush`` in another
thread only needs the fd (see ``PartitionLog.flush``).
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from protocol.batch import LOG_OVERHEAD, BatchHeader
from protocol.errors import CorruptMessageError

from . import fsio, paths
from .batch_reader import (
    MAX_RELATIVE_OFFSET,
    batch_timestamp,
    iter_headers,
    read_header,
    verified_batches,
)
from .offset_index import OffsetIndex
from .sparse_index import IndexMismatch
from .time_index import TimeIndex

log = logging.getLogger(__name__)
_REOPEN_LOCK = threading.Lock()

NO_TIMESTAMP = -1


class Segment:
    """A ``.log`` file with its offset and time indexes."""

    def __init__(
        self, directory: Path, base_offset: int, index_interval_bytes: int, log_path: Path | None = None
    ) -> None:
        self.directory = directory
        self.base_offset = base_offset
        self.index_interval_bytes = index_interval_bytes
        final_log, index_path, time_path = paths.segment_files(directory, base_offset)
        # A cleaned segment is written under another name and renamed into place later.
        self.log_path = log_path or final_log
        self._file: fsio.SegmentFile | None = fsio.SegmentFile(self.log_path)
        self.index = OffsetIndex(index_path, base_offset)
        self.timeindex = TimeIndex(time_path, base_offset)
        self.size = 0
        self.next_offset = base_offset
        self.max_timestamp = NO_TIMESTAMP
        self.offset_of_max_timestamp = base_offset
        # When the segment started, for segment.ms: the clock at its first append, or
        # for a reopened segment the timestamp of its first batch (as Kafka does).
        self.rolling_timestamp_ms: int | None = None
        self.truncated_bytes = 0  # what recovery cut off
        self._bytes_since_index = 0
        # base offset -> position of the batches after the last index entry, so
        # a consumer at the log end (it asks for the offset where the last read
        # ended) is found without reading headers back from the file
        self._recent: dict[int, int] = {}

    def __repr__(self) -> str:
        return f"Segment(base={self.base_offset}, next={self.next_offset}, size={self.size})"

    # -- opening ---------------------------------------------------------------

    @classmethod
    def create(cls, directory: Path, base_offset: int, index_interval_bytes: int) -> "Segment":
        """A new empty segment; replaces any leftover files of the same name. Raises OSError."""
        seg = cls(directory, base_offset, index_interval_bytes)
        os.ftruncate(seg.fd, 0)
        seg.index.delete_file()
        seg.timeindex.delete_file()
        return seg

    @classmethod
    def open(
        cls, directory: Path, base_offset: int, index_interval_bytes: int, *, recover: bool
    ) -> "Segment":
        """Open an existing segment, loading its indexes or (``recover``) checking every batch.

        A load that finds the indexes missing or inconsistent recovers instead.
        Raises OSError.
        """
        seg = cls(directory, base_offset, index_interval_bytes)
        seg.size = os.fstat(seg.fd).st_size
        if not recover:
            try:
                seg._load()
                return seg
            except (FileNotFoundError, IndexMismatch, CorruptMessageError) as exc:
                log.warning("%s: rebuilding indexes: %s", seg.log_path, exc)
        seg.recover()
        return seg

    def _reset(self) -> None:
        self.next_offset = self.base_offset
        self.max_timestamp = NO_TIMESTAMP
        self.offset_of_max_timestamp = self.base_offset
        self._bytes_since_index = 0
        self._recent = {}

    def _load(self) -> None:
        self.index = OffsetIndex.load(self.index.path, self.base_offset)
        self.timeindex = TimeIndex.load(self.timeindex.path, self.base_offset)
        last = self.index.last()
        if last is not None and last[1] >= self.size:
            raise IndexMismatch(f"last index entry points past the end of {self.log_path.name}")
        entries = len(self.index), len(self.timeindex)
        self._scan_tail()
        last_time = self.timeindex.last()
        if last_time is not None and not self.base_offset <= last_time[1] < self.next_offset:
            raise IndexMismatch(f"time index names an offset outside {self.log_path.name}")
        if entries != (len(self.index), len(self.timeindex)):
            self.index.write_pending()
            self.timeindex.write_pending()
        self._init_rolling_timestamp()

    def _scan_tail(self) -> None:
        """Recompute the in-memory state from the indexes and the headers after their last entry.

        Raises CorruptMessageError or IndexMismatch if the headers do not chain
        up to exactly ``size``.
        """
        self._reset()
        last_time = self.timeindex.last()
        if last_time is not None:
            self.max_timestamp, self.offset_of_max_timestamp = last_time
        last = self.index.last()
        start_offset, start = last if last is not None else (self.base_offset, 0)
        expected = start_offset
        for pos, h in iter_headers(self.fd, start, self.size):
            indexed = last is not None and pos == start
            if indexed and h.base_offset != start_offset:
                raise IndexMismatch(f"index entry for offset {start_offset} points at another batch")
            if h.base_offset != expected or h.base_offset - self.base_offset > MAX_RELATIVE_OFFSET:
                raise IndexMismatch(f"batch offsets do not chain at position {pos}")
            self._account(pos, h.base_offset, h.size, batch_timestamp(h), may_index=not indexed)
            expected = h.next_offset
        self.next_offset = expected

    def recover(self) -> int:
        """Check every batch, cut the file at the first invalid one, rebuild the indexes.

        Returns the number of bytes cut off (also kept in ``truncated_bytes``).
        Raises OSError.
        """
        self.index = OffsetIndex(self.index.path, self.base_offset)
        self.timeindex = TimeIndex(self.timeindex.path, self.base_offset)
        self._reset()
        end = 0
        for pos, h in verified_batches(
            self.fd, 0, self.size, self.base_offset, self.base_offset + MAX_RELATIVE_OFFSET
        ):
            self._account(pos, h.base_offset, h.size, batch_timestamp(h))
            end = pos + h.size
            self.next_offset = h.next_offset
        self.truncated_bytes = self.size - end
        if self.truncated_bytes:
            log.warning(
                "%s: cut %d bytes of invalid or torn batches at position %d",
                self.log_path, self.truncated_bytes, end,
            )
            os.ftruncate(self.fd, end)
            os.fsync(self.fd)
            self.size = end
        if self.size:
            self.timeindex.maybe_append(self.max_timestamp, self.offset_of_max_timestamp)
        self.index.rewrite()
        self.timeindex.rewrite()
        self._init_rolling_timestamp()
        return self.truncated_bytes

    @classmethod
    def from_written(
        cls,
        directory: Path,
        base_offset: int,
        index_interval_bytes: int,
        log_path: Path,
        batches: list[tuple[int, BatchHeader]],
    ) -> "Segment":
        """A segment over ``log_path``, already holding ``batches`` (position, header) back to back.

        For the cleaner: indexes are built in memory from the headers given,
        not read from the file; see ``write_indexes_to``. Raises OSError.
        """
        seg = cls(directory, base_offset, index_interval_bytes, log_path=log_path)
        end = 0
        for pos, h in batches:
            seg._account(pos, h.base_offset, h.size, batch_timestamp(h))
            seg.next_offset = h.next_offset
            end = pos + h.size
        seg.size = end
        if end:
            seg.timeindex.maybe_append(seg.max_timestamp, seg.offset_of_max_timestamp)
            ts = batch_timestamp(batches[0][1])
            seg.rolling_timestamp_ms = ts if ts >= 0 else None
        return seg

    def write_indexes_to(self, index_path: Path, timeindex_path: Path) -> None:
        """Write both indexes, complete, to the given files and fsync them. Raises OSError."""
        for index, path in ((self.index, index_path), (self.timeindex, timeindex_path)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                fsio.write_all(fd, index._encode(0, len(index)))
                os.fsync(fd)
            finally:
                os.close(fd)

    def renamed(self, log_path: Path) -> None:
        """The .log now has the name ``log_path`` and the indexes are in their files."""
        self.log_path = log_path
        self.index._persisted = len(self.index)
        self.timeindex._persisted = len(self.timeindex)

    def _init_rolling_timestamp(self) -> None:
        self.rolling_timestamp_ms = None
        if self.size:
            ts = batch_timestamp(read_header(self.fd, 0, self.size))
            if ts >= 0:
                self.rolling_timestamp_ms = ts

    # -- appending -------------------------------------------------------------

    @property
    def file(self) -> fsio.SegmentFile:
        """The open ``.log`` (reopened on demand after ``release_file``)."""
        f = self._file
        if f is None:
            # flush() may get here from its thread too; a second open must not replace
            # (and so close) a file object the other thread is using.
            with _REOPEN_LOCK:
                f = self._file
                if f is None:
                    f = self._file = fsio.SegmentFile(self.log_path)
        return f

    @property
    def fd(self) -> int:
        return self.file.fileno()

    def release_file(self) -> None:
        """Let go of the open file, so a segment nobody reads holds no fd.

        The file closes once no FileRange references it; the next use reopens it.
        Only for segments that take no more appends.
        """
        self._file = None

    def is_empty(self) -> bool:
        return self.size == 0

    def _account(self, position: int, base_offset: int, size: int, timestamp: int, *, may_index=True) -> None:
        """Index bookkeeping for one batch just appended (or found by a scan)."""
        if timestamp > self.max_timestamp:
            self.max_timestamp = timestamp
            self.offset_of_max_timestamp = base_offset
        if may_index and self._bytes_since_index >= self.index_interval_bytes:
            self.index.append(base_offset, position)
            self.timeindex.maybe_append(self.max_timestamp, self.offset_of_max_timestamp)
            self._bytes_since_index = 0
            self._recent.clear()
        self._bytes_since_index += size
        self._recent[base_offset] = position

    def append(
        self,
        data,
        batches: list[tuple[int, BatchHeader]],
        first_offset: int,
        next_offset: int,
        append_time: int,
        now_ms: int,
    ) -> None:
        """Write ``data`` (whole batches, offsets patched) at the end with one os.write loop.

        ``batches`` are the (position in data, header) of its batches, the first
        given ``first_offset``; ``append_time`` is their stamp or -1. Nothing in
        memory changes unless every byte was written; on OSError the file may
        hold a partial write that the caller must cut with
        ``truncate_file(previous size)``.
        """
        start = self.size
        file = self._file or self.file  # held: the fd stays valid through the write
        fd = file.fileno()
        written = os.write(fd, data)
        if written != len(data):
            fsio.write_all(fd, data[written:])
        interval = self.index_interval_bytes
        since = self._bytes_since_index
        recent = self._recent
        base = first_offset
        for pos, h in batches:
            # _account, inlined: this runs once per appended batch
            ts = h.max_timestamp if append_time == NO_TIMESTAMP else append_time
            if ts > self.max_timestamp:
                self.max_timestamp = ts
                self.offset_of_max_timestamp = base
            if since >= interval:
                self.index.append(base, start + pos)
                self.timeindex.maybe_append(self.max_timestamp, self.offset_of_max_timestamp)
                since = 0
                recent.clear()
            since += h.batch_length + LOG_OVERHEAD
            recent[base] = start + pos
            base += h.last_offset_delta + 1
        self._bytes_since_index = since
        self.size = start + len(data)
        self.next_offset = next_offset
        if self.rolling_timestamp_ms is None:
            self.rolling_timestamp_ms = now_ms

    def truncate_file(self, size: int) -> None:
        """Cut the file back to ``size`` bytes (undoing a failed append). Raises OSError."""
        os.ftruncate(self.fd, size)

    # -- reading ---------------------------------------------------------------

    def find(self, offset: int) -> tuple[int, BatchHeader] | None:
        """(position, header) of the batch holding ``offset``, or the first batch after it.

        None if the segment has no batch ending after ``offset``. Reads a bounded
        number of headers (about one index interval). Raises CorruptMessageError.
        """
        if offset >= self.next_offset:
            return None
        _, start = self.index.lookup(offset)
        for pos, h in iter_headers(self.fd, start, self.size):
            if h.next_offset > offset:
                return pos, h
        return None

    def position_of(self, offset: int) -> int | None:
        """Position of the batch holding ``offset`` or the first after it; None past the end.

        ``find`` without reading a header when ``offset`` starts a recent batch.
        """
        pos = self._recent.get(offset)
        if pos is not None:
            return pos
        found = self.find(offset)
        return None if found is None else found[0]

    def read_end(self, start: int, limit: int, min_one: bool) -> int:
        """End position of the whole batches from ``start`` that fit in ``limit`` bytes.

        With ``min_one`` the first batch counts even if it alone exceeds
        ``limit``. ``start`` must be a batch boundary. Raises CorruptMessageError.
        """
        target = start + max(limit, 0)
        if target >= self.size:
            return self.size
        _, from_pos = self.index.lookup_position(target)
        end = max(from_pos, start)
        for pos, h in iter_headers(self.fd, end, self.size):
            if pos + h.size > target:
                break
            end = pos + h.size
        if end == start and min_one:
            end = start + read_header(self.fd, start, self.size).size
        return end

    def find_timestamp(self, timestamp: int) -> tuple[int, int] | None:
        """(base offset, timestamp) of the first batch with timestamp >= ``timestamp``, or None."""
        if self.max_timestamp < timestamp or not self.size:
            return None
        _, start = self.index.lookup(self.timeindex.lookup(timestamp))
        for _, h in iter_headers(self.fd, start, self.size):
            ts = batch_timestamp(h)
            if ts >= timestamp:
                return h.base_offset, ts
        return None

    # -- changing --------------------------------------------------------------

    def truncate_to(self, offset: int) -> None:
        """Drop the batch holding ``offset`` and everything after it. Raises OSError."""
        found = self.find(offset)
        if found is None:
            return
        pos, h = found
        os.ftruncate(self.fd, pos)
        self.size = pos
        self.index.truncate_to(h.base_offset)
        self.timeindex.truncate_to(h.base_offset)
        self._scan_tail()
        if not self.size:
            self.rolling_timestamp_ms = None

    def finalize(self) -> None:
        """Bring the index files up to date (at roll and close). Raises OSError."""
        if self.size:
            self.timeindex.maybe_append(self.max_timestamp, self.offset_of_max_timestamp)
        self.index.write_pending()
        self.timeindex.write_pending()

    def index_paths(self) -> tuple[Path, Path]:
        return self.index.path, self.timeindex.path

    def mark_deleted(self) -> list[Path]:
        """Rename the segment's files to ``.deleted`` (removed at open if still there).

        The .log goes first: once it is renamed the segment is gone. Returns the
        new names, to be unlinked later. Raises OSError if the .log cannot be
        renamed (then nothing was).
        """
        marked = [paths.deleted_file(self.log_path)]
        os.replace(self.log_path, marked[0])
        for path in self.index_paths():
            try:
                os.replace(path, paths.deleted_file(path))
                marked.append(paths.deleted_file(path))
            except FileNotFoundError:
                pass
            except OSError as exc:  # an index without its log is removed at open
                log.warning("%s: cannot mark for deletion: %s", path, exc)
        self.release_file()
        return marked

    def modified_ms(self) -> int:
        """The .log file's modification time in ms (0 if it cannot be read)."""
        try:
            return int(os.stat(self.log_path).st_mtime * 1000)
        except OSError:
            return 0

    def delete(self) -> None:
        """Remove the segment's files. The open file is dropped, not closed (see fsio)."""
        for path in (self.log_path, self.index.path, self.timeindex.path):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
