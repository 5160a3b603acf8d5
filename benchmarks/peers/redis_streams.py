"""Redis Streams with redis-py (hiredis parser): XADD pipelined by 1,000, XREAD COUNT 10,000.

The server keeps the stream in memory only (start_redis turns off snapshots
and the append-only file), as in the published figures.
"""

from __future__ import annotations

import time

from workload import e2e, pace, payload_pool, result

NAME = "Redis Streams + redis-py/hiredis"
STREAM = "bench"
PIPELINE = 1000
READ_COUNT = 10_000


def _client(port: int):
    import redis

    return redis.Redis(host="127.0.0.1", port=port)


def produce(port: int, n: int, size: int) -> dict:
    r = _client(port)
    r.delete(STREAM)
    pool = payload_pool(size, n)
    pipe = r.pipeline(transaction=False)
    start = time.perf_counter()
    sent = 0
    while sent < n:
        count = min(PIPELINE, n - sent)
        for i in range(sent, sent + count):
            pipe.xadd(STREAM, {b"v": pool[i % len(pool)]})
        ids = pipe.execute()  # the replies: one id per record
        if len(ids) != count:
            raise RuntimeError(f"XADD pipeline answered {len(ids)} of {count}")
        sent += count
    elapsed = time.perf_counter() - start
    r.close()
    return result(n, n * size, elapsed)


def consume(port: int, n: int) -> dict:
    r = _client(port)
    last = b"0-0"
    records = nbytes = 0
    start = time.perf_counter()
    deadline = time.monotonic() + 120
    while records < n and time.monotonic() < deadline:
        reply = r.xread({STREAM: last}, count=min(READ_COUNT, n - records), block=1000)
        if not reply:
            break
        entries = reply[0][1]
        for _id, fields in entries:
            nbytes += len(fields[b"v"])
        records += len(entries)
        last = entries[-1][0]
    elapsed = time.perf_counter() - start
    r.close()
    return result(records, nbytes, elapsed, complete=records >= n)


def latency_consumer(port: int, *, on_value, ready, done) -> None:
    r = _client(port)
    try:
        last = r.xinfo_stream(STREAM)["last-generated-id"]
    except Exception:  # no stream yet: everything is new
        last = b"0-0"
    ready.set()
    now_ns = time.monotonic_ns
    while not done():
        reply = r.xread({STREAM: last}, count=1000, block=100)
        if reply:
            received = now_ns()
            entries = reply[0][1]
            for _id, fields in entries:
                on_value(fields[b"v"], received)
            last = entries[-1][0]
    r.close()


def latency(port: int, rate: float, duration_s: float, size: int) -> dict:
    r = _client(port)

    def produce_paced(make_value, n: int, rate: float) -> int:
        for _ in pace(n, rate):
            r.xadd(STREAM, {b"v": make_value()})
        return n

    try:
        return e2e(latency_consumer, (port,), produce_paced, rate, duration_s, size)
    finally:
        r.close()
