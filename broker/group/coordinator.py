"""The group coordinator: every group of this broker, and their committed offsets.

Theory of operation
-------------------
``GroupCoordinator`` is synchronous and sans-IO apart from the offsets log it
is given (``OffsetsTopic`` in the broker, a list in tests). It validates
requests, routes membership requests to the ``Group`` state machine of each
group (see ``group`` for the rebalance protocol), and keeps the table of
committed offsets (``OffsetCache``).

Time comes from the injected ``clock`` (seconds, like ``time.time``); timers
advance only when ``tick()`` is called, which the broker does every 100 ms.
So tests drive the whole coordinator with a fake clock and no sleeps.

Offsets are written before they are visible: a commit is checked against
the group's generation, appended to ``__consumer_offsets``, applied to the
table, and the log to fsync is handed back; the caller answers once the
fsync is done (acks=all). Deletions and expiry append tombstones the same
way. Since every change is applied right after its append, in one thread,
the table always equals the last record per key, which is also what the
log replays to at start-up (``load``).

A commit with generation -1 and no member id is a commit from outside the
group protocol (a standalone consumer, or an administrator resetting
offsets): it is accepted only while the group has no members; otherwise it
gets NON_EMPTY_GROUP. Commits from members are fenced by generation.

Group membership is not persisted: after a restart every member gets
UNKNOWN_MEMBER_ID and joins again; committed offsets are kept.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from typing import Callable, Iterable, Protocol, Sequence

from protocol import group_messages as m
from protocol.errors import ApiError, ErrorCode
from protocol.messages import replace

from ..storage import StorageError
from .group import Group
from .member import Deferred, GroupState
from .offsets import CommittedOffset, Key, OffsetCache, encode_key, encode_value

log = logging.getLogger("ferry.broker.group")

Record = tuple[bytes, "bytes | None"]


class Flushable(Protocol):
    def flush(self) -> None: ...


class OffsetsLog(Protocol):
    def append(self, records: Sequence[Record], now_ms: int) -> Flushable: ...

    def read_all(self) -> Iterable[Record]: ...


@dataclasses.dataclass(frozen=True)
class GroupConfig:
    """The broker's group settings (see ``BrokerConfig`` for their meaning)."""

    min_session_timeout_ms: int = 6000
    max_session_timeout_ms: int = 1800000
    initial_rebalance_delay_ms: int = 300
    offsets_retention_ms: int = 10080 * 60000
    offsets_retention_check_interval_ms: int = 600000
    offset_metadata_max_bytes: int = 4096


def _code(exc: BaseException) -> int:
    if isinstance(exc, ApiError):
        return int(exc.code)
    return int(ErrorCode.STORAGE_ERROR)


