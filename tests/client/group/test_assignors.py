"""The assignors as pure functions, with hypothesis: coverage, balance, stickiness, determinism."""

from __future__ import annotations

import collections

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from client.group.assignors import (
    RangePartitionAssignor,
    RoundRobinPartitionAssignor,
    resolve_assignors,
    rebalance_protocol,
)
from client.group.codec import (
    Assignment,
    GroupFormatError,
    Subscription,
    decode_assignment,
    decode_subscription,
    encode_assignment,
    encode_subscription,
)
from client.group.sticky import CooperativeStickyAssignor, StickyPartitionAssignor
from client.structs import TopicPartition

ALL = [RangePartitionAssignor(), RoundRobinPartitionAssignor(), StickyPartitionAssignor(),
       CooperativeStickyAssignor()]
STICKY = [StickyPartitionAssignor(), CooperativeStickyAssignor()]

TOPICS = ["a", "b", "c", "d"]

partition_counts = st.dictionaries(st.sampled_from(TOPICS), st.integers(0, 12), min_size=1)
member_ids = st.lists(st.text("mnopq", min_size=1, max_size=4), min_size=1, max_size=8, unique=True)


@st.composite
def groups(draw, same_topics: bool = False):
    """(partitions_per_topic, {member: Subscription}) with random claims of owned partitions."""
    counts = draw(partition_counts)
    members = draw(member_ids)
    shared = draw(st.sets(st.sampled_from(TOPICS), min_size=1))
    subs = {}
    all_tps = [TopicPartition(t, p) for t, n in counts.items() for p in range(n)]
    for mid in members:
        topics = shared if same_topics else draw(st.sets(st.sampled_from(TOPICS), min_size=1))
        owned = draw(st.sets(st.sampled_from(all_tps), max_size=10)) if all_tps else set()
        static = draw(st.booleans())
        subs[mid] = Subscription(tuple(sorted(topics)), frozenset(owned), draw(st.integers(-1, 3)),
                                 member_id=mid, group_instance_id=f"i-{mid}" if static else None)
    return counts, subs


def wanted(counts, subs) -> set[TopicPartition]:
    topics = {t for s in subs.values() for t in s.topics}
    return {TopicPartition(t, p) for t in topics for p in range(counts.get(t, 0))}


def owners(result) -> collections.Counter:
    return collections.Counter(tp for a in result.values() for tp in a.partitions)


def check_valid(counts, subs, result) -> None:
    assert set(result) == set(subs)
    for mid, a in result.items():
        assert all(tp.topic in subs[mid].topics for tp in a.partitions), "a topic it does not subscribe to"
    assert max(owners(result).values(), default=1) == 1, "a partition assigned twice"
    assert set(owners(result)) <= wanted(counts, subs)


def after_revocation(subs, result, generation: int) -> dict[str, Subscription]:
    """Every member now owns exactly what it was given (it revoked the rest)."""
    return {mid: Subscription(s.topics, result[mid].partitions, generation, member_id=mid,
                              group_instance_id=s.group_instance_id) for mid, s in subs.items()}


@pytest.mark.parametrize("assignor", ALL, ids=lambda a: a.name)
@settings(max_examples=60, deadline=None)
@given(group=groups())
def test_every_partition_at_most_once_and_only_subscribed_topics(assignor, group):
    counts, subs = group
    result = assignor.assign(counts, subs)
    check_valid(counts, subs, result)
    if assignor.rebalance_protocol == "eager":
        assert set(owners(result)) == wanted(counts, subs), "a partition left unassigned"


@pytest.mark.parametrize("assignor", ALL, ids=lambda a: a.name)
@settings(max_examples=60, deadline=None)
@given(group=groups())
def test_deterministic(assignor, group):
    counts, subs = group
    again = {mid: subs[mid] for mid in reversed(list(subs))}
    assert assignor.assign(counts, subs) == assignor.assign(dict(reversed(list(counts.items()))), again)


