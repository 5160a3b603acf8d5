"""The group coordinator of a real broker process, over raw sockets.

Every wait is for a response, bounded by the client's socket timeout; group
timeouts are made short with broker flags instead of sleeping.
"""

from __future__ import annotations

import signal
import time

import pytest

from protocol import group_messages as gm
from protocol import messages as m
from protocol.errors import ErrorCode
from tests.rawclient import RawClient

pytestmark = pytest.mark.timeout(60)

E = ErrorCode
FAST = ("--group-min-session-timeout-ms", "100", "--group-initial-rebalance-delay-ms", "0")
PROTOCOLS = (gm.JoinGroupProtocol("range", b"orders"),)


def rpc(client: RawClient, message):
    return client.request(m.replace(message, correlation_id=client.next_id()))


def send(client: RawClient, message) -> None:
    client.send(m.replace(message, correlation_id=client.next_id()))


def join_req(member_id="", group="g", session=6000, rebalance=20000, instance=None):
    return gm.JoinGroupRequest(group_id=group, session_timeout_ms=session, rebalance_timeout_ms=rebalance,
                               member_id=member_id, group_instance_id=instance, protocols=PROTOCOLS)


def member_id_for(client: RawClient, **kw) -> str:
    r = rpc(client, join_req(**kw))
    assert r.error_code == E.MEMBER_ID_REQUIRED
    return r.member_id


def sync_req(member_id, generation, assignments=None, group="g"):
    return gm.SyncGroupRequest(group_id=group, generation_id=generation, member_id=member_id, assignments=tuple(
        gm.SyncGroupAssignment(k, v) for k, v in (assignments or {}).items()))


def hb_req(member_id, generation, group="g"):
    return gm.HeartbeatRequest(group_id=group, generation_id=generation, member_id=member_id)


def heartbeat_until_rebalance(client: RawClient, member_id: str, generation: int) -> int:
    """Heartbeat until the broker has seen a join sent on another connection; returns the last code.

    Requests on different connections may be served in either order, so a
    join just sent elsewhere may not have been read yet. Bounded by time.
    """
    deadline = time.monotonic() + 10
    code = rpc(client, hb_req(member_id, generation)).error_code
    while code == 0 and time.monotonic() < deadline:
        code = rpc(client, hb_req(member_id, generation)).error_code
    return code


def test_three_members_join_sync_heartbeat_and_show_up_in_describe(broker_factory):
    broker = broker_factory("--group-initial-rebalance-delay-ms", "1000")
    clients = [RawClient(broker.host, broker.port) for _ in range(4)]
    admin = clients.pop()
    try:
        found = rpc(admin, gm.FindCoordinatorRequest(key="g"))
        assert (found.error_code, found.host, found.port) == (0, broker.host, broker.port)
        ids = [member_id_for(c) for c in clients]
        for c, mid in zip(clients, ids):
            send(c, join_req(mid))  # answered together once the initial delay is over
        joined = [c.next_event() for c in clients]
        assert [j.error_code for j in joined] == [0, 0, 0]
        assert {j.generation_id for j in joined} == {1} and [j.member_id for j in joined] == ids
        leader = ids.index(joined[0].leader)  # the first to join (the requests race)
        assert {j.leader for j in joined} == {ids[leader]}
        assert [len(j.members) for j in joined] == [3 if i == leader else 0 for i in range(3)]
        assert {x.member_id for x in joined[leader].members} == set(ids)
        assert {x.metadata for x in joined[leader].members} == {b"orders"}
        followers = [i for i in range(3) if i != leader]
        for i in followers:
            send(clients[i], sync_req(ids[i], 1))  # followers wait for the leader's assignment
        assignment = {mid: f"partitions of {mid}".encode() for mid in ids}
        assert rpc(clients[leader], sync_req(ids[leader], 1, assignment)).assignment == assignment[ids[leader]]
        assert [clients[i].next_event().assignment for i in followers] == [assignment[ids[i]] for i in followers]
        assert [rpc(c, hb_req(mid, 1)).error_code for c, mid in zip(clients, ids)] == [0, 0, 0]

        described = rpc(admin, gm.DescribeGroupsRequest(groups=("g", "nope"))).groups
        assert (described[0].state, described[0].protocol, described[0].generation_id) == ("Stable", "range", 1)
        assert sorted((x.member_id, x.client_id, x.client_host, x.assignment) for x in described[0].members) == \
            sorted((mid, "raw-test", "127.0.0.1", assignment[mid]) for mid in ids)
        assert (described[1].state, described[1].error_code) == ("Dead", E.GROUP_ID_NOT_FOUND)
        listed = rpc(admin, gm.ListGroupsRequest()).groups
        assert [(g.group_id, g.protocol_type, g.state) for g in listed] == [("g", "consumer", "Stable")]

        assert rpc(admin, gm.DeleteGroupsRequest(groups=("g",))).results[0].error_code == E.NON_EMPTY_GROUP
        left = rpc(admin, gm.LeaveGroupRequest(group_id="g", members=tuple(gm.LeaveGroupMember(mid) for mid in ids)))
        assert [x.error_code for x in left.members] == [0, 0, 0]
        assert rpc(clients[leader], hb_req(ids[leader], 1)).error_code == E.UNKNOWN_MEMBER_ID
        assert rpc(admin, gm.DeleteGroupsRequest(groups=("g",))).results[0].error_code == 0
        assert rpc(admin, gm.ListGroupsRequest()).groups == ()
    finally:
        for c in [admin, *clients]:
            c.close()


