"""The Connection state machine: what it accepts, what it refuses, and how it fails."""

from __future__ import annotations

import struct
import tracemalloc
from dataclasses import dataclass
from typing import ClassVar

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import batch, framing
from protocol.connection import (
    NEED_DATA,
    Connection,
    ConnectionClosed,
    ErrorResponse,
    Role,
    State,
    UnsupportedRequest,
)
from protocol.errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from protocol.messages import (
    REQUESTS,
    RESPONSES,
    CreateTopicsRequest,
    FetchRequest,
    Handshake,
    HandshakeResponse,
    Message,
    MetadataRequest,
    MetadataResponse,
    NewTopic,
    ProducePartition,
    ProduceRequest,
    ProduceResponse,
    replace,
)

from .strategies import INT32, drain, ready_pair, request_for, strategy_for

_FIXED = struct.Struct(">IHHBiI")  # length, api_key, api_version, flags, corr_id, header_len


def raw_frame(api_key: int, header, data: bytes = b"", *, version: int = 0, flags: int = 0,
              cid: int = 1, header_len: int | None = None, length: int | None = None) -> bytes:
    """A frame built by hand from the documented layout (not with protocol.framing)."""
    if not isinstance(header, (bytes, bytearray)):
        header = msgpack.packb(header, use_bin_type=True)
    if header_len is None:
        header_len = len(header)
    if length is None:
        length = _FIXED.size - 4 + len(header) + len(data)
    return _FIXED.pack(length, api_key, version, flags, cid, header_len) + header + data


def produce_header(**over):
    h = {"acks": 1, "timeout_ms": 1000,
         "partitions": [{"topic": "t", "partition": 0, "records": 3}]}
    h.update(over)
    return h


def assert_remote_error(conn: Connection, data: bytes, eof: bool = False) -> RemoteProtocolError:
    conn.receive_data(data)
    if eof:
        conn.receive_data(b"")
    with pytest.raises(RemoteProtocolError) as info:
        drain(conn)
    assert conn.state is State.CLOSED
    return info.value


# ------------------------------------------------------------ sending rules


def test_client_cannot_send_requests_before_the_handshake():
    client = Connection(Role.CLIENT)
    with pytest.raises(LocalProtocolError):
        client.send(MetadataRequest(correlation_id=1))
    client.send(Handshake())
    assert client.state is State.HANDSHAKING
    with pytest.raises(LocalProtocolError):
        client.send(MetadataRequest(correlation_id=1))
    with pytest.raises(LocalProtocolError):
        client.send(Handshake())


def test_server_cannot_answer_before_the_handshake():
    server = Connection(Role.SERVER)
    with pytest.raises(LocalProtocolError):
        server.send(MetadataResponse(correlation_id=1))
    with pytest.raises(LocalProtocolError):
        server.send(HandshakeResponse(version=1))  # no Handshake received yet
    with pytest.raises(LocalProtocolError):
        server.send(Handshake())


@pytest.mark.parametrize("event", [
    MetadataResponse(correlation_id=1),
    ErrorResponse(api_key=3, correlation_id=1),
    HandshakeResponse(version=1),
    Handshake(),
    "not a message",
    Message(correlation_id=1),
])
def test_client_refuses_what_only_a_server_sends(event):
    client, _ = ready_pair()
    with pytest.raises(LocalProtocolError):
        client.send(event)
    assert client.in_flight == 0 and client.state is State.READY


@pytest.mark.parametrize("event", [MetadataRequest(correlation_id=1), Handshake(), HandshakeResponse(version=1)])
def test_server_refuses_requests_and_handshakes_when_ready(event):
    _, server = ready_pair()
    with pytest.raises(LocalProtocolError):
        server.send(event)


def test_duplicate_in_flight_correlation_id():
    client, server = ready_pair()
    server.receive_data(client.send(MetadataRequest(correlation_id=5)))
    with pytest.raises(LocalProtocolError):
        client.send(FetchRequest(correlation_id=5))
    assert client.pending_ids() == [5]
    drain(server)
    client.receive_data(server.send(MetadataResponse(correlation_id=5)))
    assert isinstance(client.next_event(), MetadataResponse)
    client.send(FetchRequest(correlation_id=5))  # free again once answered
    assert client.pending_ids() == [5]


