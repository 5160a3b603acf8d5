"""PROTOCOL.md stays true: its field tables, error table and hex examples match the code."""

from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import Path

import msgpack
import pytest

from protocol import batch, framing
from protocol.connection import Connection, ErrorResponse, Role
from protocol.errors import ApiError, ErrorCode
from protocol.messages import (
    REQUESTS,
    RESPONSES,
    ApiVersionRange,
    Handshake,
    HandshakeResponse,
    ProducePartition,
    ProducePartitionResponse,
    ProduceRequest,
    ProduceResponse,
)
from protocol.schema import encoder_for

from .strategies import ready_pair

SPEC = (Path(framing.__file__).parent / "PROTOCOL.md").read_text()


def _structs() -> list[type]:
    """Every dataclass that appears on the wire, reached from the message classes."""
    seen: list[type] = []

    def walk(tp):
        for arg in typing.get_args(tp):
            walk(arg)
        if dataclasses.is_dataclass(tp) and tp not in seen:
            seen.append(tp)
            hints = typing.get_type_hints(tp)
            for f in dataclasses.fields(tp):
                walk(hints[f.name])

    for cls in [Handshake, HandshakeResponse, *REQUESTS.values(), *RESPONSES.values()]:
        walk(cls)
    return seen


def _table_after(heading: str) -> list[str]:
    """Field names in the first table after ``heading``."""
    start = SPEC.index(heading)
    lines = SPEC[start:].splitlines()[1:]
    rows = []
    in_table = False
    for line in lines:
        if line.startswith("|"):
            in_table = True
            m = re.match(r"\| `(\w+)` \|", line)
            if m:
                rows.append(m.group(1))
        elif in_table:
            break
    return rows


@pytest.mark.parametrize("cls", _structs(), ids=lambda c: c.__name__)
def test_every_struct_has_a_table_of_its_fields(cls):
    wire_fields = [f.name for f in dataclasses.fields(cls) if not f.metadata.get("frame")]
    # Table order is the schema order that Records fields follow in the data section.
    assert _table_after(f"**`{cls.__name__}`**") == wire_fields


def test_error_response_table():
    assert _table_after("## 6. Error responses") == ["error_code", "error_message"]


def test_api_table_lists_every_api():
    for key, cls in REQUESTS.items():
        assert re.search(rf"^\| {key} \| \w+ \| `{cls.__name__}` \| `{RESPONSES[key].__name__}` \| 0 \|$",
                         SPEC, re.M), cls


def test_error_table_matches_error_codes():
    rows = re.findall(r"^\| (−?\d+) \| `(\w+)` \|\s*(yes|no|)\s*\|", SPEC, re.M)
    table = {int(code.replace("−", "-")): (name, retriable) for code, name, retriable in rows}
    assert set(table) == {int(c) for c in ErrorCode}
    for code in ErrorCode:
        name, retriable = table[int(code)]
        assert name == code.name
        if code is not ErrorCode.NONE:
            assert (retriable == "yes") == ApiError.for_code(code).retriable


def _hex_block(after: str, index: int = 0) -> bytes:
    section = SPEC[SPEC.index(after):]
    blocks = re.findall(r"```\n((?:[0-9a-f]{4}: [0-9a-f ]+\n)+)```", section)
    return bytes.fromhex("".join(line.split(":", 1)[1] for line in blocks[index].splitlines()))


def test_handshake_example():
    assert _hex_block("### 10.1") == Connection(Role.CLIENT).send(Handshake(client_id="demo"))
    resp = HandshakeResponse(version=1, max_frame_size=64 * 1024 * 1024,
                             api_versions=(ApiVersionRange(0, 0, 0),))
    body = msgpack.packb(encoder_for(HandshakeResponse)(resp, []))
    assert _hex_block("### 10.1", 1) == framing.handshake_frame(1, body)


def test_produce_example():
    records = batch.build_batch([b"hi"], now_ms=1_700_000_000_000)
    client, server = ready_pair()
    request = ProduceRequest(acks=1, timeout_ms=1000, partitions=(ProducePartition("t", 0, records),),
                             correlation_id=1)
    wire = client.send(request)
    assert _hex_block("### 10.2") == wire
    server.receive_data(wire)
    server.next_event()
    response = ProduceResponse(partitions=(ProducePartitionResponse("t", 0, base_offset=0, log_start_offset=0),),
                               correlation_id=1)
    assert _hex_block("### 10.3") == server.send(response)
    error = ErrorResponse(api_key=0, error_code=42, error_message="bad", correlation_id=1)
    assert _hex_block("### 10.3", 1) == server.send(error)


def test_minimal_handshake_quoted_in_the_spec():
    assert "`46 52 59 01 00 00 00 01 80`" in SPEC


def test_limits_quoted_in_the_spec():
    assert framing.MAX_HANDSHAKE_SIZE == 65536 and "65536" in SPEC
    assert framing.DEFAULT_MAX_FRAME_SIZE == 67108864 and "67108864" in SPEC
    assert framing.DEFAULT_MAX_HEADER_SIZE == 4194304 and "4194304" in SPEC
    assert batch.DEFAULT_MAX_UNCOMPRESSED == 67108864
    assert batch.HEADER_SIZE == 65 and batch.HEADER_SIZE - batch.LOG_OVERHEAD == 53
