"""Generated encoders and decoders for dataclasses (the format is in protocol.schema).

A generic codec walks a list of (field, converter) pairs and calls a converter
closure for every field: for the scalars that make up most fields, a Python
call to do one ``type(v) is not int`` test. Here each dataclass gets a
function written out for it instead, one block of statements per field, with
the tests for scalars (int, bool, str, bytes, float, Any, Optional of those)
and for tuples and dicts of them inline. Nested dataclasses, tuples of them,
and ``Records`` fields call the (also generated) codec of what they hold, so
each class's source stays short. The decoder of ``ProducePartition``::

    def decode_ProducePartition(v, cur, extra=None):
        if type(v) is not dict:
            raise _bad('ProducePartition map', v)
        if extra:
            return _decode_by_keywords(v, cur, extra)
        try:
            f_topic = v['topic']
        except KeyError:
            raise _RemoteProtocolError("ProducePartition lacks field 'topic'") from None
        if type(f_topic) is not str:
            raise _bad('str', f_topic)
        ...
        f_records = cur.take(f_records)
        o = _new(ProducePartitionBuilder)
        o.topic = f_topic
        ...
        o.__class__ = ProducePartition
        return o

The object is built as ``protocol.frozen`` describes, without a call to the
class, for the classes ``frozen_dataclass`` made; any other dataclass is
called with the decoded fields as keywords. Either way ``__post_init__``
runs, and a value it (or the constructor) rejects is a RemoteProtocolError
"invalid <Class>: ...". The frame fields (``correlation_id``), which are
not in the body, are the decoder's keyword-only parameters, and may come in
its ``extra`` map too; any other key in ``extra`` falls back to the keyword
decoder (``schema.keyword_decoder``), which passes ``extra`` to the class as
keywords, as every decoder did before these were generated. That decoder is
also what a dataclass this module cannot generate for (a frame field without
a default) gets.

Encoders mirror decoders: a dict display with one entry per field, a
``Records`` field appended to the data section's parts in field order.
``python -m protocol.codegen NAME`` prints a message class's codecs.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

from .codegen import compile_function
from .errors import LocalProtocolError, RemoteProtocolError
from .frozen import construction
from .schema import (
    Decoder,
    Encoder,
    Records,
    bad_value,
    decoder_for,
    encoder_for,
    keyword_decoder,
    optional_inner,
    tuple_item,
)

_SCALARS = (int, bool, str, bytes)
_LOCALS = {"v", "cur", "extra", "o", "exc"}  # the names of a decoder's own locals
_IDENTITY_TYPES = (int, str, bool, bytes, float, type(None), Any)


class _Namespace(dict):
    """Globals of one generated function: each object bound once, under a readable name."""

    def bind(self, name: str, obj: Any) -> str:
        for key, value in self.items():
            if value is obj and key.startswith(name):
                return key
        unique, n = name, 1
        while unique in self:
            n += 1
            unique = f"{name}_{n}"
        self[unique] = obj
        return unique


def _indent(lines: list[str], by: str = "    ") -> list[str]:
    return [by + line for line in lines]


def _name_of(tp: Any) -> str:
    """A short identifier fragment for a type, for the names of the codecs it binds."""
    return getattr(tp, "__name__", None) or "value"


# ------------------------------------------------------------ encoders


def _encode_expr(tp: Any, value: str, ns: _Namespace, depth: int) -> str:
    """An expression for the msgpack-ready form of ``value`` (an expression of type ``tp``)."""
    if tp is Records:
        return f"{ns.bind('_append_records', append_records)}(parts, {value})"
    if tp in _IDENTITY_TYPES:
        return value
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        if len(inner) != 1:
            return value
        sub = _encode_expr(inner[0], value, ns, depth)
        return value if sub == value else f"None if {value} is None else {sub}"
    if origin is tuple:
        x = f"x{depth}"
        sub = _encode_expr(args[0], x, ns, depth + 1)
        return f"list({value})" if sub == x else f"[{sub} for {x} in {value}]"
    if origin is dict:
        k, x = f"k{depth}", f"x{depth}"
        sub = _encode_expr(args[1], x, ns, depth + 1)
        return f"dict({value})" if sub == x else f"{{{k}: {sub} for {k}, {x} in {value}.items()}}"
    if dataclasses.is_dataclass(tp):
        return f"{ns.bind('encode_' + tp.__name__, encoder_for(tp))}({value}, parts)"
    raise TypeError(f"no wire encoding for {tp!r}")


def append_records(parts: list, value: Any) -> int:
    """A Records value inside a container: its bytes go to the data section."""
    parts.append(value)
    return len(value)


def encoder_source(tp: type) -> tuple[str, _Namespace]:
    """The encoder's source and the globals it uses."""
    hints = typing.get_type_hints(tp)
    fields = [f.name for f in dataclasses.fields(tp) if not f.metadata.get("frame")]
    ns = _Namespace()
    lines = [f"def encode_{tp.__name__}(v, parts):"]
    if any(hints[name] is Records for name in fields):
        # Values in field order, so Records fields take the data section in that order.
        entries = []
        for name in fields:
            if hints[name] is Records:
                lines += [f"    f_{name} = v.{name}", f"    parts.append(f_{name})"]
                entries.append(f"{name!r}: len(f_{name})")
            else:
                lines.append(f"    f_{name} = {_encode_expr(hints[name], f'v.{name}', ns, 1)}")
                entries.append(f"{name!r}: f_{name}")
    else:
        entries = [f"{name!r}: {_encode_expr(hints[name], f'v.{name}', ns, 1)}" for name in fields]
    lines += ["    return {", *[f"        {e}," for e in entries], "    }"]
    return "\n".join(lines) + "\n", ns