def test_acks_zero_produce_registers_no_response():
    client, server = ready_pair()
    records = batch.build_batch([b"v"], now_ms=0)
    msg = ProduceRequest(acks=0, partitions=(ProducePartition("t", 0, records),), correlation_id=9)
    server.receive_data(client.send(msg))
    assert client.in_flight == 0
    assert drain(server)[0].acks == 0
    client.send(msg)  # the id is not held by anything
    # And a response to it is a protocol violation.
    with pytest.raises(RemoteProtocolError):
        client.receive_data(server.send(ProduceResponse(correlation_id=9)))
        client.next_event()


def test_acks_outside_the_allowed_values_is_refused_on_construction():
    with pytest.raises(LocalProtocolError):
        ProduceRequest(acks=2)


@pytest.mark.parametrize("cid", [2**31, -(2**31) - 1])
def test_correlation_id_outside_int32_is_refused_and_not_left_in_flight(cid):
    client, _ = ready_pair()
    with pytest.raises(LocalProtocolError):
        client.send(MetadataRequest(correlation_id=cid))
    assert client.in_flight == 0


def test_unencodable_field_is_refused_and_not_left_in_flight():
    client, server = ready_pair()
    with pytest.raises(LocalProtocolError):
        client.send(MetadataRequest(topics=("a", object()), correlation_id=3))
    assert client.in_flight == 0
    # Nothing of the refused frame leaks into the next one.
    server.receive_data(client.send(MetadataRequest(topics=("b",), correlation_id=3)))
    assert drain(server) == [MetadataRequest(topics=("b",), correlation_id=3)]


def test_handshake_version_must_fit_its_byte():
    client = Connection(Role.CLIENT)
    with pytest.raises(LocalProtocolError):
        client.send(Handshake(max_version=256))
    assert client.state is State.START
    client.send(Handshake())


def test_error_response_needs_a_real_api_key():
    _, server = ready_pair()
    with pytest.raises(LocalProtocolError):
        server.send(ErrorResponse(correlation_id=1))  # api_key defaults to -1


def test_send_on_a_closed_connection():
    client, server = ready_pair()
    with pytest.raises(RemoteProtocolError):
        client.receive_data(b"\x00\x00\x00\x00")
        client.next_event()
    with pytest.raises(LocalProtocolError):
        client.send(MetadataRequest(correlation_id=1))


def test_send_parts_keeps_large_records_separate():
    client, server = ready_pair()
    records = batch.build_batch([b"x" * 10_000], now_ms=0)
    parts = client.send_parts(ProduceRequest(partitions=(ProducePartition("t", 0, records),), correlation_id=1))
    assert parts[-1] is records
    server.receive_data(b"".join(parts))
    assert bytes(drain(server)[0].partitions[0].records) == records


def test_send_needs_bytes_for_non_bytes_records():
    """A Records object that is not bytes (a file range) only goes out through send_parts."""
    from protocol.messages import FetchPartitionResponse, FetchResponse

    class FileRange:
        def __len__(self):
            return 10

    client, server = ready_pair()
    client.send(FetchRequest(correlation_id=1))
    resp = FetchResponse(partitions=(FetchPartitionResponse("t", 0, records=FileRange()),), correlation_id=1)
    parts = server.send_parts(resp)
    assert isinstance(parts[-1], FileRange)
    with pytest.raises(LocalProtocolError):
        server.send(resp)
    client.receive_data(parts[0] + b"0123456789")
    # The same from a client: the refused request is not left in flight.
    from protocol.messages import ProducePartition as PP

    with pytest.raises(LocalProtocolError):
        client.send(ProduceRequest(partitions=(PP("t", 0, FileRange()),), correlation_id=2))
    assert client.pending_ids() == [1]
    assert bytes(client.next_event().partitions[0].records) == b"0123456789"


