"""Retention and the cleaner's swap: the part of ``PartitionLog`` that reshapes its segment list.

Theory of operation
-------------------
Both operations take segments out of a log while it keeps serving, and both
run on the log's appending thread, doing only renames there:

* retention takes a prefix of closed segments (chosen by ``retention``),
  renames each one's files ``.deleted`` (the .log first), and drops them from
  the list; the log start offset becomes the next segment's base offset.
* the cleaner's swap replaces a run of closed segments with one cleaned
  segment, in Kafka's order: the cleaned files are renamed from ``.cleaned``
  to ``.swap`` (the commit point; ``log_loader`` completes a swap found at
  open), the old segments' files to ``.deleted``, and the swap files to their
  final names.

Unlinking the ``.deleted`` files is left to the caller (``fsio.remove_files``,
on any thread): unlinking a large file can take a while. A reader that was
handed a ``FileRange`` into a removed segment keeps reading it, because the
range holds the open file.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from . import fsio, paths
from .errors import LogWriteError
from .retention import SegmentInfo, expired_prefix
from .segment import Segment

log = logging.getLogger(__name__)


class LogHousekeeping:
    """Mixed into ``PartitionLog``; uses its segment list, lock and state."""

    # -- retention -------------------------------------------------------------

    def mark_expired_segments(self, now_ms: int) -> list[Path]:
        """Take the segments retention deletes out of the log; returns their files to unlink.

        Whole closed segments from the front (see ``retention``); each is
        renamed ``.deleted`` and dropped from the segment list, so the log start
        offset moves to the next segment's base offset. Reads already handed out
        keep working (their file objects stay open). Unlink the returned files
        with ``fsio.remove_files`` (any thread). Raises LogWriteError if a
        rename fails; the segments renamed before it are gone all the same.
        """
        self._check_usable()
        infos = [
            SegmentInfo(
                s.base_offset, s.size, s.max_timestamp, s.modified_ms() if s.max_timestamp < 0 else 0
            )
            for s in self._segments
        ]
        count = expired_prefix(infos, now_ms, self._config)
        if not count:
            return []
        files: list[Path] = []
        done = 0
        error: OSError | None = None
        for seg in self._segments[:count]:
            try:
                files.extend(seg.mark_deleted())
            except OSError as exc:
                error = exc
                break
            done += 1
        if done:
            self._drop_segments(self._segments[:done])
            log.info(
                "%s-%d: retention deleted %d segment(s); log start offset now %d",
                self.topic, self.partition, done, self.log_start_offset,
            )
        if error is not None:
            raise LogWriteError(f"cannot delete segments of {self.directory}: {error}") from error
        return files

    def apply_retention(self, now_ms: int) -> int:
        """``mark_expired_segments`` and the unlinking, in one go; returns the segments deleted.

        Blocks on disk I/O. Raises LogWriteError or OSError.
        """
        files = self.mark_expired_segments(now_ms)
        fsio.remove_files(files)
        return sum(1 for f in files if f.name.endswith(paths.LOG_SUFFIX + paths.DELETED_SUFFIX))

    def _drop_segments(self, doomed: list[Segment]) -> None:
        with self._lock:
            self._segments = [s for s in self._segments if s not in doomed]
            self._bases = [s.base_offset for s in self._segments]
            self._unflushed = [s for s in self._unflushed if s not in doomed]
            self._dir_dirty = True
        self.producers.evict_below(self.log_start_offset)

    # -- compaction ------------------------------------------------------------

    def replace_segments(self, old: list[Segment], new: Segment, generation: int) -> list[Path] | None:
        """Swap the cleaned segment ``new`` in for the consecutive closed segments ``old``.

        ``new`` is a cleaned segment whose files (.log, .index, .timeindex,
        each under its ``.cleaned`` name) are complete and fsynced, and
        ``generation`` the log's ``generation`` when the cleaning began. The
        swap: rename the cleaned files ``.swap`` (the commit point; a crash from
        here on completes the swap at open), rename the old segments'
        files ``.deleted``, rename the swap files to their final names.

        Returns the old files to unlink (``fsio.remove_files``, any thread),
        or None if the log changed meanwhile (truncated, closed, or a segment
        of ``old`` retained away or no longer closed): then the cleaned files
        are removed and nothing changes. Raises LogWriteError if a rename
        fails (the log is then as if the swap had not begun, or had completed).
        """
        stale = (
            self._closed
            or generation != self.generation
            or not old
            or old[-1] is self._segments[-1]
            or not _is_run(self._segments, old)
        )
        cleaned = [new.log_path, *map(paths.cleaned_file, new.index_paths())]
        if stale:
            fsio.remove_files(cleaned)
            return None
        final_log = paths.log_file(self.directory, new.base_offset)
        swaps = [paths.swap_file(p) for p in (final_log, *new.index_paths())]
        # Indexes first, the .log last: a .log.swap means every file of the swap is there.
        for src, dst in ((cleaned[1], swaps[1]), (cleaned[2], swaps[2]), (new.log_path, swaps[0])):
            try:
                os.replace(src, dst)
            except OSError as exc:
                fsio.remove_files(cleaned + swaps[1:])
                raise LogWriteError(f"cannot swap in a cleaned segment of {self.directory}: {exc}") from exc
        try:
            fsio.fsync_dir(self.directory)
            doomed: list[Path] = []
            for seg in old:
                doomed.extend(seg.mark_deleted())
            os.replace(swaps[0], final_log)
            for src, dst in zip(swaps[1:], new.index_paths()):
                os.replace(src, dst)
            fsio.fsync_dir(self.directory)
        except OSError as exc:
            # The .log.swap is durable (or the fsync failed): opening the log completes it.
            self._offline = True
            raise LogWriteError(
                f"swapping a cleaned segment into {self.directory} failed: {exc}; "
                "the log is offline until reopened"
            ) from exc
        new.renamed(final_log)
        new.release_file()
        with self._lock:
            i = self._segments.index(old[0])
            self._segments[i : i + len(old)] = [new]
            self._bases = [s.base_offset for s in self._segments]
            self._unflushed = [s for s in self._unflushed if s not in old]
        return doomed


def _is_run(segments: list[Segment], run: list[Segment]) -> bool:
    """Whether ``run`` appears in ``segments`` as consecutive elements (by identity)."""
    for i, seg in enumerate(segments):
        if seg is run[0]:
            return len(segments) >= i + len(run) and all(
                a is b for a, b in zip(segments[i : i + len(run)], run)
            )
    return False
