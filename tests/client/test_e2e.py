"""End to end: the client library against a real broker subprocess.

Most tests share one broker per module (topics are unique per test); the ones
that kill or restart it use the function-scoped ``broker`` fixture.
"""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from client import (
    Admin,
    AsyncConsumer,
    AsyncProducer,
    Consumer,
    NewTopic,
    OffsetAndTimestamp,
    Producer,
    RecordMetadata,
    TopicPartition,
)
from client.accumulator import BATCH_OVERHEAD, RECORD_OVERHEAD
from client.errors import FerryTimeoutError, NoBrokersAvailable
from client.partitioner import partition_for_key
from protocol.errors import MessageTooLargeError, NetworkError, TopicAlreadyExistsError, UnknownTopicOrPartitionError
from tests.brokerproc import BrokerProcess

from .helpers import run

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    proc = BrokerProcess(tmp_path_factory.mktemp("e2e") / "data").start()
    yield proc
    proc.kill()


@pytest.fixture
def topic():
    return "t-" + uuid.uuid4().hex[:10]


def create(bootstrap: str, name: str, partitions: int) -> None:
    with Admin(bootstrap_servers=bootstrap) as admin:
        admin.create_topics([NewTopic(name, partitions)])


def consume_all(bootstrap: str, *topics: str, expected: int, **kw) -> list:
    kw.setdefault("consumer_timeout_ms", 3000)
    out = []
    with Consumer(*topics, bootstrap_servers=bootstrap, auto_offset_reset="earliest", **kw) as c:
        for record in c:
            out.append(record)
            if len(out) >= expected:
                break
    return out


def test_hello_world(shared, topic, capsys):
    with Producer(bootstrap_servers=shared.bootstrap) as producer:
        md = producer.send(topic, b"hello").get(timeout=10)
        print(md.topic, md.partition, md.offset)
    assert isinstance(md, RecordMetadata) and (md.topic, md.partition, md.offset) == (topic, 0, 0)
    assert capsys.readouterr().out == f"{topic} 0 0\n"
    with Consumer(topic, bootstrap_servers=shared.bootstrap, auto_offset_reset="earliest",
                  consumer_timeout_ms=500) as consumer:
        records = list(consumer)
    assert [(r.topic, r.partition, r.offset, r.value) for r in records] == [(topic, 0, 0, b"hello")]
    assert records[0].timestamp == md.timestamp


def test_hello_world_async(shared, topic):
    async def main():
        async with AsyncProducer(bootstrap_servers=shared.bootstrap) as producer:
            md = await producer.send_and_wait(topic, b"hello")
            assert (md.topic, md.partition, md.offset) == (topic, 0, 0)
        async with AsyncConsumer(topic, bootstrap_servers=shared.bootstrap,
                                 auto_offset_reset="earliest") as consumer:
            record = await consumer.getone()
            assert (record.offset, record.value) == (0, b"hello")
    run(main())


def test_consumer_started_before_the_topic_exists(shared, topic):
    with Consumer(topic, bootstrap_servers=shared.bootstrap, auto_offset_reset="earliest",
                  consumer_timeout_ms=10_000) as consumer:
        assert consumer.poll(timeout_ms=200) == {}
        with Producer(bootstrap_servers=shared.bootstrap) as producer:
            producer.send(topic, b"first").get(10)
        assert next(iter(consumer)).value == b"first"


def test_keyed_records_land_on_murmur2_partitions(shared, topic):
    create(shared.bootstrap, topic, 4)
    keys = [b"user-%d" % i for i in range(40)]
    with Producer(bootstrap_servers=shared.bootstrap) as producer:
        futs = [producer.send(topic, b"v", key=k) for k in keys]
        for k, fut in zip(keys, futs):
            assert fut.get(10).partition == partition_for_key(k, 4)
    records = consume_all(shared.bootstrap, topic, expected=40)
    assert {(r.key, r.partition) for r in records} == {(k, partition_for_key(k, 4)) for k in keys}


