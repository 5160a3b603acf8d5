#!/usr/bin/env python3
"""Ferry beside its peers: the same workload, the same machine, the same run.

The workload of the published Python-client figures: 1,000,000 records of 100 random bytes, no key,
one producer (acknowledged) then one consumer reading them all; then latency
from send to receive at 5,000 records/s, the consumer in another process.
Ferry runs it through ``ferry perf`` against a broker this script starts;
each peer runs it with its own Python client (see the peer modules), against
a server this script starts on 127.0.0.1 with free ports and a temporary
data dir and stops at the end:

- Redis Streams (memory only) with redis-py and hiredis: ``apt-get install redis-server``
- NATS JetStream (file store) with nats-py: ``apt-get install nats-server``
- RabbitMQ Streams with rstream: ``apt-get install rabbitmq-server`` (the
  script enables the rabbitmq_stream plugin for its own server)

The Python clients are the ``peers`` extra: ``pip install -e '.[peers]'``. A
peer whose server or client is missing is skipped, and the script says so.
Ferry's broker stays up for the whole script and Ferry runs the workload once
before each run of each peer, so that each ratio compares runs made side by
side on a machine whose load may change. The script prints a table with
Ferry's ratio to each peer, and with ``--out`` writes it into the ``peers``
section of RESULTS.md (other sections are kept).

    python benchmarks/peers/run_peers.py
    python benchmarks/peers/run_peers.py --records 200000 --duration 5 --only redis
    python benchmarks/peers/run_peers.py --out benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path[:0] = [str(HERE), str(ROOT), str(HERE.parent)]

import servers  # noqa: E402
from results_md import load_average, machine_lines, replace_section  # noqa: E402

PEERS = {
    # key: (module, server starter, python packages it needs)
    "redis": ("redis_streams", servers.start_redis, ("redis", "hiredis")),
    "nats": ("nats_jetstream", servers.start_nats, ("nats",)),
    "rabbitmq": ("rabbitmq_streams", servers.start_rabbitmq, ("rstream",)),
}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def median_run(runs: list[dict], key) -> dict:
    ok = [r for r in runs if "failed" not in r]
    if not ok:
        return runs[-1]
    chosen = dict(sorted(ok, key=key)[len(ok) // 2])
    if len(runs) > 1:
        chosen["runs"] = [None if "failed" in r else key(r) for r in runs]  # the figure compared
    return chosen


def by_rate(r: dict) -> float:
    return r["records_per_sec"]


def by_p99(r: dict) -> float:
    return r["latency_ms"]["p99"] or 0.0


def attempt(fn, *args) -> dict:
    try:
        return fn(*args)
    except Exception as exc:  # noqa: BLE001 - one failed measurement must not stop the others
        return {"failed": f"{type(exc).__name__}: {exc}"}


# ------------------------------------------------------------ Ferry


def ferry_perf(bootstrap: str, args: list[str], timeout: float) -> dict:
    cmd = [sys.executable, str(ROOT / "bin" / "ferry"), "-b", bootstrap, "perf", *args, "--json"]
    shown = "ferry perf " + shlex.join(args)
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=str(ROOT),
                             env=dict(os.environ, PYTHONPATH=str(ROOT)), stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return {"failed": f"timed out after {timeout:.0f} s", "command": shown}
    if res.returncode:
        return {"failed": res.stderr.strip()[-400:], "command": shown}
    out = json.loads(res.stdout)
    out["command"] = shown
    return out


class Ferry:
    """A Ferry broker for the whole script, and one run of the workload at a time."""

    name = "Ferry + its Python client"

    def __init__(self, a) -> None:
        from tests.brokerproc import BrokerProcess

        self.a = a
        self.data = Path(tempfile.mkdtemp(prefix="peer-ferry-"))
        self.broker = BrokerProcess(self.data / "data").start()
        self.runs: list[tuple[dict, dict, dict]] = []

    def run_once(self) -> tuple[dict, dict, dict]:
        a, b = self.a, self.broker.bootstrap
        i = len(self.runs)
        topic, lat_topic = f"peers-{i}", f"peers-latency-{i}"
        produced = ferry_perf(b, ["produce", "--topic", topic, "--num-records", str(a.records),
                                  "--record-size", str(a.record_size)], 600)
        consumed = ferry_perf(b, ["consume", "--topic", topic, "--num-records", str(a.records)], 600)
        lat = ferry_perf(b, ["e2e", "--topic", lat_topic, "--rate", f"{a.rate:g}",
                             "--duration", f"{a.duration:g}", "--record-size", str(a.record_size)],
                         a.duration * 4 + 120)
        self._drop(topic, lat_topic)  # every run starts from the same broker state
        log(f"  ferry: produce {_fmt_rate(produced)}, consume {_fmt_rate(consumed)}, "
            f"latency {_fmt_lat(lat)}")
        self.runs.append((produced, consumed, lat))
        return produced, consumed, lat

    def _drop(self, *topics: str) -> None:
        from client import Admin

        try:
            with Admin(bootstrap_servers=self.broker.bootstrap) as admin:
                admin.delete_topics(list(topics))
        except Exception as exc:  # noqa: BLE001 - only disk space is at stake
            log(f"  (could not delete {topics}: {exc})")

    def summary(self, runs: list[tuple[dict, dict, dict]] | None = None) -> dict:
        runs = self.runs if runs is None else runs
        return {
            "name": self.name,
            "produce": median_run([r[0] for r in runs], by_rate),
            "consume": median_run([r[1] for r in runs], by_rate),
            "latency": median_run([r[2] for r in runs], by_p99),
        }

    def stop(self) -> None:
        self.broker.stop()
        shutil.rmtree(self.data, ignore_errors=True)


# ------------------------------------------------------------ peers


def run_peer(key: str, a, ferry: Ferry) -> dict:
    """The peer's medians, and those of the Ferry runs interleaved with them."""
    module_name, start, packages = PEERS[key]
    for package in packages:
        try:
            importlib.import_module(package)
        except ImportError:
            return {"key": key, "skipped": f"skipped: Python package {package} not installed "
                                           f"(pip install -e '.[peers]')"}
    module = importlib.import_module(module_name)
    try:
        server = start()
    except servers.Unavailable as exc:
        return {"key": key, "name": module.NAME, "skipped": str(exc)}
    try:
        produced, consumed, lat, beside = [], [], [], []
        for _ in range(a.runs):
            beside.append(ferry.run_once())
            produced.append(attempt(module.produce, server.port, a.records, a.record_size))
            consumed.append(attempt(module.consume, server.port, a.records))
            lat.append(attempt(module.latency, server.port, a.rate, a.duration, a.record_size))
            log(f"  {key}: produce {_fmt_rate(produced[-1])}, consume {_fmt_rate(consumed[-1])}, "
                f"latency {_fmt_lat(lat[-1])}")
        return {
            "key": key,
            "name": module.NAME,
            "version": f"{_server_version(key)}; {_client_version(packages)}",
            "produce": median_run(produced, by_rate),
            "consume": median_run(consumed, by_rate),
            "latency": median_run(lat, by_p99),
            "ferry": ferry.summary(beside),
        }
    finally:
        server.stop()