class GroupCoordinator:
    """Every group and committed offset of one broker. Not thread-safe."""

    def __init__(
        self,
        config: GroupConfig,
        offsets_log: OffsetsLog,
        *,
        clock: Callable[[], float] = time.time,
        partition_exists: Callable[[str, int], bool] | None = None,
    ) -> None:
        self.config = config
        self.log = offsets_log
        self.clock = clock
        self.partition_exists = partition_exists or (lambda topic, partition: True)
        self.groups: dict[str, Group] = {}
        self.offsets = OffsetCache()
        self._next_expiry_check = 0

    def now(self) -> int:
        return int(self.clock() * 1000)

    def load(self) -> int:
        """Rebuild the offset table from the log. Returns the records applied; blocks on disk."""
        return self.offsets.load(self.log.read_all())

    # ------------------------------------------------------------ membership

    def join_group(self, req: m.JoinGroupRequest, client_id: str = "", client_host: str = "") -> Deferred:
        """JoinGroup; the Deferred resolves with the JoinGroupResponse (see ``Group.join``)."""
        cfg = self.config
        if not req.group_id:
            return Deferred.resolved(m.JoinGroupResponse(error_code=int(ErrorCode.INVALID_GROUP_ID)))
        if not cfg.min_session_timeout_ms <= req.session_timeout_ms <= cfg.max_session_timeout_ms:
            return Deferred.resolved(m.JoinGroupResponse(
                error_code=int(ErrorCode.INVALID_SESSION_TIMEOUT), member_id=req.member_id,
                error_message=f"session_timeout_ms must be between {cfg.min_session_timeout_ms} "
                              f"and {cfg.max_session_timeout_ms}",
            ))
        if req.rebalance_timeout_ms <= 0:
            req = replace(req, rebalance_timeout_ms=req.session_timeout_ms)
        group = self.groups.get(req.group_id)
        if group is None:
            if req.member_id:
                return Deferred.resolved(m.JoinGroupResponse(
                    error_code=int(ErrorCode.UNKNOWN_MEMBER_ID), member_id=req.member_id))
            group = self.groups[req.group_id] = Group(
                req.group_id, self.now(), initial_rebalance_delay_ms=cfg.initial_rebalance_delay_ms)
        prefix = req.group_instance_id or client_id or "member"
        return group.join(self.now(), req, client_id, client_host, lambda: f"{prefix}-{uuid.uuid4()}")

    def sync_group(self, req: m.SyncGroupRequest) -> Deferred:
        """SyncGroup; the Deferred resolves with the SyncGroupResponse (see ``Group.sync``)."""
        if not req.group_id:
            return Deferred.resolved(m.SyncGroupResponse(error_code=int(ErrorCode.INVALID_GROUP_ID)))
        group = self.groups.get(req.group_id)
        if group is None:
            return Deferred.resolved(m.SyncGroupResponse(error_code=int(ErrorCode.UNKNOWN_MEMBER_ID)))
        return group.sync(self.now(), req)

    def heartbeat(self, req: m.HeartbeatRequest) -> m.HeartbeatResponse:
        group = self.groups.get(req.group_id)
        if not req.group_id:
            code = ErrorCode.INVALID_GROUP_ID
        elif group is None:
            code = ErrorCode.UNKNOWN_MEMBER_ID
        else:
            code = group.heartbeat(self.now(), req)
        return m.HeartbeatResponse(error_code=int(code))

    def leave_group(self, req: m.LeaveGroupRequest) -> m.LeaveGroupResponse:
        if not req.group_id:
            return m.LeaveGroupResponse(error_code=int(ErrorCode.INVALID_GROUP_ID))
        group = self.groups.get(req.group_id)
        results = []
        for lm in req.members:
            if group is None:
                code = ErrorCode.UNKNOWN_MEMBER_ID
            else:
                code = group.leave(self.now(), lm.member_id, lm.group_instance_id)
            results.append(m.LeaveGroupMemberResponse(lm.member_id, lm.group_instance_id, int(code)))
        return m.LeaveGroupResponse(members=tuple(results))

    # ------------------------------------------------------------ inspection

    def describe_groups(self, req: m.DescribeGroupsRequest) -> m.DescribeGroupsResponse:
        out = []
        for gid in req.groups:
            group = self.groups.get(gid)
            if group is not None:
                out.append(group.describe())
            elif self.offsets.has_group(gid):
                out.append(m.DescribedGroup(gid, state=GroupState.EMPTY.value))
            else:
                out.append(m.DescribedGroup(gid, error_code=int(ErrorCode.GROUP_ID_NOT_FOUND),
                                            state=GroupState.DEAD.value))
        return m.DescribeGroupsResponse(groups=tuple(out))

    def list_groups(self, req: m.ListGroupsRequest) -> m.ListGroupsResponse:
        listed = {gid: m.ListedGroup(gid, "", GroupState.EMPTY.value) for gid in self.offsets.groups()}
        for gid, group in self.groups.items():
            listed[gid] = m.ListedGroup(gid, group.protocol_type or "", group.state.value)
        wanted = set(req.states_filter) if req.states_filter else None
        return m.ListGroupsResponse(groups=tuple(
            g for gid, g in sorted(listed.items()) if wanted is None or g.state in wanted
        ))

    # ------------------------------------------------------------ offsets

    def _commit_check(self, req: m.OffsetCommitRequest) -> ErrorCode:
        if not req.group_id:
            return ErrorCode.INVALID_GROUP_ID
        group = self.groups.get(req.group_id)
        if req.generation_id < 0:
            if group is None or group.is_empty:
                return ErrorCode.NONE
            if not req.member_id and req.group_instance_id is None:
                return ErrorCode.NON_EMPTY_GROUP
        if group is None:
            return ErrorCode.UNKNOWN_MEMBER_ID
        return group.check_commit(self.now(), req.member_id, req.group_instance_id, req.generation_id)

    def _partition_check(self, p: m.OffsetCommitPartition) -> ErrorCode:
        if not self.partition_exists(p.topic, p.partition):
            return ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
        if len(p.metadata.encode()) > self.config.offset_metadata_max_bytes:
            return ErrorCode.OFFSET_METADATA_TOO_LARGE
        if p.offset < 0:
            return ErrorCode.INVALID_REQUEST
        return ErrorCode.NONE

    def commit_offsets(self, req: m.OffsetCommitRequest) -> tuple[m.OffsetCommitResponse, Flushable | None]:
        """Check, append and apply an OffsetCommit.

        Returns the response and the log to fsync before sending it (None if
        nothing was written). Blocks on the append; never raises for bad input
        or a failed write (those are error codes in the response).
        """
        now = self.now()
        group_code = self._commit_check(req)
        expire = now + req.retention_time_ms if req.retention_time_ms >= 0 else -1
        codes: list[int] = []
        items: list[tuple[Key, CommittedOffset]] = []
        for p in req.partitions:
            code = group_code or self._partition_check(p)
            codes.append(int(code))
            if not code:
                items.append(((req.group_id, p.topic, p.partition),
                              CommittedOffset(p.offset, p.metadata, now, expire)))
        flushable = None
        if items:
            try:
                flushable = self._write(items, now)
            except (StorageError, ApiError) as exc:
                codes = [c or _code(exc) for c in codes]
        return m.OffsetCommitResponse(partitions=tuple(
            m.OffsetCommitPartitionResponse(p.topic, p.partition, c) for p, c in zip(req.partitions, codes)
        )), flushable

    def _write(self, items: Sequence[tuple[Key, CommittedOffset | None]], now: int) -> Flushable:
        """Append the records, then apply them to the table. Raises StorageError or ApiError."""
        flushable = self.log.append([(encode_key(k), encode_value(v)) for k, v in items], now)
        for key, value in items:
            self.offsets.apply(key, value)
        return flushable

    def fetch_offsets(self, req: m.OffsetFetchRequest) -> m.OffsetFetchResponse:
        if not req.group_id:
            return m.OffsetFetchResponse(error_code=int(ErrorCode.INVALID_GROUP_ID))
        committed = self.offsets.group(req.group_id)
        if req.partitions is None:
            wanted = sorted(committed)
        else:
            wanted = [(p.topic, p.partition) for p in req.partitions]
        out = []
        for topic, partition in wanted:
            entry = committed.get((topic, partition))
            if entry is None:
                out.append(m.OffsetFetchPartitionResponse(topic, partition))
            else:
                out.append(m.OffsetFetchPartitionResponse(topic, partition, entry.offset, entry.metadata))
        return m.OffsetFetchResponse(partitions=tuple(out))

    def delete_groups(self, req: m.DeleteGroupsRequest) -> tuple[m.DeleteGroupsResponse, Flushable | None]:
        """DeleteGroups: groups without members lose their state and offsets (tombstones).

        Returns the response and the log to fsync before sending it.
        """
        codes: dict[str, int] = {}
        items: list[tuple[Key, None]] = []
        for gid in req.groups:
            group = self.groups.get(gid)
            if not gid:
                codes[gid] = int(ErrorCode.INVALID_GROUP_ID)
            elif group is not None and not group.is_empty:
                codes[gid] = int(ErrorCode.NON_EMPTY_GROUP)
            elif group is None and not self.offsets.has_group(gid):
                codes[gid] = int(ErrorCode.GROUP_ID_NOT_FOUND)
            else:
                codes[gid] = 0
                items.extend(((gid, t, p), None) for t, p in sorted(self.offsets.group(gid)))
        flushable = None
        if items:
            try:
                flushable = self._write(items, self.now())
            except (StorageError, ApiError) as exc:
                failed = {k[0] for k, _ in items}
                codes.update({gid: _code(exc) for gid in failed})
        for gid, code in codes.items():
            if code == 0:
                self.groups.pop(gid, None)
        return m.DeleteGroupsResponse(results=tuple(
            m.DeleteGroupResult(gid, codes[gid]) for gid in req.groups
        )), flushable

    def delete_offsets(self, req: m.OffsetDeleteRequest) -> tuple[m.OffsetDeleteResponse, Flushable | None]:
        """OffsetDelete: drop some committed offsets of a group without members."""
        group = self.groups.get(req.group_id)
        if not req.group_id:
            code = ErrorCode.INVALID_GROUP_ID
        elif group is not None and not group.is_empty:
            code = ErrorCode.NON_EMPTY_GROUP
        elif group is None and not self.offsets.has_group(req.group_id):
            code = ErrorCode.GROUP_ID_NOT_FOUND
        else:
            code = ErrorCode.NONE
        if code:
            return m.OffsetDeleteResponse(error_code=int(code)), None
        items = [((req.group_id, p.topic, p.partition), None) for p in req.partitions
                 if self.offsets.get(req.group_id, p.topic, p.partition) is not None]
        part_code, flushable = 0, None
        if items:
            try:
                flushable = self._write(items, self.now())
            except (StorageError, ApiError) as exc:
                part_code = _code(exc)
        return m.OffsetDeleteResponse(partitions=tuple(
            m.OffsetDeletePartitionResponse(p.topic, p.partition, part_code) for p in req.partitions
        )), flushable

    # ------------------------------------------------------------ timers

    def tick(self) -> None:
        """Advance every group's timers to now; expire offsets when the check interval is due."""
        now = self.now()
        for group in list(self.groups.values()):
            group.tick(now)
        if now >= self._next_expiry_check:
            self._next_expiry_check = now + self.config.offsets_retention_check_interval_ms
            self.expire_offsets(now)

    def expire_offsets(self, now: int | None = None) -> int:
        """Tombstone the expired offsets of groups without members, and forget
        empty groups with nothing committed. Returns the number of offsets expired.

        The tombstones are not fsynced: if they are lost, the offsets expire again.
        """
        now = self.now() if now is None else now
        expired: list[tuple[Key, None]] = []
        for gid in self.offsets.groups():
            group = self.groups.get(gid)
            if group is not None and not group.is_empty:
                continue
            since = group.state_since if group is not None else None
            expired.extend((key, None) for key in self.offsets.expired(
                gid, now, self.config.offsets_retention_ms, since))
        if expired:
            try:
                self._write(expired, now)
            except (StorageError, ApiError) as exc:
                log.error("cannot expire committed offsets: %s", exc)
                return 0
            log.info("expired %d committed offset(s) of groups without members", len(expired))
        for gid, group in list(self.groups.items()):
            if group.state is GroupState.EMPTY and not group.pending and not self.offsets.has_group(gid):
                del self.groups[gid]
        return len(expired)

    def shutdown(self) -> None:
        """Answer every waiting JoinGroup and SyncGroup with COORDINATOR_NOT_AVAILABLE."""
        for group in self.groups.values():
            group.shutdown()
