"""Broker side of delivery guarantees, in process: handlers, flush policy, background jobs."""

from __future__ import annotations

import asyncio

import pytest

from broker.config import BrokerConfig
from broker.flusher import GroupCommitFlusher
from broker.handlers import Handlers
from broker.maintenance import Maintenance
from broker.storage import LogConfig, TopicStore
from protocol import batch
from protocol import messages as m
from protocol.errors import ErrorCode
from tests.broker.storage.helpers import FakeClock

NOW = 1_700_000_000


class CountingFlusher(GroupCommitFlusher):
    def __init__(self):
        super().__init__()
        self.synced: list[list] = []

    async def sync(self, logs):
        logs = list(logs)
        self.synced.append(logs)
        await super().sync(logs)


def make_handlers(tmp_path, clock=None, **config):
    clock = clock or FakeClock(NOW)
    store = TopicStore(tmp_path / "data", LogConfig(segment_bytes=300), clock=clock)
    flusher = CountingFlusher()
    cfg = BrokerConfig(data_dir=tmp_path / "data", **config)
    return store, flusher, Handlers(cfg, store, flusher=flusher, clock=clock), clock


def run(coro_or_value):
    if asyncio.iscoroutine(coro_or_value):
        return asyncio.run(coro_or_value)
    return coro_or_value


def produce_req(topic, data, acks=1):
    return m.ProduceRequest(acks=acks, partitions=(m.ProducePartition(topic, 0, data),), correlation_id=1)


# ------------------------------------------------------------ flush policy


def test_a_retried_idempotent_batch_is_answered_with_its_original_offset(tmp_path):
    store, _, h, _ = make_handlers(tmp_path)
    data = batch.build_batch([b"a", b"b"], producer_id=5, producer_epoch=0, base_sequence=0)
    run(h.handle(produce_req("t", batch.build_batch([b"before"]))))
    first = run(h.handle(produce_req("t", data))).partitions[0]
    for acks in (1, -1):
        again = run(h.handle(produce_req("t", data, acks=acks))).partitions[0]
        assert (again.error_code, again.base_offset) == (0, first.base_offset) == (0, 1)
    assert store.partition("t", 0).log_end_offset == 3
    store.close()


def test_flush_messages_answers_acks_1_after_the_fsync_that_reaches_it(tmp_path):
    store, flusher, h, _ = make_handlers(tmp_path)
    store.create_topic("t", 1, {"flush.messages": "3"})
    plog = store.partition("t", 0)
    first = h.handle(produce_req("t", batch.build_batch([b"a", b"b"])))
    assert isinstance(first, m.ProduceResponse) and not flusher.synced  # 2 < 3: answered at once
    second = h.handle(produce_req("t", batch.build_batch([b"c"])))
    assert asyncio.iscoroutine(second)  # 3 reached: the answer waits for the fsync
    assert run(second).partitions[0].error_code == 0
    assert flusher.synced == [[plog]] and plog.unflushed_messages == 0
    # acks=0: the flush happens all the same, in the background
    async def fire_and_forget():
        assert h.handle(produce_req("t", batch.build_batch([b"d", b"e", b"f"]), acks=0)) is None
        while plog.unflushed_messages:
            await asyncio.sleep(0)
    asyncio.run(asyncio.wait_for(fire_and_forget(), 10))
    store.close()


def test_default_flush_policy_leaves_it_to_the_os(tmp_path):
    store, flusher, h, _ = make_handlers(tmp_path)
    for _ in range(5):
        assert isinstance(h.handle(produce_req("t", batch.build_batch([b"x"]))), m.ProduceResponse)
    assert not flusher.synced and store.partition("t", 0).unflushed_messages == 5
    maintenance = Maintenance(BrokerConfig(), store, flusher, clock=FakeClock(NOW + 10**6))
    assert maintenance.due_for_flush() == [] and maintenance.flush_tick_ms() == 1000
    store.close()


