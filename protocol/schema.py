"""Typed msgpack codec for the message dataclasses.

Each message is a frozen, slotted dataclass whose annotations are the schema.
``encoder_for``/``decoder_for`` compile a converter per type once, so encoding
and decoding do no reflection per message. On the wire a dataclass is a
msgpack map from field name to value; a field the sender omits takes its
default, and unknown keys are ignored (how messages evolve within a version).

Decoding checks every value's type exactly (``type(v) is int``: a bool is not
an int) and raises RemoteProtocolError on a mismatch ("expected int, got
str"), on a missing required field ("<Class> lacks field 'x'") and on a value
the class rejects ("invalid <Class>: ..."). Encoding checks nothing: what
msgpack cannot pack fails in the caller's ``packb``.

The converters of scalars, Optional, tuples and dicts are closures. Those of
dataclasses are generated as Python source per class, the checks of scalar
fields inline, and build the frozen objects without calling their class
(``protocol.dataclass_codec``, ``protocol.frozen``); ``keyword_decoder`` is the
plain form of a dataclass decoder, a loop over the fields and a call of the
class with keywords, which the generated ones fall back on.

``Records`` fields are special: their bytes are not put in the msgpack header
but appended, in field order, to the frame's data section, and the header
holds only their length. So record batches are never copied into or parsed
out of msgpack, and a broker can send them from a file with ``sendfile``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Callable

from .errors import LocalProtocolError, RemoteProtocolError


class Records:
    """Marker type for a field holding raw record batches (the data section).

    On the receiving side the value is a ``memoryview`` into the frame. On the
    sending side it may be bytes-like or any object with ``__len__`` that the
    caller's transport knows how to write (the broker's file ranges).
    """


Encoder = Callable[[Any, list], Any]
Decoder = Callable[[Any, "DataCursor"], Any]


class DataCursor:
    """Hands out consecutive slices of a frame's data section to Records fields."""

    __slots__ = ("data", "pos")

    def __init__(self, data: memoryview) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: Any) -> memoryview:
        if type(n) is not int or n < 0 or self.pos + n > len(self.data):
            raise RemoteProtocolError("records length runs past the frame's data section")
        start = self.pos
        self.pos = start + n
        return self.data[start : self.pos]


_enc_cache: dict[Any, Encoder] = {}
_dec_cache: dict[Any, Decoder] = {}


def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def encoder_for(tp: Any) -> Encoder:
    """A function (value, data_parts) -> msgpack-ready object."""
    try:
        return _enc_cache[tp]
    except (KeyError, TypeError):
        pass
    enc = _make_encoder(tp)
    try:
        _enc_cache[tp] = enc
    except TypeError:
        pass
    return enc


def decoder_for(tp: Any) -> Decoder:
    """A function (msgpack object, DataCursor) -> validated value.

    A dataclass's decoder also takes the values of its frame fields, which
    the frame header carries, as keywords (``correlation_id=7``) or in a map
    (its third argument, ``extra``). Raises RemoteProtocolError on any type
    mismatch.
    """
    try:
        return _dec_cache[tp]
    except (KeyError, TypeError):
        pass
    dec = _make_decoder(tp)
    try:
        _dec_cache[tp] = dec
    except TypeError:
        pass
    return dec


def optional_inner(tp: Any) -> Any:
    """``X`` of ``X | None``; TypeError for any other union (it has no wire form)."""
    inner = [a for a in typing.get_args(tp) if a is not type(None)]
    if len(inner) != 1:
        raise TypeError(f"unions other than Optional are not supported: {tp!r}")
    return inner[0]


def tuple_item(tp: Any) -> Any:
    """``X`` of ``tuple[X, ...]``; TypeError for any other tuple type."""
    args = typing.get_args(tp)
    if len(args) != 2 or args[1] is not Ellipsis:
        raise TypeError("only tuple[X, ...] is supported")
    return args[0]


def _identity(v, parts):
    return v


