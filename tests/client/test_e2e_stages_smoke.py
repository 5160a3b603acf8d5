"""benchmarks/e2e_stages.py: it runs and accounts for every record at every stage (no timing asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.brokerproc import ROOT

pytestmark = pytest.mark.timeout(120)


def test_every_record_is_seen_at_every_stage(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), TMPDIR=str(tmp_path))
    env.pop("FERRY_BOOTSTRAP_SERVER", None)
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "e2e_stages.py"),
                          "--records", "300", "--rate", "2000", "--json"],
                         check=False, capture_output=True, text=True, timeout=110, env=env,
                         cwd=str(ROOT), stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout)
    assert out["records"] == 300 and out["complete"] == 300
    stages = ("P", "PW", "B0", "B1", "B2", "C1", "C2")
    assert tuple(out["since_send_ms"]) == stages
    assert set(out["stage_ms"]) == {f"{a}->{b}" for a, b in zip(stages, stages[1:])}
    p50s = [out["since_send_ms"][s]["p50"] for s in stages]
    assert p50s == sorted(p50s)  # the stages come in the order a record passes them
    assert out["fetches"] >= 1 and 0 <= out["records_waiting_for_a_fetch"] <= 300
