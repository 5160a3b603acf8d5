"""The group state machine on a fake clock: joins, syncs, heartbeats, timeouts, static members."""

from __future__ import annotations

from protocol import group_messages as m
from protocol.errors import ErrorCode

from .helpers import (
    FakeClock,
    commit,
    heartbeat,
    join,
    join_request,
    make,
    new_member,
    stable_group,
    state,
    sync,
)

E = ErrorCode


def test_first_join_hands_out_a_member_id_then_forms_a_generation():
    coord = make()
    first = join(coord)
    assert first.done and first.result.error_code == E.MEMBER_ID_REQUIRED
    member_id = first.result.member_id
    assert member_id.startswith("app-")
    second = join(coord, member_id=member_id)
    assert second.done
    r = second.result
    assert (r.error_code, r.generation_id, r.leader, r.member_id) == (0, 1, member_id, member_id)
    assert r.protocol_type == "consumer" and r.protocol_name == "range"
    assert [(x.member_id, x.metadata) for x in r.members] == [(member_id, b"subscription")]
    assert state(coord) == "CompletingRebalance"
    s = sync(coord, member_id, 1, {member_id: b"all of it"})
    assert s.done and s.result.assignment == b"all of it" and s.result.protocol_name == "range"
    assert state(coord) == "Stable"


def test_three_members_one_generation_followers_wait_for_the_leader():
    clock = FakeClock()
    coord = make(clock, initial_rebalance_delay_ms=100)
    joined = [new_member(coord) for _ in range(3)]
    assert state(coord) == "PreparingRebalance"
    clock.advance(99)
    coord.tick()
    assert not any(d.done for _, d in joined)
    clock.advance(1)
    coord.tick()
    results = [d.result for _, d in joined]
    assert {r.generation_id for r in results} == {1}
    leader = results[0].leader
    assert leader == joined[0][0]
    assert [len(r.members) for r in results] == [3, 0, 0]  # only the leader learns the members
    ids = [mid for mid, _ in joined]
    follower_syncs = [sync(coord, mid, 1) for mid in ids[1:]]
    assert not any(s.done for s in follower_syncs)
    assert heartbeat(coord, ids[1], 1) == 0  # heartbeats are fine while completing
    leader_sync = sync(coord, leader, 1, {mid: mid.encode() for mid in ids})
    assert all(s.done for s in [leader_sync, *follower_syncs])
    assert [s.result.assignment for s in [leader_sync, *follower_syncs]] == [mid.encode() for mid in ids]
    described = coord.describe_groups(m.DescribeGroupsRequest(groups=("g",))).groups[0]
    assert described.state == "Stable" and described.generation_id == 1 and described.leader == leader
    assert [(x.client_id, x.client_host, x.assignment) for x in described.members] == [
        ("app", "10.0.0.1", mid.encode()) for mid in ids
    ]


def test_twenty_members_joining_together_reach_one_generation():
    clock = FakeClock()
    coord = make(clock, initial_rebalance_delay_ms=300)
    joined = []
    for _ in range(20):  # one every 50 ms: 950 ms in all, far beyond one delay
        joined.append(new_member(coord))
        clock.advance(50)
        coord.tick()
    assert not any(d.done for _, d in joined)
    clock.advance(250)
    coord.tick()
    results = [d.result for _, d in joined]
    assert all(r.error_code == 0 for r in results)
    assert {r.generation_id for r in results} == {1}
    assert len({r.leader for r in results}) == 1
    assert len(next(r for r in results if r.members).members) == 20


def test_initial_delay_is_bounded_by_the_rebalance_timeout():
    clock = FakeClock()
    coord = make(clock, initial_rebalance_delay_ms=300)
    joined = []
    while not any(d.done for _, d in joined):  # a new member every 200 ms: each extends the delay
        joined.append(new_member(coord, rebalance=2000))
        clock.advance(200)
        coord.tick()
    assert len(joined) == 10  # the rebalance timeout (2 s) ended the wait
    assert [d.result.generation_id for _, d in joined] == [1] * 10


def test_new_member_makes_the_others_rejoin():
    coord = make()
    (a,), gen = stable_group(coord, 1)
    b, b_join = new_member(coord)
    assert not b_join.done and state(coord) == "PreparingRebalance"
    assert heartbeat(coord, a, gen) == E.REBALANCE_IN_PROGRESS
    assert sync(coord, a, gen).result.error_code == E.REBALANCE_IN_PROGRESS
    a_join = join(coord, member_id=a)
    assert a_join.done and b_join.done
    assert a_join.result.generation_id == b_join.result.generation_id == gen + 1
    assert a_join.result.leader == a and len(a_join.result.members) == 2


