"""Consumer group administration: the group half of AsyncAdmin and Admin.

Groups are listed, described and deleted through the group coordinator;
lag is the log end offset minus the committed offset; offsets of a group
with no members (Empty) can be set from outside it, which is how
``ferry group reset-offsets`` works: an OffsetCommit with generation -1,
which the coordinator refuses (NON_EMPTY_GROUP) while the group has members.
"""

from __future__ import annotations

import asyncio
import time
from typing import Iterable, Mapping, NamedTuple

from protocol.errors import ApiError, ErrorCode, GroupIdNotFoundError, NetworkError, NonEmptyGroupError, \
    RetriableError, UnknownTopicOrPartitionError
from protocol.group_messages import (
    DeleteGroupsRequest,
    DescribeGroupsRequest,
    FindCoordinatorRequest,
    ListGroupsRequest,
    OffsetCommitPartition,
    OffsetCommitRequest,
    OffsetDeletePartition,
    OffsetDeleteRequest,
    OffsetFetchPartition,
    OffsetFetchRequest,
)
from protocol.messages import EARLIEST, LATEST, Message

from ..cluster import Cluster
from ..errors import FerryTimeoutError, NoBrokersAvailable
from ..offsets import list_offsets
from ..structs import OffsetAndMetadata, TopicPartition
from .codec import GroupFormatError, decode_assignment
from .link import COORDINATOR_ERRORS

INACTIVE = ("Empty", "Dead")


class GroupListing(NamedTuple):
    group_id: str
    state: str
    protocol_type: str


class MemberDescription(NamedTuple):
    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    assignment: frozenset  # of TopicPartition


class GroupDescription(NamedTuple):
    group_id: str
    state: str  # Empty, PreparingRebalance, CompletingRebalance, Stable or Dead
    protocol_type: str
    protocol: str  # the assignor of the current generation
    generation: int
    leader: str
    members: list  # [MemberDescription]
    coordinator: int  # node id


class PartitionLag(NamedTuple):
    """One partition of a group: where the group is, where the log ends, and who reads it."""

    topic: str
    partition: int
    committed: int | None  # None: nothing committed
    metadata: str
    log_start_offset: int
    log_end_offset: int
    lag: int  # log end - committed; without a commit, the records in the log
    member_id: str | None
    client_id: str | None
    client_host: str | None


class OffsetReset(NamedTuple):
    topic: str
    partition: int
    current: int | None
    new: int


def _raise(code: int, what: str) -> None:
    if code:
        cls = ApiError.for_code(code)
        raise cls(f"{what}: {cls.description}")