def test_fail_pending():
    client, _ = ready_pair()
    client.send(MetadataRequest(correlation_id=1))
    client.send(MetadataRequest(correlation_id=2))
    assert sorted(client.fail_pending()) == [1, 2]
    assert client.in_flight == 0


# ------------------------------------------------------------ end of stream


def test_eof_between_frames_is_a_clean_close():
    client, server = ready_pair()
    server.receive_data(client.send(MetadataRequest(correlation_id=1)) + b"")
    server.receive_data(b"")
    assert isinstance(server.next_event(), MetadataRequest)
    assert server.next_event() == ConnectionClosed()
    assert server.next_event() == ConnectionClosed()
    assert server.state is State.CLOSED


def test_eof_before_anything_is_a_clean_close():
    server = Connection(Role.SERVER)
    server.receive_data(b"")
    assert server.next_event() == ConnectionClosed()


@settings(max_examples=50, deadline=None)
@given(st.data())
def test_truncated_frame_then_eof(data):
    client, server = ready_pair()
    wire = client.send(ProduceRequest(
        partitions=(ProducePartition("t", 0, batch.build_batch([b"v"], now_ms=0)),), correlation_id=1))
    cut = data.draw(st.integers(min_value=1, max_value=len(wire) - 1))
    server.receive_data(wire[:cut])
    assert server.next_event() is NEED_DATA
    assert_remote_error(server, b"", eof=True)


@settings(max_examples=30, deadline=None)
@given(st.data())
def test_truncated_handshake_then_eof(data):
    wire = Connection(Role.CLIENT).send(Handshake(client_id="x"))
    cut = data.draw(st.integers(min_value=1, max_value=len(wire) - 1))
    assert_remote_error(Connection(Role.SERVER), wire[:cut], eof=True)


def test_data_after_eof_is_a_local_error():
    server = Connection(Role.SERVER)
    server.receive_data(b"")
    server.receive_data(b"")  # repeating the EOF is harmless
    with pytest.raises(LocalProtocolError):
        server.receive_data(b"x")


# ------------------------------------------------------------ framing limits


@pytest.mark.parametrize("length", [framing.DEFAULT_MAX_FRAME_SIZE + 1, 2**32 - 1])
def test_oversized_frame_rejected_from_the_length_prefix_alone(length):
    _, server = ready_pair()
    assert_remote_error(server, struct.pack(">I", length))


def test_custom_max_frame_size():
    client, server = ready_pair(max_frame_size=1000)
    server.receive_data(client.send(MetadataRequest(topics=("a" * 900,), correlation_id=1)))
    assert isinstance(server.next_event(), MetadataRequest)
    assert_remote_error(server, struct.pack(">I", 1001))


@pytest.mark.parametrize("length", [0, 12])
def test_frame_length_below_the_fixed_header(length):
    _, server = ready_pair()
    assert_remote_error(server, struct.pack(">I", length))


def test_header_len_larger_than_frame_rejected_before_the_body():
    _, server = ready_pair()
    frame = raw_frame(3, {}, header_len=100)
    assert_remote_error(server, frame[: _FIXED.size])


def test_header_len_over_max_header_size():
    client, server = ready_pair(max_header_size=64)
    frame = raw_frame(3, {"topics": ["x" * 100]})
    assert_remote_error(server, frame[: _FIXED.size])


def test_handshake_larger_than_its_limit():
    server = Connection(Role.SERVER)
    prefix = struct.pack(">3sBI", b"FRY", 1, framing.MAX_HANDSHAKE_SIZE + 1)
    assert_remote_error(server, prefix)


def test_huge_msgpack_array_claim_does_not_allocate():
    """A header claiming 4 billion elements fails fast, without allocating for them."""
    _, server = ready_pair()
    tracemalloc.start()
    try:
        with pytest.raises(RemoteProtocolError):
            server.receive_data(raw_frame(3, b"\xdd\xff\xff\xff\xff" + b"\xc0" * 8))
            server.next_event()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000


# ------------------------------------------------------------ malformed requests


