"""The consumer's continuing fetches against a real broker: every record once, in order."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from client import AsyncConsumer, AsyncProducer, TopicPartition
from client import fetcher as fetcher_mod
from protocol.messages import CONTINUE
from tests.brokerproc import BrokerProcess

from .helpers import run

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    proc = BrokerProcess(tmp_path_factory.mktemp("pipe") / "data").start()
    yield proc
    proc.kill()


@pytest.fixture
def continuing(monkeypatch):
    """Counts the fetches the consumer sends, continuing ones and the others."""
    counts = {"continue": 0, "named": 0}
    start = fetcher_mod.Fetcher._start_fetch

    def counted(self, node, sent):
        counts["continue" if any(o == CONTINUE for _, _, o in sent.values()) else "named"] += 1
        return start(self, node, sent)

    monkeypatch.setattr(fetcher_mod.Fetcher, "_start_fetch", counted)
    return counts


def test_a_consumer_keeping_up_gets_every_record_once_through_continuing_fetches(shared, continuing):
    topic = "p-" + uuid.uuid4().hex[:8]
    n = 300

    async def main():
        async with AsyncProducer(bootstrap_servers=shared.bootstrap, linger_ms=0) as producer, \
                AsyncConsumer(bootstrap_servers=shared.bootstrap, auto_offset_reset="earliest") as consumer:
            await producer.send_and_wait(topic, b"0")
            tp = TopicPartition(topic, 0)
            consumer.assign([tp])
            got = []
            arrived = asyncio.Event()

            async def produce():
                for i in range(1, n):
                    # one at a time, each after the consumer has the one before:
                    # every record is appended while fetches wait at the broker
                    await arrived.wait()
                    arrived.clear()
                    await producer.send_and_wait(topic, b"%d" % i)

            task = asyncio.ensure_future(produce())
            async for record in consumer:
                got.append(record)
                arrived.set()
                if len(got) == n:
                    break
            await task
            return got

    got = run(main())
    assert [r.offset for r in got] == list(range(n))
    assert [r.value for r in got] == [b"%d" % i for i in range(n)]
    assert continuing["continue"] >= n // 2  # the consumer did pipeline


def test_seeks_while_fetches_continue_never_mix_positions(shared, continuing):
    topic = "s-" + uuid.uuid4().hex[:8]

    async def checked():
        # each round seeks, reads to the end, then gets one record appended while
        # its fetches wait (so the log grows by one per round)
        async with AsyncProducer(bootstrap_servers=shared.bootstrap, linger_ms=0) as producer, \
                AsyncConsumer(bootstrap_servers=shared.bootstrap, auto_offset_reset="earliest") as consumer:
            for i in range(50):
                await producer.send_and_wait(topic, b"%d" % i)
            tp = TopicPartition(topic, 0)
            consumer.assign([tp])
            end = 50
            for target in (10, 40, 0, 49, 25):
                consumer.seek(tp, target)
                got = []
                while len(got) < end - target:
                    batch = await consumer.getmany(tp, timeout_ms=5000)
                    assert batch, "records stopped coming after a seek"
                    got.extend(r.offset for r in batch[tp])
                assert got == list(range(target, end))
                late = await producer.send_and_wait(topic, b"late")
                record = await consumer.getone()
                assert record.offset == late.offset == end
                end += 1

    run(checked())
    assert continuing["continue"] > 0
