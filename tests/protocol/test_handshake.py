"""The handshake frame and version negotiation."""

from __future__ import annotations

import struct

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import framing
from protocol.connection import (
    NEED_DATA,
    Connection,
    ConnectionClosed,
    Role,
    State,
)
from protocol.errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from protocol.handshake import handshake_response, negotiate
from protocol.messages import REQUESTS, Handshake, HandshakeResponse, MetadataRequest


@settings(max_examples=50)
@given(st.text(max_size=10), st.integers(0, 255))
def test_first_four_bytes_cannot_be_a_kafka_request_size(client_id, version):
    wire = Connection(Role.CLIENT).send(Handshake(client_id=client_id, min_version=0, max_version=version))
    assert wire[:3] == b"FRY"
    assert wire[3] == version
    assert struct.unpack(">i", wire[:4])[0] > 1_000_000_000


def test_handshake_frame_layout():
    body = msgpack.packb({"client_id": "c", "min_version": 1, "max_version": 1, "auth": None})
    wire = Connection(Role.CLIENT).send(Handshake(client_id="c"))
    assert wire == b"FRY\x01" + struct.pack(">I", len(body)) + body


@pytest.mark.parametrize("lo, hi, supported, expected", [
    (1, 1, (1, 1), 1),
    (0, 5, (1, 1), 1),
    (1, 3, (1, 2), 2),
    (2, 3, (1, 2), 2),
    (3, 4, (1, 2), None),
    (0, 0, (1, 1), None),
    (2, 1, (1, 2), None),  # an empty range from the client
])
def test_negotiate(lo, hi, supported, expected):
    assert negotiate(Handshake(min_version=lo, max_version=hi), supported) == expected


def test_accepted_handshake():
    client = Connection(Role.CLIENT)
    server = Connection(Role.SERVER)
    server.receive_data(client.send(Handshake(client_id="app", auth={"user": "u"})))
    hs = server.next_event()
    assert hs == Handshake(client_id="app", auth={"user": "u"})
    assert server.state is State.HANDSHAKING and server.peer_handshake == hs
    resp = handshake_response(hs, broker_id=4, max_frame_size=12345)
    assert resp.error_code == 0 and resp.version == framing.PROTOCOL_VERSION
    assert {r.api_key for r in resp.api_versions} == set(REQUESTS)
    client.receive_data(server.send(resp))
    assert server.state is State.READY and server.protocol_version == 1
    got = client.next_event()
    assert got == resp
    assert client.state is State.READY and client.protocol_version == 1
    assert client.peer_handshake == resp


@pytest.mark.parametrize("lo, hi", [(2, 7), (0, 0)])
def test_unsupported_client_version_gets_unsupported_version(lo, hi):
    client = Connection(Role.CLIENT, supported_versions=(lo, hi))
    server = Connection(Role.SERVER)
    server.receive_data(client.send(Handshake(min_version=lo, max_version=hi)))
    hs = server.next_event()
    resp = handshake_response(hs, max_frame_size=1000)
    assert resp.error_code == ErrorCode.UNSUPPORTED_VERSION
    assert resp.error_message
    client.receive_data(server.send(resp))
    assert server.state is State.CLOSED
    got = client.next_event()
    assert isinstance(got, HandshakeResponse) and got.error_code == ErrorCode.UNSUPPORTED_VERSION
    assert client.state is State.CLOSED
    with pytest.raises(LocalProtocolError):
        client.send(MetadataRequest(correlation_id=1))
    with pytest.raises(LocalProtocolError):
        server.send(MetadataRequest(correlation_id=1))
    client.receive_data(b"")
    assert client.next_event() == ConnectionClosed()


def _response_frame(version_byte: int, body: dict) -> bytes:
    raw = msgpack.packb(body)
    return struct.pack(">3sBI", b"FRY", version_byte, len(raw)) + raw


@pytest.mark.parametrize("version_byte, body", [
    (2, {"version": 2}),           # a version the client did not offer
    (1, {"version": 2}),           # byte and body disagree
    (2, {"version": 1}),
    (1, {}),                       # version is required
    (1, {"version": "1"}),
    (1, {"version": 1, "api_versions": [{"api_key": 0}]}),
    (1, [1]),
])
def test_client_rejects_a_bad_handshake_response(version_byte, body):
    client = Connection(Role.CLIENT)
    client.send(Handshake())
    client.receive_data(_response_frame(version_byte, body))
    with pytest.raises(RemoteProtocolError):
        client.next_event()
    assert client.state is State.CLOSED


@pytest.mark.parametrize("body", [[1], {"client_id": 5}, {"min_version": None}, {"auth": [1]}, {"auth": {1: 2}}])
def test_server_rejects_a_bad_handshake(body):
    raw = msgpack.packb(body)
    server = Connection(Role.SERVER)
    server.receive_data(struct.pack(">3sBI", b"FRY", 1, len(raw)) + raw)
    with pytest.raises(RemoteProtocolError):
        server.next_event()


def test_handshake_with_defaults_only():
    server = Connection(Role.SERVER)
    server.receive_data(b"FRY\x01\x00\x00\x00\x01\x80")
    assert server.next_event() == Handshake()


def test_a_kafka_client_is_recognised_at_once():
    """A Kafka ApiVersions request starts with a small int32 length, not the magic."""
    server = Connection(Role.SERVER)
    server.receive_data(b"\x00\x00")
    with pytest.raises(RemoteProtocolError):
        server.next_event()


def test_partial_magic_waits_for_more():
    server = Connection(Role.SERVER)
    server.receive_data(b"FR")
    assert server.next_event() is NEED_DATA
    server.receive_data(b"Y\x01\x00\x00")
    assert server.next_event() is NEED_DATA
