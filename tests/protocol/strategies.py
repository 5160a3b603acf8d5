"""Hypothesis strategies built from the message dataclasses' annotations.

``strategy_for(tp)`` walks a type the way protocol.schema does, so a field
added to a message is generated (and round-tripped) without touching the
tests. A few fields have constraints the annotation cannot express; they are
listed in ``FIELD_OVERRIDES``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from protocol import batch, framing, group_messages, message_base, messages
from protocol.connection import (
    NEED_DATA,
    Connection,
    ErrorResponse,
    Role,
    State,
)
from protocol.handshake import handshake_response
from protocol.messages import (
    REQUESTS,
    Handshake,
    HandshakeResponse,
    Message,
    ProduceRequest,
)
from protocol.schema import Records

# parametrize over message classes with readable test ids: ``**BY_NAME``
BY_NAME = {"ids": lambda c: c.__name__}


def property_settings(max_examples: int) -> settings:
    """Hypothesis settings for the per-class property tests (they build many strategies)."""
    return settings(max_examples=max_examples, deadline=None, suppress_health_check=[HealthCheck.too_slow])


INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
INT32 = st.integers(min_value=-(2**31), max_value=2**31 - 1)
U8 = st.integers(min_value=0, max_value=255)

# Values an ``Any`` field may carry: what msgpack round-trips to an equal value.
# (Tuples come back as lists, and NaN is not equal to itself, so neither is used.)
ANY_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | INT64
    | st.floats(allow_nan=False)
    | st.text(max_size=10)
    | st.binary(max_size=10),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


@st.composite
def one_batch(draw, compression=None) -> bytes:
    """A small, valid record batch built with ``protocol.batch.build_batch``."""
    values = draw(st.lists(st.binary(max_size=16) | st.none(), min_size=1, max_size=4))
    keys = draw(st.none() | st.lists(st.binary(max_size=8) | st.none(),
                                     min_size=len(values), max_size=len(values)))
    codec = compression if compression is not None else draw(
        st.sampled_from([batch.Compression.NONE, batch.Compression.GZIP]))
    return batch.build_batch(
        values,
        keys,
        timestamps=draw(st.integers(min_value=0, max_value=2**45)),
        compression=codec,
        base_offset=draw(st.integers(min_value=0, max_value=2**40)),
    )


# One or a few whole batches; empty too (an empty fetch answer is legal).
RECORDS = st.lists(one_batch(), min_size=1, max_size=3).map(b"".join) | st.just(b"")

# Fields whose valid values are narrower than their annotation.
FIELD_OVERRIDES: dict[tuple[type, str], st.SearchStrategy] = {
    (ProduceRequest, "acks"): st.sampled_from([0, 1, -1]),
    # The handshake frame carries the version in one byte.
    (Handshake, "max_version"): U8,
    (HandshakeResponse, "version"): st.just(framing.PROTOCOL_VERSION),
}


def strategy_for(tp: Any) -> st.SearchStrategy:
    """A strategy producing valid values of the (annotation) type ``tp``."""
    if tp is Records:
        return RECORDS
    if tp is int:
        return INT64
    if tp is bool:
        return st.booleans()
    if tp is str:
        return st.text(max_size=20)
    if tp is bytes:
        return st.binary(max_size=20)
    if tp is float:
        return st.floats(allow_nan=False)
    if tp is Any:
        return ANY_VALUES
    if tp is type(None):
        return st.none()
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return st.one_of([strategy_for(a) for a in args])
    if origin is tuple:
        assert len(args) == 2 and args[1] is Ellipsis, tp
        return st.lists(strategy_for(args[0]), max_size=3).map(tuple)
    if origin is dict:
        return st.dictionaries(strategy_for(args[0]), strategy_for(args[1]), max_size=3)
    if dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        return st.builds(tp, **{f.name: _field_strategy(tp, f, hints[f.name])
                                for f in dataclasses.fields(tp)})
    raise TypeError(f"no strategy for {tp!r}")


def _field_strategy(tp: type, f: dataclasses.Field, hint: Any) -> st.SearchStrategy:
    if f.name == "correlation_id":
        return INT32  # an int32 in the frame header
    override = FIELD_OVERRIDES.get((tp, f.name))
    return override if override is not None else strategy_for(hint)


def init_kwargs(tp: type) -> st.SearchStrategy:
    """Keyword arguments for dataclass ``tp``: every required field, and some optional ones."""
    hints = typing.get_type_hints(tp)
    required, optional = {}, {}
    for f in dataclasses.fields(tp):
        has_default = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        (optional if has_default else required)[f.name] = _field_strategy(tp, f, hints[f.name])
    return st.fixed_dictionaries(required, optional=optional)


# Every dataclass the message modules define: the messages and the structs inside them.
MESSAGE_CLASSES = [
    cls for module in (message_base, messages, group_messages) for cls in vars(module).values()
    if isinstance(cls, type) and dataclasses.is_dataclass(cls) and cls.__module__ == module.__name__
]


def error_responses() -> st.SearchStrategy:
    return st.builds(
        ErrorResponse,
        api_key=st.sampled_from(sorted(REQUESTS)),
        error_code=INT64,
        error_message=st.none() | st.text(max_size=30),
        correlation_id=INT32,
    )


# ------------------------------------------------------------ comparison


def plain(value: Any) -> Any:
    """``value`` with dataclasses turned into (name, fields) and memoryviews into bytes.

    Records arrive as memoryviews, which compare equal to bytes but make
    dataclass equality awkward to read in a failure report.
    """
    if isinstance(value, memoryview):
        return bytes(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return (type(value).__name__,
                {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)})
    if isinstance(value, tuple):
        return tuple(plain(v) for v in value)
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


# ------------------------------------------------------------ connections


def ready_pair(**limits) -> tuple[Connection, Connection]:
    """A client and a server Connection that completed the handshake."""
    client = Connection(Role.CLIENT, **limits)
    server = Connection(Role.SERVER, **limits)
    server.receive_data(client.send(Handshake(client_id="tests")))
    hs = server.next_event()
    assert isinstance(hs, Handshake)
    client.receive_data(server.send(handshake_response(hs, max_frame_size=server.max_frame_size)))
    resp = client.next_event()
    assert isinstance(resp, HandshakeResponse) and resp.error_code == 0
    assert client.state is State.READY and server.state is State.READY
    assert client.next_event() is NEED_DATA and server.next_event() is NEED_DATA
    return client, server


def drain(conn: Connection, limit: int = 10_000) -> list:
    """Every event ``conn`` has ready, up to NEED_DATA (or ConnectionClosed)."""
    events = []
    for _ in range(limit):
        ev = conn.next_event()
        if ev is NEED_DATA:
            return events
        events.append(ev)
        if type(ev).__name__ == "ConnectionClosed":
            return events
    raise AssertionError("next_event() never returned NEED_DATA")


def request_for(api_key: int, correlation_id: int) -> Message:
    """A request with ``api_key`` that expects a response (for pairing responses)."""
    return REQUESTS[api_key](correlation_id=correlation_id)
