"""The generated dataclass codecs: round trips, and agreement with the reference codec.

``reference_codec`` is the codec written as a plain walk over the
annotations. Every message class, and a few classes here with the field
types no message uses yet, must encode to what it encodes to, and decode
what it decodes (valid bodies and bodies with fields dropped, retyped or
added) to an equal object or to a RemoteProtocolError with the same message.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

import msgpack
import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from protocol import dataclass_codec
from protocol.codegen import source_of
from protocol.errors import RemoteProtocolError
from protocol.frozen import frozen_dataclass
from protocol.messages import (
    CreateTopicsRequest,
    Handshake,
    Message,
    MetadataRequest,
    NewTopic,
    ProducePartition,
    ProduceRequest,
)
from protocol.schema import (
    DataCursor,
    Records,
    decoder_for,
    encoder_for,
    keyword_decoder,
)

from . import reference_codec
from .strategies import BY_NAME, MESSAGE_CLASSES, plain, property_settings, strategy_for

PROPERTY = property_settings(20)


# ------------------------------------------------------------ classes with every field type


@frozen_dataclass
class Scalars:
    """Field types the messages do not use (yet)."""

    number: float
    maybe_number: float | None = None
    raw: bytes = b""
    anything: Any = None
    numbers: tuple[float, ...] = ()
    by_name: dict[str, float] = field(default_factory=dict)
    grid: tuple[tuple[int, ...], ...] = ()
    maybe_records: Records | None = None
    many_records: tuple[Records, ...] = ()
    inner: ProducePartition | None = None
    inners: dict[str, ProducePartition] = field(default_factory=dict)


@frozen_dataclass
class Framed(Message):
    API_KEY: ClassVar[int] = 98
    first: Records
    entries: tuple[Scalars, ...] = ()
    last: Records = b""

    def __post_init__(self) -> None:
        if len(self.entries) > 3:  # (strategy_for makes up to three)
            raise ValueError("at most three entries")


@dataclass
class Mutable:
    """Not frozen, not slotted: its decoder calls it with keywords."""

    name: str
    count: int = 0
    tags: dict[str, str] = field(default_factory=dict)
    correlation_id: int = field(default=0, kw_only=True, metadata={"frame": True})


EXTRA_CLASSES = [Scalars, Framed, Mutable]
ALL_CLASSES = MESSAGE_CLASSES + EXTRA_CLASSES


# ------------------------------------------------------------ helpers


def unpacked(body: Any) -> Any:
    """``body`` as the receiver sees it: through msgpack and back."""
    return msgpack.unpackb(msgpack.packb(body, use_bin_type=True), raw=False, strict_map_key=True)


def outcome(decode, body, data: bytes):
    """(plain decoded value, data consumed) or (the error's type, message)."""
    cur = DataCursor(memoryview(bytearray(data)))
    try:
        value = decode(body, cur)
    except RemoteProtocolError as exc:
        return RemoteProtocolError, str(exc)
    return plain(value), cur.pos


WIRE_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(allow_nan=False),
    st.text(max_size=4), st.binary(max_size=4),
    st.lists(st.integers(0, 300), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(0, 300) | st.text(max_size=2), max_size=2),
)


@st.composite
def mutated(draw, value: Any) -> Any:
    """``value`` with some map entries dropped or replaced by any wire value, and keys added."""
    if isinstance(value, dict):
        out = {}
        for key, x in value.items():
            what = draw(st.sampled_from(["keep", "keep", "keep", "mutate", "drop", "replace"]))
            if what == "keep":
                out[key] = x
            elif what == "mutate":
                out[key] = draw(mutated(x))
            elif what == "replace":
                out[key] = draw(WIRE_VALUES)
        if draw(st.booleans()):
            out[draw(st.text(max_size=6))] = draw(WIRE_VALUES)
        return out
    if isinstance(value, list):
        return [draw(mutated(x)) for x in value]
    return value


def body_and_data(cls, msg) -> tuple[Any, bytes]:
    parts: list = []
    body = encoder_for(cls)(msg, parts)
    return unpacked(body), b"".join(bytes(p) for p in parts)


# ------------------------------------------------------------ round trips


@pytest.mark.parametrize("cls", ALL_CLASSES, **BY_NAME)
@PROPERTY
@given(data=st.data())
def test_every_class_round_trips(cls, data):
    msg = data.draw(strategy_for(cls))
    body, records = body_and_data(cls, msg)
    cur = DataCursor(memoryview(bytearray(records)))
    frame = {f.name: getattr(msg, f.name) for f in dataclasses.fields(cls) if f.metadata.get("frame")}
    decoded = decoder_for(cls)(body, cur, **frame)
    assert type(decoded) is cls
    assert plain(decoded) == plain(msg)
    assert cur.pos == len(records)


