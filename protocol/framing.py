"""Frame layout: how messages become bytes and back. No connection state; see connection.py.

Handshake frame (the first frame in each direction)::

    "FRY"  3 bytes  ASCII magic
    ver    u8       protocol version (client: highest it speaks; broker: chosen)
    length u32      bytes of body that follow
    body   msgpack  Handshake / HandshakeResponse map

Read as a Kafka request size, "FRY" + any version byte is over 1.1 GB, which
no Kafka request can be: a listener can tell the protocols apart by the first
four bytes.

Every later frame::

    length      u32  bytes after this field (>= 13)
    api_key     u16
    api_version u16
    flags       u8   bit 0: error response (body is an ErrorResponse)
    corr_id     i32  correlation id, echoed by the response
    header_len  u32  bytes of the msgpack header that follow
    header      msgpack map: the message's fields
    data        the rest: bytes of the message's Records fields, in field order

All integers are big-endian.
"""

from __future__ import annotations

import struct
import threading
from typing import Any

import msgpack

from .errors import LocalProtocolError

MAGIC = b"FRY"
PROTOCOL_VERSION = 1
LENGTH = struct.Struct(">I")
HANDSHAKE_PREFIX = struct.Struct(">3sBI")  # magic, version, length
FRAME_HEADER = struct.Struct(">IHHBiI")  # length, api_key, version, flags, corr_id, header_len
FRAME_HEADER_SIZE = FRAME_HEADER.size  # 17, including the length field
FLAG_ERROR = 0x01

DEFAULT_MAX_FRAME_SIZE = 64 * 1024 * 1024
DEFAULT_MAX_HEADER_SIZE = 4 * 1024 * 1024
MAX_HANDSHAKE_SIZE = 64 * 1024


def frame_prefix(api_key: int, version: int, flags: int, corr_id: int, header: bytes, data_len: int) -> bytes:
    """The bytes before a frame's data section: length, fixed header and msgpack header."""
    length = FRAME_HEADER_SIZE - 4 + len(header) + data_len
    return FRAME_HEADER.pack(length, api_key, version, flags, corr_id, len(header)) + header


def handshake_frame(version: int, body: bytes) -> bytes:
    return HANDSHAKE_PREFIX.pack(MAGIC, version, len(body)) + body


_packers = threading.local()


def pack_header(body: Any) -> bytes:
    """``msgpack.packb(body, use_bin_type=True)``, with this thread's Packer.

    ``packb`` makes a Packer, with a 256 KiB buffer, per call: that costs
    about as much as packing a produce response's header. A Packer that
    fails empties its buffer, so the next frame starts clean.
    """
    try:
        packer = _packers.packer
    except AttributeError:
        packer = _packers.packer = msgpack.Packer(use_bin_type=True)
    return packer.pack(body)


def encode_frame_prefix(api_key: int, flags: int, corr_id: int, body: Any, data_len: int) -> bytes:
    """A frame's bytes up to its data section; LocalProtocolError if unencodable."""
    try:
        header = pack_header(body)
        return frame_prefix(api_key, 0, flags, corr_id, header, data_len)
    except (TypeError, ValueError, OverflowError, struct.error) as exc:
        raise LocalProtocolError(f"cannot encode frame for api {api_key}: {exc}") from None
