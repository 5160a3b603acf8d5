"""Every file and directory name the storage layer uses: the only module that builds paths.

Layout of a data dir::

    <data-dir>/
        .clean-shutdown                    present only while the broker is stopped cleanly
        __topics__/<topic>.json            one metadata file per topic
        <topic>-<partition>/               one directory per partition
            00000000000000000000.log       segments, named by their 20-digit base offset
            00000000000000000000.index
            00000000000000000000.timeindex
            00000000000000000000.snapshot  producer state as of that offset (see producer_state)
            00000000000000000000.log.deleted   a segment file being deleted (removed at open)
            00000000000000000000.log.cleaned   a cleaned segment being written (removed at open)
            00000000000000000000.log.swap      a cleaned segment replacing others (completed at open)
        <topic>-<partition>.<hex>-delete/  a partition being deleted (removed at open)
        producer-ids                       the next free block of producer ids (see producer_ids)

A partition directory always ends in ``-<digits>``, so neither ``__topics__``,
``producer-ids`` nor a ``-delete`` directory can be mistaken for one. Temporary files (for the
write-temp, fsync, rename pattern) add ``.tmp`` to the final name; no final
name ends in ``.tmp``, so leftovers are recognisable and removed at open.

Topic names follow Kafka's rule (``[a-zA-Z0-9._-]{1,249}``, not ``.`` or
``..``) and every path built from one is checked again to resolve inside the
data dir.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path

from protocol.errors import InvalidTopicError

MAX_TOPIC_LENGTH = 249
NAME_MAX = 255  # longest file name most filesystems allow; long names are cut to fit suffixes
_TOPIC_RE = re.compile(r"[a-zA-Z0-9._-]+")
_PARTITION_DIR_RE = re.compile(r"(.+)-([0-9]+)")
_SEGMENT_RE = re.compile(r"([0-9]{20})\.(log|index|timeindex)")
_SUFFIXED_RE = re.compile(r"([0-9]{20})\.(log|index|timeindex)\.(deleted|cleaned|swap)")
_SNAPSHOT_RE = re.compile(r"([0-9]{20})\.snapshot")

TOPICS_DIR = "__topics__"
CLEAN_SHUTDOWN = ".clean-shutdown"
TMP_SUFFIX = ".tmp"
DELETE_SUFFIX = "-delete"
LOG_SUFFIX = ".log"
INDEX_SUFFIX = ".index"
TIMEINDEX_SUFFIX = ".timeindex"
METADATA_SUFFIX = ".json"
SNAPSHOT_SUFFIX = ".snapshot"
DELETED_SUFFIX = ".deleted"
CLEANED_SUFFIX = ".cleaned"
SWAP_SUFFIX = ".swap"
PRODUCER_IDS = "producer-ids"


def validate_topic(name: object) -> str:
    """Return ``name`` if it is a legal topic name, else raise InvalidTopicError."""
    if not isinstance(name, str):
        raise InvalidTopicError(f"topic name must be a string, not {type(name).__name__}")
    if not name:
        raise InvalidTopicError("topic name is empty")
    if len(name) > MAX_TOPIC_LENGTH:
        raise InvalidTopicError(f"topic name is longer than {MAX_TOPIC_LENGTH} characters")
    if name in (".", ".."):
        raise InvalidTopicError(f"topic name cannot be {name!r}")
    if not _TOPIC_RE.fullmatch(name):
        raise InvalidTopicError(
            f"topic name {name!r} has characters other than ASCII letters, digits, '.', '_' and '-'"
        )
    return name


def _inside(data_dir: Path, path: Path) -> Path:
    root = data_dir.resolve()
    resolved = path.resolve()
    if resolved.parent != root and root not in resolved.parents:
        raise InvalidTopicError(f"path for {path.name!r} leaves the data dir")
    return path


# -- data dir level ---------------------------------------------------------


def partition_dir(data_dir: Path, topic: str, partition: int) -> Path:
    """``<data-dir>/<topic>-<partition>``; InvalidTopicError for a bad name."""
    validate_topic(topic)
    if partition < 0:
        raise ValueError(f"negative partition {partition}")
    return _inside(data_dir, data_dir / f"{topic}-{int(partition)}")


def deletion_dir(data_dir: Path, directory: Path) -> Path:
    """A unique name to rename a partition directory to before removing it."""
    suffix = f".{uuid.uuid4().hex}{DELETE_SUFFIX}"
    return _inside(data_dir, data_dir / (directory.name[: NAME_MAX - len(suffix)] + suffix))


def is_deletion_dir(path: Path) -> bool:
    return path.name.endswith(DELETE_SUFFIX)


def parse_partition_dir(path: Path) -> tuple[str, int] | None:
    """(topic, partition) if ``path`` is named like a partition directory, else None."""
    m = _PARTITION_DIR_RE.fullmatch(path.name)
    if not m or not _TOPIC_RE.fullmatch(m.group(1)) or len(m.group(1)) > MAX_TOPIC_LENGTH:
        return None
    return m.group(1), int(m.group(2))


def topics_dir(data_dir: Path) -> Path:
    return data_dir / TOPICS_DIR


def metadata_file(data_dir: Path, topic: str) -> Path:
    """``<data-dir>/__topics__/<topic>.json``; InvalidTopicError for a bad name."""
    validate_topic(topic)
    return _inside(data_dir, topics_dir(data_dir) / f"{topic}{METADATA_SUFFIX}")


def metadata_topic(path: Path) -> str | None:
    """The topic a metadata file is for, or None if the name is not one."""
    if not path.name.endswith(METADATA_SUFFIX):
        return None
    name = path.name[: -len(METADATA_SUFFIX)]
    try:
        return validate_topic(name)
    except InvalidTopicError:
        return None


def clean_shutdown_file(data_dir: Path) -> Path:
    return data_dir / CLEAN_SHUTDOWN


def producer_ids_file(data_dir: Path) -> Path:
    return data_dir / PRODUCER_IDS


def temp_file(path: Path) -> Path:
    """Where to write ``path``'s next content before renaming it into place."""
    return path.with_name(path.name[: NAME_MAX - len(TMP_SUFFIX)] + TMP_SUFFIX)