def test_unchanged_follower_rejoin_in_a_stable_group_changes_nothing():
    coord = make()
    (a, b), gen = stable_group(coord, 2)
    again = join(coord, member_id=b)
    assert again.done and again.result.generation_id == gen and again.result.members == ()
    assert state(coord) == "Stable"


def test_session_timeout_evicts_a_silent_member():
    clock = FakeClock()
    coord = make(clock)
    (a, b), gen = stable_group(coord, 2, session=1000)
    for _ in range(4):
        clock.advance(300)
        assert heartbeat(coord, a, gen) == 0
        coord.tick()
    assert state(coord) == "PreparingRebalance"  # b was silent for 1200 ms
    assert heartbeat(coord, b, gen) == E.UNKNOWN_MEMBER_ID
    assert heartbeat(coord, a, gen) == E.REBALANCE_IN_PROGRESS
    rejoin = join(coord, member_id=a, session=1000)
    assert rejoin.done and rejoin.result.generation_id == gen + 1
    assert [x.member_id for x in rejoin.result.members] == [a]


def test_rebalance_timeout_evicts_a_member_that_does_not_rejoin():
    clock = FakeClock()
    coord = make(clock)
    (a, b), gen = stable_group(coord, 2, session=1000, rebalance=5000)
    leader_rejoin = join(coord, member_id=a, session=1000, rebalance=5000)  # the leader rejoining rebalances
    assert not leader_rejoin.done
    for _ in range(16):  # b keeps its session alive but never rejoins (stuck in its poll loop)
        clock.advance(300)
        assert heartbeat(coord, b, gen) == E.REBALANCE_IN_PROGRESS
        coord.tick()
    assert not leader_rejoin.done  # 4800 ms
    clock.advance(200)
    coord.tick()
    assert leader_rejoin.done and leader_rejoin.result.generation_id == gen + 1
    assert [x.member_id for x in leader_rejoin.result.members] == [a]
    assert heartbeat(coord, b, gen) == E.UNKNOWN_MEMBER_ID


def test_waiting_join_keeps_its_member_alive():
    clock = FakeClock()
    coord = make(clock)
    (a, b), gen = stable_group(coord, 2, session=1000, rebalance=60_000)
    a_join = join(coord, member_id=a, session=1000, rebalance=60_000)
    b_join = None
    for _ in range(10):
        clock.advance(500)
        coord.tick()
        if b_join is None:
            b_join = join(coord, member_id=b, session=1000, rebalance=60_000)
    assert a_join.done and b_join.done and b_join.result.generation_id == gen + 1


def test_leader_that_never_syncs_is_evicted_and_followers_rejoin():
    clock = FakeClock()
    coord = make(clock)
    (leader, follower), gen = stable_group(coord, 2, session=1000)
    leader_rejoin = join(coord, member_id=leader, session=1000)
    follower_rejoin = join(coord, member_id=follower, session=1000)
    assert leader_rejoin.result.generation_id == follower_rejoin.result.generation_id == gen + 1
    gen += 1
    waiting = sync(coord, follower, gen)
    assert not waiting.done
    clock.advance(1000)
    coord.tick()  # the leader's session ran out before it sent the assignment
    assert waiting.done and waiting.result.error_code == E.REBALANCE_IN_PROGRESS
    c_id = follower
    assert state(coord) == "PreparingRebalance"
    rejoin = join(coord, member_id=c_id, session=1000)
    assert rejoin.done and rejoin.result.leader == c_id and rejoin.result.generation_id == gen + 1


def test_stale_generation_and_unknown_members_are_fenced():
    coord = make()
    (a, b), gen = stable_group(coord, 2)
    assert heartbeat(coord, a, gen - 1) == E.ILLEGAL_GENERATION
    assert sync(coord, a, gen - 1).result.error_code == E.ILLEGAL_GENERATION
    assert heartbeat(coord, "nobody", gen) == E.UNKNOWN_MEMBER_ID
    assert heartbeat(coord, a, gen, group="other") == E.UNKNOWN_MEMBER_ID
    assert join(coord, member_id="nobody").result.error_code == E.UNKNOWN_MEMBER_ID
    assert join(coord, member_id="nobody", group="fresh").result.error_code == E.UNKNOWN_MEMBER_ID
    assert sync(coord, "nobody", gen).result.error_code == E.UNKNOWN_MEMBER_ID


