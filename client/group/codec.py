"""The group protocol's opaque bytes: a member's subscription and its assignment.

The broker passes both through without reading them (``JoinGroupProtocol.metadata``
and ``SyncGroupAssignment.assignment``); every Ferry consumer of a group reads
and writes them with this module. Both are msgpack maps following the wire
protocol's conventions (PROTOCOL.md section 4): unknown keys are ignored, an
omitted key takes its default, so fields can be added within a version.

Subscription (one per assignor offered in JoinGroup)::

    {"version": 1,
     "topics": [str],                  # subscribed topics, sorted
     "owned": {str: [int]},            # partitions held in `generation`, by topic, sorted
     "generation": int,                # -1: none
     "user_data": bytes | nil}         # the assignor's own, opaque

Assignment (one per member in the leader's SyncGroup)::

    {"version": 1,
     "assigned": {str: [int]},         # partitions by topic, sorted
     "user_data": bytes | nil}

An empty byte string decodes as the empty subscription or assignment (the
coordinator hands ``b""`` to members the leader gave nothing). Encoding is
deterministic: the same subscription always gives the same bytes, which the
broker relies on when it compares a restarted static member's metadata.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Mapping

import msgpack

from ..structs import TopicPartition

VERSION = 1


class GroupFormatError(ValueError):
    """Bytes that are not a subscription or assignment of this format."""


@dataclasses.dataclass(frozen=True)
class Subscription:
    """What one member asks for: its topics, what it holds, and the assignor's data.

    ``member_id`` and ``group_instance_id`` are not encoded: the leader fills
    them in from the JoinGroup response.
    """

    topics: tuple[str, ...] = ()
    owned: frozenset[TopicPartition] = frozenset()
    generation: int = -1
    user_data: bytes | None = None
    member_id: str = ""
    group_instance_id: str | None = None

    def sort_key(self) -> str:
        """Static members sort by instance id (stable across restarts), others by member id."""
        return self.group_instance_id or self.member_id


@dataclasses.dataclass(frozen=True)
class Assignment:
    partitions: frozenset[TopicPartition] = frozenset()
    user_data: bytes | None = None


def _by_topic(tps: Iterable[TopicPartition]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for tp in sorted(tps):
        out.setdefault(tp.topic, []).append(tp.partition)
    return out


def _from_topics(value, what: str) -> frozenset[TopicPartition]:
    if value is None:
        return frozenset()
    if not isinstance(value, Mapping):
        raise GroupFormatError(f"{what} must be a map of topic to partitions")
    out = set()
    for topic, parts in value.items():
        if not isinstance(topic, str) or not isinstance(parts, (list, tuple)):
            raise GroupFormatError(f"{what} must map topic names to partition lists")
        for p in parts:
            if type(p) is not int or p < 0:
                raise GroupFormatError(f"{what}: bad partition {p!r} of {topic!r}")
            out.add(TopicPartition(topic, p))
    return frozenset(out)


def _unpack(data: bytes, what: str) -> dict:
    try:
        value = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated classes
        raise GroupFormatError(f"{what} is not msgpack: {exc}") from None
    if not isinstance(value, dict):
        raise GroupFormatError(f"{what} must be a msgpack map")
    version = value.get("version", VERSION)
    if type(version) is not int or version < 1:
        raise GroupFormatError(f"{what}: bad version {version!r}")
    return value


def _user_data(value, what: str) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    raise GroupFormatError(f"{what}: user_data must be bytes or nil")


def encode_subscription(sub: Subscription) -> bytes:
    return msgpack.packb({
        "version": VERSION,
        "topics": sorted(set(sub.topics)),
        "owned": _by_topic(sub.owned),
        "generation": sub.generation,
        "user_data": sub.user_data,
    }, use_bin_type=True)


def decode_subscription(data: bytes, member_id: str = "", group_instance_id: str | None = None) -> Subscription:
    """The Subscription in ``data``; raises GroupFormatError if it is not one."""
    if not data:
        return Subscription(member_id=member_id, group_instance_id=group_instance_id)
    value = _unpack(data, "subscription")
    topics = value.get("topics", [])
    if not isinstance(topics, list) or not all(isinstance(t, str) for t in topics):
        raise GroupFormatError("subscription: topics must be a list of names")
    generation = value.get("generation", -1)
    if type(generation) is not int:
        raise GroupFormatError("subscription: generation must be an int")
    return Subscription(
        topics=tuple(sorted(set(topics))),
        owned=_from_topics(value.get("owned"), "subscription owned"),
        generation=generation,
        user_data=_user_data(value.get("user_data"), "subscription"),
        member_id=member_id,
        group_instance_id=group_instance_id,
    )


def encode_assignment(assignment: Assignment) -> bytes:
    return msgpack.packb({
        "version": VERSION,
        "assigned": _by_topic(assignment.partitions),
        "user_data": assignment.user_data,
    }, use_bin_type=True)


def decode_assignment(data: bytes) -> Assignment:
    """The Assignment in ``data``; raises GroupFormatError if it is not one."""
    if not data:
        return Assignment()
    value = _unpack(data, "assignment")
    return Assignment(
        partitions=_from_topics(value.get("assigned"), "assignment"),
        user_data=_user_data(value.get("user_data"), "assignment"),
    )
