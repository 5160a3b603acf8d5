"""The storage layer's exceptions.

``StorageError`` is the protocol's ``STORAGE_ERROR`` class itself, so whatever
the storage layer raises for a failed disk operation maps to that wire code
without a translation table. Validation failures (bad topic name, unknown
partition, offset out of range, ...) raise the protocol's own classes instead.
"""

from __future__ import annotations

from protocol.errors import StorageError


class LogWriteError(StorageError):
    """Writing to a segment failed; the log was rolled back to its previous end."""

    description = "the broker could not write to the partition's log"


class DiskFullError(LogWriteError):
    """The write failed because the disk (or the quota) is full."""

    description = "the broker's disk is full"


class LogReadError(StorageError):
    """Reading a segment failed (an I/O error from the disk)."""

    description = "the broker could not read the partition's log"


class LogFlushError(StorageError):
    """fsync of a segment or its directory failed: durability is unknown."""

    description = "the broker could not flush the partition's log to disk"


class LogOfflineError(StorageError):
    """A failed write could not be undone; the log refuses appends until reopened."""

    description = "the partition's log is offline after an unrecoverable write error"


class CorruptLogError(StorageError):
    """The log on disk is inconsistent with what the broker wrote (found while serving)."""

    description = "the partition's log is corrupt"


class CorruptMetadataError(StorageError):
    """A topic metadata file cannot be parsed."""

    description = "a topic metadata file is corrupt"


__all__ = [
    "StorageError",
    "LogWriteError",
    "DiskFullError",
    "LogReadError",
    "LogFlushError",
    "LogOfflineError",
    "CorruptLogError",
    "CorruptMetadataError",
]