@pytest.mark.parametrize("header, data", [
    (produce_header(acks="1"), b"abc"),                       # acks as a string
    (produce_header(acks=2), b"abc"),                         # acks not 0, 1, -1
    (produce_header(acks=True), b"abc"),                      # bool is not an int
    (produce_header(partitions={"t": 0}), b"abc"),            # partitions not a list
    (produce_header(partitions="t"), b"abc"),
    (produce_header(), b"ab"),                                # records run past the data
    (produce_header(), b"abcd"),                              # unclaimed trailing data
    (produce_header(partitions=[{"topic": "t", "partition": 0, "records": -1}]), b""),
    (produce_header(partitions=[{"topic": "t", "partition": 0, "records": "3"}]), b"abc"),
    (produce_header(partitions=[{"topic": "t", "partition": 0, "records": 3.0}]), b"abc"),
    (produce_header(partitions=[{"partition": 0, "records": 3}]), b"abc"),  # topic missing
    (produce_header(partitions=[{"topic": b"t", "partition": 0, "records": 3}]), b"abc"),  # bin, not str
    (produce_header(partitions=[["t", 0, 3]]), b"abc"),       # entry not a map
    (produce_header(timeout_ms=1.5), b"abc"),
    ([1, 2, 3], b""),                                         # header not a map
    ("hello", b""),
    (None, b""),
])
def test_malformed_produce_request(header, data):
    _, server = ready_pair()
    assert_remote_error(server, raw_frame(0, header, data))


@pytest.mark.parametrize("api_key, header, data, message", [
    (0, produce_header(acks="1"), b"abc", "expected int, got str"),
    (0, produce_header(acks=True), b"abc", "expected int, got bool"),
    (0, produce_header(acks=2), b"abc", "invalid ProduceRequest: acks must be 0, 1 or -1, not 2"),
    (0, produce_header(partitions="t"), b"abc", "expected array, got str"),
    (0, produce_header(partitions=[["t", 0, 3]]), b"abc", "expected ProducePartition map, got list"),
    (0, produce_header(partitions=[{"partition": 0, "records": 3}]), b"abc",
     "ProducePartition lacks field 'topic'"),
    (0, produce_header(partitions=[{"topic": "t", "partition": 0, "records": 3.0}]), b"abc",
     "records length runs past the frame's data section"),
    (0, [1, 2, 3], b"", "expected ProduceRequest map, got list"),
    (1, {"partitions": [{"topic": "t", "partition": 0}]}, b"", "FetchPartition lacks field 'fetch_offset'"),
    (1, {"max_wait_ms": 1.5}, b"", "expected int, got float"),
    (3, {"topics": [1]}, b"", "expected str, got int"),
    (3, {"allow_auto_topic_creation": 1}, b"", "expected bool, got int"),
    (19, {"topics": [{"name": "t", "configs": {"a": 1}}]}, b"", "expected str, got int"),
    (33, {"topics": [{"name": "t", "configs": {"a": b"x"}}]}, b"", "expected str, got bytes"),
])
def test_malformed_request_errors_say_what_is_wrong(api_key, header, data, message):
    _, server = ready_pair()
    assert str(assert_remote_error(server, raw_frame(api_key, header, data))) == message


@pytest.mark.parametrize("header", [
    {"topics": "abc"},
    {"topics": [1]},
    {"allow_auto_topic_creation": 1},
    {1: 2},
])
def test_malformed_metadata_request(header):
    _, server = ready_pair()
    assert_remote_error(server, raw_frame(3, header))


@pytest.mark.parametrize("header_bytes", [
    b"\xc1",                       # never-used msgpack byte
    b"\x81\xa1",                   # map cut short
    b"\x80\x80",                   # two objects in one header
    b"\x81\x80\x01",               # map key that is a map
])
def test_header_that_is_not_one_msgpack_map(header_bytes):
    _, server = ready_pair()
    assert_remote_error(server, raw_frame(3, header_bytes))


