"""Committed offsets on a fake clock: generation checks, durability records, expiry, deletion."""

from __future__ import annotations

import msgpack
import pytest

from protocol import group_messages as m
from protocol.errors import ErrorCode, UnknownTopicOrPartitionError

from broker.group.offsets import CommittedOffset, decode_record, encode_key, encode_value
from broker.storage import LogWriteError

from .helpers import FakeClock, MemoryLog, commit, fetch, join, make, stable_group, state

E = ErrorCode
MINUTE = 60_000


def test_commit_then_fetch_with_metadata():
    log = MemoryLog()
    coord = make(log=log)
    response, flushable = coord.commit_offsets(m.OffsetCommitRequest(
        group_id="g", partitions=(m.OffsetCommitPartition("t", 0, 42, "checkpoint"),
                                  m.OffsetCommitPartition("t", 1, 7))))
    assert [p.error_code for p in response.partitions] == [0, 0]
    assert flushable is log and len(log.records) == 2  # the caller fsyncs it before answering
    got = coord.fetch_offsets(m.OffsetFetchRequest(group_id="g", partitions=(
        m.OffsetFetchPartition("t", 0), m.OffsetFetchPartition("t", 5))))
    assert [(p.partition, p.offset, p.metadata, p.error_code) for p in got.partitions] == [
        (0, 42, "checkpoint", 0), (5, -1, "", 0)]
    assert fetch(coord) == {("t", 0): 42, ("t", 1): 7}  # partitions=None: all of them
    assert fetch(coord, group="other") == {}


def test_records_are_the_documented_msgpack():
    log = MemoryLog()
    clock = FakeClock()
    coord = make(clock, log=log)
    commit(coord, {("t", 3): 9})
    key, value = log.records[0]
    assert msgpack.unpackb(key) == ["g", "t", 3]
    assert msgpack.unpackb(value) == {"offset": 9, "metadata": "meta-9", "commit_timestamp": clock.ms,
                                      "expire_timestamp": -1}
    assert decode_record(key, value) == (("g", "t", 3), CommittedOffset(9, "meta-9", clock.ms, -1))
    assert decode_record(encode_key(("g", "t", 3)), None) == (("g", "t", 3), None)
    for bad_key, bad_value in [(b"\xc1", None), (msgpack.packb(["g", "t"]), None),
                               (encode_key(("g", "t", 0)), msgpack.packb({"offset": "x"})), (None, None)]:
        with pytest.raises(ValueError):
            decode_record(bad_key, bad_value)


def test_offsets_reload_from_the_log_and_skip_foreign_records():
    log = MemoryLog()
    coord = make(log=log)
    commit(coord, {("t", 0): 1, ("t", 1): 2})
    commit(coord, {("t", 0): 5})
    commit(coord, {("u", 0): 3}, group="h")
    coord.delete_groups(m.DeleteGroupsRequest(groups=("h",)))
    log.records.insert(1, (b"garbage", b"more garbage"))
    reloaded = make(log=log)
    assert reloaded.load() == len(log.records) - 1
    assert fetch(reloaded) == {("t", 0): 5, ("t", 1): 2}
    assert fetch(reloaded, group="h") == {}
    assert reloaded.offsets.get("g", "t", 0).metadata == "meta-5"


def test_member_commits_are_checked_against_the_generation():
    coord = make()
    (a, b), gen = stable_group(coord, 2)
    assert commit(coord, {("t", 0): 1}, generation=gen, member_id=a) == [0]
    assert commit(coord, {("t", 0): 2}, generation=gen - 1, member_id=a) == [E.ILLEGAL_GENERATION]
    assert commit(coord, {("t", 0): 2}, generation=gen, member_id="ghost") == [E.UNKNOWN_MEMBER_ID]
    assert commit(coord, {("t", 0): 2}, generation=-1) == [E.NON_EMPTY_GROUP]  # admin reset of a live group
    assert commit(coord, {("t", 0): 2}, generation=gen, member_id=a, group="") == [E.INVALID_GROUP_ID]
    assert fetch(coord) == {("t", 0): 1}


def test_commit_before_rejoining_is_allowed_but_not_before_syncing():
    coord = make()
    (a, b), gen = stable_group(coord, 2)
    join(coord, member_id=a)  # rebalance: b must rejoin, and may commit first (on revoke)
    assert state(coord) == "PreparingRebalance"
    assert commit(coord, {("t", 0): 3}, generation=gen, member_id=b) == [0]
    assert join(coord, member_id=b).done
    assert state(coord) == "CompletingRebalance"
    assert commit(coord, {("t", 0): 4}, generation=gen + 1, member_id=b) == [E.REBALANCE_IN_PROGRESS]
    assert commit(coord, {("t", 0): 4}, generation=gen, member_id=b) == [E.ILLEGAL_GENERATION]


def test_standalone_commits_need_a_group_without_members():
    coord = make()
    assert commit(coord, {("t", 0): 5}, group="solo") == [0]
    assert commit(coord, {("t", 0): 6}, group="solo", member_id="whoever") == [0]
    assert fetch(coord, group="solo") == {("t", 0): 6}
    (a,), gen = stable_group(coord, 1, group="busy")
    coord.leave_group(m.LeaveGroupRequest(group_id="busy", members=(m.LeaveGroupMember(a),)))
    assert state(coord, "busy") == "Empty"
    assert commit(coord, {("t", 0): 1}, group="busy") == [0]  # the group emptied: resets are allowed


