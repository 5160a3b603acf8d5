"""Large frames read straight into their own buffer (receive_buffer / received_into)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import batch
from protocol.connection import LARGE_FRAME, NEED_DATA, State
from protocol.errors import LocalProtocolError, RemoteProtocolError
from protocol.messages import MetadataRequest, ProducePartition, ProduceRequest

from .strategies import drain, ready_pair


def produce(cid: int, size: int) -> ProduceRequest:
    records = batch.build_batch([bytes([cid % 251]) * size], now_ms=0)
    return ProduceRequest(partitions=(ProducePartition("t", 0, records),), correlation_id=cid)


def feed(conn, wire: bytes, pieces: list[tuple[int, bool]]) -> list:
    """Feed ``wire`` to ``conn`` in the given (size, read-into-buffer) pieces; the events."""
    events = []
    pos = 0
    for size, into in pieces + [(len(wire), False)]:
        if pos >= len(wire):
            break
        view = conn.receive_buffer() if into else None
        if view is not None:
            n = min(size, len(view), len(wire) - pos)
            view[:n] = wire[pos : pos + n]
            conn.received_into(n)
        else:
            n = min(size, len(wire) - pos)
            conn.receive_data(wire[pos : pos + n])
        pos += n
        events += drain(conn)
    return events


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sizes=st.lists(st.sampled_from([1, 100, LARGE_FRAME - 200, LARGE_FRAME, 3 * LARGE_FRAME + 7]),
                   min_size=1, max_size=5),
    pieces=st.lists(st.tuples(st.integers(1, 2 * LARGE_FRAME), st.booleans()), max_size=40),
)
def test_frames_arrive_whole_however_the_reads_fall(sizes, pieces):
    client, server = ready_pair()
    requests = [produce(cid, size) for cid, size in enumerate(sizes, 1)]
    wire = b"".join(client.send(r) for r in requests)
    events = feed(server, wire, pieces)
    assert [e.correlation_id for e in events] == [r.correlation_id for r in requests]
    for event, request in zip(events, requests):
        assert bytes(event.partitions[0].records) == request.partitions[0].records
    assert server.next_event() is NEED_DATA and server.receive_buffer() is None


def test_a_large_frame_gets_its_own_buffer_and_is_not_copied():
    client, server = ready_pair()
    first = client.send(produce(1, 4 * LARGE_FRAME))
    wire = first + client.send(MetadataRequest(correlation_id=2))
    server.receive_data(wire[:100])
    assert server.next_event() is NEED_DATA
    view = server.receive_buffer()
    assert view is not None and len(view) == len(first) - 100  # exactly the rest of the frame
    rest = wire[100:]
    view[:] = rest[: len(view)]
    server.received_into(len(view))
    assert server.receive_buffer() is None  # complete: the next bytes are another frame's
    server.receive_data(rest[len(view):])
    first, second = drain(server)
    records = first.partitions[0].records
    assert bytes(records) == produce(1, 4 * LARGE_FRAME).partitions[0].records
    assert records.obj is view.obj  # the event points into the buffer the socket filled
    assert second.correlation_id == 2


def test_small_frames_never_ask_for_a_buffer():
    client, server = ready_pair()
    wire = client.send(produce(1, 100))
    server.receive_data(wire[:30])
    assert server.receive_buffer() is None
    server.receive_data(wire[30:])
    assert len(drain(server)) == 1


def test_eof_inside_a_large_frame_is_a_protocol_error():
    client, server = ready_pair()
    wire = client.send(produce(1, 2 * LARGE_FRAME))
    server.receive_data(wire[: LARGE_FRAME])
    assert server.next_event() is NEED_DATA
    server.receive_data(b"")
    assert server.receive_buffer() is None
    with pytest.raises(RemoteProtocolError):
        drain(server)
    assert server.state is State.CLOSED


def test_received_into_must_match_the_buffer():
    client, server = ready_pair()
    with pytest.raises(LocalProtocolError):
        server.received_into(1)  # no buffer was handed out
    server.receive_data(client.send(produce(1, 2 * LARGE_FRAME))[:50])
    assert server.next_event() is NEED_DATA
    view = server.receive_buffer()
    with pytest.raises(LocalProtocolError):
        server.received_into(len(view) + 1)


def test_the_length_limit_still_applies_before_any_buffer_exists():
    client, server = ready_pair(max_frame_size=LARGE_FRAME)
    wire = client.send(produce(1, 2 * LARGE_FRAME))
    server.receive_data(wire[:64])
    with pytest.raises(RemoteProtocolError):
        server.next_event()
    assert server.receive_buffer() is None
