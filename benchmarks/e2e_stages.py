#!/usr/bin/env python3
"""Where end-to-end latency goes: each record timed at seven points on its way.

The ``ferry perf e2e`` workload (100-byte records at a fixed rate, linger_ms=0,
acks=1, a blocking Producer here and a blocking Consumer in another process)
against a broker in a third process, with probes wrapped around Ferry's own
functions. Every record carries its send time (``time.monotonic_ns``, one
clock for all processes on Linux) in its first 8 bytes, and each probe notes
when that record passed:

    P  the producer's I/O thread encoded its batch (``ProducerBatch.encode``)
    PW it handed the request to the socket         (``AsyncConnection.send_nowait``)
    B0 the broker's produce handler began        (``Handlers.produce``)
    B1 the broker appended it and woke the fetches waiting on its partition
    B2 the broker began sending it in a fetch response (``BrokerProtocol._send``)
    C1 the consumer's I/O thread decoded it and queued it (``Fetcher._handle_partition``)
    C2 the consumer's ``for record in consumer`` loop had it

It also counts the fetches the broker served, how many of them parked, and
the records whose append found no fetch parked on their partition (they wait
for the consumer's next fetch to arrive). The probes do work of their own (the
broker's reads back and decodes what it sends), so the stages are a little
slower than without them; compare stages with each other, and the total with
``ferry perf e2e``.

    python benchmarks/e2e_stages.py                     # 10,000 records at 5,000/s
    python benchmarks/e2e_stages.py --records 2000 --json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import pickle
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

STAGES = ["P", "PW", "B0", "B1", "B2", "C1", "C2"]
now = time.monotonic_ns


def _sent_at(value) -> int:
    return int.from_bytes(bytes(value[:8]), "big")


# ------------------------------------------------------------ the broker process


def _broker_main(data_dir: str, out: str, port_value, ready, stop) -> None:
    import asyncio

    from broker import handlers as H
    from broker import server as S
    from broker.config import BrokerConfig
    from client.background import new_event_loop
    from protocol import batch as B
    from protocol import messages as m

    log: list = []
    fetches: list = []  # (when its handler ran, whether it parked)
    unawaited: list = []  # send times of records appended with no fetch parked for them
    produce, send, fetch = H.Handlers.produce, S.BrokerProtocol._send, H.Handlers.fetch

    def probed_produce(self, req):
        t0 = now()
        sent = [_sent_at(v) for p in req.partitions for pos, _ in B.iter_complete(p.records)
                for v in B.decode(p.records, pos).values]
        parked = all(self.waiters._polls.get((p.topic, p.partition)) for p in req.partitions)
        result = produce(self, req)
        t1 = now()
        log.extend((s, "B0", t0) for s in sent)
        log.extend((s, "B1", t1) for s in sent)
        if not parked:
            unawaited.extend(sent)
        return result

    def probed_send(self, response):
        if isinstance(response, m.FetchResponse):
            t = now()
            for p in response.partitions:
                ranges = getattr(p.records, "ranges", None) or ()
                data = b"".join(os.pread(r.fileno(), r.length, r.position) for r in ranges)
                for pos, _ in B.iter_complete(data):
                    log.extend((_sent_at(v), "B2", t) for v in B.decode(data, pos).values)
        return send(self, response)

    def probed_fetch(self, req):
        t = now()
        result = fetch(self, req)
        fetches.append((t, not isinstance(result, m.FetchResponse)))  # True: it parked
        return result

    H.Handlers.produce, S.BrokerProtocol._send, H.Handlers.fetch = probed_produce, probed_send, probed_fetch

    async def run() -> None:
        broker = S.Broker(BrokerConfig(host="127.0.0.1", port=0, data_dir=Path(data_dir)))
        await broker.start()
        port_value.value = broker.port
        ready.set()
        while not stop.is_set():
            await asyncio.sleep(0.05)
        await broker.shutdown()

    loop = new_event_loop()
    try:
        loop.run_until_complete(run())
    finally:
        loop.close()
    with open(out, "wb") as f:
        pickle.dump({"log": log, "fetches": fetches, "unawaited": unawaited}, f)


# ------------------------------------------------------------ the consumer process


def _consumer_main(bootstrap: str, topic: str, n: int, out: str, ready, done) -> None:
    from client import Consumer, TopicPartition
    from client import fetcher as F

    log: list = []
    handle = F.Fetcher._handle_partition

    def probed_handle(self, tp, st, offset, p):
        queued = len(self.buffer._chunks)
        result = handle(self, tp, st, offset, p)
        t = now()
        for chunk in list(self.buffer._chunks)[queued:]:
            if chunk.columns is not None:
                log.extend((_sent_at(v), "C1", t) for v in chunk.columns.values)
        return result

    F.Fetcher._handle_partition = probed_handle
    with Consumer(bootstrap_servers=bootstrap, auto_offset_reset="latest", consumer_timeout_ms=200) as c:
        tp = TopicPartition(topic, 0)
        c.assign([tp])
        c.seek_to_end(tp)
        c.position(tp)
        ready.set()
        got = 0
        deadline = time.monotonic() + 60 + n / 1000
        while got < n and time.monotonic() < deadline:
            for record in c:
                log.append((_sent_at(record.value), "C2", now()))
                got += 1
                if got >= n:
                    break
            if done.is_set():  # the producer has flushed: what is missing gets 5 s more
                deadline = min(deadline, time.monotonic() + 5)
    with open(out, "wb") as f:
        pickle.dump(log, f)


# ------------------------------------------------------------ the run


def _pct(xs: list[float], p: float) -> float:
    return round(xs[min(len(xs) - 1, int(len(xs) * p))], 3) if xs else float("nan")


def run(records: int, rate: float, tmp: str) -> dict:
    from client import Producer
    from client import conn as CN
    from client import producer_batch as PB
    from protocol import batch as B
    from protocol.messages import ProduceRequest

    ctx = multiprocessing.get_context("spawn")
    port, bready, stop = ctx.Value("i", 0), ctx.Event(), ctx.Event()
    bout, cout = os.path.join(tmp, "broker.pkl"), os.path.join(tmp, "consumer.pkl")
    bproc = ctx.Process(target=_broker_main, args=(os.path.join(tmp, "data"), bout, port, bready, stop),
                        name="e2e-stages-broker", daemon=True)
    bproc.start()
    plog: list = []
    cproc = None
    try:
        if not bready.wait(60):
            raise RuntimeError("the broker did not start")
        bootstrap = f"127.0.0.1:{port.value}"
        encode = PB.ProducerBatch.encode

        def probed_encode(self, compression):
            data = encode(self, compression)
            t = now()
            plog.extend((_sent_at(v), "P", t) for v in self.values)
            return data

        PB.ProducerBatch.encode = probed_encode
        send = CN.AsyncConnection.send_nowait

        def probed_send(self, request, timeout=None):
            future = send(self, request, timeout)
            if type(request) is ProduceRequest:
                t = now()
                plog.extend((_sent_at(v), "PW", t) for p in request.partitions
                            for pos, _ in B.iter_complete(p.records) for v in B.decode(p.records, pos).values)
            return future

        CN.AsyncConnection.send_nowait = probed_send
        topic = "stages"
        with Producer(bootstrap_servers=bootstrap, acks=1, linger_ms=0) as producer:
            producer.partitions_for(topic)
            cready, done = ctx.Event(), ctx.Event()
            cproc = ctx.Process(target=_consumer_main, args=(bootstrap, topic, records, cout, cready, done),
                                name="e2e-stages-consumer", daemon=True)
            cproc.start()
            if not cready.wait(60):
                raise RuntimeError("the consumer did not start")
            pad = bytes(92)
            start = time.monotonic()
            for i in range(records):
                ahead = start + i / rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
                producer.send(topic, now().to_bytes(8, "big") + pad)
            producer.flush(30)
            done.set()
            cproc.join(120)
        PB.ProducerBatch.encode, CN.AsyncConnection.send_nowait = encode, send
    finally:
        stop.set()
        bproc.join(30)
        for proc in (cproc, bproc):
            if proc is not None and proc.is_alive():
                proc.kill()
    with open(bout, "rb") as f:
        broker = pickle.load(f)
    with open(cout, "rb") as f:
        clog = pickle.load(f)
    seen: dict[int, dict] = {}
    for sent, stage, t in plog + broker["log"] + clog:
        seen.setdefault(sent, {}).setdefault(stage, t)
    rows = [(sent, d) for sent, d in seen.items() if all(s in d for s in STAGES)]
    result: dict = {"records": records, "rate": rate, "complete": len(rows), "since_send_ms": {},
                    "stage_ms": {}}
    for s in STAGES:
        xs = sorted((d[s] - sent) / 1e6 for sent, d in rows)
        result["since_send_ms"][s] = {"p50": _pct(xs, 0.5), "p99": _pct(xs, 0.99)}
    for a, b in zip(STAGES, STAGES[1:]):
        xs = sorted((d[b] - d[a]) / 1e6 for _, d in rows)
        result["stage_ms"][f"{a}->{b}"] = {"p50": _pct(xs, 0.5), "p90": _pct(xs, 0.9), "p99": _pct(xs, 0.99)}
    unawaited = set(broker["unawaited"])
    waited, parked_gaps = 0, []
    for sent, d in rows:
        if sent in unawaited:
            waited += 1  # appended with no fetch parked: it waited for the next one to arrive
        else:
            parked_gaps.append((d["B2"] - d["B1"]) / 1e6)
    parked_gaps.sort()
    result["fetches"] = len(broker["fetches"])
    result["fetches_parked"] = sum(1 for _, p in broker["fetches"] if p)
    result["records_waiting_for_a_fetch"] = waited
    result["append_to_parked_fetch_answer_ms"] = {"p50": _pct(parked_gaps, 0.5), "p90": _pct(parked_gaps, 0.9)}
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=10_000)
    ap.add_argument("--rate", type=float, default=5000.0, help="records per second")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="ferry-e2e-stages-") as tmp:
        result = run(args.records, args.rate, tmp)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{result['complete']} of {result['records']} records seen at every stage ({args.rate:,.0f}/s)")
    print("since send():  " + "  ".join(
        f"{s} {v['p50']:.3f}/{v['p99']:.3f}" for s, v in result["since_send_ms"].items()) + "  (p50/p99 ms)")
    for name, v in result["stage_ms"].items():
        print(f"  {name:7} p50 {v['p50']:.3f}  p90 {v['p90']:.3f}  p99 {v['p99']:.3f} ms")
    print(f"fetches served {result['fetches']}, of which parked {result['fetches_parked']}; "
          f"records appended with no fetch parked: {result['records_waiting_for_a_fetch']}; "
          f"append -> answer of a parked fetch p50 {result['append_to_parked_fetch_answer_ms']['p50']:.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