@pytest.mark.parametrize("cls", ALL_CLASSES, **BY_NAME)
@PROPERTY
@given(data=st.data())
def test_encoders_match_the_reference(cls, data):
    msg = data.draw(strategy_for(cls))
    ours, theirs = [], []
    assert encoder_for(cls)(msg, ours) == reference_codec.encode(cls, msg, theirs)
    assert len(ours) == len(theirs) and all(a is b for a, b in zip(ours, theirs))


@pytest.mark.parametrize("cls", ALL_CLASSES, **BY_NAME)
@property_settings(40)
@given(data=st.data())
def test_decoders_match_the_reference_on_damaged_bodies(cls, data):
    body, records = body_and_data(cls, data.draw(strategy_for(cls), label="message"))
    body = unpacked(data.draw(mutated(body), label="body"))
    records = data.draw(st.sampled_from([records, records[:-1], records + b"x"]), label="data")
    ours = outcome(decoder_for(cls), body, records)
    event("refused" if ours[0] is RemoteProtocolError else "decoded")
    assert ours == outcome(lambda v, cur: reference_codec.decode(cls, v, cur), body, records)


@pytest.mark.parametrize("body", [None, 1, "x", [], [{}], b"{}"])
@pytest.mark.parametrize("cls", ALL_CLASSES, **BY_NAME)
def test_a_body_that_is_not_a_map(cls, body):
    with pytest.raises(RemoteProtocolError, match=f"^expected {cls.__name__} map, got "):
        decoder_for(cls)(body, DataCursor(memoryview(b"")))


# ------------------------------------------------------------ what decoding checks


def decode(cls, body: dict, data: bytes = b"", **frame):
    return decoder_for(cls)(body, DataCursor(memoryview(bytearray(data))), **frame)


@pytest.mark.parametrize("cls, body, message", [
    (ProduceRequest, {"acks": "1"}, "expected int, got str"),
    (ProduceRequest, {"acks": True}, "expected int, got bool"),
    (ProduceRequest, {"timeout_ms": 1.0}, "expected int, got float"),
    (ProduceRequest, {"acks": 2}, "invalid ProduceRequest: acks must be 0, 1 or -1, not 2"),
    (ProduceRequest, {"partitions": {}}, "expected array, got dict"),
    (ProduceRequest, {"partitions": [{"partition": 0, "records": 0}]},
     "ProducePartition lacks field 'topic'"),
    (ProduceRequest, {"partitions": [{"topic": "t", "partition": 0}]},
     "ProducePartition lacks field 'records'"),
    (ProduceRequest, {"partitions": [{"topic": "t", "partition": 0, "records": 1}]},
     "records length runs past the frame's data section"),
    (MetadataRequest, {"allow_auto_topic_creation": 1}, "expected bool, got int"),
    (MetadataRequest, {"topics": ["a", b"b"]}, "expected str, got bytes"),
    (Handshake, {"auth": {"k": 1}, "max_version": None}, "expected int, got NoneType"),
    (CreateTopicsRequest, {"topics": [{"name": "t", "configs": {"k": None}}]}, "expected str, got NoneType"),
    (Scalars, {"number": "1"}, "expected float, got str"),
    (Scalars, {"number": 1, "numbers": [1.5, True]}, "expected float, got bool"),
    (Scalars, {"number": 1, "grid": [[1], [2, "3"]]}, "expected int, got str"),
    (Scalars, {}, "Scalars lacks field 'number'"),
    (Framed, {"first": 0, "entries": [{"number": 1}] * 4}, "invalid Framed: at most three entries"),
    (Mutable, {"name": 7}, "expected str, got int"),
])
def test_errors_say_what_is_wrong(cls, body, message):
    with pytest.raises(RemoteProtocolError) as info:
        decode(cls, body)
    assert str(info.value) == message


def test_omitted_fields_take_their_defaults_and_unknown_keys_are_ignored():
    req = decode(ProduceRequest, {"future": [1, 2]}, correlation_id=9)
    assert req == ProduceRequest(correlation_id=9)
    topic = decode(NewTopic, {"name": "t"})
    assert topic == NewTopic("t") and topic.configs == {}
    assert decode(NewTopic, {"name": "t"}).configs is not topic.configs
    s = decode(Scalars, {"number": 2})
    assert s == Scalars(2.0) and type(s.number) is float and s.by_name == {}
    assert decode(Mutable, {"name": "m", "x": 1}) == Mutable("m")


