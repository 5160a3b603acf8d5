"""Committed offsets: the in-memory table and its records in ``__consumer_offsets``.

Record format
-------------
Each commit appends one record per partition to the internal topic
``__consumer_offsets``; the latest record of a key wins, so the topic can be
compacted. Keys and values are msgpack:

* key: ``[group_id, topic, partition]`` (an array of str, str, int)
* value: ``{"offset": int, "metadata": str, "commit_timestamp": int,
  "expire_timestamp": int}`` (ms since the epoch; ``expire_timestamp`` is -1
  unless the commit gave ``retention_time_ms``), or nil: a tombstone, written
  when offsets expire or are deleted.

Readers ignore unknown value keys, so fields can be added. Anything else
(another key shape, a value that does not parse) is skipped with a warning.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Iterable, Iterator

import msgpack

log = logging.getLogger("ferry.broker.group")

Key = tuple[str, str, int]  # (group_id, topic, partition)


@dataclasses.dataclass(frozen=True, slots=True)
class CommittedOffset:
    offset: int
    metadata: str = ""
    commit_timestamp: int = -1
    expire_timestamp: int = -1


def encode_key(key: Key) -> bytes:
    return msgpack.packb(list(key))


def encode_value(value: CommittedOffset | None) -> bytes | None:
    if value is None:
        return None
    return msgpack.packb({
        "offset": value.offset, "metadata": value.metadata,
        "commit_timestamp": value.commit_timestamp, "expire_timestamp": value.expire_timestamp,
    })


def decode_record(key: bytes | None, value: bytes | None) -> tuple[Key, CommittedOffset | None]:
    """Parse one ``__consumer_offsets`` record. Raises ValueError if it is not one of ours."""
    try:
        k = msgpack.unpackb(key) if key is not None else None
        if not (isinstance(k, list) and len(k) == 3 and isinstance(k[0], str) and isinstance(k[1], str)
                and type(k[2]) is int):
            raise ValueError(f"unexpected key {k!r}")
        if value is None:
            return (k[0], k[1], k[2]), None
        v = msgpack.unpackb(value)
        if not isinstance(v, dict) or type(v.get("offset")) is not int:
            raise ValueError(f"unexpected value {v!r}")
        metadata = v.get("metadata", "")
        entry = CommittedOffset(
            offset=v["offset"],
            metadata=metadata if isinstance(metadata, str) else "",
            commit_timestamp=_int(v.get("commit_timestamp")),
            expire_timestamp=_int(v.get("expire_timestamp")),
        )
        return (k[0], k[1], k[2]), entry
    except (ValueError, TypeError) as exc:  # msgpack raises ValueError subclasses
        raise ValueError(f"not an offset commit record: {exc}") from None


def _int(v) -> int:
    return v if type(v) is int else -1


class OffsetCache:
    """The latest committed offset per (group, topic, partition), mirroring the log.

    ``apply`` is called in log order (at load time and right after each
    append), so the table always equals "the last record of each key".
    """

    def __init__(self) -> None:
        self._groups: dict[str, dict[tuple[str, int], CommittedOffset]] = {}

    def apply(self, key: Key, value: CommittedOffset | None) -> None:
        group, topic, partition = key
        if value is not None:
            self._groups.setdefault(group, {})[(topic, partition)] = value
            return
        offsets = self._groups.get(group)
        if offsets is not None:
            offsets.pop((topic, partition), None)
            if not offsets:
                del self._groups[group]

    def load(self, records: Iterable[tuple[bytes | None, bytes | None]]) -> int:
        """Apply (key, value) records read from the log, in order; returns how many were used."""
        used = 0
        for key, value in records:
            try:
                k, v = decode_record(key, value)
            except ValueError as exc:
                log.warning("__consumer_offsets: skipping a record: %s", exc)
                continue
            self.apply(k, v)
            used += 1
        return used

    def get(self, group: str, topic: str, partition: int) -> CommittedOffset | None:
        return self._groups.get(group, {}).get((topic, partition))

    def group(self, group: str) -> dict[tuple[str, int], CommittedOffset]:
        """The committed offsets of ``group`` by (topic, partition) (a copy)."""
        return dict(self._groups.get(group, {}))

    def has_group(self, group: str) -> bool:
        return group in self._groups

    def groups(self) -> list[str]:
        return sorted(self._groups)

    def __len__(self) -> int:
        return sum(len(o) for o in self._groups.values())

    def expired(self, group: str, now: int, retention_ms: int, empty_since: int | None) -> Iterator[Key]:
        """Keys of ``group``'s offsets that have expired at ``now`` (the group must have no members).

        An offset expires at its explicit ``expire_timestamp`` if it has one;
        otherwise ``retention_ms`` after the group became empty, or after the
        commit when that time is not known (standalone consumers, or groups
        not seen since the broker started).
        """
        for (topic, partition), entry in self._groups.get(group, {}).items():
            if entry.expire_timestamp >= 0:
                if now >= entry.expire_timestamp:
                    yield (group, topic, partition)
                continue
            base = empty_since if empty_since is not None else entry.commit_timestamp
            if now - base >= retention_ms:
                yield (group, topic, partition)