def test_join_arguments_are_checked():
    coord = make(min_session_timeout_ms=6000, max_session_timeout_ms=60_000)
    assert join(coord, session=5999).result.error_code == E.INVALID_SESSION_TIMEOUT
    assert join(coord, session=60_001).result.error_code == E.INVALID_SESSION_TIMEOUT
    assert join(coord, group="").result.error_code == E.INVALID_GROUP_ID
    assert join(coord, session=6000, protocols=()).result.error_code == E.INCONSISTENT_GROUP_PROTOCOL
    assert join(coord, session=6000, protocol_type="").result.error_code == E.INCONSISTENT_GROUP_PROTOCOL


def test_members_must_share_a_protocol():
    coord = make()
    stable_group(coord, 1)
    other = (m.JoinGroupProtocol("roundrobin", b""),)
    assert join(coord, protocols=other).result.error_code == E.INCONSISTENT_GROUP_PROTOCOL
    assert join(coord, protocol_type="connect").result.error_code == E.INCONSISTENT_GROUP_PROTOCOL


def test_protocol_is_chosen_by_vote_among_common_ones():
    coord = make()
    P = m.JoinGroupProtocol
    prefs = [(P("sticky"), P("range")), (P("range"), P("sticky")), (P("range"), P("sticky"), P("rr"))]
    ids = []
    for protocols in prefs:
        mid, d = new_member(coord, protocols=protocols)
        ids.append((mid, protocols))
    results = [join(coord, member_id=mid, protocols=p) for mid, p in ids]
    assert all(d.done for d in results)
    assert {d.result.protocol_name for d in results} == {"range"}


def test_retried_join_replaces_the_waiting_one():
    coord = make()
    (a, b), gen = stable_group(coord, 2)
    first = join(coord, member_id=a)
    second = join(coord, member_id=a)
    assert first.done and first.result.error_code == E.REBALANCE_IN_PROGRESS
    assert not second.done
    assert join(coord, member_id=b).done and second.done


def test_leave_group_rebalances_at_once():
    coord = make()
    (a, b), gen = stable_group(coord, 2)
    resp = coord.leave_group(m.LeaveGroupRequest(group_id="g", members=(m.LeaveGroupMember(b), m.LeaveGroupMember("x"))))
    assert [r.error_code for r in resp.members] == [0, E.UNKNOWN_MEMBER_ID]
    assert state(coord) == "PreparingRebalance"
    rejoin = join(coord, member_id=a)
    assert rejoin.done and [x.member_id for x in rejoin.result.members] == [a]
    coord.leave_group(m.LeaveGroupRequest(group_id="g", members=(m.LeaveGroupMember(a),)))
    described = coord.describe_groups(m.DescribeGroupsRequest(groups=("g",))).groups[0]
    assert (described.state, described.members, described.generation_id) == ("Empty", (), gen + 2)


def test_leaving_member_with_a_waiting_join_gets_unknown_member():
    coord = make()
    (a, b), gen = stable_group(coord, 2)
    waiting = join(coord, member_id=a)
    coord.leave_group(m.LeaveGroupRequest(group_id="g", members=(m.LeaveGroupMember(a),)))
    assert waiting.done and waiting.result.error_code == E.UNKNOWN_MEMBER_ID


def test_outstanding_member_id_holds_the_rebalance_until_it_expires():
    clock = FakeClock()
    coord = make(clock)
    (a,), gen = stable_group(coord, 1, session=1000)
    late = join(coord, session=1000)
    assert late.result.error_code == E.MEMBER_ID_REQUIRED  # and it never comes back
    rejoin = join(coord, member_id=a, session=1000)  # the leader rejoins: a rebalance
    assert not rejoin.done
    clock.advance(1000)
    coord.tick()
    assert rejoin.done and rejoin.result.generation_id == gen + 1


def test_shutdown_answers_waiting_requests():
    coord = make()
    (a, b), gen = stable_group(coord, 2)
    waiting = join(coord, member_id=a)
    coord.shutdown()
    assert waiting.result.error_code == E.COORDINATOR_NOT_AVAILABLE


# ------------------------------------------------------------ static membership


