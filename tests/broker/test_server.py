"""The broker over raw sockets: requests, long polls, pipelining, hostile peers."""

from __future__ import annotations

import os
import socket
import struct
import time

import pytest

from protocol import batch
from protocol import messages as m
from protocol.connection import ErrorResponse
from protocol.errors import ErrorCode
from protocol.framing import FRAME_HEADER
from tests.rawclient import RawClient

pytestmark = pytest.mark.timeout(60)


def produce(client, topic, values, partition=0, acks=1):
    req = m.ProduceRequest(
        acks=acks,
        partitions=(m.ProducePartition(topic, partition, batch.build_batch(values)),),
        correlation_id=client.next_id(),
    )
    if acks == 0:
        client.send(req)
        return None
    return client.request(req).partitions[0]


def fetch(client, topic, offset, partition=0, max_wait_ms=0, min_bytes=1):
    resp = client.request(m.FetchRequest(
        max_wait_ms=max_wait_ms, min_bytes=min_bytes,
        partitions=(m.FetchPartition(topic, partition, offset),),
        correlation_id=client.next_id(),
    ))
    return resp.partitions[0]


def values_of(records) -> list[bytes]:
    out = []
    for pos, _size in batch.iter_complete(records):
        out.extend(batch.decode(records, pos).values)
    return out


def test_produce_then_fetch_auto_creates_topic(broker):
    with RawClient(broker.host, broker.port) as c:
        r = produce(c, "walk", [b"a", b"b"])
        assert r.error_code == 0 and r.base_offset == 0
        r = produce(c, "walk", [b"c"])
        assert r.base_offset == 2
        f = fetch(c, "walk", 0)
        assert f.error_code == 0 and f.high_watermark == 3
        assert values_of(f.records) == [b"a", b"b", b"c"]
        meta = c.request(m.MetadataRequest(topics=None, correlation_id=c.next_id()))
        assert [t.name for t in meta.topics if not t.internal] == ["walk"]
        assert meta.brokers[0].port == broker.port


def test_fetch_long_poll_is_answered_when_data_arrives(broker):
    with RawClient(broker.host, broker.port) as consumer, RawClient(broker.host, broker.port) as producer:
        produce(producer, "lp", [b"first"])
        consumer.send(m.FetchRequest(
            max_wait_ms=20000, min_bytes=1,
            partitions=(m.FetchPartition("lp", 0, 1),), correlation_id=consumer.next_id(),
        ))
        started = time.monotonic()
        produce(producer, "lp", [b"second"])
        resp = consumer.next_event()
        assert time.monotonic() - started < 10  # answered by the append, not the 20 s bound
        assert values_of(resp.partitions[0].records) == [b"second"]


def test_fetch_long_poll_times_out_empty(broker):
    with RawClient(broker.host, broker.port) as c:
        produce(c, "empty", [b"x"])
        f = fetch(c, "empty", 1, max_wait_ms=200)
        assert f.error_code == 0 and len(f.records) == 0 and f.high_watermark == 1


def test_pipelined_responses_keep_request_order(broker):
    with RawClient(broker.host, broker.port) as c, RawClient(broker.host, broker.port) as p:
        produce(p, "order", [b"0"])
        waiting = m.FetchRequest(max_wait_ms=20000, partitions=(m.FetchPartition("order", 0, 1),),
                                 correlation_id=c.next_id())
        quick = m.MetadataRequest(topics=("order",), correlation_id=c.next_id())
        c.send(waiting)
        c.send(quick)
        produce(p, "order", [b"1"])
        first, second = c.next_event(), c.next_event()
        assert first.correlation_id == waiting.correlation_id
        assert second.correlation_id == quick.correlation_id


def test_a_request_behind_a_parked_fetch_cuts_it_short(broker):
    """Answers go out in request order, so a parked fetch would hold back what
    follows it for max_wait_ms: the next request makes it answer at once."""
    with RawClient(broker.host, broker.port, timeout=10) as c:
        produce(c, "behind", [b"0"])
        parked = m.FetchRequest(max_wait_ms=600_000, partitions=(m.FetchPartition("behind", 0, 1),),
                                correlation_id=c.next_id())
        again = m.FetchRequest(max_wait_ms=0, partitions=(m.FetchPartition("behind", 0, 0),),
                               correlation_id=c.next_id())
        c.send(parked)
        c.send(again)  # e.g. after a seek: fetch the same partition from elsewhere
        first, second = c.next_event(), c.next_event()  # within the socket's 10 s
        assert first.correlation_id == parked.correlation_id
        assert first.partitions[0].error_code == 0 and len(first.partitions[0].records) == 0
        assert second.correlation_id == again.correlation_id
        assert values_of(second.partitions[0].records) == [b"0"]
        # and a parked fetch that nothing follows still waits for data
        c.send(m.FetchRequest(max_wait_ms=600_000, partitions=(m.FetchPartition("behind", 0, 1),),
                              correlation_id=c.next_id()))
        with RawClient(broker.host, broker.port) as p:
            produce(p, "behind", [b"1"])
        assert values_of(c.next_event().partitions[0].records) == [b"1"]