class AsyncGroupAdmin:
    """Group methods of AsyncAdmin (needs ``cluster``, ``_timeout_ms`` and ``_retry_backoff``)."""

    cluster: Cluster
    _timeout_ms: int
    _retry_backoff: float

    async def _coordinator_send(self, group_id: str, request: Message) -> Message:
        """Send ``request`` to ``group_id``'s coordinator, retrying while it moves or loads."""
        deadline = time.monotonic() + self._timeout_ms / 1000
        while True:
            try:
                found = await self.cluster.send(None, FindCoordinatorRequest(key=group_id))
                _raise(found.error_code, f"no coordinator for group {group_id!r}")
                if found.node_id not in self.cluster.metadata.brokers:
                    await self.cluster.refresh([])
                resp = await self.cluster.send(found.node_id, request)
                self.coordinators = {**getattr(self, "coordinators", {}), group_id: found.node_id}
                code = getattr(resp, "error_code", 0)
                if code in COORDINATOR_ERRORS:
                    _raise(code, f"group {group_id!r}")
                return resp
            except (NetworkError, RetriableError, NoBrokersAvailable) as exc:
                if time.monotonic() >= deadline:
                    raise FerryTimeoutError(f"group {group_id!r}: {exc}") from None
                await asyncio.sleep(self._retry_backoff)

    async def list_groups(self, states: Iterable[str] | None = None) -> list[GroupListing]:
        """Every group the brokers know (those with members or committed offsets), sorted."""
        await self.cluster.refresh([])
        request = ListGroupsRequest(states_filter=tuple(states) if states is not None else None)
        found: dict[str, GroupListing] = {}
        for node in sorted(self.cluster.metadata.brokers) or [None]:
            resp = await self.cluster.send(node, request)
            _raise(resp.error_code, "ListGroups")
            for g in resp.groups:
                found[g.group_id] = GroupListing(g.group_id, g.state, g.protocol_type)
        return [found[k] for k in sorted(found)]

    async def describe_groups(self, group_ids: "str | Iterable[str]") -> list[GroupDescription]:
        """State, protocol, generation and members (with their assignments) of each group.

        Raises GroupIdNotFoundError for a group the broker does not know.
        """
        if isinstance(group_ids, str):
            group_ids = [group_ids]
        out = []
        for gid in group_ids:
            resp = await self._coordinator_send(gid, DescribeGroupsRequest(groups=(gid,)))
            for g in resp.groups:
                if g.error_code == ErrorCode.GROUP_ID_NOT_FOUND:
                    raise GroupIdNotFoundError(f"group {gid!r} does not exist")
                _raise(g.error_code, f"group {gid!r}")
                members = []
                for mb in g.members:
                    try:
                        assigned = decode_assignment(mb.assignment).partitions if g.protocol_type == "consumer" \
                            else frozenset()
                    except GroupFormatError:
                        assigned = frozenset()
                    members.append(MemberDescription(mb.member_id, mb.group_instance_id, mb.client_id,
                                                     mb.client_host, assigned))
                coordinator = getattr(self, "coordinators", {}).get(gid, -1)
                out.append(GroupDescription(g.group_id, g.state, g.protocol_type, g.protocol, g.generation_id,
                                            g.leader, members, coordinator))
        return out

    async def delete_groups(self, group_ids: "str | Iterable[str]") -> None:
        """Delete groups without members, with their committed offsets.

        Raises NonEmptyGroupError (it has members) or GroupIdNotFoundError.
        """
        if isinstance(group_ids, str):
            group_ids = [group_ids]
        for gid in group_ids:
            resp = await self._coordinator_send(gid, DeleteGroupsRequest(groups=(gid,)))
            for r in resp.results:
                _raise(r.error_code, f"cannot delete group {r.group_id!r}")

    async def list_consumer_group_offsets(
        self, group_id: str, partitions: Iterable[TopicPartition] | None = None,
    ) -> dict[TopicPartition, OffsetAndMetadata]:
        """{tp: OffsetAndMetadata} of what the group committed (only partitions with a commit)."""
        parts = None if partitions is None else tuple(OffsetFetchPartition(*tp) for tp in partitions)
        resp = await self._coordinator_send(group_id, OffsetFetchRequest(group_id=group_id, partitions=parts))
        _raise(resp.error_code, f"group {group_id!r}")
        out = {}
        for p in resp.partitions:
            _raise(p.error_code, f"group {group_id!r} {p.topic}/{p.partition}")
            if p.offset >= 0:
                out[TopicPartition(p.topic, p.partition)] = OffsetAndMetadata(p.offset, p.metadata)
        return out

    async def alter_consumer_group_offsets(self, group_id: str, offsets: Mapping) -> None:
        """Set committed offsets ({tp: offset or OffsetAndMetadata}) of a group without members.

        Raises NonEmptyGroupError while the group has members.
        """
        parts = []
        for tp, value in sorted(offsets.items()):
            om = value if isinstance(value, OffsetAndMetadata) else OffsetAndMetadata(int(value), "")
            parts.append(OffsetCommitPartition(tp[0], tp[1], om.offset, om.metadata))
        resp = await self._coordinator_send(group_id, OffsetCommitRequest(
            group_id=group_id, generation_id=-1, member_id="", partitions=tuple(parts)))
        for p in resp.partitions:
            if p.error_code == ErrorCode.NON_EMPTY_GROUP:
                raise NonEmptyGroupError(f"group {group_id!r} has members: stop its consumers first")
            _raise(p.error_code, f"commit for group {group_id!r} {p.topic}/{p.partition}")

    async def delete_consumer_group_offsets(self, group_id: str, partitions: Iterable[TopicPartition]) -> None:
        """Forget the committed offsets of some partitions of a group without members."""
        resp = await self._coordinator_send(group_id, OffsetDeleteRequest(
            group_id=group_id, partitions=tuple(OffsetDeletePartition(*tp) for tp in partitions)))
        _raise(resp.error_code, f"group {group_id!r}")
        for p in resp.partitions:
            _raise(p.error_code, f"group {group_id!r} {p.topic}/{p.partition}")

    async def _log_bounds(self, tps: list[TopicPartition]) -> tuple[dict, dict]:
        timeout = self._timeout_ms / 1000
        starts = await list_offsets(self.cluster, {tp: EARLIEST for tp in tps}, timeout, self._retry_backoff)
        ends = await list_offsets(self.cluster, {tp: LATEST for tp in tps}, timeout, self._retry_backoff)
        return {tp: o for tp, (o, _) in starts.items()}, {tp: o for tp, (o, _) in ends.items()}

    async def describe_group_lag(self, group_id: str,
                                 description: GroupDescription | None = None) -> list[PartitionLag]:
        """Per partition the group commits to or is assigned: committed offset, log
        start and end, lag, and the member reading it. Sorted by topic and partition."""
        if description is None:
            (description,) = await self.describe_groups([group_id])
        committed = await self.list_consumer_group_offsets(group_id)
        owner = {tp: mb for mb in description.members for tp in mb.assignment}
        tps = sorted(set(committed) | set(owner))
        await self.cluster.refresh(sorted({tp.topic for tp in tps}))
        tps = [tp for tp in tps if tp.partition in self.cluster.metadata.leaders.get(tp.topic, {})]
        if not tps:
            return []
        starts, ends = await self._log_bounds(tps)
        rows = []
        for tp in tps:
            om = committed.get(tp)
            mb = owner.get(tp)
            start, end = starts[tp], ends[tp]
            lag = max(0, end - om.offset) if om is not None else max(0, end - start)
            rows.append(PartitionLag(tp.topic, tp.partition, om.offset if om else None, om.metadata if om else "",
                                     start, end, lag, mb.member_id if mb else None,
                                     mb.client_id if mb else None, mb.client_host if mb else None))
        return rows

    async def reset_offsets(
        self, group_id: str, topics: Iterable, *, to: str | None = None, offset: int | None = None,
        timestamp_ms: int | None = None, shift_by: int | None = None, execute: bool = False,
    ) -> list[OffsetReset]:
        """Plan, and with ``execute`` apply, new committed offsets for a group without members.

        ``topics``: names (every partition) or (topic, [partitions]) pairs.
        Exactly one of ``to`` ("earliest" or "latest"), ``offset``,
        ``timestamp_ms`` (the first record at or after it; the log end if none)
        or ``shift_by`` (from the committed offset, or the log start without
        one). New offsets are clamped to [log start, log end], as Kafka's tool
        does. Raises NonEmptyGroupError if the group is active,
        UnknownTopicOrPartitionError for a missing topic or partition.
        """
        given = [x is not None for x in (to, offset, timestamp_ms, shift_by)]
        if sum(given) != 1:
            raise ValueError("give exactly one of to, offset, timestamp_ms and shift_by")
        if to is not None and to not in ("earliest", "latest"):
            raise ValueError(f"to must be 'earliest' or 'latest', not {to!r}")
        try:
            (description,) = await self.describe_groups([group_id])
            state = description.state
        except GroupIdNotFoundError:
            state = "Dead"
        if state not in INACTIVE:
            raise NonEmptyGroupError(f"offsets can only be reset while group {group_id!r} is inactive "
                                     f"(Empty), but it is {state}: stop its consumers first")
        tps = await self._expand(topics)
        committed = await self.list_consumer_group_offsets(group_id, tps)
        starts, ends = await self._log_bounds(tps)
        if timestamp_ms is not None:
            from ..fetcher import refine_to_records

            targets = {tp: timestamp_ms for tp in tps}
            found = await list_offsets(self.cluster, targets, self._timeout_ms / 1000, self._retry_backoff)
            found = await refine_to_records(self.cluster, found, targets, self._timeout_ms / 1000)
        plan = []
        for tp in tps:
            current = committed[tp].offset if tp in committed else None
            if to == "earliest":
                new = starts[tp]
            elif to == "latest":
                new = ends[tp]
            elif offset is not None:
                new = offset
            elif timestamp_ms is not None:
                new = found[tp][0] if found[tp][0] >= 0 else ends[tp]
            else:
                new = (current if current is not None else starts[tp]) + shift_by
            plan.append(OffsetReset(tp.topic, tp.partition, current, min(max(new, starts[tp]), ends[tp])))
        if execute and plan:
            await self.alter_consumer_group_offsets(
                group_id, {TopicPartition(r.topic, r.partition): r.new for r in plan})
        return plan

    async def _expand(self, topics: Iterable) -> list[TopicPartition]:
        wanted: dict[str, list[int] | None] = {}
        for item in topics:
            if isinstance(item, str):
                wanted[item] = None
            else:
                name, parts = item
                wanted[name] = sorted(set(parts)) if parts else None
        await self.cluster.refresh(sorted(wanted))
        leaders = self.cluster.metadata.leaders
        out = []
        for name, parts in sorted(wanted.items()):
            if name not in leaders:
                raise UnknownTopicOrPartitionError(f"topic {name!r} does not exist")
            for p in parts if parts is not None else sorted(leaders[name]):
                if p not in leaders[name]:
                    raise UnknownTopicOrPartitionError(f"topic {name!r} has no partition {p}")
                out.append(TopicPartition(name, p))
        return out


