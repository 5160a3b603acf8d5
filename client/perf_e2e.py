"""End-to-end latency measurement, shaped like Kafka's perf-test tools: ``ferry perf e2e``.

This module holds ``run_e2e`` and its ``E2ESpec``, the sending loops of the
blocking and asyncio producers, and the consuming process that times each
record's arrival. The statistics and helpers it shares with the produce and
consume tests (``latency_summary``, the rates, ``join_or_kill``) are in
``client.perf``.

Theory of operation
-------------------
``run_e2e`` produces at a fixed rate with linger_ms=0 and consumes in another
process (spawn). Each value starts with a run nonce and the send time from
``time.monotonic_ns()``: CLOCK_MONOTONIC is one clock for the whole machine on
Linux (as is the monotonic clock of macOS and Windows), so the two processes'
readings compare, while ``perf_counter`` is only promised within a process.
Both processes must run on the same machine. Latency is from just before
``send()`` to the consumer's iteration reaching the record.

Every loop is bounded: by the record count, and by ``duration_s`` plus
``drain_s``. ``lost`` counts the records that did not arrive in time.

``run_e2e`` blocks until its run is over and returns a dict ready for
``json.dumps``; connection and broker errors propagate as the client's
exceptions.
"""

from __future__ import annotations

import multiprocessing
import os
import queue as queue_mod
import random
import time
from array import array
from dataclasses import asdict, dataclass

from .perf import PROGRESS_INTERVAL, START_TIMEOUT, Progress, _acks, _rates, join_or_kill, latency_summary

E2E_HEADER = 16             # nonce (8 bytes) + send time in ns (8 bytes)


@dataclass(frozen=True)
class E2ESpec:
    topic: str
    rate: float                     # records/s
    duration_s: float
    record_size: int = 100
    acks: str = "1"
    drain_s: float = 10.0           # how long the consumer may lag behind the last send
    consumer_api: str = "blocking"  # "blocking" (Consumer) or "asyncio" (AsyncConsumer)
    producer_api: str = "blocking"  # "blocking" (Producer) or "asyncio" (AsyncProducer)


# ------------------------------------------------------------ end to end


class _Arrivals:
    """Latencies (ns) of this run's records as the e2e consumer reaches them."""

    def __init__(self, nonce: bytes) -> None:
        self.nonce = nonce
        self.lat = array("q")
        self.stale = 0

    def note(self, value, received: int) -> None:
        """A record's value reached the consumer at ``received`` (ns)."""
        if value and value[:8] == self.nonce:
            self.lat.append(received - int.from_bytes(value[8:16], "big"))
        else:
            self.stale += 1

    def done(self, total, deadline: float, drain_s: float) -> tuple[bool, float]:
        """(whether to stop, the new deadline), once the producer said how many it sent."""
        expected = total.value
        if expected >= 0:
            if len(self.lat) >= expected:
                return True, deadline
            deadline = min(deadline, time.monotonic() + drain_s)
        return time.monotonic() >= deadline, deadline


def _e2e_blocking(topic: str, client: dict, arrivals: _Arrivals, ready, total, stop_at: float,
                  drain_s: float) -> None:
    from client import Consumer, TopicPartition

    with Consumer(bootstrap_servers=client["bootstrap_servers"],
                  client_id=client.get("client_id"),
                  request_timeout_ms=client.get("request_timeout_ms", 30000),
                  auto_offset_reset="latest", consumer_timeout_ms=100) as consumer:
        parts = consumer.partitions_for_topic(topic) or {0}
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        consumer.seek_to_end(*tps)
        for tp in tps:
            consumer.position(tp)  # resolved before the producer starts
        ready.set()
        now_ns, note = time.monotonic_ns, arrivals.note
        deadline = stop_at
        stop_ns = int(stop_at * 1e9)
        while True:
            for record in consumer:
                received = now_ns()
                note(record.value, received)
                if received > stop_ns:
                    break
            stop, deadline = arrivals.done(total, deadline, drain_s)
            if stop:
                return


