"""Throughput and latency measurements, shaped like Kafka's perf-test tools.

Theory of operation
-------------------
``run_produce`` is kafka-producer-perf-test: it sends ``num_records`` records
of ``record_size`` random bytes (no key) as fast as it can, or at
``throughput`` records/s, and times the run from the first ``send()`` to the
last acknowledgement. The values come from one random buffer generated once
and sliced into a pool of distinct payloads that the send loop cycles
through, so the loop allocates nothing per record.

Latency is measured from ``send()`` to the record's acknowledgement (its
future's callback, which runs in the producer's I/O thread). Like Kafka, whose
tool keeps a reservoir of at most 500,000 latencies for its percentiles, Ferry
samples, and more sparsely, since a callback costs more than a send here:
every ``stride``-th record (``stride = ceil(num_records / MAX_LATENCY_SAMPLES)``,
so every record up to 20,000) gets a callback, which stores ``ack time - send
time`` into a preallocated array. The other records cost one ``send()`` call
and nothing more. avg, max and the percentiles are over the samples. A failed
batch fails all its records, so a sampled record that is still unacknowledged
after the final flush counts as an error (every 8th sample also carries an
errback, to name the error). With acks=0 a record counts as acknowledged once
written to the socket.

``--producers P`` runs P producer processes (multiprocessing, spawn), each
with 1/P of the records and of the throughput, started together at a
barrier; records/s is the total over the wall time from the earliest start
to the latest end, and the latency samples are merged.

``run_consume`` is kafka-consumer-perf-test: a blocking ``Consumer`` iterates
``ConsumerRecord`` objects from the beginning of the topic until
``num_records`` arrived (or nothing arrived for ``idle_timeout_s``). Records
are taken in chunks (``itertools.islice``) and their key and value bytes are
summed with C-level maps, so the tool adds little per record. It has no
per-record latency to report: its ``latency_ms`` values are null (the
end-to-end test, ``run_e2e`` in ``client.perf_e2e``, measures it);
``first_record_ms`` says how long the first fetch took.

Every loop is bounded: by the record count, and by ``timeout_s`` (produce) or
``idle_timeout_s`` (consume). A run that stops early says so (``timed_out`` /
``complete`` false).

The statistics and helpers here (``latency_summary``, ``summary_line``, the
rates, ``join_or_kill``) serve the end-to-end test too.

Every function here blocks until its run is over and returns a dict ready
for ``json.dumps``; connection and broker errors propagate as the client's
exceptions.
"""

from __future__ import annotations

import math
import multiprocessing
import queue as queue_mod
import random
import time
from array import array
from dataclasses import asdict, dataclass
from functools import partial
from itertools import cycle, islice
from typing import Callable

from .accumulator import DEFAULT_BATCH_SIZE

MAX_LATENCY_SAMPLES = 20_000
POOL_BYTES = 8 << 20        # at most this much distinct payload to cycle through
POOL_RECORDS = 4096         # ...and at most this many payloads
PROGRESS_INTERVAL = 0.2     # seconds between progress reports
MIB = 1024 * 1024           # Kafka's "MB" is 2**20 bytes
START_TIMEOUT = 60.0        # seconds for worker processes to connect

Progress = Callable[[int], None]


@dataclass(frozen=True)
class ProduceSpec:
    topic: str
    num_records: int
    record_size: int = 100
    throughput: float = -1          # records/s over all producers; <= 0: unthrottled
    acks: str = "1"
    batch_size: int = DEFAULT_BATCH_SIZE
    linger_ms: float = 5
    compression: str | None = None
    producers: int = 1
    timeout_s: float = 600.0        # stop sending after this long


@dataclass(frozen=True)
class ConsumeSpec:
    topic: str
    num_records: int
    group: str | None = None
    idle_timeout_s: float = 10.0    # stop when nothing arrives for this long


# ------------------------------------------------------------ statistics and helpers


def latency_summary(seconds) -> dict:
    """{avg, p50, p95, p99, p999, max} in ms of latencies given in seconds (all None if empty).

    Percentiles are nearest-rank on the sorted samples, as Kafka computes them.
    """
    values = sorted(seconds)
    n = len(values)
    if not n:
        return dict.fromkeys(("avg", "p50", "p95", "p99", "p999", "max"))

    def pct(p: float) -> float:
        return round(values[min(n - 1, int(p * n))] * 1000, 3)

    return {
        "avg": round(math.fsum(values) / n * 1000, 3),
        "p50": pct(0.50), "p95": pct(0.95), "p99": pct(0.99), "p999": pct(0.999),
        "max": round(values[-1] * 1000, 3),
    }


def summary_line(result: dict) -> str:
    """Kafka's producer-perf-test summary line for a produce or e2e result."""
    lat = result["latency_ms"]
    line = (f"{result['records']} records sent, {result['records_per_sec']:.1f} records/sec "
            f"({result['mb_per_sec']:.2f} MB/sec)")
    if lat["avg"] is None:
        return line + "."
    return (f"{line}, {lat['avg']:.2f} ms avg latency, {lat['max']:.2f} ms max latency, "
            f"{lat['p50']:.2f} ms 50th, {lat['p95']:.2f} ms 95th, {lat['p99']:.2f} ms 99th, "
            f"{lat['p999']:.2f} ms 99.9th.")


