#!/usr/bin/env python3
"""The perf suite: `ferry perf` over a matrix of settings, into RESULTS.md and charts.

It starts its own broker (default settings, 127.0.0.1, an ephemeral port, a
temporary data dir) and runs every measurement as a ``ferry perf ... --json``
subprocess, so each figure comes with the command that reproduces it.

- Headline cells, each the median of 3 runs: the reference workload of
  1,000,000 records of 100 random bytes, no key, default producer settings,
  produced with acks=1 and with acks=all, then consumed; end-to-end latency at
  5,000 records/s (linger_ms=0).
- Ack latency at 5,000 records/s for acks 0, 1 and all (linger_ms=0).
- The matrix, one run per cell: record sizes 10 B, 100 B, 1 KiB, 10 KiB x
  acks 0, 1, all x 1, 8, 64 partitions x 1, 4 producer processes, each cell
  on a fresh topic. A cell sends as many records as its record size and
  settings move in about ``--cell-seconds`` (estimated from a calibration run
  per size, then from the cells already measured). Every acks=1 single
  producer topic is then consumed whole.

The full run takes about 10 minutes on 2 cores; ``--quick`` (under 2 minutes)
keeps one partition and one producer (plus two multi-producer cells), short
cells and a 300,000-record headline. The generated section of RESULTS.md is
rewritten in place (hand-written sections are kept); the raw results go to
``--raw`` as JSON, the charts to ``--charts``.

    python benchmarks/run_suite.py --quick
    python benchmarks/run_suite.py --out benchmarks/RESULTS.md --charts benchmarks/charts/
    python benchmarks/run_suite.py --charts-only     # redraw from the raw JSON
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import report  # noqa: E402
from results_md import load_average  # noqa: E402

SIZES = [10, 100, 1024, 10240]
ACKS = ["0", "1", "all"]
PARTITIONS = [1, 8, 64]
PRODUCERS = [1, 4]
HEADLINE_SIZE = 100
E2E_RATE = 5000
MAX_CELL_BYTES = 2 << 30


@dataclass
class Plan:
    mode: str
    cell_seconds: float
    cells: list  # (size, acks, partitions, producers)
    headline_records: int
    runs: int
    e2e_seconds: float
    ack_latency_seconds: float


def full_plan(cell_seconds: float) -> Plan:
    cells = list(itertools.product(SIZES, ACKS, PARTITIONS, PRODUCERS))
    return Plan("full", cell_seconds, cells, 1_000_000, 3, 30.0, 5.0)


def quick_plan() -> Plan:
    cells = list(itertools.product(SIZES, ACKS, [1], [1]))
    cells += [(HEADLINE_SIZE, "1", 8, 4), (HEADLINE_SIZE, "1", 64, 4)]
    return Plan("quick", 0.5, cells, 300_000, 3, 3.0, 1.0)


@dataclass
class Suite:
    bootstrap: str
    plan: Plan
    log: Callable[[str], None] = print
    results: dict = field(default_factory=lambda: {
        "headline": {}, "ack_latency": [], "produce": [], "consume": [], "errors": []})
    _rates: dict = field(default_factory=dict)
    _topic_seq: int = 0

    # ------------------------------------------------------------ running ferry

    def ferry(self, args: list[str], timeout: float) -> dict:
        """Run ``ferry perf ARGS --json``; its result, with ``command`` (or ``error``)."""
        cmd = [sys.executable, str(ROOT / "bin" / "ferry"), "-b", self.bootstrap, "perf", *args, "--json"]
        shown = "ferry perf " + shlex.join(args)
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                                 cwd=str(ROOT), stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return self._failed(shown, f"timed out after {timeout:.0f} s")
        try:
            out = json.loads(res.stdout)
        except json.JSONDecodeError:
            return self._failed(shown, (res.stderr.strip() or res.stdout.strip())[-500:])
        out["command"] = shown
        if res.returncode:
            out["failed"] = res.stderr.strip()[-500:]
            self.results["errors"].append({"command": shown, "error": out["failed"]})
        return out

    def _failed(self, shown: str, error: str) -> dict:
        self.log(f"  FAILED: {shown}: {error}")
        self.results["errors"].append({"command": shown, "error": error})
        return {"command": shown, "failed": error}

    def topic(self, label: str, partitions: int) -> str:
        from client import Admin, NewTopic

        self._topic_seq += 1
        name = f"{label}-{self._topic_seq}"
        with Admin(bootstrap_servers=self.bootstrap) as admin:
            admin.create_topics([NewTopic(name, partitions)])
        return name

    def drop(self, topic: str) -> None:
        from client import Admin

        with Admin(bootstrap_servers=self.bootstrap) as admin:
            admin.delete_topics([topic])

    def produce(self, topic: str, n: int, size: int, acks: str = "1", producers: int = 1,
                extra: tuple = ()) -> dict:
        args = ["produce", "--topic", topic, "--num-records", str(n), "--record-size", str(size),
                "--acks", acks, *(["--producers", str(producers)] if producers > 1 else []), *extra]
        return self.ferry(args, timeout=600)

    def consume(self, topic: str, n: int) -> dict:
        return self.ferry(["consume", "--topic", topic, "--num-records", str(n)], timeout=600)

    # ------------------------------------------------------------ sizing cells

    def records_for(self, size: int, acks: str, producers: int) -> int:
        rate = (self._rates.get((size, acks, producers)) or self._rates.get((size, producers))
                or self._rates.get(size))
        n = int(rate * self.plan.cell_seconds)
        return max(1000, min(n, MAX_CELL_BYTES // max(size, 1), 20_000_000))

    def learn(self, size: int, acks: str, producers: int, result: dict) -> None:
        rate = result.get("records_per_sec")
        if rate:
            self._rates[(size, acks, producers)] = rate
            self._rates[(size, producers)] = rate
            self._rates.setdefault(size, rate)

    def calibrate(self, size: int) -> None:
        topic = self.topic(f"calibrate-{size}", 1)
        out = self.produce(topic, max(2000, int(2e6 / (size + 50))), size)
        self._rates[size] = out.get("records_per_sec") or 1000.0
        self.drop(topic)

    # ------------------------------------------------------------ the parts

    def median_of(self, label: str, runs: list[dict]) -> dict:
        """The run with the median records/s (e2e: the median of each latency figure)."""
        ok = [r for r in runs if "failed" not in r]
        if not ok:
            return {"label": label, "failed": runs[-1].get("failed"), "runs": runs}
        if label == "e2e":
            med = dict(ok[0])
            med["latency_ms"] = {
                k: statistics.median(r["latency_ms"][k] for r in ok) for k in ok[0]["latency_ms"]
            }
        else:
            med = dict(sorted(ok, key=lambda r: r["records_per_sec"])[len(ok) // 2])
        med["label"] = label
        med["runs"] = [{k: r.get(k) for k in ("records_per_sec", "mb_per_sec", "latency_ms", "failed")}
                       for r in runs]
        return med

    def headline(self) -> None:
        p = self.plan
        n, size = p.headline_records, HEADLINE_SIZE
        for acks in ("1", "all"):
            runs, topics = [], []
            for i in range(p.runs):
                topic = self.topic(f"headline-acks{acks}", 1)
                topics.append(topic)
                runs.append(self.produce(topic, n, size, acks))
                self.log(f"  produce acks={acks} run {i + 1}: {_rate(runs[-1])}")
            self.results["headline"][f"produce_acks{acks}"] = self.median_of(f"produce acks={acks}", runs)
            if acks == "1":
                consumed = []
                for i in range(p.runs):
                    consumed.append(self.consume(topics[0], n))
                    self.log(f"  consume run {i + 1}: {_rate(consumed[-1])}")
                self.results["headline"]["consume"] = self.median_of("consume", consumed)
            for topic in topics:
                self.drop(topic)
        runs = []
        for i in range(p.runs):
            topic = self.topic("e2e", 1)
            runs.append(self.ferry(["e2e", "--topic", topic, "--rate", str(E2E_RATE),
                                    "--duration", f"{p.e2e_seconds:g}", "--record-size", str(size)],
                                   timeout=p.e2e_seconds * 4 + 120))
            self.log(f"  e2e run {i + 1}: {_latency(runs[-1])}")
            self.drop(topic)
        self.results["headline"]["e2e"] = self.median_of("e2e", runs)

    def ack_latency(self) -> None:
        n = int(E2E_RATE * self.plan.ack_latency_seconds)
        for acks in ACKS:
            topic = self.topic(f"acklat-{acks}", 1)
            out = self.produce(topic, n, HEADLINE_SIZE, acks,
                               extra=("--throughput", str(E2E_RATE), "--linger-ms", "0"))
            out["acks"] = acks
            self.results["ack_latency"].append(out)
            self.log(f"  acks={acks} at {E2E_RATE}/s: {_latency(out)}")
            self.drop(topic)

    def matrix(self) -> None:
        cells = sorted(self.plan.cells, key=lambda c: (c[0], c[3], c[2], ACKS.index(c[1])))
        total = len(cells)
        for k, (size, acks, partitions, producers) in enumerate(cells, 1):
            if size not in self._rates:
                self.calibrate(size)
            n = self.records_for(size, acks, producers)
            topic = self.topic(f"m{size}-acks{acks}-p{partitions}-P{producers}", partitions)
            out = self.produce(topic, n, size, acks, producers)
            out.update(size=size, acks=acks, partitions=partitions, producers=producers,
                       topic_command=f"ferry topic create {topic} -p {partitions}")
            self.results["produce"].append(out)
            self.learn(size, acks, producers, out)
            self.log(f"  [{k}/{total}] {size} B acks={acks} {partitions}p {producers}P "
                     f"{n} records: {_rate(out)}")
            if acks == "1" and producers == 1 and "failed" not in out:
                got = self.consume(topic, out["records"])
                got.update(size=size, partitions=partitions)
                self.results["consume"].append(got)
                self.log(f"      consume: {_rate(got)}")
            self.drop(topic)


def _rate(result: dict) -> str:
    if "failed" in result:
        return "FAILED " + result["failed"][:200]
    return f"{result['records_per_sec']:,.0f} records/s ({result['mb_per_sec']:.1f} MB/s)"


def _latency(result: dict) -> str:
    if "failed" in result:
        return "FAILED " + result["failed"][:200]
    lat = result["latency_ms"]
    return f"p50 {lat['p50']} ms, p99 {lat['p99']} ms, max {lat['max']} ms"


def peak_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a reduced matrix in under 2 minutes")
    ap.add_argument("--out", type=Path, default=HERE / "RESULTS.md", help="RESULTS.md to update")
    ap.add_argument("--charts", type=Path, default=HERE / "charts", help="directory for the PNG charts")
    ap.add_argument("--raw", type=Path, default=HERE / "results.json", help="raw results (JSON)")
    ap.add_argument("--cell-seconds", type=float, default=2.5,
                    help="time budget of one matrix cell in a full run")
    ap.add_argument("--bootstrap", default=None,
                    help="use this running broker instead of starting one (host:port)")
    ap.add_argument("--charts-only", action="store_true",
                    help="only redraw the charts and the RESULTS.md section from --raw")
    args = ap.parse_args()

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    if args.charts_only:
        results = json.loads(args.raw.read_text())
    else:
        results = run(args, log)
        args.raw.parent.mkdir(parents=True, exist_ok=True)
        args.raw.write_text(json.dumps(results, indent=1) + "\n")
    charts = report.draw_charts(results, args.charts)
    report.write_results(results, args.out, charts)
    log(f"wrote {args.out} and {len(charts)} chart(s) in {args.charts}")
    return 1 if results.get("errors") else 0


def run(args, log) -> dict:
    plan = quick_plan() if args.quick else full_plan(args.cell_seconds)
    started = time.monotonic()
    load_before = load_average()
    broker = None
    data_dir = None
    if args.bootstrap:
        bootstrap = args.bootstrap
    else:
        from tests.brokerproc import BrokerProcess

        data_dir = Path(tempfile.mkdtemp(prefix="ferry-bench-"))
        broker = BrokerProcess(data_dir / "data").start()
        bootstrap = broker.bootstrap
    log(f"{plan.mode} run against a broker on {bootstrap}")
    suite = Suite(bootstrap, plan, log)
    try:
        log("headline:")
        suite.headline()
        log("ack latency:")
        suite.ack_latency()
        log("matrix:")
        suite.matrix()
    finally:
        rss = peak_rss_mb(broker.proc.pid) if broker is not None else None
        if broker is not None:
            broker.stop()
        if data_dir is not None:
            shutil.rmtree(data_dir, ignore_errors=True)
    res = suite.results
    res["meta"] = {
        "mode": plan.mode,
        "cell_seconds": plan.cell_seconds,
        "headline_records": plan.headline_records,
        "runs": plan.runs,
        "e2e_seconds": plan.e2e_seconds,
        "wall_minutes": round((time.monotonic() - started) / 60, 1),
        "load_before": load_before,
        "load_after": load_average(),
        "broker_peak_rss_mb": None if rss is None else round(rss, 1),
        "own_broker": broker is not None,
    }
    res["machine"] = report.machine()
    return res


if __name__ == "__main__":
    sys.exit(main())
