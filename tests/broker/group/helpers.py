"""A group coordinator on a fake clock and an in-memory offsets log, and shortcuts to drive it."""

from __future__ import annotations

from protocol import group_messages as m
from protocol.errors import ErrorCode

from broker.group import Deferred, GroupConfig, GroupCoordinator

START_MS = 1_700_000_000_000
PROTOCOLS = (m.JoinGroupProtocol("range", b"subscription"),)


class FakeClock:
    """``time.time`` for tests: seconds, moved only by ``advance``."""

    def __init__(self, ms: int = START_MS) -> None:
        self.ms = ms

    def __call__(self) -> float:
        return self.ms / 1000

    def advance(self, ms: int) -> None:
        self.ms += ms


class MemoryLog:
    """The offsets log as a list of (key, value) records; ``fail`` makes appends raise it."""

    def __init__(self) -> None:
        self.records: list[tuple[bytes, bytes | None]] = []
        self.flushes = 0
        self.fail: Exception | None = None

    def append(self, records, now_ms):
        if self.fail is not None:
            raise self.fail
        self.records.extend(records)
        return self

    def flush(self) -> None:
        self.flushes += 1

    def read_all(self):
        return list(self.records)


def make(clock=None, log=None, **settings) -> GroupCoordinator:
    """A coordinator with test-friendly bounds (session timeouts from 10 ms, no initial delay)."""
    config = dict(min_session_timeout_ms=10, initial_rebalance_delay_ms=0)
    config.update(settings)
    return GroupCoordinator(GroupConfig(**config), log if log is not None else MemoryLog(),
                            clock=clock or FakeClock())


def join_request(group="g", member_id="", instance=None, session=10_000, rebalance=30_000,
                 protocols=PROTOCOLS, protocol_type="consumer") -> m.JoinGroupRequest:
    return m.JoinGroupRequest(group_id=group, session_timeout_ms=session, rebalance_timeout_ms=rebalance,
                              member_id=member_id, group_instance_id=instance,
                              protocol_type=protocol_type, protocols=protocols)


def join(coord, **kw) -> Deferred:
    return coord.join_group(join_request(**kw), client_id="app", client_host="10.0.0.1")


def new_member(coord, **kw) -> tuple[str, Deferred]:
    """Join as a new dynamic member: MEMBER_ID_REQUIRED, then join again with the id given."""
    first = join(coord, **kw)
    assert first.done and first.result.error_code == ErrorCode.MEMBER_ID_REQUIRED
    member_id = first.result.member_id
    return member_id, join(coord, member_id=member_id, **kw)


def sync(coord, member_id, generation, assignments=None, group="g", instance=None) -> Deferred:
    given = tuple(m.SyncGroupAssignment(mid, a) for mid, a in (assignments or {}).items())
    return coord.sync_group(m.SyncGroupRequest(group_id=group, generation_id=generation, member_id=member_id,
                                               group_instance_id=instance, assignments=given))


def heartbeat(coord, member_id, generation, group="g", instance=None) -> int:
    return coord.heartbeat(m.HeartbeatRequest(group_id=group, generation_id=generation, member_id=member_id,
                                              group_instance_id=instance)).error_code


def commit(coord, offsets, group="g", generation=-1, member_id="", instance=None, retention_ms=-1):
    """Commit {(topic, partition): offset}; returns the per-partition error codes."""
    req = m.OffsetCommitRequest(
        group_id=group, generation_id=generation, member_id=member_id, group_instance_id=instance,
        retention_time_ms=retention_ms,
        partitions=tuple(m.OffsetCommitPartition(t, p, o, f"meta-{o}") for (t, p), o in offsets.items()),
    )
    response, _ = coord.commit_offsets(req)
    return [p.error_code for p in response.partitions]


def fetch(coord, group="g", partitions=None) -> dict[tuple[str, int], int]:
    wanted = None if partitions is None else tuple(m.OffsetFetchPartition(t, p) for t, p in partitions)
    response = coord.fetch_offsets(m.OffsetFetchRequest(group_id=group, partitions=wanted))
    return {(p.topic, p.partition): p.offset for p in response.partitions}


def state(coord, group="g") -> str:
    return coord.describe_groups(m.DescribeGroupsRequest(groups=(group,))).groups[0].state


def stable_group(coord, n: int, clock: FakeClock | None = None, **kw) -> tuple[list[str], int]:
    """Form a Stable group of ``n`` dynamic members (no initial delay); returns (member ids, generation)."""
    ids = []
    pending = []
    for _ in range(n):
        mid, d = new_member(coord, **kw)
        ids.append(mid)
        pending.append(d)
        if n > 1 and len(ids) > 1:
            # the earlier members learn of the rebalance and rejoin
            for i, other in enumerate(ids[:-1]):
                if pending[i].done:
                    pending[i] = join(coord, member_id=other, **kw)
    assert all(d.done for d in pending), pending
    results = [d.result for d in pending]
    generation = results[0].generation_id
    assert {r.generation_id for r in results} == {generation}
    leader = results[0].leader
    syncs = [sync(coord, mid, generation, {x: x.encode() for x in ids} if mid == leader else None,
                  group=kw.get("group", "g")) for mid in ids]
    assert all(s.done and s.result.error_code == 0 for s in syncs)
    return ids, generation