def _rates(records: int, nbytes: int, elapsed: float) -> dict:
    elapsed = max(elapsed, 1e-9)
    return {
        "records_per_sec": round(records / elapsed, 1),
        "mb_per_sec": round(nbytes / elapsed / MIB, 3),
        "elapsed_sec": round(elapsed, 4),
    }


def payload_pool(record_size: int, count: int) -> list[bytes]:
    """Distinct random values of ``record_size`` bytes, sliced from one random buffer."""
    n = max(1, min(count, POOL_RECORDS, POOL_BYTES // max(1, record_size)))
    buf = random.randbytes(n * record_size)
    return [buf[i * record_size:(i + 1) * record_size] for i in range(n)]


def _acks(acks: str) -> "int | str":
    return "all" if str(acks) in ("all", "-1") else int(acks)


def join_or_kill(proc) -> None:
    """Join a helper process, killing it if it does not end within 10 s."""
    proc.join(10)
    if proc.is_alive():
        proc.kill()
        proc.join(5)


# ------------------------------------------------------------ produce


def _produce_loop(producer, topic: str, n: int, record_size: int, rate: float,
                  deadline: float, progress: Progress | None) -> dict:
    """Send ``n`` records (see the module doc); returns this process's raw figures."""
    stride = max(1, -(-n // MAX_LATENCY_SAMPLES))
    step = stride
    if rate > 0:  # re-check the schedule every 0.1 ms worth of records: no bursts
        step = max(1, min(stride, int(rate // 10_000)))
        stride = -(-stride // step) * step
    clock = time.perf_counter
    nan = float("nan")
    lat = array("d", [nan]) * (n // stride + 1)
    failures: list[BaseException] = []

    def acked(slot: int, sent: float, _metadata) -> None:
        lat[slot] = clock() - sent

    values = cycle(payload_pool(record_size, n))
    next_value = values.__next__
    send = producer.send
    failed = failures.append
    slot = 0
    i = 0
    next_report = 0.0
    timed_out = False
    start_wall = time.monotonic()
    start = clock()
    while i < n:
        if i % stride == 0:
            sent = clock()
            fut = send(topic, next_value())
            fut.add_callback(partial(acked, slot, sent))
            if not slot & 7:
                fut.add_errback(failed)
            slot += 1
            count = min(step, n - i) - 1
            i += 1
        else:
            count = min(step, n - i)
        for value in islice(values, count):
            send(topic, value)
        i += count
        now = clock()
        if rate > 0:
            ahead = start + i / rate - now
            if ahead > 0:
                time.sleep(ahead)
        if now > deadline:
            timed_out = True
            break
        if progress is not None and now >= next_report:
            progress(i)
            next_report = now + PROGRESS_INTERVAL
    producer.flush(max(1.0, deadline - clock() + 30))
    end = clock()
    end_wall = time.monotonic()
    if progress is not None:
        progress(i)
    samples = array("d", (x for x in lat[:slot] if not math.isnan(x)))  # NaN: not acknowledged
    return {
        "records": i, "elapsed": end - start, "samples": samples,
        "errors": slot - len(samples), "error": str(failures[0]) if failures else None,
        "timed_out": timed_out,
        "start_wall": start_wall, "end_wall": end_wall,
    }


def _producer(spec: ProduceSpec, client: dict):
    from client import Producer

    return Producer(
        acks=_acks(spec.acks), batch_size=spec.batch_size, linger_ms=spec.linger_ms,
        compression_type=spec.compression, **client,
    )


def _produce_worker(spec: ProduceSpec, client: dict, index: int, n: int, rate: float,
                    barrier, counts, results) -> None:
    """One producer process of a ``--producers P`` run; puts its figures on ``results``."""
    try:
        with _producer(spec, client) as producer:
            producer.partitions_for(spec.topic)
            barrier.wait(START_TIMEOUT)

            def progress(done: int) -> None:
                counts[index] = done

            out = _produce_loop(producer, spec.topic, n, spec.record_size, rate,
                                time.perf_counter() + spec.timeout_s, progress)
        out["samples"] = out["samples"].tobytes()
        results.put((index, out))
    except BaseException as exc:  # the parent reports it
        try:
            barrier.abort()
        except Exception:
            pass
        results.put((index, {"failed": f"{type(exc).__name__}: {exc}"}))


def _split(total: float, parts: int) -> list[int]:
    base, extra = divmod(int(total), parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def _run_producers(spec: ProduceSpec, client: dict, progress: Progress | None) -> list[dict]:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(spec.producers)
    counts = ctx.Array("q", spec.producers, lock=False)
    results = ctx.Queue()
    rate = spec.throughput / spec.producers if spec.throughput > 0 else -1
    procs = [
        ctx.Process(target=_produce_worker, name=f"ferry-perf-producer-{i}", daemon=True,
                    args=(spec, client, i, n, rate, barrier, counts, results))
        for i, n in enumerate(_split(spec.num_records, spec.producers))
    ]
    for p in procs:
        p.start()
    outs: dict[int, dict] = {}
    deadline = time.monotonic() + START_TIMEOUT + spec.timeout_s + 60
    try:
        while len(outs) < len(procs):
            if time.monotonic() > deadline:
                raise TimeoutError(f"producer processes did not finish within {spec.timeout_s} s")
            try:
                index, out = results.get(timeout=PROGRESS_INTERVAL)
                outs[index] = out
            except queue_mod.Empty:
                if all(not p.is_alive() for p in procs) and results.empty():
                    raise RuntimeError("a producer process exited without a result") from None
            if progress is not None:
                progress(sum(counts))
    finally:
        for p in procs:
            p.join(5)
            if p.is_alive():
                p.kill()
                p.join(5)
    failed = [o["failed"] for o in outs.values() if "failed" in o]
    if failed:
        raise RuntimeError(f"a producer process failed: {failed[0]}")
    for out in outs.values():
        samples = array("d")
        samples.frombytes(out["samples"])
        out["samples"] = samples
    return [outs[i] for i in sorted(outs)]


def run_produce(spec: ProduceSpec, client: dict, progress: Progress | None = None) -> dict:
    """Run a producer perf test; returns the result dict (see the module doc).

    ``client`` holds the Producer's connection kwargs (bootstrap_servers,
    client_id, request_timeout_ms). ``progress(records_sent)`` is called about
    every PROGRESS_INTERVAL s. Blocks; raises the client's errors (e.g.
    NoBrokersAvailable), and RuntimeError if a producer process fails.
    """
    if spec.num_records < 1 or spec.record_size < 0 or spec.producers < 1:
        raise ValueError("num_records and producers must be at least 1, record_size at least 0")
    if spec.producers == 1:
        with _producer(spec, client) as producer:
            producer.partitions_for(spec.topic)  # metadata (auto-creation) is not timed
            outs = [_produce_loop(producer, spec.topic, spec.num_records, spec.record_size,
                                  spec.throughput, time.perf_counter() + spec.timeout_s, progress)]
    else:
        with _producer(spec, client) as producer:  # create the topic once, not in P racing processes
            producer.partitions_for(spec.topic)
        outs = _run_producers(spec, client, progress)
    records = sum(o["records"] for o in outs)
    if len(outs) == 1:
        elapsed = outs[0]["elapsed"]
    else:
        elapsed = max(o["end_wall"] for o in outs) - min(o["start_wall"] for o in outs)
    samples = array("d")
    for o in outs:
        samples.extend(o["samples"])
    errors = sum(o["errors"] for o in outs)
    result = {
        "test": "produce",
        "records": records,
        **_rates(records, records * spec.record_size, elapsed),
        "latency_ms": latency_summary(samples),
        "latency_samples": len(samples),
        "errors": errors,
        "error": next((o["error"] for o in outs if o["error"]), None),
        "timed_out": any(o["timed_out"] for o in outs),
        "settings": asdict(spec),
    }
    if len(outs) > 1:
        result["per_producer_records_per_sec"] = [
            round(o["records"] / max(o["elapsed"], 1e-9), 1) for o in outs
        ]
    return result


# ------------------------------------------------------------ consume


def run_consume(spec: ConsumeSpec, client: dict, progress: Progress | None = None) -> dict:
    """Run a consumer perf test from the topic's beginning; returns the result dict.

    ``complete`` is false if the topic ran dry (nothing for idle_timeout_s)
    before num_records arrived. Blocks; raises the client's errors.
    """
    from client import Consumer

    if spec.num_records < 1:
        raise ValueError("num_records must be at least 1")
    want = spec.num_records
    records = nbytes = 0
    first = None
    with Consumer(spec.topic, group_id=spec.group, auto_offset_reset="earliest",
                  consumer_timeout_ms=spec.idle_timeout_s * 1000, **client) as consumer:
        clock = time.perf_counter
        it = iter(consumer)
        start = clock()
        record = next(it, None)
        if record is not None:
            first = clock() - start
            records = 1
            nbytes = len(record.value or b"") + len(record.key or b"")
        next_report = start
        check = min(want, 10_000)  # look at the clock every 10,000 records
        # As a user would: one ConsumerRecord at a time, counting key and value bytes.
        for record in it if records < want else ():
            records += 1
            key, value = record.key, record.value
            if value is not None:
                nbytes += len(value)
            if key is not None:
                nbytes += len(key)
            if records >= check:
                if records >= want:
                    break
                check = min(want, records + 10_000)
                if progress is not None and clock() >= next_report:
                    progress(records)
                    next_report = clock() + PROGRESS_INTERVAL
        elapsed = clock() - start
        if first is not None and records < want:
            # the final wait found nothing: it is not consuming time
            elapsed = max(first, elapsed - spec.idle_timeout_s)
    if progress is not None:
        progress(records)
    return {
        "test": "consume",
        "records": records,
        **_rates(records, nbytes, elapsed),
        "latency_ms": latency_summary(()),
        "first_record_ms": None if first is None else round(first * 1000, 3),
        "complete": records >= spec.num_records,
        "settings": asdict(spec),
    }