@settings(max_examples=80, deadline=None)
@given(group=groups())
def test_cooperative_follow_up_assigns_everything(group):
    """Partitions withheld because another member still holds them go out in the next rebalance."""
    counts, subs = group
    assignor = CooperativeStickyAssignor()
    result = assignor.assign(counts, subs)
    for rounds in range(1, 4):
        claimed = {tp for s in subs.values() for tp in s.owned}
        given_ = {tp for a in result.values() for tp in a.partitions}
        # a partition is missing only while some member still claims it
        assert wanted(counts, subs) - given_ <= claimed
        subs = after_revocation(subs, result, rounds)
        result = assignor.assign(counts, subs)
        check_valid(counts, subs, result)
        if set(owners(result)) == wanted(counts, subs):
            break
    assert set(owners(result)) == wanted(counts, subs)


def _sizes(result) -> list[int]:
    return [len(a.partitions) for a in result.values()]


@pytest.mark.parametrize("assignor", [RoundRobinPartitionAssignor(), *STICKY], ids=lambda a: a.name)
@settings(max_examples=60, deadline=None)
@given(group=groups(same_topics=True))
def test_balanced_within_one_when_subscriptions_match(assignor, group):
    counts, subs = group
    result = assignor.assign(counts, subs)
    if assignor.rebalance_protocol == "cooperative":  # balance holds once the withheld are handed out
        result = assignor.assign(counts, after_revocation(subs, result, 5))
    sizes = _sizes(result)
    assert max(sizes) - min(sizes) <= 1


@settings(max_examples=50, deadline=None)
@given(group=groups(same_topics=True))
def test_range_is_balanced_per_topic(group):
    counts, subs = group
    result = RangePartitionAssignor().assign(counts, subs)
    for topic in counts:
        sizes = [sum(1 for tp in a.partitions if tp.topic == topic) for a in result.values()]
        assert max(sizes) - min(sizes) <= 1


def valid_claims(counts, subs) -> dict[TopicPartition, str]:
    """Who holds each partition, after conflicting claims are settled by the highest generation."""
    all_tps = wanted(counts, subs)
    best = {}
    for mid in sorted(subs, key=lambda m: (subs[m].sort_key(), m)):
        s = subs[mid]
        for tp in s.owned:
            if tp in all_tps and tp.topic in s.topics and (tp not in best or s.generation > best[tp][0]):
                best[tp] = (s.generation, mid)
    return {tp: mid for tp, (_, mid) in best.items()}


def moves_needed(counts, subs) -> int:
    """A lower bound on partitions taken from their holder by any balanced assignment:
    the r = N mod M largest quotas go to the members holding the most."""
    n = len(wanted(counts, subs))
    m = len(subs)
    held = collections.Counter(valid_claims(counts, subs).values())
    minq, extra = divmod(n, m)
    counts_desc = sorted((held.get(mid, 0) for mid in subs), reverse=True)
    return sum(max(0, h - (minq + (1 if i < extra else 0))) for i, h in enumerate(counts_desc))


@pytest.mark.parametrize("assignor", STICKY, ids=lambda a: a.name)
@settings(max_examples=120, deadline=None)
@given(group=groups(same_topics=True))
def test_sticky_moves_no_more_than_it_must(assignor, group):
    counts, subs = group
    holder = valid_claims(counts, subs)
    result = assignor.assign(counts, subs)
    if assignor.rebalance_protocol == "cooperative":
        final = assignor.assign(counts, after_revocation(subs, result, 5))
        # the partitions a member keeps are never revoked in between
        for mid, a in final.items():
            kept = {tp for tp, h in holder.items() if h == mid} & a.partitions
            assert kept <= result[mid].partitions
        result = final
    now = {tp: mid for mid, a in result.items() for tp in a.partitions}
    moved = sum(1 for tp, mid in holder.items() if now.get(tp) != mid)
    assert moved == moves_needed(counts, subs)


@settings(max_examples=60, deadline=None)
@given(group=groups())
def test_sticky_leaves_no_improving_move_when_subscriptions_differ(group):
    counts, subs = group
    result = StickyPartitionAssignor().assign(counts, subs)
    size = {mid: len(a.partitions) for mid, a in result.items()}
    for mid, a in result.items():
        for tp in a.partitions:
            for other, s in subs.items():
                if tp.topic in s.topics:
                    assert size[other] + 1 >= size[mid]


