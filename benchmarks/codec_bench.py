#!/usr/bin/env python3
"""CPU cost of encoding and decoding Produce and Fetch messages, per message.

Each case runs the sans-IO ``protocol.connection.Connection`` the way the
broker's and the client's shells do, with no sockets: a decode case feeds one
whole frame to ``receive_data`` and takes the event from ``next_event``; an
encode case calls ``send_parts`` on a message built beforehand. The messages
are what one producer and one consumer exchange with the broker for a single
partition: one record batch of about 150 bytes (10 records, built with
``protocol.batch.build_batch``).

    server  decode ProduceRequest    (what the broker does per produce)
    server  encode ProduceResponse
    server  decode FetchRequest
    server  encode FetchResponse     (with the batch as its records)
    client  encode ProduceRequest
    client  decode ProduceResponse
    client  decode FetchResponse     (with the batch as its records)
    build   ProduceResponse          (the constructor calls the broker makes for one)

A case's figure is the median, over ``--repeats`` runs, of the mean time per
message over a run; the garbage collector is off while timing (as in
``timeit``). Times on a shared machine drift, so compare trees with
``--compare``, which alternates runs of the two in fresh processes, or with
``--instructions``, which counts instructions under valgrind's callgrind: a
run of ``--loops`` messages minus a run of none, divided by the count. Counts
are repeatable to a few instructions (PYTHONHASHSEED is fixed), so they show
a change of a few percent that times cannot.

    python benchmarks/codec_bench.py                        # this tree
    python benchmarks/codec_bench.py --root ../other-tree   # another checkout's protocol/
    python benchmarks/codec_bench.py --compare ../other-tree --rounds 5
    python benchmarks/codec_bench.py --instructions [--root ../other-tree]
    python benchmarks/codec_bench.py --json
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
TREE = HERE.parent.parent


def _import_tree(root: Path) -> None:
    """Make ``protocol`` importable from ``root`` (the tree under test)."""
    sys.path.insert(0, str(root))


def setup_cases() -> dict:
    """name -> a function of no arguments doing one message's work."""
    from protocol import batch
    from protocol import messages as m
    from protocol.connection import Connection, Role
    from protocol.handshake import handshake_response

    client = Connection(Role.CLIENT)
    server = Connection(Role.SERVER)
    server.receive_data(client.send(m.Handshake(client_id="bench")))
    hs = server.next_event()
    client.receive_data(server.send(handshake_response(hs, max_frame_size=server.max_frame_size)))
    client.next_event()

    records = batch.build_batch([b"v%03d" % i for i in range(10)], now_ms=1_700_000_000_000)
    topic, cid = "bench-topic", 12345
    produce = m.ProduceRequest(
        acks=1, timeout_ms=30000,
        partitions=(m.ProducePartition(topic, 0, records),), correlation_id=cid)
    produced = m.ProduceResponse(partitions=(m.ProducePartitionResponse(
        topic, 0, error_code=0, base_offset=1000, log_append_time=-1, log_start_offset=0),),
        correlation_id=cid)
    fetch = m.FetchRequest(max_wait_ms=500, min_bytes=1, max_bytes=52428800,
                           partitions=(m.FetchPartition(topic, 0, 1000),), correlation_id=cid)
    fetched = m.FetchResponse(partitions=(m.FetchPartitionResponse(
        topic, 0, error_code=0, high_watermark=1010, log_start_offset=0, records=records),),
        correlation_id=cid)

    pending = client._pending  # the ids a client awaits: reset so it may send again

    def frame(sender, msg) -> bytes:
        data = b"".join(bytes(p) for p in sender.send_parts(msg))
        pending.clear()
        return data

    produce_frame = frame(client, produce)
    fetch_frame = frame(client, fetch)
    produced_frame = frame(server, produced)
    fetched_frame = frame(server, fetched)

    def server_decode(data):
        feed, take = server.receive_data, server.next_event
        return lambda: (feed(data), take())

    def client_decode(data, api_key):
        feed, take = client.receive_data, client.next_event

        def run():
            pending[cid] = api_key
            feed(data)
            return take()
        return run

    def client_encode(msg):
        send = client.send_parts

        def run():
            send(msg)
            pending.clear()
        return run

    def build_produce_response():
        return m.ProduceResponse(partitions=(m.ProducePartitionResponse(
            topic, 0, error_code=0, base_offset=1000, log_append_time=-1, log_start_offset=0),),
            correlation_id=cid)

    cases = {
        "server decode ProduceRequest": server_decode(produce_frame),
        "server encode ProduceResponse": lambda: server.send_parts(produced),
        "server decode FetchRequest": server_decode(fetch_frame),
        "server encode FetchResponse": lambda: server.send_parts(fetched),
        "client encode ProduceRequest": client_encode(produce),
        "client decode ProduceResponse": client_decode(produced_frame, m.ProduceResponse.API_KEY),
        "client decode FetchResponse": client_decode(fetched_frame, m.FetchResponse.API_KEY),
        "build ProduceResponse": build_produce_response,
    }
    # Each case does what it claims: decoded messages equal the ones sent.
    assert cases["server decode ProduceRequest"]()[1] == produce
    assert cases["server decode FetchRequest"]()[1] == fetch
    assert cases["client decode ProduceResponse"]() == produced
    assert cases["client decode FetchResponse"]() == fetched
    assert build_produce_response() == produced
    return cases


