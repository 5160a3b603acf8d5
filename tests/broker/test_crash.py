"""SIGKILL the broker again and again under full-speed producers, then check every ack.

The producer lives across all the crashes: its in-flight batches fail with the
connection and are retried against the restarted broker. With the idempotent
producer (the default) a retried batch that had already reached the log is
recognised and answered with its original offset, so every acknowledged record
must be in the log exactly once, at the offset its acknowledgement named, and
in send order within its partition. A consumer that also lives across the
crashes must see them all, and every batch it reads passes its CRC (the
consumer always checks).
"""

from __future__ import annotations

import random
import threading
import time

import pytest

from client import Consumer, Producer, TopicPartition

pytestmark = pytest.mark.timeout(300)

PARTITIONS = 3
CRASHES = 20


class Recorder:
    """Sends numbered records from a thread and remembers what was acknowledged."""

    def __init__(self, bootstrap: str, topic: str, acks) -> None:
        self.producer = Producer(
            bootstrap_servers=bootstrap, acks=acks, linger_ms=1, request_timeout_ms=5000,
            retry_backoff_ms=50, delivery_timeout_ms=120000, max_block_ms=120000,
        )
        self.topic = topic
        self.acked: dict[bytes, tuple[int, int]] = {}
        self.failed: list[BaseException] = []
        self.sent = 0
        self.lock = threading.Lock()
        self.progress = threading.Condition(self.lock)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        i = 0
        while not self.stop.is_set():
            value = b"%08d" % i
            key = b"k%d" % (i % 17)
            fut = self.producer.send(self.topic, value=value, key=key)
            fut.add_callback(self._ok, value)
            fut.add_errback(self._err)
            i += 1
            self.sent = i
            if i % 500 == 0:
                with self.lock:  # keep a bounded amount in flight
                    self.progress.wait_for(lambda: len(self.acked) + len(self.failed) >= i - 5000, 30)

    def _ok(self, value: bytes, meta) -> None:
        with self.lock:
            self.acked[value] = (meta.partition, meta.offset)
            self.progress.notify_all()

    def _err(self, exc: BaseException) -> None:
        with self.lock:
            self.failed.append(exc)
            self.progress.notify_all()

    def wait_for_acks(self, n: int, timeout: float) -> None:
        with self.lock:
            assert self.progress.wait_for(lambda: len(self.acked) >= n, timeout), (
                f"only {len(self.acked)} acks, failures: {self.failed[:3]}"
            )


def run_crashes(broker, acks) -> None:
    rng = random.Random(f"crash-{acks}")
    from client import Admin

    with Admin(bootstrap_servers=broker.bootstrap) as admin:
        admin.create_topic("crash", PARTITIONS)
    rec = Recorder(broker.bootstrap, "crash", acks)
    rec.thread.start()
    try:
        for _ in range(CRASHES):
            # kill at a random moment: after a random number of further acks
            rec.wait_for_acks(len(rec.acked) + rng.randrange(50, 2000), 60)
            broker.kill()
            broker.start()
        rec.wait_for_acks(len(rec.acked) + 100, 60)
    finally:
        rec.stop.set()
        rec.thread.join(60)
    rec.producer.flush(120)
    rec.producer.close(30)
    assert not rec.failed, rec.failed[:3]
    assert len(rec.acked) == rec.sent

    consumer = Consumer(bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest",
                        consumer_timeout_ms=5000)
    tps = [TopicPartition("crash", p) for p in range(PARTITIONS)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    seen: dict[bytes, tuple[int, int]] = {}
    last_in_partition: dict[int, bytes] = {}
    deadline = time.monotonic() + 120
    while len(seen) < len(rec.acked) and time.monotonic() < deadline:
        for tp, records in consumer.poll(timeout_ms=1000).items():
            for r in records:
                assert r.value not in seen, f"duplicate {r.value!r} at {r.partition}/{r.offset}"
                seen[r.value] = (r.partition, r.offset)
                prev = last_in_partition.get(r.partition)
                assert prev is None or prev < r.value, "records out of send order in a partition"
                last_in_partition[r.partition] = r.value
    consumer.close()
    missing = [v for v in rec.acked if v not in seen]
    assert not missing, f"{len(missing)} acknowledged records lost, e.g. {missing[:5]}"
    for value, where in rec.acked.items():
        assert seen[value] == where, f"{value!r} acknowledged at {where} but found at {seen[value]}"


def test_sigkill_storm_acks_all(broker):
    run_crashes(broker, "all")


def test_sigkill_storm_acks_1(broker):
    run_crashes(broker, 1)