def _make_encoder(tp: Any) -> Encoder:
    if tp is Records:
        def enc_records(v, parts):
            parts.append(v)
            return len(v)
        return enc_records
    if tp in (int, str, bool, bytes, float, type(None), Any):
        return _identity
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            e = encoder_for(inner[0])
            return lambda v, parts: None if v is None else e(v, parts)
        return _identity
    if origin is tuple:
        e = encoder_for(args[0])
        if e is _identity:
            return lambda v, parts: list(v)
        return lambda v, parts: [e(x, parts) for x in v]
    if origin is dict:
        ev = encoder_for(args[1])
        if ev is _identity:
            return lambda v, parts: dict(v)
        return lambda v, parts: {k: ev(x, parts) for k, x in v.items()}
    if dataclasses.is_dataclass(tp):
        from .dataclass_codec import dataclass_encoder

        return dataclass_encoder(tp)
    raise TypeError(f"no wire encoding for {tp!r}")


def bad_value(what: str, v: Any) -> RemoteProtocolError:
    """The error for a value ``v`` that is not the ``what`` its schema asks for."""
    return RemoteProtocolError(f"expected {what}, got {type(v).__name__}")


def _make_decoder(tp: Any) -> Decoder:
    if tp is Records:
        return lambda v, cur: cur.take(v)
    if tp is int:
        def dec_int(v, cur):
            if type(v) is not int:
                raise bad_value("int", v)
            return v
        return dec_int
    if tp is bool:
        def dec_bool(v, cur):
            if type(v) is not bool:
                raise bad_value("bool", v)
            return v
        return dec_bool
    if tp is str:
        def dec_str(v, cur):
            if type(v) is not str:
                raise bad_value("str", v)
            return v
        return dec_str
    if tp is bytes:
        def dec_bytes(v, cur):
            if type(v) is not bytes:
                raise bad_value("bytes", v)
            return v
        return dec_bytes
    if tp is float:
        def dec_float(v, cur):
            if type(v) not in (float, int):
                raise bad_value("float", v)
            return float(v)
        return dec_float
    if tp is Any:
        return lambda v, cur: v
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        d = decoder_for(optional_inner(tp))
        return lambda v, cur: None if v is None else d(v, cur)
    if origin is tuple:
        d = decoder_for(tuple_item(tp))

        def dec_tuple(v, cur):
            if type(v) is not list:
                raise bad_value("array", v)
            return tuple([d(x, cur) for x in v])
        return dec_tuple
    if origin is dict:
        dk = decoder_for(args[0])
        dv = decoder_for(args[1])

        def dec_dict(v, cur):
            if type(v) is not dict:
                raise bad_value("map", v)
            return {dk(k, cur): dv(x, cur) for k, x in v.items()}
        return dec_dict
    if dataclasses.is_dataclass(tp):
        from .dataclass_codec import dataclass_decoder

        return dataclass_decoder(tp)
    raise TypeError(f"no wire decoding for {tp!r}")


def keyword_decoder(tp: type) -> Decoder:
    """A decoder of dataclass ``tp`` that calls the class with the decoded fields as keywords.

    The frame fields (``correlation_id``), which are not in the body, come as
    keywords or in ``extra``, a map of keyword to value; both go to the class
    too, under the fields the body holds. Generated decoders use this one
    when ``extra`` holds anything but frame fields.
    """
    hints = _hints(tp)
    fields = []
    for f in dataclasses.fields(tp):
        if f.metadata.get("frame"):
            continue
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        fields.append((f.name, decoder_for(hints[f.name]), required))

    def dec_dc(v, cur, extra=None, **frame):
        if type(v) is not dict:
            raise bad_value(f"{tp.__name__} map", v)
        kwargs = {**frame, **extra} if extra else frame
        for name, d, required in fields:
            if name in v:
                kwargs[name] = d(v[name], cur)
            elif required:
                raise RemoteProtocolError(f"{tp.__name__} lacks field {name!r}")
        try:
            return tp(**kwargs)
        except (TypeError, ValueError, LocalProtocolError) as exc:
            raise RemoteProtocolError(f"invalid {tp.__name__}: {exc}") from None
    return dec_dc