@pytest.mark.timeout(90)
def test_concurrent_producers_keep_per_partition_and_per_key_order(shared, topic):
    create(shared.bootstrap, topic, 4)
    producers, per_producer = 20, 10_000
    errors = []
    start = threading.Barrier(producers)

    def produce(n: int) -> None:
        try:
            with Producer(bootstrap_servers=shared.bootstrap, linger_ms=5) as producer:
                start.wait(30)
                for i in range(per_producer):
                    producer.send(topic, b"%d:%d" % (n, i), key=b"p%d-%d" % (n, i % 3))
                producer.flush(60)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=produce, args=(n,)) for n in range(producers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(80)
    assert not errors
    total = producers * per_producer
    with Consumer(topic, bootstrap_servers=shared.bootstrap, auto_offset_reset="earliest",
                  consumer_timeout_ms=3000) as consumer:
        records = []
        while len(records) < total:
            batch = consumer.poll(timeout_ms=3000)
            if not batch:
                break
            for recs in batch.values():
                records.extend(recs)
    assert len(records) == total
    last_offset: dict[int, int] = {}
    last_seq: dict[bytes, int] = {}
    for r in records:
        assert r.offset > last_offset.get(r.partition, -1)
        last_offset[r.partition] = r.offset
        n, i = map(int, r.value.split(b":"))
        assert r.partition == partition_for_key(r.key, 4)
        assert i > last_seq.get(r.key, -1), "a producer's records for one key came out of order"
        last_seq[r.key] = i
    assert len(last_seq) == producers * 3


def test_record_at_max_size_is_accepted_and_over_it_refused(shared, topic):
    limit = 1048576
    biggest = limit - BATCH_OVERHEAD - RECORD_OVERHEAD
    with Producer(bootstrap_servers=shared.bootstrap, max_request_size=limit) as producer:
        md = producer.send(topic, b"x" * biggest).get(10)
        assert md.offset == 0
        with pytest.raises(MessageTooLargeError):
            producer.send(topic, b"x" * (biggest + 1))
    # A client allowing more is refused by the broker (max.message.bytes), with the same class.
    with Producer(bootstrap_servers=shared.bootstrap, max_request_size=4 * limit) as producer:
        fut = producer.send(topic, b"y" * (2 * limit))
        with pytest.raises(MessageTooLargeError):
            fut.get(10)
    (record,) = consume_all(shared.bootstrap, topic, expected=1, consumer_timeout_ms=2000)
    assert len(record.value) == biggest


@pytest.mark.parametrize("codec", ["gzip", "lz4", "zstd"])
def test_compression_round_trip(shared, topic, codec):
    values = [(b"record %d " % i) * 20 for i in range(500)]
    with Producer(bootstrap_servers=shared.bootstrap, compression_type=codec) as producer:
        for i, v in enumerate(values):
            producer.send(topic, v, key=b"%d" % i, headers=[("codec", codec.encode())])
    records = consume_all(shared.bootstrap, topic, expected=len(values))
    assert [r.value for r in records] == values
    assert all(list(r.headers) == [("codec", codec.encode())] for r in records)


def test_acks_0_and_all(shared, topic):
    with Producer(bootstrap_servers=shared.bootstrap, acks=0) as producer:
        assert producer.send(topic, b"a", partition=0).get(10).offset == -1
    with Producer(bootstrap_servers=shared.bootstrap, acks="all") as producer:
        assert producer.send(topic, b"b", partition=0).get(10).offset == 1
    assert [r.value for r in consume_all(shared.bootstrap, topic, expected=2)] == [b"a", b"b"]


def test_seek_position_and_offsets_for_times(shared, topic):
    tp = TopicPartition(topic, 0)
    with Producer(bootstrap_servers=shared.bootstrap) as producer:
        for i in range(10):  # one batch: the lookup must find the record inside it
            producer.send(topic, b"%d" % i, partition=0, timestamp_ms=1_000_000 + i * 1000)
    with Consumer(topic, bootstrap_servers=shared.bootstrap, auto_offset_reset="earliest",
                  consumer_timeout_ms=300) as consumer:
        assert consumer.position(tp) == 0
        assert consumer.beginning_offsets([tp]) == {tp: 0}
        assert consumer.end_offsets([tp]) == {tp: 10}
        found = consumer.offsets_for_times({tp: 1_004_500})
        assert found == {tp: OffsetAndTimestamp(5, 1_005_000)}
        assert consumer.offsets_for_times({tp: 2_000_000}) == {tp: None}
        consumer.seek(tp, found[tp].offset)
        assert [r.value for r in consumer] == [b"%d" % i for i in range(5, 10)]
        assert consumer.position(tp) == 10
        consumer.seek_to_beginning(tp)
        assert consumer.position(tp) == 0
        it = iter(consumer)
        assert [next(it).offset for _ in range(3)] == [0, 1, 2]
        assert consumer.position(tp) == 3
        consumer.seek_to_end()
        assert consumer.position(tp) == 10
        assert list(consumer) == []


def test_poll_max_records(shared, topic):
    with Producer(bootstrap_servers=shared.bootstrap) as producer:
        for i in range(25):
            producer.send(topic, b"%d" % i, partition=0)
    tp = TopicPartition(topic, 0)
    with Consumer(topic, bootstrap_servers=shared.bootstrap, auto_offset_reset="earliest") as consumer:
        got = []
        deadline = time.monotonic() + 10
        while len(got) < 25 and time.monotonic() < deadline:
            batch = consumer.poll(timeout_ms=1000, max_records=10)
            assert sum(map(len, batch.values())) <= 10
            got.extend(batch.get(tp, []))
        assert [r.offset for r in got] == list(range(25))
        assert consumer.poll(timeout_ms=100) == {}


def test_consumer_timeout_ms(shared, topic):
    with Producer(bootstrap_servers=shared.bootstrap) as producer:
        producer.send(topic, b"only").get(10)
    with Consumer(topic, bootstrap_servers=shared.bootstrap, auto_offset_reset="earliest",
                  consumer_timeout_ms=300) as consumer:
        start = time.monotonic()
        assert [r.value for r in consumer] == [b"only"]
        elapsed = time.monotonic() - start
        assert 0.3 <= elapsed < 5


def test_admin_create_describe_list_delete(shared, topic):
    with Admin(bootstrap_servers=shared.bootstrap) as admin:
        admin.create_topics(new_topics=[NewTopic(topic, num_partitions=3, replication_factor=1,
                                                 topic_configs={"retention.ms": "3600000"})])
        with pytest.raises(TopicAlreadyExistsError, match=topic):
            admin.create_topics([NewTopic(topic, 3)])
        assert topic in admin.list_topics()
        with Producer(bootstrap_servers=shared.bootstrap) as producer:
            for _ in range(5):
                producer.send(topic, b"v", partition=1)
        (desc,) = admin.describe_topics([topic])
        assert desc.name == topic and desc.num_partitions == 3
        assert [(p.partition, p.log_start_offset, p.log_end_offset) for p in desc.partitions] == [
            (0, 0, 0), (1, 0, 5), (2, 0, 0)]
        assert desc.configs["retention.ms"] == "3600000"
        admin.delete_topics([topic])
        assert topic not in admin.list_topics()
        with pytest.raises(UnknownTopicOrPartitionError):
            admin.describe_topics([topic])
        with pytest.raises(UnknownTopicOrPartitionError):
            admin.delete_topics([topic])


def test_unreachable_broker_errors_within_the_timeout(broker):
    address = broker.bootstrap
    broker.kill()
    start = time.monotonic()
    with pytest.raises(NoBrokersAvailable, match=address):
        Producer(bootstrap_servers=address, request_timeout_ms=2000)
    with pytest.raises(NoBrokersAvailable, match=address):
        Consumer("t", bootstrap_servers=address, request_timeout_ms=2000)
    with pytest.raises(NoBrokersAvailable, match=address):
        Admin(bootstrap_servers=address, request_timeout_ms=2000)
    assert time.monotonic() - start < 6


def test_broker_dying_under_a_producer_fails_its_records_in_time(broker):
    producer = Producer(bootstrap_servers=broker.bootstrap, delivery_timeout_ms=1500,
                        request_timeout_ms=500, retry_backoff_ms=50)
    try:
        producer.send("dying", b"v").get(10)
        broker.kill()
        fut = producer.send("dying", b"w")
        start = time.monotonic()
        with pytest.raises((FerryTimeoutError, NetworkError, NoBrokersAvailable)):
            fut.get(10)
        assert time.monotonic() - start < 5
    finally:
        producer.close(1)


def test_producer_and_consumer_survive_a_broker_restart(broker):
    topic = "restart"
    with Producer(bootstrap_servers=broker.bootstrap, retry_backoff_ms=50) as producer, \
            Consumer(topic, bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest",
                     consumer_timeout_ms=10_000, retry_backoff_ms=50) as consumer:
        assert producer.send(topic, b"before").get(10).offset == 0
        assert next(iter(consumer)).value == b"before"
        broker.restart()
        assert producer.send(topic, b"after").get(20).offset == 1
        assert next(iter(consumer)).value == b"after"
