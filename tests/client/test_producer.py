"""Producers against the in-memory fake broker: batching, retries, errors."""

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from client import AsyncProducer, Producer, RecordMetadata
from client.errors import FerryTimeoutError, IllegalStateError, NoBrokersAvailable
from client.partitioner import partition_for_key
from protocol import batch as batchcodec
from protocol.errors import (
    ErrorCode,
    InvalidTopicError,
    MessageTooLargeError,
    NotLeaderOrFollowerError,
)
from protocol.messages import MetadataRequest, ProducePartitionResponse, ProduceRequest, ProduceResponse

from .fakebroker import FakeBroker, FakeBrokerThread, Hangup
from .helpers import refused_port, run

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def fake():
    srv = FakeBrokerThread(default_partitions=3)
    yield srv
    srv.stop()


def stored_values(broker: FakeBroker, topic: str, partition: int) -> list:
    out = []
    for b in broker.topics[topic][partition].batches:
        out.extend(batchcodec.decode(b).values)
    return out


def test_async_send_and_wait_returns_record_metadata():
    async def main():
        fb = await FakeBroker().start()
        async with AsyncProducer(bootstrap_servers=fb.bootstrap) as producer:
            md = await producer.send_and_wait("hello", b"hello")
            assert isinstance(md, RecordMetadata)
            assert (md.topic, md.partition, md.offset) == ("hello", 0, 0)
            fut = await producer.send("hello", b"again")
            assert (await fut).offset == 1
            assert fut.done() and fut.result().offset == 1
        await fb.stop()
    run(main())


def test_keyed_records_land_on_murmur2_partitions(fake):
    with Producer(bootstrap_servers=fake.bootstrap) as producer:
        futs = {b"key-%d" % i: producer.send("keys", b"v", key=b"key-%d" % i) for i in range(30)}
        producer.flush(10)
        for key, fut in futs.items():
            assert fut.get(5).partition == partition_for_key(key, 3)


def test_keyless_records_stick_to_a_partition_per_batch(fake):
    with Producer(bootstrap_servers=fake.bootstrap, linger_ms=1000) as producer:
        futs = [producer.send("sticky", b"v") for _ in range(50)]
        producer.flush(10)
        assert len({f.get(5).partition for f in futs}) == 1
        assert [f.get(5).offset for f in futs] == list(range(50))


def test_explicit_partition_and_range_check(fake):
    with Producer(bootstrap_servers=fake.bootstrap) as producer:
        assert producer.send("p", b"v", partition=2).get(5).partition == 2
        with pytest.raises(ValueError, match="0-2"):
            producer.send("p", b"v", partition=3)
        assert producer.partitions_for("p") == {0, 1, 2}


def test_acks_0_resolves_with_offset_minus_one(fake):
    with Producer(bootstrap_servers=fake.bootstrap, acks=0) as producer:
        md = producer.send("zero", b"v").get(5)
        assert md.offset == -1 and md.topic == "zero"
    # acks=0 resolves once the request is written; the broker may still be reading it
    stored = lambda: fake.run(lambda: sum(map(len, (stored_values(fake.broker, "zero", p) for p in range(3)))))
    deadline = time.monotonic() + 10
    while stored() == 0 and time.monotonic() < deadline:
        threading.Event().wait(0.01)
    assert stored() == 1


def test_acks_all_is_sent_as_minus_one(fake):
    with Producer(bootstrap_servers=fake.bootstrap, acks="all") as producer:
        producer.send("all", b"v").get(5)
    reqs = [r for r in fake.broker.requests if isinstance(r, ProduceRequest)]
    assert reqs and all(r.acks == -1 for r in reqs)


def test_bad_acks_value():
    with pytest.raises(ValueError):
        AsyncProducer(acks=2)