def _client_version(packages: tuple) -> str:
    from importlib.metadata import PackageNotFoundError, version

    names = {"redis": "redis", "hiredis": "hiredis", "nats": "nats-py", "rstream": "rstream"}
    out = []
    for p in packages:
        try:
            out.append(f"{names[p]} {version(names[p])}")
        except PackageNotFoundError:
            out.append(names[p])
    return ", ".join(out)


def _server_version(key: str) -> str:
    cmd = {"redis": ["redis-server", "--version"], "nats": ["nats-server", "--version"]}.get(key)
    if cmd is None:
        lib = Path("/usr/lib/rabbitmq/lib")
        found = sorted(p.name for p in lib.glob("rabbitmq_server-*")) if lib.exists() else []
        return found[-1].replace("rabbitmq_server-", "RabbitMQ ") if found else "RabbitMQ"
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip()
    except OSError:
        return key
    return out.split(" sha=")[0]


# ------------------------------------------------------------ the table


def _fmt_rate(r: dict | None) -> str:
    if not r:
        return "n/a"
    if "failed" in r:
        return "failed: " + r["failed"][:120]
    return f"{r['records_per_sec']:,.0f}"


def _fmt_lat(r: dict | None) -> str:
    if not r:
        return "n/a"
    if "failed" in r:
        return "failed: " + r["failed"][:120]
    lat = r["latency_ms"]
    return f"{lat['p50']:.2f} / {lat['p99']:.2f} (at {r['records_per_sec']:,.0f}/s)"


def _ratio(ferry: dict, peer: dict, value) -> str:
    try:
        f, p = value(ferry), value(peer)
    except (KeyError, TypeError):
        return "n/a"
    if not f or not p:
        return "n/a"
    return f"{f / p:.2f}x"


