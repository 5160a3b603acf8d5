"""What the log hands back: ``FileRange``, ``AppendResult``, ``ReadResult``."""

from __future__ import annotations

import dataclasses
import os
from typing import NamedTuple


@dataclasses.dataclass(frozen=True, slots=True)
class FileRange:
    """A slice of a segment file, to be sent with ``os.sendfile`` (or read with ``read``).

    ``file`` is the segment's open file object. Holding the FileRange keeps
    that fd open and valid even if the segment is rolled or deleted meanwhile.
    ``truncate_to`` cuts a segment in place, so a range into the cut part may
    then come up short or cover bytes appended after the cut: truncation is
    for replica reconciliation, where no consumer reads past the cut.
    """

    file: object
    position: int
    length: int

    def __len__(self) -> int:
        return self.length

    def fileno(self) -> int:
        return self.file.fileno()

    def read(self) -> bytes:
        """The bytes of the range (fewer if the file was truncated since). Blocks on disk I/O."""
        fd = self.fileno()
        parts = []
        done = 0
        while done < self.length:
            chunk = os.pread(fd, self.length - done, self.position + done)
            if not chunk:
                break
            parts.append(chunk)
            done += len(chunk)
        return parts[0] if len(parts) == 1 else b"".join(parts)


class AppendResult(NamedTuple):
    """Offsets given to an append; ``log_append_time`` is -1 unless the topic uses LogAppendTime.

    ``duplicate``: the batches were a retry of batches already in the log
    (same producer, epoch and sequences); nothing was written, and the offsets
    are those the original append got.

    A NamedTuple rather than a frozen dataclass: one is built per produce
    request, and a dataclass costs about as much as the rest of the
    append's Python work per batch.
    """

    base_offset: int
    last_offset: int
    log_append_time: int
    duplicate: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class ReadResult:
    """Whole batches for a fetch, as file ranges in offset order."""

    ranges: list[FileRange]
    high_watermark: int
    log_start_offset: int

    @property
    def size(self) -> int:
        return sum(r.length for r in self.ranges)