def test_retriable_error_is_retried_and_refreshes_metadata(fake):
    failures = {"left": 2}

    def hook(req):
        if failures["left"]:
            failures["left"] -= 1
            return ProduceResponse(partitions=tuple(
                ProducePartitionResponse(p.topic, p.partition, int(ErrorCode.NOT_LEADER_OR_FOLLOWER))
                for p in req.partitions), correlation_id=req.correlation_id)
        return None

    fake.broker.hooks[ProduceRequest.API_KEY] = hook
    with Producer(bootstrap_servers=fake.bootstrap, retry_backoff_ms=10) as producer:
        producer.send("r", b"warm-up", partition=0).get(5)  # metadata known; fails twice first
        metadata_before = sum(isinstance(r, MetadataRequest) for r in fake.broker.requests)
        failures["left"] = 1
        md = producer.send("r", b"v", partition=0).get(5)
        assert md.offset == 1
    assert stored_values(fake.broker, "r", 0) == [b"warm-up", b"v"]
    assert sum(isinstance(r, MetadataRequest) for r in fake.broker.requests) > metadata_before


def test_retries_run_out(fake):
    def hook(req):
        return ProduceResponse(partitions=tuple(
            ProducePartitionResponse(p.topic, p.partition, int(ErrorCode.NOT_LEADER_OR_FOLLOWER), error_message="moved")
            for p in req.partitions), correlation_id=req.correlation_id)

    with Producer(bootstrap_servers=fake.bootstrap, retries=2, retry_backoff_ms=5) as producer:
        producer.partitions_for("r")
        fake.broker.hooks[ProduceRequest.API_KEY] = hook
        with pytest.raises(NotLeaderOrFollowerError, match="moved"):
            producer.send("r", b"v").get(5)
    assert sum(isinstance(r, ProduceRequest) for r in fake.broker.requests) == 3


def test_non_retriable_error_fails_with_the_protocol_class(fake):
    def hook(req):
        return ProduceResponse(partitions=tuple(
            ProducePartitionResponse(p.topic, p.partition, int(ErrorCode.MESSAGE_TOO_LARGE))
            for p in req.partitions), correlation_id=req.correlation_id)

    with Producer(bootstrap_servers=fake.bootstrap) as producer:
        producer.partitions_for("big")
        fake.broker.hooks[ProduceRequest.API_KEY] = hook
        fut = producer.send("big", b"v")
        with pytest.raises(MessageTooLargeError, match="big/"):
            fut.get(5)
        assert fut.failed() and isinstance(fut.exception, MessageTooLargeError)
    assert sum(isinstance(r, ProduceRequest) for r in fake.broker.requests) == 1


def test_lost_connection_is_retried(fake):
    state = {"hung_up": False}

    def hook(req):
        if not state["hung_up"]:
            state["hung_up"] = True
            raise Hangup()
        return None

    with Producer(bootstrap_servers=fake.bootstrap, retry_backoff_ms=10) as producer:
        producer.partitions_for("lost")
        fake.broker.hooks[ProduceRequest.API_KEY] = hook
        md = producer.send("lost", b"v", partition=1).get(10)
        assert md.offset == 0 and state["hung_up"]


def test_record_over_max_request_size_is_refused_at_send(fake):
    with Producer(bootstrap_servers=fake.bootstrap, max_request_size=10_000) as producer:
        with pytest.raises(MessageTooLargeError):
            producer.send("m", b"x" * 10_000)
        producer.send("m", b"x" * 9_000).get(5)


def test_values_must_be_bytes_without_a_serializer(fake):
    with Producer(bootstrap_servers=fake.bootstrap) as producer:
        with pytest.raises(TypeError, match="value_serializer"):
            producer.send("s", "text")
        with pytest.raises(TypeError, match="key_serializer"):
            producer.send("s", b"v", key=42)
        assert producer.send("s", bytearray(b"ok")).get(5).offset >= 0


def test_serializers(fake):
    with Producer(bootstrap_servers=fake.bootstrap, key_serializer=str.encode,
                  value_serializer=lambda v: repr(v).encode()) as producer:
        producer.send("ser", {"a": 1}, key="k", partition=0).get(5)
    batch = batchcodec.decode(fake.broker.topics["ser"][0].batches[0])
    assert batch.keys == [b"k"] and batch.values == [b"{'a': 1}"]


def test_headers_and_timestamps_are_sent(fake):
    with Producer(bootstrap_servers=fake.bootstrap) as producer:
        md = producer.send("h", b"v", partition=0, timestamp_ms=12345, headers=[("a", b"1")]).get(5)
        assert md.timestamp == 12345
    batch = batchcodec.decode(fake.broker.topics["h"][0].batches[0])
    assert batch.timestamps == [12345] and batch.headers == [[("a", b"1")]]


