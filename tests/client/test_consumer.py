"""Consumers against the in-memory fake broker."""

import time

import pytest

from client import AsyncConsumer, Consumer, ConsumerRecord, OffsetAndTimestamp, Producer, TopicPartition
from client.errors import IllegalStateError, NoBrokersAvailable, NoOffsetForPartitionError
from protocol.batch import build_batch
from protocol.messages import FetchRequest

from .fakebroker import FakeBroker, FakeBrokerThread
from .helpers import refused_port, run

pytestmark = pytest.mark.timeout(30)

T0 = TopicPartition("t", 0)


@pytest.fixture
def fake():
    srv = FakeBrokerThread(default_partitions=1)
    yield srv
    srv.stop()


def fill(srv, topic: str, values_per_batch: list[list[bytes]], partition: int = 0, *, partitions: int = 1,
         timestamps=None):
    def do():
        srv.broker.create(topic, partitions)
        log = srv.broker.topics[topic][partition]
        for i, values in enumerate(values_per_batch):
            ts = timestamps[i] if timestamps else 1000
            log.append(build_batch(values, timestamps=ts))
    srv.run(do)


def consumer(srv, *topics, **kw):
    kw.setdefault("auto_offset_reset", "earliest")
    kw.setdefault("consumer_timeout_ms", 500)
    kw.setdefault("fetch_max_wait_ms", 50)
    return Consumer(*topics, bootstrap_servers=srv.bootstrap, **kw)


def test_iteration_yields_consumer_records_in_order(fake):
    fill(fake, "t", [[b"a", b"b"], [b"c"]])
    with consumer(fake, "t") as c:
        records = list(c)
    assert [r.value for r in records] == [b"a", b"b", b"c"]
    assert [r.offset for r in records] == [0, 1, 2]
    assert all(type(r) is ConsumerRecord and r.topic == "t" for r in records)


def test_consumer_timeout_ends_iteration(fake):
    fill(fake, "t", [[b"a"]])
    with consumer(fake, "t", consumer_timeout_ms=200) as c:
        start = time.monotonic()
        assert [r.value for r in c] == [b"a"]
        assert 0.15 < time.monotonic() - start < 3
        start = time.monotonic()
        assert list(c) == []  # a new loop waits again
        assert time.monotonic() - start >= 0.15


def test_latest_skips_what_was_there(fake):
    fill(fake, "t", [[b"old"]])
    with consumer(fake, "t", auto_offset_reset="latest") as c:
        assert c.position(T0) == 1
        fake.run(lambda: fake.broker.topics["t"][0].append(build_batch([b"new"])))
        assert [r.value for r in c] == [b"new"]


def test_subscribed_consumer_reads_every_partition(fake):
    fill(fake, "multi", [[b"p0"]], 0, partitions=3)
    fill(fake, "multi", [[b"p2"]], 2, partitions=3)
    with consumer(fake, "multi") as c:  # without a group id: every partition
        values = sorted(r.value for r in c)
        assert values == [b"p0", b"p2"]
        assert c.assignment() == {TopicPartition("multi", p) for p in range(3)}
        assert c.group_id is None


def test_waits_for_a_topic_created_later(fake):
    with consumer(fake, "later", consumer_timeout_ms=5000) as c:
        assert c.poll(timeout_ms=100) == {}
        fill(fake, "later", [[b"finally"]])
        record = next(iter(c))
        assert record.value == b"finally"


def test_poll_respects_max_records_and_continues(fake):
    fill(fake, "t", [[b"%d" % i for i in range(10)]])
    with consumer(fake, "t") as c:
        got = []
        deadline = time.monotonic() + 5
        while len(got) < 10 and time.monotonic() < deadline:
            batch = c.poll(timeout_ms=500, max_records=3)
            for tp, records in batch.items():
                assert tp == T0 and len(records) <= 3
                got.extend(records)
        assert [r.offset for r in got] == list(range(10))
        assert c.position(T0) == 10


