"""The ``ferry`` command line end to end: bin/ferry in a subprocess, through pipes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.brokerproc import ROOT

pytestmark = pytest.mark.timeout(120)

FERRY = [sys.executable, str(ROOT / "bin" / "ferry")]


def ferry(broker, *args, input: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("FERRY_BOOTSTRAP_SERVER", None)
    bootstrap = ["-b", broker.bootstrap] if broker is not None else []
    return subprocess.run(
        [*FERRY, *bootstrap, *args], input=input, capture_output=True, text=True,
        timeout=timeout, env=env, cwd=str(ROOT),
    )


def test_walkthrough_produce_then_consume(broker):
    res = ferry(broker, "produce", "test", input="hello\nworld\nthird line\n")
    assert res.returncode == 0, res.stderr
    assert ">" not in res.stdout  # no prompt when standard input is not a terminal
    res = ferry(broker, "consume", "test", "--from-beginning", "-n", "3")
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == ["hello", "world", "third line"]


def test_consume_formats_and_keys(broker):
    res = ferry(broker, "produce", "kv", "--key-separator", ":", input="k1:v1\nnokey\n")
    assert res.returncode == 0, res.stderr
    res = ferry(broker, "consume", "kv", "--from-beginning", "-n", "2", "--format", "%p/%o %k=%v")
    assert res.stdout.splitlines() == ["0/0 k1=v1", "0/1 =nokey"]
    res = ferry(broker, "consume", "kv", "--from-beginning", "-n", "1", "--json")
    rec = json.loads(res.stdout)
    assert (rec["key"], rec["value"], rec["offset"], rec["topic"]) == ("k1", "v1", 0, "kv")


def test_consume_timeout_ends_without_error(broker):
    ferry(broker, "produce", "quiet", input="only\n")
    res = ferry(broker, "consume", "quiet", "--from-beginning", "--timeout-ms", "1000")
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == ["only"]


def test_consume_partition_and_offset(broker):
    ferry(broker, "topic", "create", "parts", "-p", "2")
    ferry(broker, "produce", "parts", "-p", "1", input="a\nb\nc\n")
    res = ferry(broker, "consume", "parts", "-p", "1", "-o", "1", "-n", "2")
    assert res.stdout.splitlines() == ["b", "c"]


def test_missing_topic_or_partition_is_a_one_line_error(broker):
    ferry(broker, "topic", "create", "two", "-p", "2")
    for args in (("produce", "two", "-p", "5"), ("consume", "two", "-p", "5", "--timeout-ms", "500")):
        res = ferry(broker, *args, input="x\n")
        assert res.returncode == 4, res.stderr
        assert res.stderr.strip() == "Error: topic 'two' has no partition 5 (its partitions are 0-1)"
    res = ferry(broker, "consume", "absent", "-p", "0", "--timeout-ms", "500")
    assert res.returncode == 4 and res.stderr.strip() == "Error: topic 'absent' does not exist"
    # subscribing waits for the topic, as Kafka's console consumer does, and says so
    res = ferry(broker, "consume", "absent", "--timeout-ms", "500")
    assert res.returncode == 0 and "topic 'absent' does not exist yet" in res.stderr
    res = ferry(broker, "topic", "list", "--json")
    assert "absent" not in {t["topic"] for t in json.loads(res.stdout)}
    assert ferry(broker, "produce", "two", "-p", "1", input="ok\n").returncode == 0


def test_topic_commands(broker):
    res = ferry(broker, "topic", "create", "orders", "-p", "3", "-c", "retention_ms=1000000")
    assert res.returncode == 0, res.stderr
    assert "created topic orders" in res.stdout
    res = ferry(broker, "topic", "create", "orders")
    assert res.returncode == 1 and "TOPIC_ALREADY_EXISTS" in res.stderr
    assert "Traceback" not in res.stderr
    ferry(broker, "produce", "orders", "-p", "2", input="x\ny\n")
    res = ferry(broker, "topic", "list", "--json")
    assert {"topic": "orders", "partitions": 3} in json.loads(res.stdout)
    res = ferry(broker, "topic", "describe", "orders", "--json")
    desc = json.loads(res.stdout)[0]
    assert [p["log_end_offset"] for p in desc["partitions"]] == [0, 0, 2]
    assert desc["config"]["retention.ms"] == "1000000"
    res = ferry(broker, "topic", "describe", "orders")
    assert "PARTITION" in res.stdout and "retention.ms" in res.stdout
    res = ferry(broker, "topic", "delete", "orders")
    assert res.returncode == 0
    res = ferry(broker, "topic", "describe", "orders")
    assert res.returncode == 4 and "Traceback" not in res.stderr


def test_bad_input_gives_one_line_errors(broker):
    res = ferry(broker, "topic", "create", "bad/name")
    assert res.returncode == 1 and "INVALID_TOPIC" in res.stderr
    res = ferry(broker, "topic", "create", "x", "-c", "novalue")
    assert res.returncode == 2 and "key=value" in res.stderr
    res = ferry(broker, "topic", "create", "x", "-c", "retention_ms=soon")
    assert res.returncode == 1 and "INVALID_CONFIG" in res.stderr
    for res in (ferry(broker, "produce", "bad/name", input="x\n"),):
        assert res.returncode != 0 and "Traceback" not in res.stderr


def test_unreachable_broker(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), FERRY_BOOTSTRAP_SERVER="127.0.0.1:1")
    for args in (["topic", "list"], ["consume", "t", "-n", "1"]):
        res = subprocess.run([*FERRY, "--request-timeout-ms", "2000", *args], capture_output=True,
                             text=True, timeout=60, env=env, input="")
        assert res.returncode == 3, (args, res.stderr)
        assert "127.0.0.1:1" in res.stderr and "Traceback" not in res.stderr
    res = subprocess.run([*FERRY, "--request-timeout-ms", "2000", "produce", "t"], capture_output=True,
                         text=True, timeout=60, env=env, input="x\n")
    assert res.returncode == 3, res.stderr
    assert "Traceback" not in res.stderr


def test_help_lists_commands():
    res = ferry(None, "--help")
    for cmd in ("broker", "produce", "consume", "topic"):
        assert cmd in res.stdout


def test_topic_alter_config(broker):
    assert ferry(broker, "topic", "create", "cfg").returncode == 0
    res = ferry(broker, "topic", "alter-config", "cfg", "retention.ms=5000", "cleanup_policy=compact")
    assert res.returncode == 0, res.stderr
    desc = json.loads(ferry(broker, "topic", "describe", "cfg", "--json").stdout)[0]
    assert desc["config"]["retention.ms"] == "5000"
    assert desc["config"]["cleanup.policy"] == "compact"
    res = ferry(broker, "topic", "alter-config", "cfg", "--delete", "retention.ms")
    assert res.returncode == 0, res.stderr
    desc = json.loads(ferry(broker, "topic", "describe", "cfg", "--json").stdout)[0]
    assert desc["config"]["retention.ms"] == "604800000"
    res = ferry(broker, "topic", "alter-config", "cfg", "retention.ms=never")
    assert res.returncode == 1 and "INVALID_CONFIG" in res.stderr
    res = ferry(broker, "topic", "alter-config", "nope", "retention.ms=1")
    assert res.returncode == 4, res.stderr
    res = ferry(broker, "topic", "alter-config", "cfg")
    assert res.returncode == 2