def test_missing_fields_take_defaults_and_unknown_keys_are_ignored():
    _, server = ready_pair()
    server.receive_data(raw_frame(3, {"future_field": [1, 2], "topics": ["a"]}, cid=42))
    ev = server.next_event()
    assert ev == MetadataRequest(topics=("a",), correlation_id=42)
    server.receive_data(raw_frame(0, {}, cid=43))
    assert server.next_event() == ProduceRequest(correlation_id=43)


def test_omitted_fields_with_default_factories_get_fresh_values():
    _, server = ready_pair()
    header = {"topics": [{"name": "a"}, {"name": "b", "num_partitions": 3}]}
    server.receive_data(raw_frame(19, header, cid=5) + raw_frame(19, header, cid=6))
    first, second = drain(server)
    assert first == CreateTopicsRequest(topics=(NewTopic("a"), NewTopic("b", 3)), correlation_id=5)
    assert first.topics[0].configs == {} and first.topics[0].configs is not second.topics[0].configs


def test_records_fields_take_the_data_section_in_field_order():
    _, server = ready_pair()
    header = {"partitions": [
        {"topic": "a", "partition": 0, "records": 2},
        {"topic": "b", "partition": 1, "records": 0},
        {"topic": "c", "partition": 2, "records": 3},
    ]}
    server.receive_data(raw_frame(0, header, b"AABBB"))
    ev = server.next_event()
    assert [bytes(p.records) for p in ev.partitions] == [b"AA", b"", b"BBB"]


def test_request_with_flags_set():
    _, server = ready_pair()
    assert_remote_error(server, raw_frame(3, {}, flags=framing.FLAG_ERROR))


# ------------------------------------------------------------ unsupported requests


@pytest.mark.parametrize("api_key, version", [(99, 0), (250, 0), (65535, 0), (3, 1), (0, 65535)])
def test_unknown_api_key_or_version_is_an_event(api_key, version):
    client, server = ready_pair()
    server.receive_data(raw_frame(api_key, {"whatever": 1}, b"data", version=version, cid=77))
    server.receive_data(client.send(MetadataRequest(correlation_id=78)))
    assert server.next_event() == UnsupportedRequest(api_key, version, 77)
    assert server.next_event() == MetadataRequest(correlation_id=78)  # still usable


def test_unknown_api_key_with_an_undecodable_header_is_still_an_event():
    """The header of an API this side does not know is not its to judge."""
    _, server = ready_pair()
    server.receive_data(raw_frame(99, b"\xc1\xc1", b"", cid=5))
    assert server.next_event() == UnsupportedRequest(99, 0, 5)


@dataclass(frozen=True, slots=True)
class FutureRequest(Message):
    """A request from a later protocol version, which this broker does not know."""

    API_KEY: ClassVar[int] = 99
    thing: int = 0


def test_unsupported_request_answered_with_an_error_response():
    client, server = ready_pair()
    server.receive_data(client.send(FutureRequest(thing=1, correlation_id=12)))
    ev = server.next_event()
    assert ev == UnsupportedRequest(99, 0, 12)
    client.receive_data(server.send(ErrorResponse(
        api_key=ev.api_key, error_code=int(ErrorCode.UNSUPPORTED_VERSION), correlation_id=ev.correlation_id)))
    resp = client.next_event()
    assert resp == ErrorResponse(api_key=99, error_code=35, correlation_id=12)
    assert client.in_flight == 0


# ------------------------------------------------------------ malformed responses


def test_response_to_unknown_correlation_id():
    client, server = ready_pair()
    client.send(MetadataRequest(correlation_id=1))
    assert_remote_error(client, raw_frame(3, {}, cid=2))


def test_response_with_the_wrong_api_key():
    client, _ = ready_pair()
    client.send(MetadataRequest(correlation_id=1))
    assert_remote_error(client, raw_frame(1, {}, cid=1))


def test_second_response_to_the_same_request():
    client, server = ready_pair()
    client.send(MetadataRequest(correlation_id=1))
    client.receive_data(raw_frame(3, {}, cid=1))
    assert isinstance(client.next_event(), MetadataResponse)
    assert_remote_error(client, raw_frame(3, {}, cid=1))