async def _e2e_asyncio(topic: str, client: dict, arrivals: _Arrivals, ready, total, stop_at: float,
                       drain_s: float) -> None:
    import asyncio

    from client import AsyncConsumer, TopicPartition

    consumer = AsyncConsumer(bootstrap_servers=client["bootstrap_servers"],
                             client_id=client.get("client_id"),
                             request_timeout_ms=client.get("request_timeout_ms", 30000),
                             auto_offset_reset="latest")
    await consumer.start()
    try:
        parts = await consumer.partitions_for_topic(topic) or {0}
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        for tp in tps:
            await consumer.position(tp)  # resolved before the producer starts
        ready.set()
        now_ns, note = time.monotonic_ns, arrivals.note

        async def read() -> None:
            async for record in consumer:
                note(record.value, now_ns())

        reader = asyncio.ensure_future(read())
        deadline = stop_at
        try:
            while not reader.done():
                await asyncio.wait([reader], timeout=0.1)
                stop, deadline = arrivals.done(total, deadline, drain_s)
                if stop:
                    break
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        if reader.done() and not reader.cancelled() and reader.exception() is not None:
            raise reader.exception()
    finally:
        await consumer.stop()


def _e2e_consumer(topic: str, client: dict, nonce: bytes, ready, total, stop_at: float,
                  drain_s: float, results, consumer_api: str = "blocking") -> None:
    """The consuming process of ``run_e2e``: latencies (ns) of this run's records."""
    arrivals = _Arrivals(nonce)
    try:
        if consumer_api == "asyncio":
            from client.background import new_event_loop

            loop = new_event_loop()
            try:
                loop.run_until_complete(_e2e_asyncio(topic, client, arrivals, ready, total,
                                                     stop_at, drain_s))
            finally:
                loop.close()
        else:
            _e2e_blocking(topic, client, arrivals, ready, total, stop_at, drain_s)
        results.put({"latencies": arrivals.lat.tobytes(), "stale": arrivals.stale})
    except BaseException as exc:
        ready.set()
        results.put({"failed": f"{type(exc).__name__}: {exc}"})


def receive_latencies(results, stop_at: float, what: str) -> array:
    """The latencies (ns, array of int64) a consumer process put on ``results``.

    Waits until ``stop_at`` (a time.monotonic() value) plus 5 s; raises
    RuntimeError naming ``what`` if nothing came or the process reported a failure.
    """
    try:
        out = results.get(timeout=max(1.0, stop_at - time.monotonic()) + 5)
    except queue_mod.Empty:
        raise RuntimeError(f"the {what} gave no result") from None
    if "failed" in out:
        raise RuntimeError(f"the {what} failed: {out['failed']}")
    lat = array("q")
    lat.frombytes(out["latencies"])
    return lat


def _pace(due: float, clock) -> None:
    """Sleep in this thread until ``due`` (a ``clock()`` value), if it is ahead."""
    ahead = due - clock()
    if ahead > 0:
        time.sleep(ahead)


def _e2e_send_blocking(spec: E2ESpec, client: dict, n: int, value, start_consumer,
                       progress) -> tuple[int, float]:
    """Send ``n`` records at ``spec.rate`` with the blocking Producer.

    ``value()`` makes each record's value just before its send (it carries
    the send time). ``start_consumer()`` starts the consuming process once
    the topic exists and returns when it is ready. Returns (records sent,
    seconds spent sending).
    """
    from client import Producer

    with Producer(acks=_acks(spec.acks), linger_ms=0, **client) as producer:
        producer.partitions_for(spec.topic)
        start_consumer()
        send, topic, clock = producer.send, spec.topic, time.monotonic
        start = clock()
        sent = 0
        for due in _schedule(spec, n, start, clock, progress):
            _pace(due, clock)
            send(topic, value())
            sent += 1
        producer.flush(30)
        return sent, clock() - start


