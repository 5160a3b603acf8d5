"""Per-topic log settings: ``LogConfig``.

Each field mirrors one Kafka topic config. Outside Python the settings go by
their Kafka names (``segment.bytes``, ``retention.ms``, ...): that is what
``to_dict`` and ``overrides`` produce and what the topic metadata file stores.
``from_dict`` accepts either the Kafka name or the field name, because the CLI
hands over ``key=value`` strings and people type both.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Mapping

from protocol.errors import InvalidConfigError

_INT_RE = re.compile(r"-?[0-9]+")
_I32_MAX = (1 << 31) - 1
_I64_MAX = (1 << 63) - 1
_TIMESTAMP_TYPES = ("CreateTime", "LogAppendTime")
_CLEANUP_POLICIES = ("delete", "compact", "compact,delete")


@dataclasses.dataclass(frozen=True)
class LogConfig:
    """Settings of one topic's logs; every default is Kafka's.

    segment_bytes: roll to a new segment before the active one would exceed this.
    segment_ms: roll when the active segment's first append is older than this.
    index_interval_bytes: bytes of batches between two sparse index entries.
    max_message_bytes: largest record batch an append accepts.
    message_timestamp_type: "CreateTime" keeps the producer's timestamps;
        "LogAppendTime" stamps each batch with the broker's clock.
    retention_ms, retention_bytes: how much to keep (-1: unbounded); stored and
        validated, enforced by the retention work that comes later.
    cleanup_policy: "delete", "compact" or "compact,delete"; stored and validated.
    flush_interval_messages, flush_interval_ms: force an fsync after this many
        messages or this long (-1: leave it to the OS); the broker applies them.
    delete_retention_ms: how long compaction keeps tombstones.
    """

    segment_bytes: int = 1 << 30
    segment_ms: int = 7 * 24 * 3600 * 1000
    index_interval_bytes: int = 4096
    max_message_bytes: int = 1048588
    message_timestamp_type: str = "CreateTime"
    retention_ms: int = 7 * 24 * 3600 * 1000
    retention_bytes: int = -1
    cleanup_policy: str = "delete"
    flush_interval_messages: int = -1
    flush_interval_ms: int = -1
    delete_retention_ms: int = 24 * 3600 * 1000

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            _validate(f.name, getattr(self, f.name))

    @property
    def log_append_time(self) -> bool:
        return self.message_timestamp_type == "LogAppendTime"

    @classmethod
    def from_dict(
        cls, d: Mapping[str, "str | int"], base: "LogConfig | None" = None
    ) -> "LogConfig":
        """``base`` (default: Kafka's defaults) with the settings in ``d`` applied.

        Keys are Kafka names or field names; values are strings or ints.
        Raises InvalidConfigError naming the key for an unknown key or bad value.
        """
        base = base if base is not None else cls()
        changes = {}
        for key, raw in d.items():
            field = field_name(key)
            changes[field] = _parse(key, field, raw)
        return dataclasses.replace(base, **changes)

    def to_dict(self) -> dict[str, str]:
        """Every setting by its Kafka name, values as strings."""
        return {KAFKA_NAMES[f.name]: str(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def overrides(self, base: "LogConfig") -> dict[str, str]:
        """The settings (Kafka names, string values) whose value differs from ``base``."""
        mine, theirs = self.to_dict(), base.to_dict()
        return {k: v for k, v in mine.items() if theirs[k] != v}


KAFKA_NAMES = {
    "segment_bytes": "segment.bytes",
    "segment_ms": "segment.ms",
    "index_interval_bytes": "index.interval.bytes",
    "max_message_bytes": "max.message.bytes",
    "message_timestamp_type": "message.timestamp.type",
    "retention_ms": "retention.ms",
    "retention_bytes": "retention.bytes",
    "cleanup_policy": "cleanup.policy",
    "flush_interval_messages": "flush.messages",
    "flush_interval_ms": "flush.ms",
    "delete_retention_ms": "delete.retention.ms",
}
_FIELDS_BY_KAFKA_NAME = {v: k for k, v in KAFKA_NAMES.items()}

# field -> (minimum, maximum, values allowed below the minimum)
_INT_BOUNDS: dict[str, tuple[int, int, tuple[int, ...]]] = {
    # Segment positions are stored as u32 in the index, and a batch starts below segment_bytes.
    "segment_bytes": (14, _I32_MAX, ()),
    "segment_ms": (1, _I64_MAX, ()),
    "index_interval_bytes": (0, _I32_MAX, ()),
    "max_message_bytes": (0, _I32_MAX, ()),
    "retention_ms": (0, _I64_MAX, (-1,)),
    "retention_bytes": (0, _I64_MAX, (-1,)),
    "flush_interval_messages": (1, _I64_MAX, (-1,)),
    "flush_interval_ms": (0, _I64_MAX, (-1,)),
    "delete_retention_ms": (0, _I64_MAX, ()),
}


def field_name(key: str) -> str:
    """The LogConfig field for a Kafka name or field name; InvalidConfigError if unknown."""
    if key in _FIELDS_BY_KAFKA_NAME:
        return _FIELDS_BY_KAFKA_NAME[key]
    if key in KAFKA_NAMES:
        return key
    raise InvalidConfigError(
        f"unknown topic config {key!r}; known: {', '.join(sorted(_FIELDS_BY_KAFKA_NAME))}"
    )


def kafka_name(key: str) -> str:
    """The Kafka name for a Kafka name or field name; InvalidConfigError if unknown."""
    return KAFKA_NAMES[field_name(key)]


def _parse(key: str, field: str, raw: "str | int") -> "str | int":
    if field in _INT_BOUNDS:
        if isinstance(raw, bool):
            raise InvalidConfigError(f"{key} must be an integer, not {raw!r}")
        if isinstance(raw, int):
            value = raw
        elif isinstance(raw, str) and _INT_RE.fullmatch(raw.strip()):
            value = int(raw.strip())
        else:
            raise InvalidConfigError(f"{key} must be an integer, not {raw!r}")
    else:
        if not isinstance(raw, str):
            raise InvalidConfigError(f"{key} must be a string, not {raw!r}")
        value = raw.strip()
        if field == "cleanup_policy":
            parts = sorted({p.strip() for p in value.split(",")})
            value = ",".join(parts)
    _validate(field, value, key)
    return value


def _validate(field: str, value, key: str | None = None) -> None:
    key = key or KAFKA_NAMES[field]
    if field in _INT_BOUNDS:
        low, high, extra = _INT_BOUNDS[field]
        if not isinstance(value, int) or isinstance(value, bool):
            raise InvalidConfigError(f"{key} must be an integer, not {value!r}")
        if value in extra:
            return
        if not low <= value <= high:
            also = f" (or {extra[0]})" if extra else ""
            raise InvalidConfigError(f"{key} must be between {low} and {high}{also}, not {value}")
    elif field == "message_timestamp_type":
        if value not in _TIMESTAMP_TYPES:
            raise InvalidConfigError(f"{key} must be CreateTime or LogAppendTime, not {value!r}")
    elif field == "cleanup_policy":
        if value not in _CLEANUP_POLICIES:
            raise InvalidConfigError(
                f"{key} must be delete, compact or compact,delete, not {value!r}"
            )