def test_response_for_an_api_the_client_cannot_decode():
    client, _ = ready_pair()
    client.send(FutureRequest(correlation_id=3))
    assert_remote_error(client, raw_frame(99, {}, cid=3))


@pytest.mark.parametrize("body", [
    [1],
    {"error_code": "35"},
    {"error_code": 35, "error_message": 7},
    {"error_message": "no code"},
])
def test_malformed_error_response(body):
    client, _ = ready_pair()
    client.send(MetadataRequest(correlation_id=1))
    assert_remote_error(client, raw_frame(3, body, flags=framing.FLAG_ERROR, cid=1))


def test_error_response_with_a_data_section():
    client, _ = ready_pair()
    client.send(MetadataRequest(correlation_id=1))
    assert_remote_error(client, raw_frame(3, {"error_code": 2}, b"xx", flags=framing.FLAG_ERROR, cid=1))


@pytest.mark.parametrize("flags", [0x02, 0x80, 0x03])
def test_response_with_unknown_flags(flags):
    client, _ = ready_pair()
    client.send(MetadataRequest(correlation_id=1))
    assert_remote_error(client, raw_frame(3, {"error_code": 2}, flags=flags, cid=1))


@pytest.mark.parametrize("header, data", [
    ({"topics": [{"name": "t", "partitions": {}}]}, b""),
    ({"brokers": [{"node_id": 1, "host": "h"}]}, b""),   # port missing
    ({}, b"x"),
])
def test_malformed_metadata_response(header, data):
    client, _ = ready_pair()
    client.send(MetadataRequest(correlation_id=1))
    assert_remote_error(client, raw_frame(3, header, data, cid=1))


@pytest.mark.parametrize("api_key, header, data, message", [
    (1, {"partitions": [{"topic": "t", "records": 2}]}, b"ab",
     "FetchPartitionResponse lacks field 'partition'"),
    (1, {"partitions": [{"topic": "t", "partition": 0, "high_watermark": "1"}]}, b"",
     "expected int, got str"),
    (0, {"partitions": [{"topic": "t", "partition": 0, "error_message": 5}]}, b"",
     "expected str, got int"),
])
def test_malformed_response_errors_say_what_is_wrong(api_key, header, data, message):
    client, _ = ready_pair()
    client.send(request_for(api_key, 1))
    assert str(assert_remote_error(client, raw_frame(api_key, header, data, cid=1))) == message


# ------------------------------------------------------------ garbage


def _bounded_drain(conn: Connection) -> list:
    """Drain, then EOF and drain: RemoteProtocolError is an outcome, any other exception fails."""
    events = []
    try:
        events.extend(drain(conn, limit=1000))
        if events and events[-1] == ConnectionClosed():
            return events
        conn.receive_data(b"")
        events.extend(drain(conn, limit=1000))
    except RemoteProtocolError:
        assert conn.state is State.CLOSED
        events.append("error")
    return events


GARBAGE = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@GARBAGE
@given(st.binary(min_size=1, max_size=200).filter(lambda b: not b.startswith(b"FRY")), st.booleans())
def test_random_bytes_as_a_handshake(data, eof):
    """Anything without the magic fails at once (or at EOF, if it was a prefix of it)."""
    for role in Role:
        conn = Connection(role)
        if role is Role.CLIENT:
            conn.send(Handshake())
        conn.receive_data(data)
        if b"FRY".startswith(data):
            assert conn.next_event() is NEED_DATA
            if not eof:
                continue
            conn.receive_data(b"")
        with pytest.raises(RemoteProtocolError):
            conn.next_event()
        assert conn.state is State.CLOSED


@GARBAGE
@given(st.binary(max_size=200))
def test_random_bytes_after_the_magic(tail):
    """With the magic right, the outcome is an error or a decodable handshake, nothing else."""
    for role in Role:
        conn = Connection(role)
        if role is Role.CLIENT:
            conn.send(Handshake())
        conn.receive_data(b"FRY" + tail)
        events = _bounded_drain(conn)
        assert events[-1] in ("error", ConnectionClosed())
        for ev in events[:-1]:
            assert isinstance(ev, (Handshake, HandshakeResponse))