def test_compression_codecs_are_sent(fake):
    for codec in ("gzip", "lz4", "zstd"):
        with Producer(bootstrap_servers=fake.bootstrap, compression_type=codec) as producer:
            producer.send("c-" + codec, b"v" * 1000, partition=0).get(5)
        header = batchcodec.parse_header(fake.broker.topics["c-" + codec][0].batches[0])
        assert header.compression.name.lower() == codec


def test_unknown_topic_without_auto_create_times_out_within_max_block():
    srv = FakeBrokerThread(auto_create=False)
    try:
        with Producer(bootstrap_servers=srv.bootstrap, max_block_ms=300) as producer:
            start = time.monotonic()
            with pytest.raises(FerryTimeoutError, match="nope"):
                producer.send("nope", b"v")
            assert time.monotonic() - start < 3
    finally:
        srv.stop()


def test_invalid_topic_fails_at_once(fake):
    from protocol.messages import MetadataResponse, TopicMetadata

    def hook(req):
        if req.topics and "bad topic" in req.topics:
            return MetadataResponse(topics=(TopicMetadata("bad topic", int(ErrorCode.INVALID_TOPIC)),),
                                    correlation_id=req.correlation_id)

    fake.broker.hooks[MetadataRequest.API_KEY] = hook
    with Producer(bootstrap_servers=fake.bootstrap, max_block_ms=10_000) as producer:
        start = time.monotonic()
        with pytest.raises(InvalidTopicError):
            producer.send("bad topic", b"v")
        assert time.monotonic() - start < 3


def test_unreachable_broker_raises_no_brokers_available_quickly():
    port = refused_port()
    start = time.monotonic()
    with pytest.raises(NoBrokersAvailable, match=f"127.0.0.1:{port}"):
        Producer(bootstrap_servers=f"127.0.0.1:{port}", request_timeout_ms=2000)
    assert time.monotonic() - start < 3


def test_send_after_close_is_refused(fake):
    producer = Producer(bootstrap_servers=fake.bootstrap)
    producer.close()
    producer.close()
    with pytest.raises(IllegalStateError):
        producer.send("t", b"v")


def test_close_delivers_what_is_buffered(fake):
    producer = Producer(bootstrap_servers=fake.bootstrap, linger_ms=60_000)
    futs = [producer.send("late", b"%d" % i, partition=0) for i in range(10)]
    assert not futs[0].is_done
    producer.close()
    assert [f.get(0).offset for f in futs] == list(range(10))


def test_flush_times_out_when_the_broker_does_not_answer(fake):
    release = threading.Event()

    async def slow(req):
        import asyncio
        while not release.is_set():
            await asyncio.sleep(0.01)

    with Producer(bootstrap_servers=fake.bootstrap) as producer:
        producer.partitions_for("slow")
        fake.broker.hooks[ProduceRequest.API_KEY] = slow
        fut = producer.send("slow", b"v")
        with pytest.raises(FerryTimeoutError):
            producer.flush(0.2)
        release.set()
        assert fut.get(5).offset == 0


@pytest.mark.timeout(60)
def test_threads_share_one_producer(fake):
    with Producer(bootstrap_servers=fake.bootstrap, linger_ms=2) as producer:
        futs = [[] for _ in range(8)]

        def work(n):
            for i in range(2000):
                futs[n].append(producer.send("shared", b"%d-%d" % (n, i), key=b"%d" % n))

        threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        producer.flush(20)
    for n in range(8):
        mds = [f.get(0) for f in futs[n]]
        assert len({md.partition for md in mds}) == 1
        offsets = [md.offset for md in mds]
        assert offsets == sorted(offsets)
    total = sum(len(stored_values(fake.broker, "shared", p)) for p in range(3))
    assert total == 16000


def test_full_buffer_blocks_send_until_max_block(fake):
    async def never(req):
        import asyncio
        await asyncio.sleep(3600)

    with Producer(bootstrap_servers=fake.bootstrap, buffer_memory=20_000, max_block_ms=200,
                  linger_ms=0, request_timeout_ms=5000) as producer:
        producer.partitions_for("full")
        fake.broker.hooks[ProduceRequest.API_KEY] = never
        producer.send("full", b"x" * 15_000)
        start = time.monotonic()
        with pytest.raises(FerryTimeoutError, match="max_block_ms"):
            producer.send("full", b"x" * 15_000)
        assert 0.15 < time.monotonic() - start < 3
        fake.broker.hooks.clear()
        producer.close(0)