def test_position_follows_iteration_inside_a_chunk(fake):
    fill(fake, "t", [[b"%d" % i for i in range(10)]])
    with consumer(fake, "t") as c:
        it = iter(c)
        for expected in range(4):
            assert next(it).offset == expected
        assert c.position(T0) == 4
        # poll continues where iteration stopped
        rest = c.poll(timeout_ms=1000, max_records=2)[T0]
        assert [r.offset for r in rest] == [4, 5]
        assert next(iter(c)).offset == 6


def test_seek_during_iteration(fake):
    fill(fake, "t", [[b"%d" % i for i in range(10)]])
    with consumer(fake, "t") as c:
        it = iter(c)
        assert next(it).offset == 0
        c.seek(T0, 7)
        assert c.position(T0) == 7
        assert [r.offset for r in c] == [7, 8, 9]
        c.seek_to_beginning()
        assert c.position(T0) == 0
        assert next(iter(c)).offset == 0
        c.seek_to_end(T0)
        assert c.position(T0) == 10
        assert list(c) == []


def test_seek_past_the_end_resets_with_auto_offset_reset(fake):
    fill(fake, "t", [[b"a", b"b"]])
    with consumer(fake, "t") as c:
        c.seek(T0, 50)
        assert [r.offset for r in c] == [0, 1]


def test_no_reset_strategy_raises(fake):
    fill(fake, "t", [[b"a"]])
    with consumer(fake, "t", auto_offset_reset="none") as c:
        with pytest.raises(NoOffsetForPartitionError):
            c.position(T0)
        with pytest.raises(NoOffsetForPartitionError):
            c.poll(timeout_ms=100)
        c.seek(T0, 0)
        assert [r.value for r in c] == [b"a"]


def test_offsets_for_times_and_log_bounds(fake):
    fill(fake, "t", [[b"a", b"b"], [b"c"]], timestamps=[[100, 200], 300])
    with consumer(fake, "t") as c:
        found = c.offsets_for_times({T0: 150})
        assert found == {T0: OffsetAndTimestamp(1, 200)}
        assert c.offsets_for_times({T0: 1000}) == {T0: None}
        assert c.beginning_offsets([T0]) == {T0: 0}
        assert c.end_offsets([T0]) == {T0: 3}


def test_manual_assignment(fake):
    fill(fake, "a", [[b"x"]], 1, partitions=2)
    with consumer(fake) as c:
        c.assign([TopicPartition("a", 1)])
        assert c.assignment() == {TopicPartition("a", 1)}
        assert [r.value for r in c] == [b"x"]
        with pytest.raises(IllegalStateError):
            c.subscribe(["a"])
        c.unsubscribe()
        c.subscribe(["a"])


def test_topics_and_partitions(fake):
    fill(fake, "x", [[b"1"]], partitions=4)
    with consumer(fake) as c:
        assert "x" in c.topics()
        assert c.partitions_for_topic("x") == {0, 1, 2, 3}
        assert c.partitions_for_topic("nope") is None


def test_pause_and_resume(fake):
    fill(fake, "t", [[b"a"]])
    with consumer(fake, "t", consumer_timeout_ms=200) as c:
        c.pause(T0)
        assert c.paused() == {T0}
        assert list(c) == []
        c.resume(T0)
        assert [r.value for r in c] == [b"a"]


def test_deserializers(fake):
    fill(fake, "t", [[b"1", b"2"]])
    with consumer(fake, "t", value_deserializer=int) as c:
        assert [r.value for r in c] == [1, 2]


def test_fetches_stay_one_ahead(fake):
    fill(fake, "t", [[b"%d" % i] for i in range(6)])
    with consumer(fake, "t", max_partition_fetch_bytes=1) as c:
        # each fetch returns one batch (the first is always whole)
        assert [r.offset for r in c] == list(range(6))
    fetches = [r for r in fake.broker.requests if isinstance(r, FetchRequest)]
    assert [f.partitions[0].fetch_offset for f in fetches][:6] == list(range(6))


def test_oversized_batch_is_fetched_with_a_larger_limit(fake):
    fill(fake, "t", [[b"x" * 5000]])

    def cut(req):
        # a broker that cuts even the first batch at max_bytes
        from protocol.messages import FetchPartitionResponse, FetchResponse
        log = fake.broker.topics["t"][0]
        p = req.partitions[0]
        data = log.read(p.fetch_offset, p.max_bytes)[: p.max_bytes]
        return FetchResponse(partitions=(FetchPartitionResponse("t", 0, high_watermark=1, records=data),),
                             correlation_id=req.correlation_id)

    fake.broker.hooks[FetchRequest.API_KEY] = cut
    with consumer(fake, "t", max_partition_fetch_bytes=1000) as c:
        assert [len(r.value) for r in c] == [5000]