def _loop(fn, n: int) -> None:
    for _ in range(n):
        fn()


def time_cases(cases: dict, repeats: int, seconds: float) -> dict[str, float]:
    """name -> median microseconds per message."""
    results = {}
    for name, fn in cases.items():
        _loop(fn, 2000)  # warm up: specialisation, caches
        n = 1000
        start = time.perf_counter()
        _loop(fn, n)
        per = (time.perf_counter() - start) / n
        n = max(1000, int(seconds / max(per, 1e-9)))
        runs = []
        gc.disable()
        try:
            for _ in range(repeats):
                start = time.perf_counter()
                _loop(fn, n)
                runs.append((time.perf_counter() - start) / n * 1e6)
        finally:
            gc.enable()
        results[name] = statistics.median(runs)
    return results


# ------------------------------------------------------------ instruction counts


def _callgrind(root: Path, case: str | None, loops: int) -> int:
    """Instructions callgrind counts for a process that sets up, warms up and runs ``case``."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
               sys.executable, str(HERE), "--root", str(root), "--run-loop", case or "", str(loops)]
        env = dict(os.environ, PYTHONHASHSEED="0")
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        found = re.search(r"Collected : (\d+)", proc.stderr)
        if proc.returncode or not found:
            raise SystemExit(f"callgrind run failed:\n{proc.stderr[-2000:]}")
        return int(found.group(1))


def run_loop(case: str, loops: int) -> None:
    """Set up and warm up every case (so all runs do the same), then run one ``loops`` times."""
    cases = setup_cases()
    for fn in cases.values():
        _loop(fn, 200)
    gc.disable()
    if case:
        _loop(cases[case], loops)


def count_instructions(root: Path, loops: int) -> dict[str, float]:
    base = _callgrind(root, None, 0)
    return {name: (_callgrind(root, name, loops) - base) / loops for name in CASE_NAMES}


CASE_NAMES = [
    "server decode ProduceRequest",
    "server encode ProduceResponse",
    "server decode FetchRequest",
    "server encode FetchResponse",
    "client encode ProduceRequest",
    "client decode ProduceResponse",
    "client decode FetchResponse",
    "build ProduceResponse",
]


# ------------------------------------------------------------ comparing trees


def _child(root: Path, args) -> dict[str, float]:
    cmd = [sys.executable, str(HERE), "--root", str(root), "--json",
           "--repeats", str(args.repeats), "--seconds", str(args.seconds)]
    return json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)


def compare(other: Path, args) -> dict:
    """Alternate runs of ``other`` and this tree; medians of each over the rounds."""
    runs: dict[str, list] = {"other": [], "this": []}
    for i in range(args.rounds):
        order = [("other", other), ("this", TREE)]
        if i % 2:
            order.reverse()
        for label, root in order:
            runs[label].append(_child(root, args))
    return {label: {name: statistics.median(r[name] for r in rs) for name in CASE_NAMES}
            for label, rs in runs.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=TREE, help="checkout whose protocol/ to time")
    ap.add_argument("--compare", type=Path, metavar="OTHER", help="alternate runs of OTHER and this tree")
    ap.add_argument("--rounds", type=int, default=5, help="runs of each tree with --compare")
    ap.add_argument("--repeats", type=int, default=7, help="timed runs per case")
    ap.add_argument("--seconds", type=float, default=0.1, help="length of one timed run")
    ap.add_argument("--instructions", action="store_true", help="count instructions with callgrind")
    ap.add_argument("--loops", type=int, default=2000, help="messages per callgrind run")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--run-loop", nargs=2, metavar=("CASE", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    root = args.root.resolve()

    if args.run_loop:
        _import_tree(root)
        run_loop(args.run_loop[0], int(args.run_loop[1]))
        return
    if args.compare:
        both = compare(args.compare.resolve(), args)
        if args.json:
            print(json.dumps(both, indent=2))
            return
        print(f"{'us per message, median of ' + str(args.rounds) + ' rounds':40s}"
              f"{'other':>9s}{'this':>9s}{'this/other':>12s}")
        for name in CASE_NAMES:
            a, b = both["other"][name], both["this"][name]
            print(f"{name:40s}{a:9.2f}{b:9.2f}{b / a:12.2f}")
        return
    if args.instructions:
        result = count_instructions(root, args.loops)
        unit = "instructions per message"
    else:
        _import_tree(root)
        result = time_cases(setup_cases(), args.repeats, args.seconds)
        unit = "us per message"
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{unit} ({root})")
    for name in CASE_NAMES:
        value = result[name]
        print(f"  {name:38s}{value:12,.0f}" if args.instructions else f"  {name:38s}{value:8.2f}")


if __name__ == "__main__":
    main()
