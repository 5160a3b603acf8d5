"""The README stays true: its configuration table and its Python examples."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from broker.config import markdown_table
from tests.brokerproc import ROOT

README = (ROOT / "README.md").read_text()


def _between(start: str, end: str) -> str:
    return README.split(start, 1)[1].split(end, 1)[0]


def test_config_table_matches_broker_config():
    table = _between("<!-- config-table", "<!-- end config-table -->")
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    assert "\n".join(rows) == markdown_table(), "regenerate with broker.config.markdown_table()"


def python_examples() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README, re.S)


@pytest.mark.timeout(120)
def test_python_examples_run_as_written(broker):
    examples = python_examples()
    assert len(examples) >= 2
    outputs = []
    for code in examples:
        code = code.replace("localhost:9092", broker.bootstrap)
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             timeout=60, cwd=str(ROOT))
        assert res.returncode == 0, res.stderr
        outputs.append(res.stdout)
    assert "RecordMetadata(topic='test', partition=0, offset=0" in outputs[0]
    assert "0 b'Hello, Ferry!'" in outputs[0]
    assert "1 b'Hello again!'" in outputs[1]


@pytest.mark.timeout(120)
def test_group_example_resumes_from_committed_offsets(broker):
    from client import Producer

    code = python_examples()[2].replace("localhost:9092", broker.bootstrap)
    with Producer(bootstrap_servers=broker.bootstrap) as producer:
        for i in range(5):
            producer.send("orders", b"order %d" % i)
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           timeout=60, cwd=str(ROOT)) for _ in range(2)]
    assert all(r.returncode == 0 for r in runs), runs[0].stderr + runs[1].stderr
    assert len(runs[0].stdout.splitlines()) == 5
    assert runs[1].stdout == ""