@GARBAGE
@given(st.lists(st.binary(min_size=1, max_size=64), min_size=1, max_size=5))
def test_random_bytes_after_a_handshake(chunks):
    _, server = ready_pair()
    events = []
    try:
        for chunk in chunks:
            server.receive_data(chunk)
            events.extend(drain(server, limit=1000))
    except RemoteProtocolError:
        events.append("error")
    else:
        events.extend(_bounded_drain(server))
    assert events[-1] in ("error", ConnectionClosed())
    for ev in events[:-1]:
        assert isinstance(ev, (UnsupportedRequest, *REQUESTS.values()))


@GARBAGE
@given(st.binary(min_size=1, max_size=120))
def test_random_bytes_as_responses(data):
    client, _ = ready_pair()
    for cid, key in enumerate(sorted(REQUESTS)):
        client.send(REQUESTS[key](correlation_id=cid))
    client.receive_data(data)
    events = _bounded_drain(client)
    assert events[-1] in ("error", ConnectionClosed())
    for ev in events[:-1]:
        assert isinstance(ev, (ErrorResponse, *RESPONSES.values()))


MSGPACK_OBJECTS = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats() | st.text(max_size=8) | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.sampled_from(["topics", "partitions", "acks", "topic", "partition",
                                       "records", "timeout_ms", "name", "fetch_offset",
                                       "max_bytes", "configs", "x"]), inner, max_size=4),
    max_leaves=12,
)


@GARBAGE
@given(st.sampled_from(sorted(REQUESTS)) | st.integers(0, 65535), MSGPACK_OBJECTS,
       st.binary(max_size=16), INT32)
def test_well_framed_requests_with_arbitrary_headers(api_key, header, data, cid):
    """Any msgpack header, any data: a message, UnsupportedRequest or RemoteProtocolError."""
    _, server = ready_pair()
    server.receive_data(raw_frame(api_key, header, data, cid=cid))
    try:
        ev = server.next_event()
    except RemoteProtocolError:
        return
    if api_key in REQUESTS:
        assert type(ev) is REQUESTS[api_key] and ev.correlation_id == cid
    else:
        assert ev == UnsupportedRequest(api_key, 0, cid)


@GARBAGE
@given(st.sampled_from(sorted(RESPONSES)), MSGPACK_OBJECTS, st.binary(max_size=16), st.booleans())
def test_well_framed_responses_with_arbitrary_headers(api_key, header, data, error_flag):
    client, _ = ready_pair()
    client.send(REQUESTS[api_key](correlation_id=1))
    client.receive_data(raw_frame(api_key, header, data, cid=1,
                                  flags=framing.FLAG_ERROR if error_flag else 0))
    try:
        ev = client.next_event()
    except RemoteProtocolError:
        return
    assert type(ev) is (ErrorResponse if error_flag else RESPONSES[api_key])
    assert ev.correlation_id == 1


@GARBAGE
@given(st.lists(st.one_of([strategy_for(c) for c in REQUESTS.values()]), min_size=1, max_size=4),
       st.lists(st.tuples(st.integers(min_value=0), st.integers(1, 255)), min_size=1, max_size=3))
def test_valid_request_stream_with_flipped_bytes(requests, flips):
    """Corrupt a few bytes of real traffic: events, UnsupportedRequest or RemoteProtocolError only."""
    client, server = ready_pair()
    wire = bytearray(b"".join(client.send(replace(r, correlation_id=i)) for i, r in enumerate(requests)))
    for pos, xor in flips:
        wire[pos % len(wire)] ^= xor
    server.receive_data(bytes(wire))
    events = _bounded_drain(server)
    assert events[-1] in ("error", ConnectionClosed())
    for ev in events[:-1]:
        assert isinstance(ev, (UnsupportedRequest, *REQUESTS.values()))
