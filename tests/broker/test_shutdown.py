"""Graceful shutdown: SIGTERM/SIGINT finish what is in flight; a second signal exits at once."""

from __future__ import annotations

import os
import signal
import socket
import threading

import pytest

from protocol import batch
from protocol import messages as m
from tests.broker.test_server import fetch, produce
from tests.rawclient import RawClient

pytestmark = pytest.mark.timeout(90)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_shuts_down_cleanly_answering_in_flight_requests(broker, sig):
    with RawClient(broker.host, broker.port) as c:
        produce(c, "t", [b"kept"], acks=-1)
        # a long poll in flight: shutdown must answer it, not wait out its 60 s
        c.send(m.FetchRequest(max_wait_ms=60000, partitions=(m.FetchPartition("t", 0, 1),),
                              correlation_id=c.next_id()))
        broker.proc.send_signal(sig)
        resp = c.next_event()
        assert isinstance(resp, m.FetchResponse)
        assert broker.proc.wait(30) == 0
    assert "stopped cleanly" in broker.log_text()
    assert (broker.data_dir / ".clean-shutdown").exists()
    broker.start()
    assert "not clean" not in "".join(broker.lines[-3:])
    with RawClient(broker.host, broker.port) as c:
        assert fetch(c, "t", 0).high_watermark == 1


def test_shutdown_stops_accepting(broker):
    broker.proc.send_signal(signal.SIGTERM)
    assert broker.proc.wait(30) == 0
    with pytest.raises(OSError):
        socket.create_connection((broker.host, broker.port), timeout=5)


def test_second_signal_exits_at_once(broker_factory):
    broker = broker_factory("--shutdown-timeout-ms", "120000")
    with RawClient(broker.host, broker.port) as p:
        p.request(m.ProduceRequest(partitions=(m.ProducePartition(
            "big", 0, batch.build_batch([os.urandom(1000) for _ in range(1000)])),),
            correlation_id=p.next_id()))
    # a client that never reads holds responses in the broker: the graceful
    # shutdown would wait for it up to shutdown_timeout_ms (two minutes)
    stalled = RawClient(broker.host, broker.port)
    stalled.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    for _ in range(8):
        stalled.send(m.FetchRequest(partitions=(m.FetchPartition("big", 0, 0),),
                                    correlation_id=stalled.next_id()))
    try:
        with RawClient(broker.host, broker.port) as c:  # the stalled fetches have been read
            c.request(m.MetadataRequest(correlation_id=c.next_id()))
        seen = threading.Event()
        broker.proc.send_signal(signal.SIGTERM)
        while not seen.is_set():
            if any("shutting down" in line for line in broker.lines):
                seen.set()
            elif broker.proc.poll() is not None:
                break
            else:
                seen.wait(0.05)
        assert seen.is_set(), broker.log_text()
        assert broker.proc.poll() is None  # still waiting for the stalled client
        broker.proc.send_signal(signal.SIGTERM)
        assert broker.proc.wait(20) == 1
        assert "exiting at once" in broker.log_text()
        assert not (broker.data_dir / ".clean-shutdown").exists()
    finally:
        stalled.close()