def test_flush_ms_flushes_logs_whose_oldest_unflushed_data_is_old_enough(tmp_path):
    clock = FakeClock(NOW)
    store, flusher, h, _ = make_handlers(tmp_path, clock=clock)
    store.create_topic("slow", 1, {"flush.ms": "5000"})
    store.create_topic("fast", 1, {"flush.ms": "100"})
    maintenance = Maintenance(BrokerConfig(), store, flusher, clock=clock)
    assert maintenance.flush_tick_ms() == 100
    h.handle(produce_req("slow", batch.build_batch([b"s"])))
    h.handle(produce_req("fast", batch.build_batch([b"f"])))
    assert maintenance.due_for_flush() == []
    clock.advance(0.1)
    assert asyncio.run(maintenance.run_flush()) == 1
    assert store.partition("fast", 0).unflushed_messages == 0
    assert store.partition("slow", 0).unflushed_messages == 1
    clock.advance(5)
    assert maintenance.due_for_flush() == [store.partition("slow", 0)]
    asyncio.run(maintenance.run_flush())
    assert maintenance.due_for_flush() == []
    store.close()


# ------------------------------------------------------------ retention and cleaning jobs


def test_retention_job_deletes_and_unlinks(tmp_path):
    clock = FakeClock(NOW)
    store, flusher, h, _ = make_handlers(tmp_path, clock=clock)
    store.create_topic("t", 1, {"retention.ms": "60000", "segment.bytes": "300"})
    for _ in range(20):
        h.handle(produce_req("t", batch.build_batch([b"x" * 50], timestamps=(NOW - 3600) * 1000)))
    maintenance = Maintenance(BrokerConfig(), store, flusher, clock=clock)
    plog = store.partition("t", 0)

    async def go():
        deleted = await maintenance.run_retention()
        await maintenance.stop()
        return deleted

    assert asyncio.run(go()) > 0
    assert plog.log_start_offset > 0 and len(plog.segments()) == 1
    assert not list(plog.directory.glob("*.deleted"))
    resp = h.handle(m.FetchRequest(max_wait_ms=0, partitions=(m.FetchPartition("t", 0, 0),), correlation_id=1))
    assert resp.partitions[0].error_code == ErrorCode.OFFSET_OUT_OF_RANGE
    assert resp.partitions[0].log_start_offset == plog.log_start_offset
    store.close()


def test_cleaner_job_compacts_in_a_thread_and_swaps_on_the_loop(tmp_path):
    store, flusher, h, _ = make_handlers(tmp_path)
    store.create_topic("c", 1, {"cleanup.policy": "compact", "segment.bytes": "300"})
    for i in range(30):
        h.handle(produce_req("c", batch.build_batch([b"v%d" % i], keys=[b"k%d" % (i % 3)])))
    plog = store.partition("c", 0)
    before = plog.size_bytes
    maintenance = Maintenance(BrokerConfig(), store, flusher)

    async def go():
        cleaned = await maintenance.run_cleaner()
        again = await maintenance.run_cleaner()
        await maintenance.stop()
        return cleaned, again

    assert asyncio.run(go()) == (1, 0)
    assert plog.size_bytes < before
    assert not [p for p in plog.directory.iterdir() if p.suffix in (".cleaned", ".swap", ".deleted")]
    store.close()


def test_periodic_jobs_run_and_stop(tmp_path):
    store, flusher, _, _ = make_handlers(tmp_path)
    cfg = BrokerConfig(retention_check_interval_ms=1, log_cleaner_interval_ms=1)
    maintenance = Maintenance(cfg, store, flusher)
    ran = {"retention": 0, "cleaner": 0}

    async def go():
        done = asyncio.Event()

        async def counting(name, real):
            ran[name] += 1
            if all(ran.values()):
                done.set()
            return await real()

        real_retention, real_cleaner = maintenance.run_retention, maintenance.run_cleaner
        maintenance.run_retention = lambda: counting("retention", real_retention)
        maintenance.run_cleaner = lambda: counting("cleaner", real_cleaner)
        maintenance.start()
        await asyncio.wait_for(done.wait(), 10)
        await maintenance.stop()

    asyncio.run(go())
    assert all(ran.values())
    store.close()


@pytest.mark.parametrize("name", ["retention_check_interval_ms", "log_cleaner_interval_ms"])
def test_intervals_must_be_positive(name):
    from broker.config import ConfigError

    with pytest.raises(ConfigError):
        BrokerConfig(**{name: 0})
