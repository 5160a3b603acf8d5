from __future__ import annotations

import pytest

from tests.brokerproc import BrokerProcess


@pytest.fixture
def broker(tmp_path):
    """A real broker subprocess on an ephemeral port with a temporary data dir."""
    proc = BrokerProcess(tmp_path / "data").start()
    try:
        yield proc
    finally:
        proc.kill()


@pytest.fixture
def broker_factory(tmp_path):
    """Start brokers with extra command-line flags: ``broker_factory("--default-partitions", "4")``."""
    started: list[BrokerProcess] = []

    def make(*args: str, data_dir=None, env=None) -> BrokerProcess:
        proc = BrokerProcess(data_dir or tmp_path / f"data{len(started)}", *args, env=env)
        started.append(proc)
        return proc.start()

    yield make
    for proc in started:
        proc.kill()