def dataclass_encoder(tp: type) -> Encoder:
    """The generated encoder of dataclass ``tp``: (value, data parts) -> msgpack map."""
    source, ns = encoder_source(tp)
    return compile_function(f"encode_{tp.__name__}", source, ns,
                            f"{tp.__module__}.{tp.__qualname__} encoder")


# ------------------------------------------------------------ decoders


def _decode_stmts(tp: Any, var: str, ns: _Namespace, depth: int) -> tuple[list[str], bool]:
    """Statements that check local ``var`` holds a ``tp`` and convert it in place.

    Returns the lines and whether they may rebind ``var`` (False: checks only).
    """
    if tp is Records:
        return [f"{var} = cur.take({var})"], True
    if tp in _SCALARS:
        name = tp.__name__
        return [f"if type({var}) is not {name}:", f"    raise _bad({name!r}, {var})"], False
    if tp is float:
        return [f"if type({var}) is not float:",
                f"    if type({var}) is not int:",
                f"        raise _bad('float', {var})",
                f"    {var} = float({var})"], True
    if tp is Any:
        return [], False
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        lines, rebinds = _decode_stmts(optional_inner(tp), var, ns, depth)
        return ([f"if {var} is not None:", *_indent(lines)] if lines else []), rebinds
    if origin is tuple:
        item = tuple_item(tp)
        lines = [f"if type({var}) is not list:", f"    raise _bad('array', {var})"]
        x = f"x{depth}"
        sub, rebinds = _decode_stmts(item, x, ns, depth + 1)
        if rebinds:
            dec = ns.bind(f"decode_{_name_of(item)}", decoder_for(item))
            lines.append(f"{var} = tuple([{dec}({x}, cur) for {x} in {var}])")
        else:
            if sub:
                lines += [f"for {x} in {var}:", *_indent(sub)]
            lines.append(f"{var} = tuple({var})")
        return lines, True
    if origin is dict:
        lines = [f"if type({var}) is not dict:", f"    raise _bad('map', {var})"]
        k, x = f"k{depth}", f"x{depth}"
        ksub, krebinds = _decode_stmts(args[0], k, ns, depth + 1)
        vsub, vrebinds = _decode_stmts(args[1], x, ns, depth + 1)
        if krebinds or vrebinds:
            dk = ns.bind(f"decode_{_name_of(args[0])}", decoder_for(args[0]))
            dv = ns.bind(f"decode_{_name_of(args[1])}", decoder_for(args[1]))
            lines.append(f"{var} = {{{dk}({k}, cur): {dv}({x}, cur) for {k}, {x} in {var}.items()}}")
            return lines, True
        if ksub or vsub:
            # The unpacked map is ours alone, so it is checked, not copied.
            lines += [f"for {k}, {x} in {var}.items():", *_indent(ksub), *_indent(vsub)]
        return lines, False
    if dataclasses.is_dataclass(tp):
        return [f"{var} = {ns.bind('decode_' + tp.__name__, decoder_for(tp))}({var}, cur)"], True
    raise TypeError(f"no wire decoding for {tp!r}")


