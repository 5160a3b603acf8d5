"""benchmarks/soak.py --quick: it runs, prints the JSON it promises and writes its section (no timing asserted)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from tests.brokerproc import ROOT

pytestmark = pytest.mark.timeout(90)

SCRIPT = ROOT / "benchmarks" / "soak.py"
PCT = {"p50", "p99", "max"}
PROBES = {"metadata_one_topic_ms", "metadata_all_topics_ms", "produce_fetch_round_trip_ms"}


def load_soak():
    spec = importlib.util.spec_from_file_location("soak", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_quick_json_and_results_section(tmp_path):
    results = tmp_path / "RESULTS.md"
    results.write_text("# Results\n\n<!-- suite:begin -->\nkept\n<!-- suite:end -->\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("FERRY_BOOTSTRAP_SERVER", None)
    res = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--json", "--results", str(results),
                          "--tmp", str(tmp_path)],
                         check=False, capture_output=True, text=True, timeout=80, env=env, cwd=str(ROOT),
                         stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout)

    assert out["mode"] == "quick"
    assert {"cores", "cpu", "python", "date"} <= set(out["machine"])
    g = out["growth_part"]
    assert {"rss_peak_mb", "rss_final_mb", "bytes", "met", "produce", "consume"} <= set(g["memory"])
    assert g["memory"]["rss_peak_mb"] > 0
    assert not g["memory"]["produce"].get("error") and not g["memory"]["consume"].get("error")
    assert {"log_bytes", "segments", "reached"} <= set(g["growth"])
    th = g["throughput"]
    for key in ("start_produce", "end_produce", "produce_ratio", "start_consume", "end_consume",
                "consume_ratio", "end_consume_cold", "consume_cold_ratio"):
        assert th[key] is not None, key
    w = out["wide"]
    for state in ("idle", "loaded"):
        assert PROBES <= set(w[state])
        for probe in PROBES:
            assert set(w[state][probe]) == PCT
    assert w["polls_in_flight"] == w["connections"]

    text = results.read_text()
    assert "kept" in text
    assert text.count("<!-- soak:begin") == 1 and text.count("<!-- soak:end -->") == 1

    # a rerun replaces the section instead of adding another
    load_soak().write_results(results, out)
    text = results.read_text()
    assert text.count("<!-- soak:begin") == 1 and "kept" in text