def is_temp_file(path: Path) -> bool:
    return path.name.endswith(TMP_SUFFIX)


# -- partition dir level ----------------------------------------------------


def _segment_stem(base_offset: int) -> str:
    return f"{base_offset:020d}"


def log_file(directory: Path, base_offset: int) -> Path:
    return directory / (_segment_stem(base_offset) + LOG_SUFFIX)


def index_file(directory: Path, base_offset: int) -> Path:
    return directory / (_segment_stem(base_offset) + INDEX_SUFFIX)


def timeindex_file(directory: Path, base_offset: int) -> Path:
    return directory / (_segment_stem(base_offset) + TIMEINDEX_SUFFIX)


def segment_files(directory: Path, base_offset: int) -> tuple[Path, Path, Path]:
    """(.log, .index, .timeindex) of the segment at ``base_offset``."""
    return (
        log_file(directory, base_offset),
        index_file(directory, base_offset),
        timeindex_file(directory, base_offset),
    )


def parse_segment_file(path: Path) -> tuple[int, str] | None:
    """(base offset, kind) with kind "log", "index" or "timeindex"; None for other names."""
    m = _SEGMENT_RE.fullmatch(path.name)
    if not m:
        return None
    return int(m.group(1)), m.group(2)


def snapshot_file(directory: Path, offset: int) -> Path:
    """``<offset, 20 digits>.snapshot``: producer state covering the batches below ``offset``."""
    return directory / (_segment_stem(offset) + SNAPSHOT_SUFFIX)


def parse_snapshot_file(path: Path) -> int | None:
    """The offset of a snapshot file, or None for other names."""
    m = _SNAPSHOT_RE.fullmatch(path.name)
    return int(m.group(1)) if m else None


def deleted_file(path: Path) -> Path:
    """The name a segment file gets once it is doomed (removed at open if still there)."""
    return path.with_name(path.name + DELETED_SUFFIX)


def cleaned_file(path: Path) -> Path:
    """Where the cleaner writes the new content of segment file ``path``."""
    return path.with_name(path.name + CLEANED_SUFFIX)


def swap_file(path: Path) -> Path:
    """A cleaned file that is committed to replace the segments it overlaps."""
    return path.with_name(path.name + SWAP_SUFFIX)


def parse_suffixed_segment_file(path: Path) -> tuple[int, str, str] | None:
    """(base offset, kind, suffix) of ``<base>.<kind>.<deleted|cleaned|swap>``; None otherwise.

    ``suffix`` is given with its dot, as in ``DELETED_SUFFIX``.
    """
    m = _SUFFIXED_RE.fullmatch(path.name)
    if not m:
        return None
    return int(m.group(1)), m.group(2), "." + m.group(3)
