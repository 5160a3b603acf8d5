"""NATS JetStream (file storage) with nats-py.

Produce: ``publish_async`` with a window of 4 batches of 1,000 in flight,
each batch's acknowledgements awaited before the window moves on (the
fastest way nats-py offers to send with acks). Consume: an ordered push
consumer from the first message (faster here than a pull consumer fetching
1,000 at a time). Both on uvloop. Latency: ``publish_async`` at the fixed
rate (``publish``, which waits for each ack, cannot keep up with 5,000/s
here), every ack awaited at the end; an ordered push subscription in the
other process.
"""

from __future__ import annotations

import asyncio
import time

from workload import apace, e2e, payload_pool, result, run_async

NAME = "NATS JetStream (file) + nats-py"
STREAM = "BENCH"
SUBJECT = "bench"
BATCH = 1000
WINDOW = 4


async def _connect(port: int):
    import nats

    nc = await nats.connect(f"nats://127.0.0.1:{port}", max_reconnect_attempts=0)
    return nc, nc.jetstream()


async def _fresh_stream(js) -> None:
    from nats.js.api import StorageType

    try:
        await js.delete_stream(STREAM)
    except Exception:  # not there yet
        pass
    await js.add_stream(name=STREAM, subjects=[SUBJECT], storage=StorageType.FILE)


async def _produce(port: int, n: int, size: int) -> dict:
    nc, js = await _connect(port)
    try:
        await _fresh_stream(js)
        pool = payload_pool(size, n)
        window: list = []
        start = time.perf_counter()
        sent = 0
        while sent < n:
            count = min(BATCH, n - sent)
            batch = [await js.publish_async(SUBJECT, pool[i % len(pool)]) for i in range(sent, sent + count)]
            sent += count
            window.append(batch)
            if len(window) >= WINDOW:
                await asyncio.gather(*window.pop(0))
        for batch in window:
            await asyncio.gather(*batch)  # raises the first failed ack
        elapsed = time.perf_counter() - start
    finally:
        await nc.close()
    return result(n, n * size, elapsed)


async def _consume(port: int, n: int) -> dict:
    from nats.js.api import DeliverPolicy

    nc, js = await _connect(port)
    records = nbytes = 0
    all_done = asyncio.Event()

    async def on_message(msg) -> None:
        nonlocal records, nbytes
        records += 1
        nbytes += len(msg.data)
        if records >= n:
            all_done.set()

    try:
        start = time.perf_counter()
        sub = await js.subscribe(SUBJECT, cb=on_message, ordered_consumer=True,
                                 deliver_policy=DeliverPolicy.ALL)
        try:
            await asyncio.wait_for(all_done.wait(), 300)
        except asyncio.TimeoutError:
            pass
        elapsed = time.perf_counter() - start
        await sub.unsubscribe()
    finally:
        await nc.close()
    return result(records, nbytes, elapsed, complete=records >= n)


def produce(port: int, n: int, size: int) -> dict:
    return run_async(_produce(port, n, size))


def consume(port: int, n: int) -> dict:
    return run_async(_consume(port, n))


def latency_consumer(port: int, *, on_value, ready, done) -> None:
    async def main() -> None:
        from nats.js.api import DeliverPolicy

        nc, js = await _connect(port)
        now_ns = time.monotonic_ns

        async def cb(msg) -> None:
            on_value(msg.data, now_ns())

        try:
            await js.subscribe(SUBJECT, cb=cb, ordered_consumer=True, deliver_policy=DeliverPolicy.NEW)
            ready.set()
            while not done():
                await asyncio.sleep(0.05)
        finally:
            await nc.close()

    run_async(main())


def latency(port: int, rate: float, duration_s: float, size: int) -> dict:
    async def setup() -> None:
        nc, js = await _connect(port)
        try:
            await _fresh_stream(js)
        finally:
            await nc.close()

    run_async(setup())

    def produce_paced(make_value, n: int, rate: float) -> int:
        async def main() -> int:
            nc, js = await _connect(port)
            try:
                acks = [await js.publish_async(SUBJECT, make_value()) async for _ in apace(n, rate)]
                await asyncio.wait_for(asyncio.gather(*acks), 60)
            finally:
                await nc.close()
            return n

        return run_async(main())

    return e2e(latency_consumer, (port,), produce_paced, rate, duration_s, size)