def test_ints_become_floats_where_a_float_is_expected():
    s = decode(Scalars, {"number": 1, "maybe_number": 2, "numbers": [3, 4.5], "by_name": {"a": 5}})
    assert [type(x) for x in (s.number, s.maybe_number, *s.numbers, *s.by_name.values())] == [float] * 5


def test_records_take_the_data_section_in_field_order():
    body = {"first": 1, "entries": [{"number": 0, "maybe_records": 2, "many_records": [1, 0, 1]}],
            "last": 3}
    f = decode(Framed, body, b"ABBCDEEE", correlation_id=4)
    s = f.entries[0]
    assert [bytes(f.first), bytes(s.maybe_records), *map(bytes, s.many_records), bytes(f.last)] == \
        [b"A", b"BB", b"C", b"", b"D", b"EEE"]
    assert f.correlation_id == 4


def test_decoded_objects_are_frozen_and_of_their_class():
    req = decode(ProduceRequest, {"acks": 0, "partitions": [{"topic": "t", "partition": 1, "records": 1}]},
                 b"x", correlation_id=3)
    assert type(req) is ProduceRequest and type(req.partitions[0]) is ProducePartition
    for obj, name in [(req, "acks"), (req, "correlation_id"), (req.partitions[0], "topic")]:
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(obj, name, 1)


# ------------------------------------------------------------ frame fields


def test_frame_fields_come_as_keywords_or_in_extra():
    dec = decoder_for(ProduceRequest)
    assert dec({}, None, correlation_id=5).correlation_id == 5
    assert dec({}, None, {"correlation_id": 6}).correlation_id == 6
    assert dec({}, None, {"correlation_id": 6}, correlation_id=5).correlation_id == 6
    assert dec({}, None).correlation_id == 0
    assert decoder_for(Mutable)({"name": "m"}, None, {"correlation_id": 2}) == Mutable("m", correlation_id=2)


def test_extra_with_other_keys_goes_to_the_class_as_keywords():
    dec = decoder_for(ProduceRequest)
    # A field the body lacks takes its value from extra; the body's value wins.
    assert dec({}, None, {"acks": 0, "correlation_id": 1}) == ProduceRequest(acks=0, correlation_id=1)
    assert dec({"acks": -1}, None, {"acks": 0}).acks == -1
    with pytest.raises(RemoteProtocolError, match="^invalid ProduceRequest: .*unexpected keyword argument 'nope'"):
        dec({}, None, {"nope": 1})
    with pytest.raises(RemoteProtocolError, match="^invalid ProducePartition: .*'nope'"):
        decoder_for(ProducePartition)({"topic": "t", "partition": 0, "records": 0},
                                      DataCursor(memoryview(b"")), {"nope": 1})


# ------------------------------------------------------------ what is generated


@pytest.mark.parametrize("cls", ALL_CLASSES, **BY_NAME)
def test_codecs_are_generated_and_their_source_kept(cls):
    assert f"def encode_{cls.__name__}(v, parts):" in source_of(encoder_for(cls))
    assert f"def decode_{cls.__name__}(v, cur, extra=None" in source_of(decoder_for(cls))


def test_a_dataclass_that_cannot_be_generated_for_uses_the_keyword_decoder():
    @dataclass(frozen=True)
    class Doubled:
        a: int
        b: int = field(init=False, default=0)

        def __post_init__(self):
            object.__setattr__(self, "b", self.a * 2)

    @dataclass(frozen=True)
    class NeedsFrame:
        a: int = 0
        tag: str = field(kw_only=True, metadata={"frame": True})

    Doubled.__annotations__ = {"a": int, "b": int}
    NeedsFrame.__annotations__ = {"a": int, "tag": str}
    assert dataclass_codec.decoder_source(Doubled) is None
    assert decoder_for(Doubled)({"a": 2}, None) == Doubled(2)
    with pytest.raises(RemoteProtocolError, match="^invalid Doubled: "):
        decoder_for(Doubled)({"a": 2, "b": 4}, None)  # b is not an argument of __init__
    assert dataclass_codec.decoder_source(NeedsFrame) is None
    assert decoder_for(NeedsFrame)({}, None, tag="t") == NeedsFrame(tag="t")
    with pytest.raises(RemoteProtocolError, match="^invalid NeedsFrame: "):
        decoder_for(NeedsFrame)({}, None)
    assert keyword_decoder(NeedsFrame)({"a": 1}, None, {"tag": "u"}) == NeedsFrame(1, tag="u")
