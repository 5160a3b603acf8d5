"""``TopicStore``: every topic and partition log under one data dir.

Theory of operation
-------------------
A topic exists exactly when its metadata file ``__topics__/<topic>.json``
exists (see ``metadata``); its partitions are the directories
``<topic>-0`` .. ``<topic>-<n-1>`` (see ``paths``). Creating a topic makes
the directories first and writes the metadata file last; deleting removes the
metadata file first, then renames each directory to ``...-delete`` and
removes it. A crash at any point leaves either the whole topic or leftovers
that are ignored (directories without metadata) or removed at the next open
(``-delete`` directories); creating the topic again wipes stale directories.

Opening the store removes the clean-shutdown marker; if it was absent and
there are topics, each partition's newest segment is checked batch by batch
(a data dir without topics has nothing to recover, so it counts as clean).
``close`` closes every log and then writes the marker.

The store also owns the data dir's producer id allocator (``producer_ids``).

Threads: everything runs on the broker's event-loop thread except
``flush_all``, which may run on a worker thread (see ``PartitionLog.flush``),
and the unlinking of the files ``mark_expired_segments`` returns.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Callable, Mapping

from protocol.errors import (
    InvalidPartitionsError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
)

from . import fsio, paths
from .config import LogConfig, kafka_name
from .errors import StorageError
from .metadata import CleanShutdownMarker, TopicMetadata
from .partition_log import PartitionLog
from .producer_ids import ProducerIds

log = logging.getLogger(__name__)

MAX_PARTITIONS = 10000


@dataclasses.dataclass(frozen=True)
class TopicInfo:
    """A topic: its partition count, effective settings and explicit overrides (Kafka names)."""

    name: str
    partitions: int
    config: LogConfig
    overrides: dict[str, str]


class TopicStore:
    """All topics under ``data_dir``, loaded on construction (blocks on disk I/O).

    ``was_clean`` tells whether the previous run closed the store cleanly.
    Raises StorageError if a metadata file is corrupt, OSError if the data dir
    is unusable.
    """

    def __init__(
        self,
        data_dir: Path,
        default_config: LogConfig = LogConfig(),
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.default_config = default_config
        self._clock = clock
        self._topics: dict[str, TopicInfo] = {}
        self._logs: dict[str, list[PartitionLog]] = {}
        self.data_dir.mkdir(parents=True, exist_ok=True)
        marker = CleanShutdownMarker(self.data_dir)
        metadata_files = TopicMetadata.list_files(self.data_dir)
        self.was_clean = marker.exists() or not metadata_files
        if marker.exists():
            marker.remove()
        elif metadata_files:
            log.info("%s: no clean-shutdown marker, checking the newest segments", self.data_dir)
        self._remove_deletion_dirs()
        self.producer_ids = ProducerIds(self.data_dir)
        for path in metadata_files:
            self._open_topic(TopicMetadata.load(path), recover=not self.was_clean)
        self._report_orphans()

    # -- loading ---------------------------------------------------------------

    def _remove_deletion_dirs(self) -> None:
        for entry in self.data_dir.iterdir():
            if entry.is_dir() and paths.is_deletion_dir(entry):
                log.info("%s: removing the rest of a deleted partition", entry)
                fsio.remove_tree(entry)

    def _open_topic(self, meta: TopicMetadata, *, recover: bool) -> TopicInfo:
        config = LogConfig.from_dict(meta.overrides, base=self.default_config)
        logs = []
        for p in range(meta.partitions):
            directory = paths.partition_dir(self.data_dir, meta.name, p)
            logs.append(
                PartitionLog(
                    directory, config, clock=self._clock, recover=recover, topic=meta.name, partition=p
                )
            )
        return self._register(meta, config, logs)

    def _register(self, meta: TopicMetadata, config: LogConfig, logs: list[PartitionLog]) -> TopicInfo:
        info = TopicInfo(meta.name, meta.partitions, config, dict(meta.overrides))
        self._topics[meta.name] = info
        self._logs[meta.name] = logs
        return info

    def _report_orphans(self) -> None:
        for entry in sorted(self.data_dir.iterdir()):
            parsed = paths.parse_partition_dir(entry)
            if parsed is None or not entry.is_dir():
                continue
            topic, partition = parsed
            info = self._topics.get(topic)
            if info is None or partition >= info.partitions:
                log.warning("%s: partition directory without topic metadata, ignored", entry)

    # -- topics ----------------------------------------------------------------

    def topics(self) -> list[str]:
        return sorted(self._topics)

    def has_topic(self, name: str) -> bool:
        return name in self._topics

    def topic(self, name: str) -> TopicInfo:
        """Raises UnknownTopicOrPartitionError."""
        try:
            return self._topics[name]
        except (KeyError, TypeError):
            raise UnknownTopicOrPartitionError(f"unknown topic {name!r}") from None

    def partition(self, name: str, partition: int) -> PartitionLog:
        """The log of one partition. Raises UnknownTopicOrPartitionError."""
        logs = self._logs.get(name) if isinstance(name, str) else None
        if logs is None or not isinstance(partition, int) or not 0 <= partition < len(logs):
            raise UnknownTopicOrPartitionError(f"unknown topic or partition {name!r}/{partition!r}")
        return logs[partition]

    def validate_new_topic(
        self, name: str, partitions: int, config: Mapping[str, "str | int"] | None = None
    ) -> tuple[dict[str, str], LogConfig]:
        """Check what ``create_topic`` would check, creating nothing.

        Returns the normalized overrides (Kafka names) and the effective
        config. Raises InvalidTopicError, InvalidPartitionsError,
        InvalidConfigError or TopicAlreadyExistsError.
        """
        paths.validate_topic(name)
        if isinstance(partitions, bool) or not isinstance(partitions, int) or not (
            1 <= partitions <= MAX_PARTITIONS
        ):
            raise InvalidPartitionsError(
                f"partition count must be between 1 and {MAX_PARTITIONS}, not {partitions!r}"
            )
        overrides = _normalize(config or {})
        effective = LogConfig.from_dict(overrides, base=self.default_config)
        if name in self._topics:
            raise TopicAlreadyExistsError(f"topic {name!r} already exists")
        return overrides, effective

    def create_topic(
        self, name: str, partitions: int, config: Mapping[str, "str | int"] | None = None
    ) -> TopicInfo:
        """Create a topic with ``partitions`` empty partitions and the given config overrides.

        Raises InvalidTopicError, InvalidPartitionsError, InvalidConfigError,
        TopicAlreadyExistsError, or StorageError if the disk fails.
        """
        overrides, config = self.validate_new_topic(name, partitions, config)
        meta = TopicMetadata(name, partitions, overrides)
        logs: list[PartitionLog] = []
        try:
            for p in range(partitions):
                directory = paths.partition_dir(self.data_dir, name, p)
                if directory.exists():
                    log.info("%s: removing a stale partition directory", directory)
                    fsio.rename_and_remove(directory, paths.deletion_dir(self.data_dir, directory))
                directory.mkdir()
                logs.append(
                    PartitionLog(directory, config, clock=self._clock, recover=False, topic=name, partition=p)
                )
            fsio.fsync_dir(self.data_dir)
            meta.save(self.data_dir)  # the commit point
        except OSError as exc:
            for partition_log in logs:
                try:
                    partition_log.delete()
                except OSError:
                    pass  # a directory without metadata is ignored, and wiped by the next create
            raise StorageError(f"cannot create topic {name!r}: {exc}") from exc
        return self._register(meta, config, logs)

    def delete_topic(self, name: str) -> None:
        """Delete a topic and its data. Raises UnknownTopicOrPartitionError or StorageError."""
        self.topic(name)
        try:
            TopicMetadata.remove(self.data_dir, name)
        except OSError as exc:
            raise StorageError(f"cannot delete topic {name!r}: {exc}") from exc
        del self._topics[name]
        logs = self._logs.pop(name)
        try:
            for partition_log in logs:
                partition_log.delete()
        except OSError as exc:
            raise StorageError(f"topic {name!r} deleted, but removing its data failed: {exc}") from exc

    def alter_config(
        self, name: str, changes: Mapping[str, "str | int | None"], *, validate_only: bool = False
    ) -> TopicInfo:
        """Set (or with None, reset to the default) topic settings; persisted atomically.

        With ``validate_only`` nothing changes; the result is what would be.
        Raises UnknownTopicOrPartitionError, InvalidConfigError or StorageError.
        """
        info = self.topic(name)
        overrides = dict(info.overrides)
        for key, value in changes.items():
            if value is None:
                overrides.pop(kafka_name(key), None)
            else:
                overrides.update(_normalize({key: value}))
        config = LogConfig.from_dict(overrides, base=self.default_config)
        if validate_only:
            return TopicInfo(name, info.partitions, config, overrides)
        try:
            TopicMetadata(name, info.partitions, overrides).save(self.data_dir)
        except OSError as exc:
            raise StorageError(f"cannot save the config of topic {name!r}: {exc}") from exc
        for partition_log in self._logs[name]:
            partition_log.reconfigure(config)
        info = TopicInfo(name, info.partitions, config, overrides)
        self._topics[name] = info
        return info

    # -- retention -------------------------------------------------------------

    def mark_expired_segments(self, now_ms: int | None = None) -> tuple[int, list[Path]]:
        """Retention for every log: (segments taken out, their files to unlink).

        On the event-loop thread; unlink the files with ``fsio.remove_files``
        on any thread. A log that fails is logged and skipped.
        """
        now_ms = int(self._clock() * 1000) if now_ms is None else now_ms
        count = 0
        files: list[Path] = []
        for partition_log in self.logs():
            try:
                doomed = partition_log.mark_expired_segments(now_ms)
            except StorageError as exc:
                log.error("%s: retention failed: %s", partition_log.directory, exc)
                continue
            count += sum(1 for f in doomed if f.name.endswith(paths.LOG_SUFFIX + paths.DELETED_SUFFIX))
            files.extend(doomed)
        return count, files

    def apply_retention(self, now_ms: int | None = None) -> int:
        """Retention for every log, unlinking included; returns the segments deleted. Blocks."""
        count, files = self.mark_expired_segments(now_ms)
        try:
            fsio.remove_files(files)
        except OSError as exc:
            log.error("removing deleted segments failed (they go at the next open): %s", exc)
        return count

    # -- flush and close -------------------------------------------------------

    def logs(self) -> list[PartitionLog]:
        """Every partition log (a snapshot list)."""
        return [pl for logs in list(self._logs.values()) for pl in logs]

    def flush_all(self) -> None:
        """fsync every log. May run on a worker thread.

        Raises the first failure's StorageError after trying every log.
        """
        first_error: StorageError | None = None
        for partition_log in self.logs():
            try:
                partition_log.flush()
            except StorageError as exc:
                log.error("%s: flush failed: %s", partition_log.directory, exc)
                first_error = first_error or exc
        if first_error is not None:
            raise first_error

    def close(self) -> None:
        """Close every log, then write the clean-shutdown marker. Raises StorageError."""
        first_error: Exception | None = None
        for partition_log in self.logs():
            try:
                partition_log.close()
            except (StorageError, OSError) as exc:
                log.error("%s: close failed: %s", partition_log.directory, exc)
                first_error = first_error or exc
        if first_error is not None:
            raise StorageError(f"closing the logs failed: {first_error}") from first_error
        try:
            CleanShutdownMarker(self.data_dir).write()
        except OSError as exc:
            raise StorageError(f"cannot write the clean-shutdown marker: {exc}") from exc


def _normalize(config: Mapping[str, "str | int"]) -> dict[str, str]:
    """Overrides by Kafka name with canonical string values. Raises InvalidConfigError."""
    out = {}
    for key, value in config.items():
        name = kafka_name(key)
        out[name] = LogConfig.from_dict({key: value}).to_dict()[name]
    return out
