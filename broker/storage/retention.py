"""Which segments retention deletes: a pure function of (segments, now, config).

Theory of operation
-------------------
Retention deletes whole segments from the front of a log, never the active
(last) one, for topics whose ``cleanup.policy`` includes ``delete``. A segment
goes when either rule says so (Kafka's two rules):

* by age: its largest timestamp is more than ``retention.ms`` before now.
  The largest timestamp is the one the segment's time index ends with (a
  batch's append time if stamped, else its max timestamp); a segment without
  any timestamp falls back to its file's modification time, as in Kafka.
* by size: while the log's total size minus the oldest segment's size is
  still at least ``retention.bytes``, the oldest segment goes.

Both rules only ever delete a prefix: the age rule stops at the first segment
that is young enough, so a segment with an old timestamp behind a young one
waits (Kafka does the same). Doing the deleting is ``PartitionLog``'s job.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

from .config import LogConfig


class SegmentInfo(NamedTuple):
    """What retention needs to know of one segment."""

    base_offset: int
    size: int
    max_timestamp: int  # -1: no batch carries a timestamp
    modified_ms: int  # the .log file's mtime, used only when max_timestamp is -1


def deletes_by_policy(config: LogConfig) -> bool:
    return "delete" in config.cleanup_policy.split(",")


def expired_prefix(segments: Sequence[SegmentInfo], now_ms: int, config: LogConfig) -> int:
    """How many segments from the front to delete (0 .. len(segments) - 1).

    ``segments`` are the log's segments oldest first, the last being the
    active one, which is never counted. Pure; never raises.
    """
    closed = len(segments) - 1
    if closed <= 0 or not deletes_by_policy(config):
        return 0
    by_age = 0
    if config.retention_ms >= 0:
        while by_age < closed:
            seg = segments[by_age]
            stamp = seg.max_timestamp if seg.max_timestamp >= 0 else seg.modified_ms
            if now_ms - stamp <= config.retention_ms:
                break
            by_age += 1
    by_size = 0
    if config.retention_bytes >= 0:
        remaining = sum(s.size for s in segments)
        while by_size < closed and remaining - segments[by_size].size >= config.retention_bytes:
            remaining -= segments[by_size].size
            by_size += 1
    return max(by_age, by_size)
