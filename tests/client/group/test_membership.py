"""Consumer groups end to end: consumers in one group against a real broker.

One broker serves the module (each test has its own topic and group); the
broker starts a group's first generation at once and accepts short sessions,
so members notice each other within a second or two. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import collections
import time
import uuid

import pytest

from client import Admin, AsyncConsumer, CommitFailedError, ConsumerRebalanceListener, OffsetAndMetadata, TopicPartition
from client.errors import IllegalStateError
from protocol.errors import FencedInstanceIdError
from tests.brokerproc import BrokerProcess

from ..helpers import run
from .helpers import FAST, GROUP_FLAGS, assignments, consumer, create_topic, generation, poll_all, produce, \
    settled, wait_for

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    proc = BrokerProcess(tmp_path_factory.mktemp("groups") / "data", *GROUP_FLAGS).start()
    yield proc
    proc.kill()


@pytest.fixture
def names():
    suffix = uuid.uuid4().hex[:8]
    return f"t-{suffix}", f"g-{suffix}"


class Recorder(ConsumerRebalanceListener):
    def __init__(self) -> None:
        self.revoked: list[set] = []
        self.assigned: list[set] = []
        self.lost: list[set] = []

    def on_partitions_revoked(self, revoked):
        self.revoked.append(set(revoked))

    def on_partitions_assigned(self, assigned):
        self.assigned.append(set(assigned))

    def on_partitions_lost(self, lost):
        self.lost.append(set(lost))

    def all_revoked(self) -> set:
        return set().union(*self.revoked)


def test_three_consumers_split_six_partitions_and_process_each_record_once(broker, names):
    """Members join one by one while records flow; each commits after processing.

    Cooperative rebalances revoke partitions only between polls, after the
    member committed what it processed, so no record is processed twice.
    """
    topic, group = names
    create_topic(broker.bootstrap, topic, 6)
    values = produce(broker.bootstrap, topic, 300, 6)
    processed: dict = {}
    members = [consumer(broker.bootstrap, topic, group, enable_auto_commit=False)]
    try:
        wait_for(lambda: sum(map(len, processed.values())) >= 50, 20, "the first member to read",
                 lambda: poll_all(members, processed, commit=True))
        for _ in range(2):
            members.append(consumer(broker.bootstrap, topic, group, enable_auto_commit=False))
            poll_all(members, processed, commit=True)
        values += produce(broker.bootstrap, topic, 300, 6, start=300)
        wait_for(lambda: settled(members, 6) and sum(map(len, processed.values())) >= len(values), 30,
                 "every record, with the group settled", lambda: poll_all(members, processed, commit=True))
        assert [len(a) for a in assignments(members)] == [2, 2, 2]
        seen = collections.Counter(r.value for recs in processed.values() for r in recs)
        assert set(seen) == set(values)
        assert max(seen.values()) == 1, [v for v, n in seen.items() if n > 1][:5]
        assert all(len(recs) > 0 for recs in processed.values())
    finally:
        for c in members:
            c.close()


def test_cooperative_rebalance_never_revokes_partitions_that_stay(broker, names):
    topic, group = names
    create_topic(broker.bootstrap, topic, 6)
    listeners = [Recorder() for _ in range(3)]
    members = []
    try:
        for i, listener in enumerate(listeners):
            c = consumer(broker.bootstrap, None, group)
            c.subscribe([topic], listener=listener)
            members.append(c)
            wait_for(lambda: settled(members, 6), 20, f"{i + 1} member(s) to settle", lambda: poll_all(members))
        final = assignments(members)
        for listener, kept in zip(listeners, final):
            assert not (listener.all_revoked() & kept), "a partition that stayed was revoked"
            assert not listener.lost
        first = listeners[0]
        # 6 -> 3 -> 2: it gave away exactly the partitions that moved
        assert len(first.all_revoked()) == 4 and len(final[0]) == 2
        assert first.assigned[0] == {TopicPartition(topic, p) for p in range(6)}
    finally:
        for c in members:
            c.close()


def test_eager_assignor_revokes_everything_before_each_rebalance(broker, names):
    topic, group = names
    create_topic(broker.bootstrap, topic, 4)
    listeners = [Recorder(), Recorder()]
    members = []
    try:
        for listener in listeners:
            c = consumer(broker.bootstrap, None, group, partition_assignment_strategy=["range"])
            c.subscribe([topic], listener=listener)
            members.append(c)
            wait_for(lambda: settled(members, 4), 20, "the group to settle", lambda: poll_all(members))
        assert listeners[0].revoked[0] == {TopicPartition(topic, p) for p in range(4)}
        assert sorted(map(sorted, assignments(members))) == [
            [(topic, 0), (topic, 1)], [(topic, 2), (topic, 3)]]
        assert members[0]._ac._coordinator.protocol_name == "range"
    finally:
        for c in members:
            c.close()


def test_static_member_restart_causes_no_rebalance(broker, names):
    topic, group = names
    create_topic(broker.bootstrap, topic, 4)
    recorder = Recorder()
    a = consumer(broker.bootstrap, None, group, group_instance_id="a", session_timeout_ms=10000)
    a.subscribe([topic], listener=recorder)
    b = consumer(broker.bootstrap, topic, group, group_instance_id="b", session_timeout_ms=10000)
    members = [a, b]
    try:
        wait_for(lambda: settled(members, 4), 20, "the group to settle", lambda: poll_all(members))
        gen, before = generation(a), b.assignment()
        revocations = len(recorder.revoked)
        b.close()  # a static member sends no LeaveGroup: its slot waits for it
        b = consumer(broker.bootstrap, topic, group, group_instance_id="b", session_timeout_ms=10000)
        members = [a, b]
        wait_for(lambda: b.assignment() == before, 10, "the restarted member's partitions",
                 lambda: poll_all(members))
        poll_all(members)
        assert generation(b) == generation(a) == gen
        assert len(recorder.revoked) == revocations and a._ac._coordinator._rejoin_reason is None
    finally:
        for c in members:
            c.close()


def test_twenty_consumers_joining_at_once_reach_one_generation(broker, names):
    topic, group = names
    create_topic(broker.bootstrap, topic, 40)

    async def main():
        members = [AsyncConsumer(topic, bootstrap_servers=broker.bootstrap, group_id=group, **FAST)
                   for _ in range(20)]
        await asyncio.gather(*(m.start() for m in members))
        try:
            async def stable():
                while True:
                    await asyncio.gather(*(m.getmany(timeout_ms=10) for m in members))
                    coords = [m._coordinator for m in members]
                    sets = [m.assignment() for m in members]
                    if (len({c.generation for c in coords}) == 1 and all(c.state.value == "stable" for c in coords)
                            and all(c._rejoin_reason is None for c in coords)
                            and [len(s) for s in sets] == [2] * 20 and len(set().union(*sets)) == 40):
                        return coords[0].generation

            loop = asyncio.get_running_loop()
            start = loop.time()
            gen = await asyncio.wait_for(stable(), 45)
            return gen, loop.time() - start
        finally:
            await asyncio.gather(*(m.stop() for m in members))

    gen, took = run(main(), timeout=80)
    assert gen >= 1 and took < 45


def test_commit_and_committed(broker, names):
    topic, group = names
    create_topic(broker.bootstrap, topic, 2)
    produce(broker.bootstrap, topic, 10, 2)
    tp0, tp1 = TopicPartition(topic, 0), TopicPartition(topic, 1)
    c = consumer(broker.bootstrap, topic, group, enable_auto_commit=False)
    try:
        wait_for(lambda: len(c.assignment()) == 2, 20, "the assignment", lambda: poll_all([c]))
        assert c.committed(tp0) is None
        c.commit({tp0: OffsetAndMetadata(3, "note"), tp1: 4})
        assert c.committed(tp0) == 3 and c.committed(tp0, metadata=True) == OffsetAndMetadata(3, "note")
        done = []
        fut = c.commit_async({tp1: 2}, callback=lambda offsets, exc: done.append((offsets, exc)))
        assert fut.result(10) is None
        wait_for(lambda: bool(done), 10, "the commit_async callback", lambda: poll_all([c]))
        assert done == [({tp1: OffsetAndMetadata(2, "")}, None)]
        assert c.committed(tp1) == 2
    finally:
        c.close()
    # a new member starts at the committed offsets
    c = consumer(broker.bootstrap, topic, group)
    try:
        got: dict = {}
        wait_for(lambda: sum(map(len, got.values())) >= 5, 20, "records", lambda: poll_all([c], got))
        firsts = {}
        for r in got[c]:
            firsts.setdefault(r.partition, r.offset)
        assert firsts == {0: 3, 1: 2} and len(got[c]) == 5
    finally:
        c.close()


def test_auto_commit_on_close_and_hand_assigned_partitions_resume(broker, names):
    topic, group = names
    create_topic(broker.bootstrap, topic, 1)
    produce(broker.bootstrap, topic, 10, 1)
    tp = TopicPartition(topic, 0)
    c = consumer(broker.bootstrap, topic, group, auto_commit_interval_ms=60000)
    try:
        got: dict = {}
        wait_for(lambda: len(got.get(c, ())) >= 10, 20, "records", lambda: poll_all([c], got))
    finally:
        c.close()
    c = consumer(broker.bootstrap, None, group)
    try:
        assert c.committed(tp) == 10
        c.assign([tp])  # by hand, outside group membership: starts at the committed offset
        assert c.position(tp) == 10
        c.commit({tp: 7})  # a commit outside the group protocol, accepted while the group is empty
        assert c.committed(tp) == 7
    finally:
        c.close()


def test_position_of_a_hand_assigned_partition_waits_for_its_committed_offset(broker, names, monkeypatch):
    """assign() looks the committed offset up in the background; position()
    right after it must wait for that answer, not report there is none."""
    from client.group import commits

    topic, group = names
    create_topic(broker.bootstrap, topic, 1)
    produce(broker.bootstrap, topic, 5, 1)
    tp = TopicPartition(topic, 0)
    c = consumer(broker.bootstrap, None, group, auto_offset_reset="none")
    try:
        c.commit({tp: 3})
        fetch = commits.Committing.fetch_committed

        async def slow_fetch(self, tps):
            await asyncio.sleep(0.2)  # widens the window the background lookup leaves open
            return await fetch(self, tps)

        monkeypatch.setattr(commits.Committing, "fetch_committed", slow_fetch)
        c.assign([tp])
        assert c.position(tp) == 3
    finally:
        c.close()


def test_commit_without_group_raises(broker, names):
    topic, _ = names
    from client import Consumer

    with Consumer(topic, bootstrap_servers=broker.bootstrap) as c:
        with pytest.raises(IllegalStateError, match="group_id"):
            c.commit()


def test_poll_interval_exceeded_leaves_the_group_and_rejoins_at_next_poll(broker, names):
    topic, group = names
    create_topic(broker.bootstrap, topic, 2)
    slow_listener = Recorder()
    slow = consumer(broker.bootstrap, None, group, max_poll_interval_ms=1000, enable_auto_commit=False)
    slow.subscribe([topic], listener=slow_listener)
    fast = consumer(broker.bootstrap, topic, group)
    members = [slow, fast]
    try:
        wait_for(lambda: settled(members, 2), 20, "the group to settle", lambda: poll_all(members))
        held = slow.assignment()
        # the slow member stops polling: within the poll interval (+ a heartbeat) it leaves
        wait_for(lambda: len(fast.assignment()) == 2 and settled([fast], 2), 15,
                 "the other member to take every partition", lambda: poll_all([fast]))
        assert slow.assignment() == set()
        with pytest.raises(CommitFailedError):
            slow.commit({TopicPartition(topic, 0): 1})
        wait_for(lambda: settled(members, 2), 20, "the slow member to rejoin", lambda: poll_all(members))
        assert slow_listener.lost == [held] and len(held) == 1
    finally:
        for c in members:
            c.close()


def test_second_process_with_the_same_instance_id_fences_the_first(broker, names):
    topic, group = names
    create_topic(broker.bootstrap, topic, 1)
    first = consumer(broker.bootstrap, topic, group, group_instance_id="same", session_timeout_ms=10000)
    second = None
    try:
        wait_for(lambda: settled([first], 1), 20, "the first member", lambda: poll_all([first]))
        second = consumer(broker.bootstrap, topic, group, group_instance_id="same", session_timeout_ms=10000)
        wait_for(lambda: len(second.assignment()) == 1, 20, "the second member", lambda: poll_all([second]))

        def fenced() -> bool:
            try:
                first.poll(20)
            except FencedInstanceIdError:
                return True
            return False

        wait_for(fenced, 10, "the first member to be fenced")
    finally:
        first.close()
        if second is not None:
            second.close()


def test_async_consumer_group(broker, names):
    topic, group = names
    create_topic(broker.bootstrap, topic, 3)
    produce(broker.bootstrap, topic, 30, 3)
    events = []

    class Listener(ConsumerRebalanceListener):
        async def on_partitions_assigned(self, assigned):
            events.append(("assigned", len(assigned)))

        async def on_partitions_revoked(self, revoked):
            events.append(("revoked", len(revoked)))

    async def main():
        c = AsyncConsumer(bootstrap_servers=broker.bootstrap, group_id=group, enable_auto_commit=False, **FAST)
        await c.start()
        try:
            c.subscribe([topic], listener=Listener())
            seen = []
            async with asyncio.timeout(20):
                while len(seen) < 30:
                    for recs in (await c.getmany(timeout_ms=100)).values():
                        seen.extend(recs)
            await c.commit()
            return len(seen), await c.committed(TopicPartition(topic, 0)), c.assignment()
        finally:
            await c.stop()

    count, committed, assigned = run(main(), timeout=30)
    assert count == 30 and committed == 10 and len(assigned) == 3
    assert events[0] == ("assigned", 3) and events[-1] == ("revoked", 3)


def test_member_can_start_before_its_topic_exists(broker, names):
    topic, group = names
    c = consumer(broker.bootstrap, topic, group, metadata_max_age_ms=60000)
    try:
        wait_for(lambda: c._ac._coordinator.generation >= 1, 20, "the first generation", lambda: poll_all([c]))
        assert c.assignment() == set()
        create_topic(broker.bootstrap, topic, 3)
        produce(broker.bootstrap, topic, 3, 3)
        got: dict = {}
        wait_for(lambda: len(got.get(c, ())) == 3, 20, "records of the new topic", lambda: poll_all([c], got))
        assert len(c.assignment()) == 3
    finally:
        c.close()


def test_pattern_subscription_follows_new_topics(broker, names):
    topic, group = names
    create_topic(broker.bootstrap, topic + "-a", 2)
    c = consumer(broker.bootstrap, None, group, metadata_max_age_ms=200)  # new topics show up in metadata
    try:
        c.subscribe(pattern=topic + "-.*")
        wait_for(lambda: len(c.assignment()) == 2, 20, "the matching topic's partitions", lambda: poll_all([c]))
        create_topic(broker.bootstrap, topic + "-b", 1)
        wait_for(lambda: {tp.topic for tp in c.assignment()} == {topic + "-a", topic + "-b"}, 20,
                 "the new topic's partition", lambda: poll_all([c]))
    finally:
        c.close()


def test_unsubscribe_leaves_the_group_and_subscribe_joins_again(broker, names):
    topic, group = names
    create_topic(broker.bootstrap, topic, 2)
    create_topic(broker.bootstrap, topic + "-2", 3)
    c = consumer(broker.bootstrap, topic, group)
    try:
        wait_for(lambda: settled([c], 2), 20, "the first subscription", lambda: poll_all([c]))
        c.unsubscribe()
        assert c.assignment() == set()
        with Admin(bootstrap_servers=broker.bootstrap) as admin:
            wait_for(lambda: admin.describe_groups([group])[0].state == "Empty", 10, "the member to leave")
        c.subscribe([topic + "-2"])
        wait_for(lambda: settled([c], 3), 20, "the second subscription", lambda: poll_all([c]))
        assert {tp.topic for tp in c.assignment()} == {topic + "-2"}
    finally:
        c.close()


def test_a_slow_loop_body_keeps_its_partitions(broker, names):
    """Heartbeats run in the background: a member busy for longer than its
    session timeout (but within max_poll_interval_ms) is not evicted."""
    topic, group = names
    create_topic(broker.bootstrap, topic, 2)
    listener = Recorder()
    c = consumer(broker.bootstrap, None, group, session_timeout_ms=600)
    c.subscribe([topic], listener=listener)
    try:
        wait_for(lambda: settled([c], 2), 20, "the assignment", lambda: poll_all([c]))
        gen = generation(c)
        time.sleep(1.5)  # the loop body's work: 2.5 session timeouts without a poll
        poll_all([c])
        assert generation(c) == gen and len(c.assignment()) == 2
        assert not listener.lost and not listener.revoked
    finally:
        c.close()
