"""Records sent through a fault-injecting proxy arrive exactly once and in order.

The proxy (tests/faultproxy.py) sits between the producer and a real broker
that advertises the proxy's port, so every connection the producer makes,
metadata included, goes through it. It drops answers (the producer times out
and retries a batch the broker already wrote: the broker must recognise it),
cuts connections in the middle of a request or right after an answer, and
delays answers. Afterwards the broker is restarted without the proxy and a
consumer reads every partition directly.
"""

from __future__ import annotations

import time

import pytest

from client import Admin, Consumer, Producer, TopicPartition
from client.partitioner import partition_for_key
from tests.faultproxy import FaultProxy, Faults

pytestmark = pytest.mark.timeout(180)

PARTITIONS = 3
RECORDS = 5000
KEYS = 50


@pytest.fixture
def proxy():
    faults = Faults(drop_response=0.025, cut_request=0.04, cut_after_response=0.025,
                    delay_response=0.1, max_delay_s=0.02)
    p = FaultProxy(faults=faults, seed=11).start()
    p.enabled = False
    yield p
    p.stop()


def read_all(bootstrap: str, topic: str, expected: int) -> dict[int, list]:
    """Every record of ``topic``'s partitions, in offset order, within a bound."""
    consumer = Consumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                        consumer_timeout_ms=5000)
    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    out: dict[int, list] = {p: [] for p in range(PARTITIONS)}
    deadline = time.monotonic() + 60
    while sum(map(len, out.values())) < expected and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=1000).values():
            for r in records:
                out[r.partition].append(r)
    # anything beyond what was sent (a duplicate) shows up within a short extra poll
    for records in consumer.poll(timeout_ms=500).values():
        for r in records:
            out[r.partition].append(r)
    consumer.close()
    return out


@pytest.mark.parametrize("acks", ["all", 1])
def test_thousands_of_records_through_faults_arrive_once_and_in_order(broker_factory, proxy, acks):
    broker = broker_factory("--advertised-port", str(proxy.port))
    proxy.set_target(broker.host, broker.port)
    topic = "faults"
    with Admin(bootstrap_servers=proxy.bootstrap) as admin:
        admin.create_topic(topic, PARTITIONS)
    producer = Producer(bootstrap_servers=proxy.bootstrap, acks=acks, linger_ms=2, batch_size=128,
                        request_timeout_ms=400, retry_backoff_ms=20, delivery_timeout_ms=120_000)
    assert producer.enable_idempotence
    try:
        producer.partitions_for(topic)
        proxy.enabled = True
        futs = []
        for i in range(RECORDS):
            key = b"k%02d" % (i % KEYS)
            futs.append((b"%05d" % i, key, producer.send(topic, b"%05d" % i, key=key)))
        producer.flush(120)
        proxy.enabled = False
    finally:
        producer.close(10)
    counts = dict(proxy.faults.counts)
    for kind in ("dropped", "cut_request", "cut_response", "delayed"):
        assert counts[kind] >= 5, f"too few {kind} faults: {counts}"

    acked = {}
    for value, key, fut in futs:
        md = fut.get(0)
        assert md.partition == partition_for_key(key, PARTITIONS)
        acked[value] = (md.partition, md.offset)

    # read it back directly: the broker restarted without the proxy in its metadata
    broker.stop()
    broker.args = [a for a in broker.args if a not in ("--advertised-port", str(proxy.port))]
    broker.start()
    logs = read_all(broker.bootstrap, topic, RECORDS)
    seen = {}
    for part, records in logs.items():
        values = [r.value for r in records]
        assert len(values) == len(set(values)), f"partition {part} holds a record twice"
        assert values == sorted(values), f"partition {part} is out of send order"
        assert [r.offset for r in records] == list(range(len(records)))
        for r in records:
            seen[r.value] = (r.partition, r.offset)
    assert len(seen) == RECORDS, f"{RECORDS - len(seen)} records missing"
    assert seen == acked, "a record is not where its acknowledgement said"
