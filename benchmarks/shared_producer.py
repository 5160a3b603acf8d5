#!/usr/bin/env python3
"""Throughput of one blocking Producer shared by several threads of one process.

A web server or a worker pool shares one ``Producer`` between its threads.
Each thread sends its share of ``--num-records`` keyless records of
``--record-size`` bytes to one topic as fast as ``send()`` returns; the figure
is all records over the time from the first send to the end of ``flush()``
(acks=1 by default). Run it with 1 thread and with several, against the same
broker, to see what the threads cost each other.

    python benchmarks/shared_producer.py --threads 1
    python benchmarks/shared_producer.py --threads 4 --bootstrap-server localhost:9092
    python benchmarks/shared_producer.py --threads 4 --json
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def run(bootstrap: str, topic: str, threads: int, num_records: int, record_size: int,
        acks: str) -> dict:
    from client import Producer

    per_thread = [num_records // threads + (i < num_records % threads) for i in range(threads)]
    value = b"x" * record_size
    errors: list[BaseException] = []
    with Producer(bootstrap_servers=bootstrap, acks=acks if acks == "all" else int(acks)) as producer:
        producer.partitions_for(topic)
        start_line = threading.Barrier(threads + 1)

        def work(n: int) -> None:
            send = producer.send
            start_line.wait(30)
            try:
                for _ in range(n):
                    send(topic, value)
            except BaseException as exc:  # reported below, not lost in the thread
                errors.append(exc)

        workers = [threading.Thread(target=work, args=(n,)) for n in per_thread]
        for w in workers:
            w.start()
        start_line.wait(30)
        start = time.perf_counter()
        for w in workers:
            w.join()
        producer.flush(60)
        elapsed = time.perf_counter() - start
    if errors:
        raise errors[0]
    return {
        "threads": threads,
        "records": num_records,
        "records_per_sec": round(num_records / elapsed, 1),
        "elapsed_sec": round(elapsed, 4),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bootstrap-server", default="localhost:9092")
    ap.add_argument("--topic", default="shared-producer")
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--num-records", type=int, default=1_000_000)
    ap.add_argument("--record-size", type=int, default=100)
    ap.add_argument("--acks", choices=["0", "1", "all"], default="1")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    if args.threads < 1 or args.num_records < args.threads:
        ap.error("--threads must be at least 1 and at most --num-records")
    result = run(args.bootstrap_server, args.topic, args.threads, args.num_records,
                 args.record_size, args.acks)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['records']} records from {result['threads']} thread(s) sharing one "
              f"Producer: {result['records_per_sec']:,.0f} records/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