def test_unreachable_broker_raises_quickly():
    port = refused_port()
    start = time.monotonic()
    with pytest.raises(NoBrokersAvailable, match=str(port)):
        Consumer("t", bootstrap_servers=f"127.0.0.1:{port}", request_timeout_ms=2000)
    assert time.monotonic() - start < 3


def test_closed_consumer(fake):
    c = consumer(fake, "t")
    c.close()
    c.close()
    with pytest.raises(IllegalStateError):
        c.poll()


def test_async_consumer_getmany_getone_and_iteration():
    async def main():
        fb = await FakeBroker().start()
        fb.create("t")
        for values in ([b"a", b"b"], [b"c"], [b"d"]):
            fb.topics["t"][0].append(build_batch(values))
        async with AsyncConsumer("t", bootstrap_servers=fb.bootstrap, auto_offset_reset="earliest",
                                 fetch_max_wait_ms=50) as c:
            first = await c.getone()
            assert first.value == b"a"
            got = await c.getmany(timeout_ms=1000, max_records=2)
            assert [r.value for r in got[T0]] == [b"b", b"c"]
            async for record in c:
                assert record.value == b"d"
                break
            assert await c.position(T0) == 4
            c.seek(T0, 1)
            assert (await c.getone()).value == b"b"
            await c.seek_to_end()
            assert await c.getmany(timeout_ms=100) == {}
            assert await c.end_offsets([T0]) == {T0: 4}
        await fb.stop()
    run(main())


def test_produce_then_consume_round_trip(fake):
    with Producer(bootstrap_servers=fake.bootstrap) as p:
        for i in range(1000):
            p.send("rt", b"%d" % i, key=b"%d" % (i % 7), headers=[("i", b"%d" % i)] if i % 2 else None)
    with consumer(fake, "rt") as c:
        records = list(c)
    assert sorted(int(r.value) for r in records) == list(range(1000))
    for r in records:
        assert r.key == b"%d" % (int(r.value) % 7)
        assert list(r.headers) == ([("i", r.value)] if int(r.value) % 2 else [])


def test_topics_may_be_given_as_a_list(fake):
    fill(fake, "l1", [[b"1"]])
    fill(fake, "l2", [[b"2"]])
    with Consumer(["l1", "l2"], bootstrap_servers=fake.bootstrap, auto_offset_reset="earliest",
                  consumer_timeout_ms=300) as c:
        assert c.subscription() == {"l1", "l2"}
        assert sorted(r.value for r in c) == [b"1", b"2"]


def test_reading_without_subscription_is_an_error(fake):
    with consumer(fake) as c:
        with pytest.raises(IllegalStateError, match="subscribe"):
            c.poll()
        with pytest.raises(IllegalStateError, match="subscribe"):
            next(iter(c))


def test_a_full_buffer_stops_fetching_until_the_consumer_takes_a_chunk(fake):
    from client.subscription import FETCH_AHEAD
    batches = [[b"%03d" % (i * 10 + j) for j in range(10)] for i in range(30)]
    fill(fake, "t", batches)
    ahead = []
    # one batch per fetch answer, so 30 chunks come one at a time
    with consumer(fake, "t", max_partition_fetch_bytes=1) as c:
        st = None
        values = []
        for record in c:
            if st is None:  # the first record: let the fetcher run ahead as far as it may
                st = c._ac._subs.assignment[T0]
                deadline = time.monotonic() + 5
                while not st.full and time.monotonic() < deadline:
                    time.sleep(0.001)
            ahead.append(st.fetched - st.taken)
            values.append(record.value)
            if len(values) == 300:
                break
    assert ahead[0] == FETCH_AHEAD  # it stopped fetching at the limit...
    assert max(ahead) <= FETCH_AHEAD
    assert values == [v for batch in batches for v in batch]  # ...and went on once chunks were taken