def test_acks_zero_gets_no_response_but_is_stored(broker):
    with RawClient(broker.host, broker.port) as c:
        produce(c, "fire", [b"x"], acks=0)
        meta = c.request(m.MetadataRequest(topics=("fire",), correlation_id=c.next_id()))
        assert meta.correlation_id == c.next_id() - 1
        f = fetch(c, "fire", 0)
        assert values_of(f.records) == [b"x"]


def test_acks_all_is_answered(broker):
    with RawClient(broker.host, broker.port) as c:
        r = produce(c, "durable", [b"x"] * 10, acks=-1)
        assert r.error_code == 0 and r.base_offset == 0


def test_unknown_api_gets_error_response_and_connection_survives(broker):
    with RawClient(broker.host, broker.port) as c:
        header = b"\x80"  # empty msgpack map
        frame = FRAME_HEADER.pack(FRAME_HEADER.size - 4 + len(header), 250, 0, 0, 99, len(header)) + header
        c.conn._pending[99] = 250  # the raw frame bypassed the client Connection's bookkeeping
        c.sock.sendall(frame)
        resp = c.next_event()
        assert isinstance(resp, ErrorResponse)
        assert resp.error_code == ErrorCode.UNSUPPORTED_VERSION
        assert produce(c, "still", [b"ok"]).error_code == 0


def test_corrupt_batch_is_refused_with_corrupt_message(broker):
    with RawClient(broker.host, broker.port) as c:
        data = bytearray(batch.build_batch([b"hello"]))
        data[-1] ^= 0xFF
        resp = c.request(m.ProduceRequest(partitions=(m.ProducePartition("crc", 0, bytes(data)),),
                                          correlation_id=c.next_id()))
        assert resp.partitions[0].error_code == ErrorCode.CORRUPT_MESSAGE
        assert fetch(c, "crc", 0).high_watermark == 0


def test_invalid_topic_name_refused(broker):
    with RawClient(broker.host, broker.port) as c:
        for name in ("../escape", "a/b", "", "x" * 250, ".."):
            r = produce(c, name, [b"x"])
            assert r.error_code == ErrorCode.INVALID_TOPIC, name
        resp = c.request(m.CreateTopicsRequest(topics=(m.NewTopic("bad name"),), correlation_id=c.next_id()))
        assert resp.topics[0].error_code == ErrorCode.INVALID_TOPIC
    assert not (broker.data_dir.parent / "escape-0").exists()


