"""The two store-level files: topic metadata and the clean-shutdown marker.

Theory of operation
-------------------
``__topics__/<topic>.json`` says a topic exists. Its content::

    {"name": "<topic>", "partitions": <int>, "config": {"<kafka name>": "<value>", ...}}

where ``config`` holds only the topic's explicit overrides (Kafka names,
string values); the effective settings are the broker's defaults with these
applied. The file is the topic's commit point: it is written (atomically)
after the partition directories exist and removed before they are, so a crash
in between leaves only directories without metadata, which are ignored.

``.clean-shutdown`` is written (atomically) as the last step of a clean
close and removed first thing at open. Its absence at open means the broker
stopped without closing its logs, so the newest segments must be checked.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from protocol.errors import FerryError

from . import fsio, paths
from .errors import CorruptMetadataError


@dataclasses.dataclass(frozen=True)
class TopicMetadata:
    """What ``__topics__/<name>.json`` holds."""

    name: str
    partitions: int
    overrides: dict[str, str]

    def save(self, data_dir: Path) -> None:
        """Write the file atomically (temp, fsync, rename, fsync dir). Raises OSError."""
        directory = paths.topics_dir(data_dir)
        if not directory.is_dir():
            directory.mkdir()
            fsio.fsync_dir(data_dir)
        doc = {"name": self.name, "partitions": self.partitions, "config": dict(self.overrides)}
        data = json.dumps(doc, indent=2, sort_keys=True).encode() + b"\n"
        fsio.atomic_write(paths.metadata_file(data_dir, self.name), data)

    @classmethod
    def load(cls, path: Path) -> "TopicMetadata":
        """Parse one metadata file. Raises CorruptMetadataError or OSError."""
        try:
            doc = json.loads(path.read_bytes())
            name = paths.validate_topic(doc["name"])
            partitions = doc["partitions"]
            overrides = doc.get("config", {})
            if not isinstance(partitions, int) or isinstance(partitions, bool) or partitions < 1:
                raise ValueError(f"bad partition count {partitions!r}")
            if not isinstance(overrides, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in overrides.items()
            ):
                raise ValueError("config must map strings to strings")
        except (ValueError, KeyError, TypeError, FerryError) as exc:
            raise CorruptMetadataError(f"{path}: {exc}") from exc
        if paths.metadata_topic(path) != name:
            raise CorruptMetadataError(f"{path}: holds topic {name!r}, not the one it is named for")
        return cls(name, partitions, overrides)

    @staticmethod
    def remove(data_dir: Path, name: str) -> None:
        """Remove a topic's file durably (the topic no longer exists). Raises OSError."""
        fsio.unlink_durably(paths.metadata_file(data_dir, name))

    @staticmethod
    def list_files(data_dir: Path) -> list[Path]:
        """Every metadata file, after removing leftover temporary files."""
        directory = paths.topics_dir(data_dir)
        if not directory.is_dir():
            return []
        found = []
        for entry in sorted(directory.iterdir()):
            if paths.is_temp_file(entry):
                entry.unlink(missing_ok=True)
            elif paths.metadata_topic(entry) is not None:
                found.append(entry)
        return found


class CleanShutdownMarker:
    """``<data-dir>/.clean-shutdown``: present only while the store is cleanly closed."""

    def __init__(self, data_dir: Path) -> None:
        self.path = paths.clean_shutdown_file(data_dir)

    def exists(self) -> bool:
        return self.path.exists()

    def write(self) -> None:
        """Raises OSError."""
        fsio.atomic_write(self.path, b"")

    def remove(self) -> None:
        """Raises OSError."""
        fsio.unlink_durably(self.path)