def test_dead_member_is_evicted_by_its_session_timeout(broker_factory):
    broker = broker_factory(*FAST)
    with RawClient(broker.host, broker.port) as a, RawClient(broker.host, broker.port) as b:
        a_id = member_id_for(a, session=500)
        first = rpc(a, join_req(a_id, session=500))
        assert (first.generation_id, first.leader) == (1, a_id)
        assert rpc(a, sync_req(a_id, 1, {a_id: b"all"})).assignment == b"all"

        b_id = member_id_for(b, session=500)
        send(b, join_req(b_id, session=500))  # waits: a must rejoin first
        # a's heartbeats are answered on its own connection while b's join waits
        assert heartbeat_until_rebalance(a, a_id, 1) == E.REBALANCE_IN_PROGRESS
        second = rpc(a, join_req(a_id, session=500))
        assert second.generation_id == 2 and len(second.members) == 2
        assert b.next_event().generation_id == 2
        send(b, sync_req(b_id, 2))
        assert rpc(a, sync_req(a_id, 2, {a_id: b"p0", b_id: b"p1"})).assignment == b"p0"
        assert b.next_event().assignment == b"p1"

        b.close()  # dies without LeaveGroup
        # The leader rejoins: its join waits until b has been silent for its session timeout.
        third = rpc(a, join_req(a_id, session=500))
        assert third.error_code == 0 and third.generation_id == 3
        assert [x.member_id for x in third.members] == [a_id]


def test_committed_offsets_survive_sigkill(broker_factory):
    broker = broker_factory(*FAST)
    with RawClient(broker.host, broker.port) as c:
        created = rpc(c, m.CreateTopicsRequest(topics=(m.NewTopic("orders", 3),)))
        assert created.topics[0].error_code == 0
        # a standalone commit (generation -1) and a commit from a group member
        standalone = rpc(c, gm.OffsetCommitRequest(group_id="solo", partitions=tuple(
            gm.OffsetCommitPartition("orders", p, 100 + p, f"meta {p}") for p in range(3))))
        assert [p.error_code for p in standalone.partitions] == [0, 0, 0]
        mid = member_id_for(c)
        gen = rpc(c, join_req(mid)).generation_id
        rpc(c, sync_req(mid, gen, {mid: b"all"}))
        member = rpc(c, gm.OffsetCommitRequest(group_id="g", generation_id=gen, member_id=mid, partitions=(
            gm.OffsetCommitPartition("orders", 1, 7),)))
        assert member.partitions[0].error_code == 0
        stale = rpc(c, gm.OffsetCommitRequest(group_id="g", generation_id=gen + 1, member_id=mid, partitions=(
            gm.OffsetCommitPartition("orders", 1, 8),)))
        assert stale.partitions[0].error_code == E.ILLEGAL_GENERATION
        unknown = rpc(c, gm.OffsetCommitRequest(group_id="solo", partitions=(
            gm.OffsetCommitPartition("nope", 0, 1),)))
        assert unknown.partitions[0].error_code == E.UNKNOWN_TOPIC_OR_PARTITION

    broker.restart(kill=True)

    with RawClient(broker.host, broker.port) as c:
        every = rpc(c, gm.OffsetFetchRequest(group_id="solo"))
        assert every.error_code == 0
        assert [(p.topic, p.partition, p.offset, p.metadata) for p in every.partitions] == [
            ("orders", p, 100 + p, f"meta {p}") for p in range(3)]
        some = rpc(c, gm.OffsetFetchRequest(group_id="g", partitions=(
            gm.OffsetFetchPartition("orders", 1), gm.OffsetFetchPartition("orders", 2))))
        assert [p.offset for p in some.partitions] == [7, -1]
        # membership is not kept across restarts: the member joins again
        assert rpc(c, hb_req(mid, gen)).error_code == E.UNKNOWN_MEMBER_ID
        listed = rpc(c, gm.ListGroupsRequest()).groups
        assert [(g.group_id, g.state) for g in listed] == [("g", "Empty"), ("solo", "Empty")]
        meta = rpc(c, m.MetadataRequest(topics=None))
        assert any(t.name == "__consumer_offsets" and t.internal for t in meta.topics)


def test_graceful_shutdown_answers_a_waiting_join(broker_factory):
    broker = broker_factory(*FAST)
    with RawClient(broker.host, broker.port) as a, RawClient(broker.host, broker.port) as b:
        a_id = member_id_for(a)
        gen = rpc(a, join_req(a_id)).generation_id
        rpc(a, sync_req(a_id, gen, {}))
        b_id = member_id_for(b)
        send(b, join_req(b_id))  # waits for a, which never rejoins
        assert heartbeat_until_rebalance(a, a_id, gen) == E.REBALANCE_IN_PROGRESS
        started = time.monotonic()
        broker.proc.send_signal(signal.SIGTERM)
        answer = b.next_event()
        assert answer.error_code == E.COORDINATOR_NOT_AVAILABLE
        assert broker.proc.wait(10) == 0
        assert time.monotonic() - started < 5  # well inside the 10 s shutdown bound