def test_async_producer_waits_for_room():
    async def main():
        import asyncio
        fb = await FakeBroker().start()
        gate = asyncio.Event()

        async def held(req):
            await gate.wait()

        async with AsyncProducer(bootstrap_servers=fb.bootstrap, buffer_memory=20_000,
                                 linger_ms=0, max_block_ms=5000) as producer:
            await producer.partitions_for("room")
            fb.hooks[ProduceRequest.API_KEY] = held
            first = await producer.send("room", b"x" * 15_000)
            second = asyncio.ensure_future(producer.send("room", b"y" * 15_000))
            await asyncio.sleep(0.05)
            assert not second.done()
            gate.set()
            assert (await first).offset == 0
            assert (await (await second)).offset == 1
        await fb.stop()
    run(main())


def test_a_paused_connection_holds_requests_until_it_drains():
    async def main():
        import asyncio
        fb = await FakeBroker().start()
        gate = asyncio.Event()

        async def held(req):
            await gate.wait()  # the broker stops reading: the client's buffers fill up

        async with AsyncProducer(bootstrap_servers=fb.bootstrap, linger_ms=0, acks=1,
                                 enable_idempotence=False, max_in_flight_requests_per_connection=100,
                                 batch_size=1 << 20, max_request_size=1 << 20,
                                 buffer_memory=64 << 20) as producer:
            await producer.partitions_for("slow")
            conn = producer.cluster.open_connection(0)
            paused = asyncio.Event()
            pause_writing = conn.pause_writing

            def noted_pause():
                pause_writing()
                paused.set()

            conn.pause_writing = noted_pause
            fb.hooks[ProduceRequest.API_KEY] = held
            futs = [await producer.send("slow", bytes([i]) * 500_000) for i in range(40)]
            await asyncio.wait_for(paused.wait(), 10)
            sender = producer._sender
            assert sender._draining  # the sender waits for the transport instead of writing on
            waiting = sum(len(st.queue) for st in sender._parts.values())
            assert waiting > 0, "every batch was written into a paused transport"
            gate.set()
            offsets = [(await f).offset for f in futs]
            assert offsets == list(range(40))
        await fb.stop()
    run(main())


def test_malformed_headers_are_refused_at_send(fake):
    with Producer(bootstrap_servers=fake.bootstrap) as producer:
        with pytest.raises(TypeError, match="header"):
            producer.send("hdr", b"v", headers=[("k", "not bytes")])
        with pytest.raises(TypeError, match="header"):
            producer.send("hdr", b"v", headers=[("just-a-name",)])
        producer.send("hdr", b"v", headers=[("k", None)]).get(5)


def test_unclosed_producer_delivers_at_interpreter_exit(fake, tmp_path):
    script = tmp_path / "forgetful.py"
    script.write_text(
        "from client import Producer\n"
        f"p = Producer(bootstrap_servers={fake.bootstrap!r}, linger_ms=60000)\n"
        "p.send('exit', b'bye', partition=0)\n"
    )
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, str(script)], cwd=root, timeout=20, check=True,
                   env={**os.environ, "PYTHONPATH": str(root)})
    assert stored_values(fake.broker, "exit", 0) == [b"bye"]


def test_sticky_batches_fill_up_before_moving_on(fake):
    from client.accumulator import BATCH_OVERHEAD, RECORD_OVERHEAD

    batch_size = 16384
    per_batch = (batch_size - BATCH_OVERHEAD) // (100 + RECORD_OVERHEAD)
    with Producer(bootstrap_servers=fake.bootstrap, batch_size=batch_size, linger_ms=60_000) as producer:
        for _ in range(20 * per_batch):
            producer.send("fill", b"x" * 100)
        producer.flush(10)
    sizes = [batchcodec.parse_header(b).record_count
             for p in range(3) for b in fake.broker.topics["fill"][p].batches]
    assert sum(sizes) == 20 * per_batch
    assert sum(1 for n in sizes if n < per_batch) <= 3  # only what flush() cut short