def test_garbage_and_vanishing_clients_do_not_disturb_others(broker):
    with RawClient(broker.host, broker.port) as good:
        produce(good, "calm", [b"before"])
        # garbage instead of a handshake
        bad = socket.create_connection((broker.host, broker.port), timeout=10)
        bad.sendall(os.urandom(64))
        assert bad.recv(100) == b""
        bad.close()
        # a frame claiming a size over the limit
        huge = RawClient(broker.host, broker.port)
        huge.sock.sendall(struct.pack(">I", 1 << 31) + b"\x00" * 20)
        assert huge.is_closed_by_peer()
        huge.close()
        # a client that vanishes halfway through a request
        half = RawClient(broker.host, broker.port)
        raw = half.conn.send(m.ProduceRequest(
            partitions=(m.ProducePartition("calm", 0, batch.build_batch([b"lost"] * 100)),),
            correlation_id=1,
        ))
        half.sock.sendall(raw[: len(raw) // 2])
        half.sock.close()
        # and one that sends a request then disappears before the answer
        gone = RawClient(broker.host, broker.port)
        gone.send(m.FetchRequest(max_wait_ms=5000, partitions=(m.FetchPartition("calm", 0, 1),),
                                 correlation_id=gone.next_id()))
        gone.sock.close()
        assert produce(good, "calm", [b"after"]).base_offset == 1
        assert values_of(fetch(good, "calm", 0).records) == [b"before", b"after"]
    assert "protocol error" in broker.log_text()


def test_message_size_limit(broker):
    with RawClient(broker.host, broker.port) as c:
        c.request(m.CreateTopicsRequest(
            topics=(m.NewTopic("sized", 1, configs={"max_message_bytes": "20000"}),),
            correlation_id=c.next_id(),
        ))
        ok = batch.build_batch([b"x" * 1000])
        room = 20000 - len(ok)
        fits = batch.build_batch([b"x" * (1000 + room)])
        assert len(fits) == 20000
        assert produce_raw(c, "sized", fits).error_code == 0
        over = batch.build_batch([b"x" * (1001 + room)])
        assert produce_raw(c, "sized", over).error_code == ErrorCode.MESSAGE_TOO_LARGE


def produce_raw(c, topic, data):
    return c.request(m.ProduceRequest(partitions=(m.ProducePartition(topic, 0, data),),
                                      correlation_id=c.next_id())).partitions[0]


def test_restart_keeps_data(broker):
    with RawClient(broker.host, broker.port) as c:
        for i in range(5):
            produce(c, "keep", [f"v{i}".encode()])
    broker.restart()
    with RawClient(broker.host, broker.port) as c:
        assert values_of(fetch(c, "keep", 0).records) == [f"v{i}".encode() for i in range(5)]
        assert produce(c, "keep", [b"v5"]).base_offset == 5
    assert "stopped cleanly" in broker.log_text()


def test_thousand_connections_stay_responsive(broker):
    clients = [RawClient(broker.host, broker.port) for _ in range(1000)]
    try:
        # every connection has a request in flight at once
        for i, c in enumerate(clients):
            c.send(m.ProduceRequest(
                partitions=(m.ProducePartition("many", 0, batch.build_batch([str(i).encode()])),),
                correlation_id=c.next_id(),
            ))
        with RawClient(broker.host, broker.port) as fresh:
            started = time.monotonic()
            meta = fresh.request(m.MetadataRequest(topics=None, correlation_id=fresh.next_id()))
            assert time.monotonic() - started < 5
            assert meta.brokers
        codes = [c.next_event().partitions[0].error_code for c in clients]
        assert codes == [0] * len(clients)
        with RawClient(broker.host, broker.port) as check:
            assert fetch(check, "many", 0).high_watermark == 1000
    finally:
        for c in clients:
            c.close()


def _rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_stalled_consumer_does_not_delay_others_or_grow_memory(broker):
    chunk = batch.build_batch([os.urandom(1000) for _ in range(1000)])  # ~1 MB batches
    with RawClient(broker.host, broker.port) as p:
        for _ in range(20):
            assert produce_raw(p, "big", chunk).error_code == 0
    rss_before = _rss_kb(broker.proc.pid)
    stalled = RawClient(broker.host, broker.port)
    stalled.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        # 64 pipelined fetches of 20 MB each that it never reads: 1.3 GB if buffered
        for _ in range(64):
            stalled.send(m.FetchRequest(max_bytes=20_000_000, partitions=(
                m.FetchPartition("big", 0, 0, max_bytes=20_000_000),), correlation_id=stalled.next_id()))
        with RawClient(broker.host, broker.port) as other:
            for i in range(20):
                started = time.monotonic()
                assert produce(other, "side", [b"%d" % i]).error_code == 0
                assert len(fetch(other, "side", i).records) > 0
                assert time.monotonic() - started < 5
        growth_mb = (_rss_kb(broker.proc.pid) - rss_before) / 1024
        assert growth_mb < 120, f"broker grew by {growth_mb:.0f} MB for one stalled client"
    finally:
        stalled.close()


def test_internal_topic_is_read_only_for_clients(broker):
    with RawClient(broker.host, broker.port) as c:
        assert produce(c, "__consumer_offsets", [b"x"]).error_code == ErrorCode.INVALID_TOPIC
        resp = c.request(m.DeleteTopicsRequest(topics=("__consumer_offsets",), correlation_id=c.next_id()))
        assert resp.topics[0].error_code == ErrorCode.INVALID_TOPIC
        meta = c.request(m.MetadataRequest(topics=None, correlation_id=c.next_id()))
        assert [t.name for t in meta.topics if t.internal] == ["__consumer_offsets"]
