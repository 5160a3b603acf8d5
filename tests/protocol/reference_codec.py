"""The wire codec as a plain walk over the annotations: what the generated codecs must match.

This is the codec ``protocol.schema`` had before its dataclass codecs were
generated, written as two recursive functions: a dataclass is a map of its
non-frame fields; an omitted field takes its default (the class applies it),
a missing required one, a value of the wrong type and a value the class
rejects are RemoteProtocolErrors with the messages below; Records fields
take the data section in field order.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

from protocol.errors import LocalProtocolError, RemoteProtocolError
from protocol.schema import DataCursor, Records

_PLAIN = (int, str, bool, bytes, float, type(None), Any)


def encode(tp: Any, v: Any, parts: list) -> Any:
    if tp is Records:
        parts.append(v)
        return len(v)
    if tp in _PLAIN:
        return v
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        if len(inner) != 1 or v is None:
            return v
        return encode(inner[0], v, parts)
    if origin is tuple:
        return [encode(args[0], x, parts) for x in v]
    if origin is dict:
        return {k: encode(args[1], x, parts) for k, x in v.items()}
    hints = typing.get_type_hints(tp)
    return {f.name: encode(hints[f.name], getattr(v, f.name), parts)
            for f in dataclasses.fields(tp) if not f.metadata.get("frame")}


def _bad(what: str, v: Any) -> RemoteProtocolError:
    return RemoteProtocolError(f"expected {what}, got {type(v).__name__}")


def decode(tp: Any, v: Any, cur: DataCursor | None, extra: dict | None = None) -> Any:
    if tp is Records:
        return cur.take(v)
    if tp in (int, bool, str, bytes):
        if type(v) is not tp:
            raise _bad(tp.__name__, v)
        return v
    if tp is float:
        if type(v) not in (float, int):
            raise _bad("float", v)
        return float(v)
    if tp is Any:
        return v
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        (inner,) = [a for a in args if a is not type(None)]
        return None if v is None else decode(inner, v, cur)
    if origin is tuple:
        if type(v) is not list:
            raise _bad("array", v)
        return tuple([decode(args[0], x, cur) for x in v])
    if origin is dict:
        if type(v) is not dict:
            raise _bad("map", v)
        return {decode(args[0], k, cur): decode(args[1], x, cur) for k, x in v.items()}
    if type(v) is not dict:
        raise _bad(f"{tp.__name__} map", v)
    hints = typing.get_type_hints(tp)
    kwargs = dict(extra) if extra else {}
    for f in dataclasses.fields(tp):
        if f.metadata.get("frame"):
            continue
        if f.name in v:
            kwargs[f.name] = decode(hints[f.name], v[f.name], cur)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise RemoteProtocolError(f"{tp.__name__} lacks field {f.name!r}")
    try:
        return tp(**kwargs)
    except (TypeError, ValueError, LocalProtocolError) as exc:
        raise RemoteProtocolError(f"invalid {tp.__name__}: {exc}") from None
