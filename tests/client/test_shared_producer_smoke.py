"""benchmarks/shared_producer.py: every record of every thread lands (no timing asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.brokerproc import ROOT

pytestmark = pytest.mark.timeout(120)


def test_threads_sharing_a_producer_deliver_every_record(broker):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "shared_producer.py"),
                          "--bootstrap-server", broker.bootstrap, "--topic", "shared",
                          "--threads", "4", "--num-records", "20001", "--json"],
                         check=False, capture_output=True, text=True, timeout=110, env=env,
                         cwd=str(ROOT), stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout)
    assert out["threads"] == 4 and out["records"] == 20001 and out["records_per_sec"] > 0
    res = subprocess.run([sys.executable, "-c", "from client.cli import run; run()",
                          "-b", broker.bootstrap, "topic", "describe", "shared", "--json"],
                         check=True, capture_output=True, text=True, timeout=60, env=env, cwd=str(ROOT))
    assert sum(p["log_end_offset"] for p in json.loads(res.stdout)[0]["partitions"]) == 20001