def test_partition_checks():
    coord = make()
    coord.partition_exists = lambda topic, partition: topic == "t" and partition < 2
    response, _ = coord.commit_offsets(m.OffsetCommitRequest(group_id="g", partitions=(
        m.OffsetCommitPartition("t", 0, 1),
        m.OffsetCommitPartition("t", 2, 1),
        m.OffsetCommitPartition("nope", 0, 1),
        m.OffsetCommitPartition("t", 1, 1, "x" * 4097),
        m.OffsetCommitPartition("t", 1, -5),
    )))
    assert [p.error_code for p in response.partitions] == [
        0, E.UNKNOWN_TOPIC_OR_PARTITION, E.UNKNOWN_TOPIC_OR_PARTITION, E.OFFSET_METADATA_TOO_LARGE,
        E.INVALID_REQUEST]


def test_failed_write_is_an_error_and_changes_nothing():
    log = MemoryLog()
    coord = make(log=log)
    commit(coord, {("t", 0): 1})
    log.fail = LogWriteError("disk on fire")
    assert commit(coord, {("t", 0): 2, ("t", 1): 2}) == [E.STORAGE_ERROR, E.STORAGE_ERROR]
    log.fail = UnknownTopicOrPartitionError()
    assert commit(coord, {("t", 0): 3}) == [E.UNKNOWN_TOPIC_OR_PARTITION]
    assert fetch(coord) == {("t", 0): 1}


def test_offsets_of_an_empty_group_expire_after_the_retention():
    clock = FakeClock()
    log = MemoryLog()
    coord = make(clock, log=log, offsets_retention_ms=60 * MINUTE, offsets_retention_check_interval_ms=MINUTE)
    (a,), gen = stable_group(coord, 1)
    commit(coord, {("t", 0): 10}, generation=gen, member_id=a)
    clock.advance(120 * MINUTE)
    coord.tick()
    assert fetch(coord) == {("t", 0): 10}  # the group has a member: nothing expires
    coord.leave_group(m.LeaveGroupRequest(group_id="g", members=(m.LeaveGroupMember(a),)))
    clock.advance(59 * MINUTE)
    coord.tick()
    assert fetch(coord) == {("t", 0): 10}  # empty for 59 minutes only
    clock.advance(MINUTE)
    coord.tick()
    assert fetch(coord) == {}
    assert log.records[-1] == (encode_key(("g", "t", 0)), None)  # a tombstone
    listed = coord.list_groups(m.ListGroupsRequest()).groups
    assert [g.group_id for g in listed] == []  # an empty group with no offsets is forgotten
    assert make(log=log).load() and fetch(make(log=log)) == {}


def test_standalone_offsets_expire_from_their_commit_and_explicit_retention_wins():
    clock = FakeClock()
    coord = make(clock, offsets_retention_ms=60 * MINUTE)
    commit(coord, {("t", 0): 1}, group="solo")
    commit(coord, {("t", 1): 1}, group="solo", retention_ms=10 * MINUTE)
    clock.advance(10 * MINUTE)
    assert coord.expire_offsets() == 1
    assert fetch(coord, group="solo") == {("t", 0): 1}
    clock.advance(50 * MINUTE)
    assert coord.expire_offsets() == 1
    assert fetch(coord, group="solo") == {}


def test_delete_groups():
    log = MemoryLog()
    coord = make(log=log)
    (a,), gen = stable_group(coord, 1, group="live")
    commit(coord, {("t", 0): 1, ("t", 1): 2}, group="idle")
    response, flushable = coord.delete_groups(m.DeleteGroupsRequest(groups=("live", "idle", "ghost", "")))
    assert [(r.group_id, r.error_code) for r in response.results] == [
        ("live", E.NON_EMPTY_GROUP), ("idle", 0), ("ghost", E.GROUP_ID_NOT_FOUND), ("", E.INVALID_GROUP_ID)]
    assert flushable is log
    assert fetch(coord, group="idle") == {}
    assert state(coord, "idle") == "Dead" and state(coord, "live") == "Stable"
    assert fetch(make(log=log), group="idle") == {}


def test_offset_delete():
    coord = make()
    commit(coord, {("t", 0): 1, ("t", 1): 2}, group="idle")
    response, _ = coord.delete_offsets(m.OffsetDeleteRequest(group_id="idle", partitions=(
        m.OffsetDeletePartition("t", 0), m.OffsetDeletePartition("t", 9))))
    assert response.error_code == 0 and [p.error_code for p in response.partitions] == [0, 0]
    assert fetch(coord, group="idle") == {("t", 1): 2}
    stable_group(coord, 1, group="live")
    commit(coord, {("t", 0): 1}, group="other")
    assert coord.delete_offsets(m.OffsetDeleteRequest(group_id="live"))[0].error_code == E.NON_EMPTY_GROUP
    assert coord.delete_offsets(m.OffsetDeleteRequest(group_id="ghost"))[0].error_code == E.GROUP_ID_NOT_FOUND


def test_list_and_describe_include_groups_known_only_by_their_offsets():
    coord = make()
    commit(coord, {("t", 0): 1}, group="old")
    stable_group(coord, 2, group="live")
    listed = coord.list_groups(m.ListGroupsRequest()).groups
    assert [(g.group_id, g.protocol_type, g.state) for g in listed] == [
        ("live", "consumer", "Stable"), ("old", "", "Empty")]
    only_stable = coord.list_groups(m.ListGroupsRequest(states_filter=("Stable",))).groups
    assert [g.group_id for g in only_stable] == ["live"]
    described = coord.describe_groups(m.DescribeGroupsRequest(groups=("old", "ghost"))).groups
    assert [(d.state, d.error_code) for d in described] == [("Empty", 0), ("Dead", E.GROUP_ID_NOT_FOUND)]