class GroupAdmin:
    """Group methods of the blocking Admin (needs ``_thread`` and ``_admin``)."""

    def list_groups(self, states: Iterable[str] | None = None) -> list[GroupListing]:
        return self._thread.run(self._admin.list_groups(states))

    def describe_groups(self, group_ids) -> list[GroupDescription]:
        return self._thread.run(self._admin.describe_groups(group_ids))

    def delete_groups(self, group_ids) -> None:
        return self._thread.run(self._admin.delete_groups(group_ids))

    def list_consumer_group_offsets(self, group_id: str, partitions=None) -> dict:
        return self._thread.run(self._admin.list_consumer_group_offsets(group_id, partitions))

    def alter_consumer_group_offsets(self, group_id: str, offsets: Mapping) -> None:
        return self._thread.run(self._admin.alter_consumer_group_offsets(group_id, offsets))

    def delete_consumer_group_offsets(self, group_id: str, partitions) -> None:
        return self._thread.run(self._admin.delete_consumer_group_offsets(group_id, partitions))

    def describe_group_lag(self, group_id: str, description: GroupDescription | None = None) -> list[PartitionLag]:
        return self._thread.run(self._admin.describe_group_lag(group_id, description))

    def reset_offsets(self, group_id: str, topics, **how) -> list[OffsetReset]:
        return self._thread.run(self._admin.reset_offsets(group_id, topics, **how))