def table(ferry: dict, peers: list[dict]) -> list[str]:
    rows = [
        "| broker + Python client | produce records/s | consume records/s | latency p50 / p99 ms "
        "| Ferry ÷ peer: produce | consume | latency p99 |",
        "|---|---|---|---|---|---|---|",
    ]
    rate = lambda part: lambda r: r[part]["records_per_sec"]  # noqa: E731
    p99 = lambda r: r["latency"]["latency_ms"]["p99"]  # noqa: E731
    rows.append(f"| {ferry['name']} (all runs) | {_fmt_rate(ferry['produce'])} | "
                f"{_fmt_rate(ferry['consume'])} | {_fmt_lat(ferry['latency'])} | – | – | – |")
    for r in peers:
        if "skipped" in r:
            rows.append(f"| {r.get('name', r['key'])} | {r['skipped']} | | | | | |")
            continue
        beside = r["ferry"]  # the Ferry runs interleaved with this peer's
        rows.append(f"| {r['name']} | {_fmt_rate(r['produce'])} | {_fmt_rate(r['consume'])} "
                    f"| {_fmt_lat(r['latency'])} | {_ratio(beside, r, rate('produce'))} "
                    f"| {_ratio(beside, r, rate('consume'))} | {_ratio(beside, r, p99)} |")
    return rows


def markdown(ferry: dict, peers: list[dict], a, load_before: str) -> str:
    runs = f"median of {a.runs} runs" if a.runs > 1 else "one run"
    lines = [
        "## Ferry beside its peers",
        "",
        *machine_lines(),
        f"- Load average (1, 5, 15 min) before: {load_before}, after: {load_average()}",
        "",
        f"Workload: {a.records:,} records of {a.record_size} random bytes, no key, one producer "
        f"(every record acknowledged) then one consumer reading them all; latency from send to "
        f"receive at {a.rate:,.0f} records/s for {a.duration:g} s, the consumer in another process "
        f"(the rate each latency test reached is in brackets). Each figure is the {runs}, all "
        "measured in the same run of `benchmarks/peers/run_peers.py`, which runs Ferry once "
        "before each run of each peer: a peer's ratios are Ferry's medians over the runs "
        "interleaved with that peer's, divided by the peer's. Above 1 Ferry moves more records "
        "per second; for latency, below 1 Ferry is faster.",
        "",
        *table(ferry, peers),
        "",
    ]
    beside = [r for r in peers if "skipped" not in r]
    if beside:
        lines += ["Ferry in the runs interleaved with each peer's:", ""]
        for r in beside:
            f = r["ferry"]
            lines.append(f"- beside {r['name']}: produce {_fmt_rate(f['produce'])}, consume "
                         f"{_fmt_rate(f['consume'])}, latency p50 / p99 {_fmt_lat(f['latency'])}")
        lines.append("")
    lines += [
        "Versions and commands:",
        "",
        f"- Ferry: `{ferry['produce'].get('command', '')}`, `{ferry['consume'].get('command', '')}`, "
        f"`{ferry['latency'].get('command', '')}`",
    ]
    for r in beside:
        lines.append(f"- {r['name']}: {r['version']}")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--record-size", type=int, default=100)
    ap.add_argument("--rate", type=float, default=5000.0, help="records/s of the latency test")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds of the latency test")
    ap.add_argument("--runs", type=int, default=1, help="runs per figure (the median is kept)")
    ap.add_argument("--only", default=",".join(PEERS), help="comma-separated peers: redis,nats,rabbitmq")
    ap.add_argument("--out", type=Path, default=None, help="write the table into this RESULTS.md")
    ap.add_argument("--raw", type=Path, default=None, help="write the raw results as JSON")
    a = ap.parse_args()
    wanted = [k.strip() for k in a.only.split(",") if k.strip()]
    unknown = [k for k in wanted if k not in PEERS]
    if unknown:
        ap.error(f"unknown peer(s) {unknown}: choose from {list(PEERS)}")
    load_before = load_average()
    ferry = Ferry(a)
    try:
        peers = []
        for key in wanted:
            log(f"{key}:")
            r = run_peer(key, a, ferry)
            if "skipped" in r:
                log(f"  {r['skipped']}")
            peers.append(r)
        if not ferry.runs:  # every peer skipped: Ferry's figures alone
            log("ferry alone:")
            for _ in range(a.runs):
                ferry.run_once()
    finally:
        ferry.stop()
    ferry = ferry.summary()
    rows = table(ferry, peers)
    print("\n".join(rows))
    if a.raw:
        a.raw.write_text(json.dumps({"ferry": ferry, "peers": peers}, indent=1) + "\n")
    if a.out:
        replace_section(a.out, "peers", "benchmarks/peers/run_peers.py", markdown(ferry, peers, a, load_before))
        log(f"wrote the peers section of {a.out}")
    failed = [r for r in [ferry, *peers] for part in ("produce", "consume", "latency")
              if "failed" in r.get(part, {})]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
