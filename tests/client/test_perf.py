"""``ferry perf``: a smoke run of each command against a real broker (no timing asserted)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from client.perf import latency_summary, payload_pool, summary_line
from tests.brokerproc import ROOT

pytestmark = pytest.mark.timeout(120)

FERRY = [sys.executable, str(ROOT / "bin" / "ferry")]
LATENCY_KEYS = {"avg", "p50", "p95", "p99", "p999", "max"}


def ferry(broker, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("FERRY_BOOTSTRAP_SERVER", None)
    return subprocess.run(
        [*FERRY, "-b", broker.bootstrap, *args], capture_output=True, text=True,
        timeout=timeout, env=env, cwd=str(ROOT), stdin=subprocess.DEVNULL,
    )


def perf_json(broker, *args: str) -> dict:
    res = ferry(broker, "perf", *args, "--json")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def check_common(result: dict) -> None:
    for key in ("records", "records_per_sec", "mb_per_sec", "latency_ms", "settings"):
        assert key in result
    assert set(result["latency_ms"]) == LATENCY_KEYS


def test_produce_then_consume(broker):
    produced = perf_json(broker, "produce", "--topic", "bench", "--num-records", "3000",
                         "--record-size", "100", "--acks", "all")
    check_common(produced)
    assert produced["records"] == 3000
    assert produced["errors"] == 0 and not produced["timed_out"]
    assert produced["latency_samples"] == 3000
    lat = produced["latency_ms"]
    assert 0 <= lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["p999"] <= lat["max"]
    assert produced["settings"]["acks"] == "all" and produced["settings"]["record_size"] == 100

    consumed = perf_json(broker, "consume", "--topic", "bench", "--num-records", "3000")
    check_common(consumed)
    assert consumed["records"] == 3000 and consumed["complete"]
    assert all(v is None for v in consumed["latency_ms"].values())
    assert consumed["mb_per_sec"] > 0


def test_produce_summary_line_and_producer_processes(broker):
    ferry(broker, "topic", "create", "multi", "-p", "4")
    res = ferry(broker, "perf", "produce", "--topic", "multi", "--num-records", "2001",
                "--record-size", "10", "--producers", "2", "--throughput", "20000",
                "--linger-ms", "1", "--compression", "lz4")
    assert res.returncode == 0, res.stderr
    assert re.fullmatch(
        r"2001 records sent, [\d.]+ records/sec \([\d.]+ MB/sec\), [\d.]+ ms avg latency, "
        r"[\d.]+ ms max latency, [\d.]+ ms 50th, [\d.]+ ms 95th, [\d.]+ ms 99th, [\d.]+ ms 99.9th.\n",
        res.stdout,
    ), res.stdout
    res = ferry(broker, "topic", "describe", "multi", "--json")
    assert sum(p["log_end_offset"] for p in json.loads(res.stdout)[0]["partitions"]) == 2001


@pytest.mark.parametrize("producer_api, consumer_api",
                         [("blocking", "blocking"), ("blocking", "asyncio"), ("asyncio", "asyncio")])
def test_e2e(broker, producer_api, consumer_api):
    result = perf_json(broker, "e2e", "--topic", f"lat-{producer_api}-{consumer_api}",
                       "--rate", "1000", "--duration", "1", "--record-size", "64",
                       "--producer-api", producer_api, "--consumer-api", consumer_api)
    check_common(result)
    assert result["sent"] == 1000 and result["records"] == 1000 and result["lost"] == 0
    assert result["latency_ms"]["p50"] is not None
    assert result["settings"]["consumer_api"] == consumer_api
    assert result["settings"]["producer_api"] == producer_api
    assert 0.9 < result["elapsed_sec"] < 10  # paced at the rate, not sent in a burst


def test_consume_stops_when_the_topic_runs_dry(broker):
    perf_json(broker, "produce", "--topic", "short", "--num-records", "10")
    res = ferry(broker, "perf", "consume", "--topic", "short", "--num-records", "20",
                "--timeout", "2", "--json")
    assert res.returncode == 1
    assert "only 10 of 20 records arrived" in res.stderr
    assert json.loads(res.stdout)["records"] == 10
    res = ferry(broker, "perf", "consume", "--topic", "empty", "--num-records", "5", "--timeout", "1")
    assert res.returncode == 1 and "only 0 of 5 records arrived" in res.stderr
    assert res.stdout.startswith("0 records received,") and "no record arrived." in res.stdout


def test_latency_summary_is_nearest_rank():
    assert latency_summary(()) == dict.fromkeys(LATENCY_KEYS)
    summary = latency_summary([i / 1000 for i in range(1, 1001)])  # 1..1000 ms
    assert summary == {"avg": 500.5, "p50": 501.0, "p95": 951.0, "p99": 991.0,
                       "p999": 1000.0, "max": 1000.0}
    line = summary_line({"records": 5, "records_per_sec": 2.5, "mb_per_sec": 0.0,
                         "latency_ms": summary})
    assert line.startswith("5 records sent, 2.5 records/sec (0.00 MB/sec), 500.50 ms avg latency")


def test_payload_pool_is_distinct_and_sized():
    pool = payload_pool(100, 10)
    assert len(pool) == 10 and {len(v) for v in pool} == {100} and len(set(pool)) == 10
    assert len(payload_pool(1 << 20, 10**6)) == 8  # bounded by bytes
    assert payload_pool(0, 5) == [b""] * 5
