"""Retention and compaction seen from the client, against a real broker."""

from __future__ import annotations

import threading
import time

import pytest

from client import Admin, Consumer, Producer, TopicPartition

pytestmark = pytest.mark.timeout(120)


def wait_until(predicate, timeout: float = 30.0, step: float = 0.05) -> None:
    """Re-check ``predicate`` until it holds; the broker's periodic jobs have no event to wait on."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        pause.wait(step)


def test_consumer_below_the_log_start_resets_after_retention(broker_factory):
    broker = broker_factory("--retention-check-interval-ms", "100")
    tp = TopicPartition("ret", 0)
    with Admin(bootstrap_servers=broker.bootstrap) as admin:
        admin.create_topic("ret", 1, topic_configs={"segment.bytes": "2000", "retention.ms": "60000"})
    old = int(time.time() * 1000) - 3_600_000  # an hour ago: past retention at once
    with Producer(bootstrap_servers=broker.bootstrap, linger_ms=0) as producer:
        for i in range(40):
            producer.send("ret", b"x" * 200, timestamp_ms=old).get(10)
        last = producer.send("ret", b"newest").get(10)
    consumer = Consumer(bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest",
                        consumer_timeout_ms=5000)
    try:
        consumer.assign([tp])
        wait_until(lambda: consumer.beginning_offsets([tp])[tp] > 0)
        start = consumer.beginning_offsets([tp])[tp]
        assert 0 < start <= last.offset  # whole old segments went, the active one stayed
        consumer.seek(tp, 0)  # now below the log start: OFFSET_OUT_OF_RANGE, then reset
        records = [r for batch in consumer.poll(timeout_ms=5000).values() for r in batch]
        assert records and records[0].offset == start
    finally:
        consumer.close()


def test_compacted_topic_keeps_the_newest_value_per_key(broker_factory):
    broker = broker_factory("--log-cleaner-interval-ms", "100")
    with Admin(bootstrap_servers=broker.bootstrap) as admin:
        admin.create_topic("kv", 1, topic_configs={
            "cleanup.policy": "compact", "segment.bytes": "1000", "delete.retention.ms": "0"})
    with Producer(bootstrap_servers=broker.bootstrap, linger_ms=0) as producer:
        for round_ in range(5):
            for k in range(5):
                producer.send("kv", b"v%d" % round_, key=b"k%d" % k).get(10)
        producer.send("kv", None, key=b"k0").get(10)  # a tombstone
        for i in range(20):  # push the history into closed segments
            producer.send("kv", b"filler", key=b"f%d" % i).get(10)
    tp = TopicPartition("kv", 0)

    def latest_values():
        consumer = Consumer(bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest",
                            consumer_timeout_ms=1000)
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        out = [(r.offset, r.key, r.value) for r in consumer]
        consumer.close()
        return out

    wait_until(lambda: len([r for r in latest_values() if not r[1].startswith(b"f")]) <= 4)
    records = latest_values()
    kept = {k: v for _, k, v in records if not k.startswith(b"f")}
    assert kept == {b"k1": b"v4", b"k2": b"v4", b"k3": b"v4", b"k4": b"v4"}
    offsets = [o for o, _, _ in records]
    assert offsets == sorted(offsets)  # offsets never change, only gaps appear
    broker.restart()
    assert latest_values() == records