def test_sticky_keeps_the_survivors_partitions_when_one_member_leaves():
    counts = {"t": 6}
    subs = {m: Subscription(("t",), frozenset({TopicPartition("t", 2 * i), TopicPartition("t", 2 * i + 1)}), 4,
                            member_id=m)
            for i, m in enumerate(["a", "b", "c"])}
    del subs["b"]
    for assignor in STICKY:
        result = assignor.assign(counts, subs)
        assert subs["a"].owned <= result["a"].partitions and subs["c"].owned <= result["c"].partitions
        assert _sizes(result) == [3, 3]


def test_cooperative_withholds_what_another_member_still_holds():
    counts = {"t": 4}
    everything = frozenset(TopicPartition("t", p) for p in range(4))
    subs = {"a": Subscription(("t",), everything, 1, member_id="a"), "b": Subscription(("t",), member_id="b")}
    first = CooperativeStickyAssignor().assign(counts, subs)
    assert len(first["a"].partitions) == 2 and first["b"].partitions == frozenset()
    second = CooperativeStickyAssignor().assign(counts, after_revocation(subs, first, 2))
    assert second["a"].partitions == first["a"].partitions
    assert second["b"].partitions == everything - first["a"].partitions


def test_range_and_roundrobin_shapes():
    subs = {m: Subscription(("x", "y"), member_id=m) for m in ["c1", "c2"]}
    counts = {"x": 3, "y": 3}
    r = RangePartitionAssignor().assign(counts, subs)
    assert sorted(r["c1"].partitions) == [("x", 0), ("x", 1), ("y", 0), ("y", 1)]
    rr = RoundRobinPartitionAssignor().assign(counts, subs)
    assert sorted(rr["c1"].partitions) == [("x", 0), ("x", 2), ("y", 1)]


def test_static_members_sort_by_instance_id():
    subs = {"zzz": Subscription(("t",), member_id="zzz", group_instance_id="a"),
            "aaa": Subscription(("t",), member_id="aaa", group_instance_id="b")}
    r = RangePartitionAssignor().assign({"t": 2}, subs)
    assert r["zzz"].partitions == {TopicPartition("t", 0)}


# ------------------------------------------------------------ codec and configuration


@settings(max_examples=80, deadline=None)
@given(group=groups(), user_data=st.none() | st.binary(max_size=20))
def test_subscription_round_trip_is_exact(group, user_data):
    _, subs = group
    for s in subs.values():
        s = Subscription(s.topics, s.owned, s.generation, user_data)
        data = encode_subscription(s)
        back = decode_subscription(data)
        assert back == s
        assert encode_subscription(back) == data  # deterministic bytes: static rejoins depend on it


@given(parts=st.sets(st.tuples(st.sampled_from(TOPICS), st.integers(0, 50))), user_data=st.none() | st.binary())
def test_assignment_round_trip(parts, user_data):
    a = Assignment(frozenset(TopicPartition(*p) for p in parts), user_data)
    assert decode_assignment(encode_assignment(a)) == a


def test_empty_bytes_and_garbage():
    assert decode_assignment(b"") == Assignment()
    assert decode_subscription(b"", "m").member_id == "m"
    for bad in (b"\xc1", b"\x91\x01", b"\x81\xa6topics\x01", b"\x81\xa8assigned\x81\xa1t\x91\xff"):
        with pytest.raises(GroupFormatError):
            decode_subscription(bad) if b"assigned" not in bad else decode_assignment(bad)
    # unknown keys are ignored, so the format can grow
    import msgpack
    data = msgpack.packb({"version": 2, "topics": ["t"], "future": {"x": 1}})
    assert decode_subscription(data).topics == ("t",)


def test_resolve_assignors():
    assert [a.name for a in resolve_assignors("range")] == ["range"]
    assert [a.name for a in resolve_assignors(["cooperative-sticky", RangePartitionAssignor])] == \
        ["cooperative-sticky", "range"]
    assert rebalance_protocol(resolve_assignors(["cooperative-sticky"])) == "cooperative"
    assert rebalance_protocol(resolve_assignors(["cooperative-sticky", "range"])) == "eager"
    with pytest.raises(ValueError, match="unknown partition assignor"):
        resolve_assignors(["nope"])
    with pytest.raises(ValueError, match="twice"):
        resolve_assignors(["range", "range"])
