"""Every message survives client -> bytes -> server (and back), whole or cut anywhere."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol.connection import (
    NEED_DATA,
    Connection,
    ConnectionClosed,
    ErrorResponse,
    Role,
)
from protocol.handshake import handshake_response
from protocol.messages import (
    REQUESTS,
    RESPONSES,
    Handshake,
    HandshakeResponse,
    ProduceRequest,
    replace,
)

from .strategies import (
    INT32,
    drain,
    error_responses,
    plain,
    ready_pair,
    request_for,
    strategy_for,
)

ROUNDTRIP = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_registry_pairs_every_request_with_a_response():
    assert REQUESTS and set(REQUESTS) == set(RESPONSES)
    for key, cls in REQUESTS.items():
        assert cls.API_KEY == key and not cls.IS_RESPONSE
        assert RESPONSES[key].API_KEY == key and RESPONSES[key].IS_RESPONSE


@pytest.mark.parametrize("cls", sorted(REQUESTS.values(), key=lambda c: c.API_KEY), ids=lambda c: c.__name__)
@ROUNDTRIP
@given(data=st.data())
def test_request_roundtrip(cls, data):
    msg = data.draw(strategy_for(cls))
    client, server = ready_pair()
    wire = client.send(msg)
    assert isinstance(wire, bytes)
    server.receive_data(wire)
    event = server.next_event()
    assert type(event) is cls
    assert plain(event) == plain(msg)
    assert server.next_event() is NEED_DATA
    expects_response = not (isinstance(msg, ProduceRequest) and msg.acks == 0)
    assert client.pending_ids() == ([msg.correlation_id] if expects_response else [])


@pytest.mark.parametrize("cls", sorted(RESPONSES.values(), key=lambda c: c.API_KEY), ids=lambda c: c.__name__)
@ROUNDTRIP
@given(data=st.data())
def test_response_roundtrip(cls, data):
    msg = data.draw(strategy_for(cls))
    client, server = ready_pair()
    server.receive_data(client.send(request_for(cls.API_KEY, msg.correlation_id)))
    assert drain(server)[0].correlation_id == msg.correlation_id
    client.receive_data(server.send(msg))
    event = client.next_event()
    assert type(event) is cls
    assert plain(event) == plain(msg)
    assert client.next_event() is NEED_DATA
    assert client.in_flight == 0


@ROUNDTRIP
@given(error_responses())
def test_error_response_roundtrip(msg):
    client, server = ready_pair()
    server.receive_data(client.send(request_for(msg.api_key, msg.correlation_id)))
    drain(server)
    client.receive_data(server.send(msg))
    event = client.next_event()
    assert type(event) is ErrorResponse
    assert event == msg
    assert client.in_flight == 0


@settings(max_examples=30, deadline=None)
@given(strategy_for(Handshake), st.data())
def test_handshake_messages_roundtrip(hs, data):
    client = Connection(Role.CLIENT)
    server = Connection(Role.SERVER)
    server.receive_data(client.send(hs))
    assert plain(server.next_event()) == plain(hs)
    resp = data.draw(strategy_for(HandshakeResponse))
    client.receive_data(server.send(resp))
    assert plain(client.next_event()) == plain(resp)


# ------------------------------------------------------------ cut streams


def _unique_ids(messages):
    return [replace(m, correlation_id=i) for i, m in enumerate(messages)]


ANY_REQUEST = st.one_of([strategy_for(c) for c in REQUESTS.values()])
ANY_RESPONSE = st.one_of([strategy_for(c) for c in RESPONSES.values()] + [error_responses()])


def _cut(stream: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    return [stream[a:b] for a, b in zip(points, points[1:])]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ANY_REQUEST, min_size=1, max_size=8), st.lists(st.integers(min_value=0), max_size=30))
def test_request_stream_cut_anywhere(requests, cuts):
    """Handshake and requests, concatenated and fed in random chunks, come out in order."""
    requests = _unique_ids(requests)
    client, _ = ready_pair()
    stream = Connection(Role.CLIENT).send(Handshake(client_id="cut")) + b"".join(
        client.send(r) for r in requests
    )
    server = Connection(Role.SERVER)
    events = []
    for chunk in _cut(stream, cuts):
        server.receive_data(chunk)
        while (ev := server.next_event()) is not NEED_DATA:
            if isinstance(ev, Handshake):
                # Frames buffered behind the handshake wait until the server answers it.
                server.send(handshake_response(ev, max_frame_size=server.max_frame_size))
            else:
                events.append(ev)
    server.receive_data(b"")
    assert drain(server) == [ConnectionClosed()]
    assert [plain(e) for e in events] == [plain(r) for r in requests]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ANY_RESPONSE, min_size=1, max_size=8), st.lists(st.integers(min_value=0), max_size=30))
def test_response_stream_cut_anywhere(responses, cuts):
    responses = _unique_ids(responses)
    client, server = ready_pair()
    for r in responses:
        key = r.api_key if isinstance(r, ErrorResponse) else r.API_KEY
        server.receive_data(client.send(request_for(key, r.correlation_id)))
    assert len(drain(server)) == len(responses)
    stream = b"".join(server.send(r) for r in responses)
    events = []
    for chunk in _cut(stream, cuts):
        client.receive_data(chunk)
        events.extend(drain(client))
    assert [plain(e) for e in events] == [plain(r) for r in responses]
    assert client.in_flight == 0


def test_one_byte_at_a_time():
    from protocol import batch
    from protocol.messages import ProducePartition

    client, server = ready_pair()
    msg = ProduceRequest(
        partitions=(ProducePartition("t", 0, batch.build_batch([b"v"], now_ms=1)),),
        correlation_id=7,
    )
    wire = client.send(msg)
    events = []
    for i in range(len(wire)):
        server.receive_data(wire[i : i + 1])
        events.extend(drain(server))
    assert [plain(e) for e in events] == [plain(msg)]


@settings(max_examples=20, deadline=None)
@given(INT32)
def test_records_views_survive_buffer_reuse(cid):
    """A received Records view stays valid after later frames reuse the receive buffer."""
    from protocol import batch
    from protocol.messages import ProducePartition

    client, server = ready_pair()
    first = batch.build_batch([b"first"], now_ms=1)
    server.receive_data(client.send(ProduceRequest(
        acks=0, partitions=(ProducePartition("t", 0, first),), correlation_id=cid)))
    ev = server.next_event()
    for i in range(5):
        server.receive_data(client.send(ProduceRequest(
            acks=0, partitions=(ProducePartition("t", 0, b"\xff" * 5000),), correlation_id=i)))
        drain(server)
    assert bytes(ev.partitions[0].records) == first
    # The broker patches offsets into received batches in place.
    assert not ev.partitions[0].records.readonly