def static_group(coord, clock, instances=("a", "b"), session=5000, rebalance=30_000):
    """A Stable group of static members; returns ({instance: member id}, generation, leader)."""
    joined = [(inst, join(coord, instance=inst, session=session, rebalance=rebalance)) for inst in instances]
    clock.advance(1)
    coord.tick()
    # With no initial delay the first member forms generation 1 alone; the rest rejoin.
    ids = {}
    for inst, d in joined:
        if not d.done:
            continue
        ids[inst] = d.result.member_id
    rejoins = [join(coord, member_id=ids[inst], instance=inst, session=session, rebalance=rebalance)
               for inst, d in joined if d.done and d.result.generation_id < len(instances)]
    results = [d.result for _, d in joined if d.done and d.result.generation_id == len(instances)]
    results += [d.result for d in rejoins]
    assert len(results) == len(instances) and len({r.generation_id for r in results}) == 1
    gen = results[0].generation_id
    leader = results[0].leader
    members = {r.member_id for r in results}
    syncs = [sync(coord, mid, gen, {x: f"for {x}".encode() for x in members} if mid == leader else None)
             for mid in members]
    assert all(s.done and s.result.error_code == 0 for s in syncs)
    by_instance = {d.group_instance_id: d.member_id for d in
                   coord.describe_groups(m.DescribeGroupsRequest(groups=("g",))).groups[0].members}
    return by_instance, gen, leader


def test_static_member_restart_gets_its_assignment_back_without_a_rebalance():
    clock = FakeClock()
    coord = make(clock)
    ids, gen, leader = static_group(coord, clock)
    old_b = ids["b"]
    restarted = join(coord, instance="b", session=5000)  # new process, no member id yet
    r = restarted.result
    assert r.error_code == 0 and r.generation_id == gen and r.member_id != old_b
    assert state(coord) == "Stable"
    s = sync(coord, r.member_id, gen, instance="b")
    assert s.result.error_code == 0 and s.result.assignment == f"for {old_b}".encode()
    # the old incarnation is fenced everywhere
    assert heartbeat(coord, old_b, gen, instance="b") == E.FENCED_INSTANCE_ID
    assert commit(coord, {("t", 0): 1}, generation=gen, member_id=old_b, instance="b") == [E.FENCED_INSTANCE_ID]
    assert join(coord, member_id=old_b, instance="b").result.error_code == E.FENCED_INSTANCE_ID
    assert heartbeat(coord, r.member_id, gen, instance="b") == 0
    assert heartbeat(coord, ids["a"], gen, instance="a") == 0  # nobody else was disturbed


def test_static_leader_restart_is_told_to_skip_the_assignment():
    clock = FakeClock()
    coord = make(clock)
    ids, gen, leader = static_group(coord, clock)
    inst = next(i for i, mid in ids.items() if mid == leader)
    r = join(coord, instance=inst, session=5000).result
    assert r.leader == r.member_id and r.skip_assignment and len(r.members) == 2
    assert state(coord) == "Stable" and r.generation_id == gen


def test_static_member_with_new_metadata_triggers_a_rebalance():
    clock = FakeClock()
    coord = make(clock)
    ids, gen, _ = static_group(coord, clock)
    changed = (m.JoinGroupProtocol("range", b"new subscription"),)
    d = join(coord, instance="b", session=5000, protocols=changed)
    assert not d.done and state(coord) == "PreparingRebalance"


def test_static_member_that_stays_away_is_evicted_by_its_session_timeout():
    clock = FakeClock()
    coord = make(clock)
    ids, gen, leader = static_group(coord, clock, rebalance=1000)
    other = next(i for i in ids if ids[i] != leader)
    leader_inst = next(i for i in ids if ids[i] == leader)
    rejoin = join(coord, member_id=leader, instance=leader_inst, session=5000, rebalance=1000)
    clock.advance(1000)
    coord.tick()
    # the rebalance ended without the absent static member, which keeps its slot
    assert rejoin.done and {x.group_instance_id for x in rejoin.result.members} == {"a", "b"}
    sync(coord, leader, gen + 1, {})
    clock.advance(4000)
    coord.tick()
    described = coord.describe_groups(m.DescribeGroupsRequest(groups=("g",))).groups[0]
    assert [x.group_instance_id for x in described.members] == [leader_inst]
    assert described.state == "PreparingRebalance"
    assert other not in {x.group_instance_id for x in described.members}


def test_leave_by_instance_id():
    clock = FakeClock()
    coord = make(clock)
    ids, gen, _ = static_group(coord, clock)
    resp = coord.leave_group(m.LeaveGroupRequest(group_id="g", members=(
        m.LeaveGroupMember("wrong-id", "a"), m.LeaveGroupMember("", "b"), m.LeaveGroupMember("", "zz"))))
    assert [r.error_code for r in resp.members] == [E.FENCED_INSTANCE_ID, 0, E.UNKNOWN_MEMBER_ID]
