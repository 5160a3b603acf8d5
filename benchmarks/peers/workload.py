"""The workload every peer runs, and the end-to-end latency harness they share.

Throughput: one producer sends N records of random bytes (no key) and waits
for every acknowledgement; then one consumer reads the N records from the
start. Latency: the producer sends at a fixed rate, a consumer in another
process (spawn) timestamps each arrival; the record carries a run nonce and
its send time from ``time.monotonic_ns()``, one clock for the whole machine
on Linux, exactly as ``ferry perf e2e`` does.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import random
import time
from array import array
from typing import Callable

from client.perf import MIB, join_or_kill, latency_summary, payload_pool
from client.perf_e2e import receive_latencies

__all__ = ["MIB", "apace", "e2e", "latency_summary", "pace", "payload_pool", "result", "run_async",
           "stamp"]

HEADER = 16
START_TIMEOUT = 60.0


def result(records: int, nbytes: int, elapsed: float, **extra) -> dict:
    elapsed = max(elapsed, 1e-9)
    return {"records": records, "records_per_sec": round(records / elapsed, 1),
            "mb_per_sec": round(nbytes / elapsed / MIB, 3), "elapsed_sec": round(elapsed, 4), **extra}


def run_async(coro):
    """Run ``coro`` on uvloop when it is installed, the loop Ferry's client uses too."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def pace(n: int, rate: float):
    """Yield 0..n-1, each no sooner than its turn at ``rate`` per second."""
    start = time.monotonic()
    for i in range(n):
        ahead = start + i / rate - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)
        yield i


async def apace(n: int, rate: float):
    """``pace`` for asyncio code."""
    start = time.monotonic()
    for i in range(n):
        ahead = start + i / rate - time.monotonic()
        if ahead > 0:
            await asyncio.sleep(ahead)
        yield i


def stamp(nonce: bytes, pad: bytes) -> bytes:
    """A latency record: nonce, send time (ns, big-endian), padding."""
    return nonce + time.monotonic_ns().to_bytes(8, "big") + pad


def _consumer_entry(target, args, nonce: bytes, ready, total, stop_at: float, drain_s: float,
                    results) -> None:
    lat = array("q")
    append = lat.append
    drain_deadline = [None]

    def on_value(value: bytes, received_ns: int) -> None:
        if value[:8] == nonce:
            append(received_ns - int.from_bytes(value[8:16], "big"))

    def done() -> bool:
        now = time.monotonic()
        if now > stop_at:
            return True
        expected = total.value
        if expected < 0:
            return False
        if len(lat) >= expected:
            return True
        if drain_deadline[0] is None:
            drain_deadline[0] = now + drain_s
        return now > drain_deadline[0]

    try:
        target(*args, on_value=on_value, ready=ready, done=done)
        results.put({"latencies": lat.tobytes()})
    except BaseException as exc:  # reported by the parent
        ready.set()
        results.put({"failed": f"{type(exc).__name__}: {exc}"})


def e2e(consumer: Callable, consumer_args: tuple, produce: Callable[[Callable[[], bytes], int, float], int],
        rate: float, duration_s: float, size: int, drain_s: float = 10.0) -> dict:
    """Run ``consumer`` in a spawned process and ``produce`` here; the latency result.

    ``consumer(*consumer_args, on_value, ready, done)`` must subscribe to new
    records only, then ``ready.set()``, call ``on_value(value, time.monotonic_ns())``
    for each record and return once ``done()`` is true (checking it at least
    every 100 ms). ``produce(make_value, n, rate)`` sends ``n`` records at
    ``rate`` (see ``pace``) and returns how many it sent.
    """
    nonce = os.urandom(8)
    pad = random.randbytes(max(0, size - HEADER))
    n = max(1, int(rate * duration_s))
    ctx = multiprocessing.get_context("spawn")
    ready, total, results = ctx.Event(), ctx.Value("q", -1, lock=False), ctx.Queue()
    stop_at = time.monotonic() + START_TIMEOUT + 2 * duration_s + drain_s
    proc = ctx.Process(target=_consumer_entry, daemon=True,
                       args=(consumer, consumer_args, nonce, ready, total, stop_at, drain_s, results))
    proc.start()
    try:
        if not ready.wait(START_TIMEOUT):
            raise RuntimeError("the latency consumer did not start")
        start = time.monotonic()
        sent = produce(lambda: stamp(nonce, pad), n, rate)
        elapsed = time.monotonic() - start
        total.value = sent
        lat = receive_latencies(results, stop_at, "latency consumer")
    finally:
        join_or_kill(proc)
    return result(sent, sent * size, elapsed, received=len(lat), lost=sent - len(lat),
                  latency_ms=latency_summary(x / 1e9 for x in lat))