def decoder_source(tp: type) -> tuple[str, _Namespace] | None:
    """The decoder's source and globals, or None if ``tp`` needs the keyword decoder."""
    hints = typing.get_type_hints(tp)
    fields = dataclasses.fields(tp)
    if not all(f.init for f in fields):
        return None
    frame = [f for f in fields if f.metadata.get("frame")]
    wire = [f for f in fields if not f.metadata.get("frame")]
    if any(f.default is dataclasses.MISSING or f.name in _LOCALS for f in frame):
        return None  # a frame field the keyword decoder must handle
    plan = construction(tp)
    ns = _Namespace(plan.namespace if plan is not None else {tp.__name__: tp})
    ns.update(_bad=bad_value, _RemoteProtocolError=RemoteProtocolError,
              _LocalProtocolError=LocalProtocolError,
              _decode_by_keywords=keyword_decoder(tp))
    cls_name = tp.__name__

    params = ["v", "cur", "extra=None"]
    if frame:
        params.append("*")
        params += [f"{f.name}={ns.bind('_default_' + f.name, f.default)}" for f in frame]
    lines = [f"def decode_{cls_name}({', '.join(params)}):",
             "    if type(v) is not dict:",
             f"        raise _bad({cls_name + ' map'!r}, v)"]
    if frame:
        ns["_FRAME_FIELDS"] = frozenset(f.name for f in frame)
        keywords = ", ".join(f"{f.name}={f.name}" for f in frame)
        lines += ["    if extra:",
                  "        if not extra.keys() <= _FRAME_FIELDS:",
                  f"            return _decode_by_keywords(v, cur, extra, {keywords})"]
        lines += [f"        {f.name} = extra.get({f.name!r}, {f.name})" for f in frame]
    else:
        lines += ["    if extra:", "        return _decode_by_keywords(v, cur, extra)"]

    for f in wire:
        var = f"f_{f.name}"
        checks, _ = _decode_stmts(hints[f.name], var, ns, 1)
        lines += ["    try:", f"        {var} = v[{f.name!r}]", "    except KeyError:"]
        if f.default is not dataclasses.MISSING:
            lines.append(f"        {var} = {ns.bind('_default_' + f.name, f.default)}")
        elif f.default_factory is not dataclasses.MISSING:
            lines.append(f"        {var} = {ns.bind('_factory_' + f.name, f.default_factory)}()")
        else:
            message = f"{cls_name} lacks field {f.name!r}"
            lines.append(f"        raise _RemoteProtocolError({message!r}) from None")
        if checks:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                lines += _indent(checks)
            else:
                lines += ["    else:", *_indent(checks, "        ")]

    invalid = f"invalid {cls_name}: "
    values = {f.name: f.name if f in frame else f"f_{f.name}" for f in fields}
    catch = ["    except (TypeError, ValueError, _LocalProtocolError) as exc:",
             f"        raise _RemoteProtocolError({invalid!r} + str(exc)) from None"]
    if plan is not None:
        lines += _indent(plan.statements("o", values, new=True))
        if plan.post_init:
            lines += ["    try:", "        o.__post_init__()", *catch]
    else:
        args = ", ".join(f"{name}={value}" for name, value in values.items())
        lines += ["    try:", f"        o = {cls_name}({args})", *catch]
    lines.append("    return o")
    return "\n".join(lines) + "\n", ns


def dataclass_decoder(tp: type) -> Decoder:
    """The generated decoder of dataclass ``tp``: (msgpack map, DataCursor, extra) -> object."""
    found = decoder_source(tp)
    if found is None:
        return keyword_decoder(tp)
    source, ns = found
    return compile_function(f"decode_{tp.__name__}", source, ns,
                            f"{tp.__module__}.{tp.__qualname__} decoder")
