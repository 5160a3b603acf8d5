"""RabbitMQ Streams with rstream: batches of 1,000 with publish confirms.

Produce: ``send_batch`` of 1,000 raw messages at a time, every confirm
counted, the run ending at the last confirm. Consume: a subscription from
the stream's first offset, the callback counting bytes. Latency: one-message
``send_batch`` calls at the fixed rate, confirms awaited at the end
(``send_wait``, which waits for each confirm, cannot keep up with 5,000/s
here); a subscription from the next offset in the other process. All on
uvloop.
"""

from __future__ import annotations

import asyncio
import time

from workload import apace, e2e, payload_pool, result, run_async

NAME = "RabbitMQ Streams + rstream"
STREAM = "bench"
BATCH = 1000
USER = PASSWORD = "guest"  # RabbitMQ's default user, allowed from loopback only


def _producer(port: int):
    from rstream import Producer

    return Producer("127.0.0.1", port, username=USER, password=PASSWORD)


def _consumer(port: int):
    from rstream import Consumer

    return Consumer("127.0.0.1", port, username=USER, password=PASSWORD)


async def _produce(port: int, n: int, size: int) -> dict:
    pool = payload_pool(size, n)
    confirmed = 0
    failed = 0
    all_done = asyncio.Event()

    def on_confirm(status) -> None:
        nonlocal confirmed, failed
        if status.is_confirmed:
            confirmed += 1
        else:
            failed += 1
        if confirmed + failed >= n:
            all_done.set()

    async with _producer(port) as producer:
        try:
            await producer.delete_stream(STREAM)
        except Exception:  # not there yet
            pass
        await producer.create_stream(STREAM, exists_ok=True)
        start = time.perf_counter()
        sent = 0
        while sent < n:
            count = min(BATCH, n - sent)
            batch = [pool[i % len(pool)] for i in range(sent, sent + count)]
            await producer.send_batch(STREAM, batch, on_publish_confirm=on_confirm)
            sent += count
        await asyncio.wait_for(all_done.wait(), 300)
        elapsed = time.perf_counter() - start
    if failed:
        raise RuntimeError(f"{failed} of {n} messages were not confirmed")
    return result(n, n * size, elapsed)


async def _consume(port: int, n: int) -> dict:
    from rstream import ConsumerOffsetSpecification, OffsetType

    records = nbytes = 0
    all_done = asyncio.Event()

    def on_message(msg: bytes, _context) -> None:
        nonlocal records, nbytes
        records += 1
        nbytes += len(msg)
        if records >= n:
            all_done.set()

    consumer = _consumer(port)
    await consumer.start()
    try:
        start = time.perf_counter()
        await consumer.subscribe(STREAM, on_message,
                                 offset_specification=ConsumerOffsetSpecification(OffsetType.FIRST, None))
        try:
            await asyncio.wait_for(all_done.wait(), 300)
        except asyncio.TimeoutError:
            pass
        elapsed = time.perf_counter() - start
    finally:
        await consumer.close()
    return result(records, nbytes, elapsed, complete=records >= n)


def produce(port: int, n: int, size: int) -> dict:
    return run_async(_produce(port, n, size))


def consume(port: int, n: int) -> dict:
    return run_async(_consume(port, n))


def latency_consumer(port: int, *, on_value, ready, done) -> None:
    async def main() -> None:
        from rstream import ConsumerOffsetSpecification, OffsetType

        now_ns = time.monotonic_ns

        def on_message(msg: bytes, _context) -> None:
            on_value(msg, now_ns())

        consumer = _consumer(port)
        await consumer.start()
        try:
            await consumer.subscribe(STREAM, on_message,
                                     offset_specification=ConsumerOffsetSpecification(OffsetType.NEXT, None))
            ready.set()
            while not done():
                await asyncio.sleep(0.05)
        finally:
            await consumer.close()

    run_async(main())


def latency(port: int, rate: float, duration_s: float, size: int) -> dict:
    def produce_paced(make_value, n: int, rate: float) -> int:
        async def main() -> int:
            confirmed = 0
            all_done = asyncio.Event()

            def on_confirm(_status) -> None:
                nonlocal confirmed
                confirmed += 1
                if confirmed >= n:
                    all_done.set()

            async with _producer(port) as producer:
                async for _ in apace(n, rate):
                    await producer.send_batch(STREAM, [make_value()], on_publish_confirm=on_confirm)
                await asyncio.wait_for(all_done.wait(), 60)
            return n

        return run_async(main())

    async def setup() -> None:
        async with _producer(port) as producer:
            await producer.create_stream(STREAM, exists_ok=True)

    run_async(setup())
    return e2e(latency_consumer, (port,), produce_paced, rate, duration_s, size)