async def _e2e_send_asyncio(spec: E2ESpec, client: dict, n: int, value, start_consumer,
                            progress) -> tuple[int, float]:
    """As ``_e2e_send_blocking``, with the AsyncProducer in this thread's event loop.

    The loop's timers tick in whole milliseconds, so the sub-millisecond part
    of each gap is slept in the thread (as the blocking producer's caller
    does); after each send the loop runs once, so the request is written.
    """
    import asyncio

    from client import AsyncProducer

    producer = AsyncProducer(acks=_acks(spec.acks), linger_ms=0, **client)
    await producer.start()
    try:
        await producer.partitions_for(spec.topic)
        await asyncio.get_running_loop().run_in_executor(None, start_consumer)
        send, topic, clock = producer.send, spec.topic, time.monotonic
        start = clock()
        sent = 0
        for due in _schedule(spec, n, start, clock, progress):
            if due - clock() > 0.002:
                await asyncio.sleep(due - clock() - 0.001)
            _pace(due, clock)
            await send(topic, value())
            sent += 1
            await asyncio.sleep(0)
        await producer.flush(30)
        return sent, clock() - start
    finally:
        await producer.stop()


def _schedule(spec: E2ESpec, n: int, start: float, clock, progress):
    """The send times (``clock()`` values) of ``n`` records at ``spec.rate`` from
    ``start``: the caller sends one record per time it is given. Reports
    progress, and stops early at twice the duration (a slow machine)."""
    interval = 1.0 / spec.rate
    next_report = start
    deadline = start + spec.duration_s * 2
    for i in range(n):
        yield start + i * interval
        now = clock()
        if progress is not None and now >= next_report:
            progress(i + 1)
            next_report = now + PROGRESS_INTERVAL
        if now > deadline:
            return


def run_e2e(spec: E2ESpec, client: dict, progress: Progress | None = None) -> dict:
    """Produce at ``rate`` for ``duration_s`` (linger_ms=0), consume in another process.

    Returns the result dict with latency_ms from send to receive; ``lost``
    counts records sent but not received within drain_s. Blocks; raises the
    client's errors, RuntimeError if the consumer process fails.
    """
    if spec.rate <= 0 or spec.duration_s <= 0:
        raise ValueError("rate and duration must be positive")
    if spec.record_size < E2E_HEADER:
        raise ValueError(f"record_size must be at least {E2E_HEADER} bytes for e2e")
    nonce = os.urandom(8)
    pad = random.randbytes(spec.record_size - E2E_HEADER)
    n = max(1, int(spec.rate * spec.duration_s))
    ctx = multiprocessing.get_context("spawn")
    ready, total, results = ctx.Event(), ctx.Value("q", -1, lock=False), ctx.Queue()
    stop_at = time.monotonic() + START_TIMEOUT + spec.duration_s * 2 + spec.drain_s
    proc = ctx.Process(target=_e2e_consumer, name="ferry-perf-e2e-consumer", daemon=True,
                       args=(spec.topic, client, nonce, ready, total, stop_at,
                             spec.drain_s, results, spec.consumer_api))

    def start_consumer() -> None:
        proc.start()
        if not ready.wait(START_TIMEOUT):
            raise RuntimeError("the e2e consumer process did not start")

    now_ns = time.monotonic_ns

    def value() -> bytes:
        return nonce + now_ns().to_bytes(8, "big") + pad

    try:
        if spec.producer_api == "asyncio":
            from .background import new_event_loop

            loop = new_event_loop()
            try:
                sent, elapsed = loop.run_until_complete(
                    _e2e_send_asyncio(spec, client, n, value, start_consumer, progress))
            finally:
                loop.close()
        else:
            sent, elapsed = _e2e_send_blocking(spec, client, n, value, start_consumer, progress)
        total.value = sent
        lat = receive_latencies(results, stop_at, "e2e consumer process")
    finally:
        if proc.pid is not None:
            join_or_kill(proc)
    if progress is not None:
        progress(sent)
    received = len(lat)
    return {
        "test": "e2e",
        "records": received,
        "sent": sent,
        "lost": sent - received,
        **_rates(sent, sent * spec.record_size, elapsed),
        "latency_ms": latency_summary(x / 1e9 for x in lat),
        "settings": asdict(spec),
    }
