"""The handshake that opens every connection: its frame, and the broker's answer.

The client's first frame is a ``Handshake`` naming the protocol versions it
speaks; the broker answers with the highest version both speak (or
UNSUPPORTED_VERSION), its id, its largest frame and the versions of each API.
The frame's layout is in ``framing.handshake_frame``; ``Connection`` drives
the states around it.
"""

from __future__ import annotations

import struct

import msgpack

from . import framing
from .errors import ErrorCode, LocalProtocolError
from .messages import VERSIONS, ApiVersionRange, Handshake, HandshakeResponse
from .schema import encoder_for


def encode_handshake(msg: Handshake | HandshakeResponse, version: int) -> bytes:
    """A handshake frame; LocalProtocolError if unencodable (version must fit a byte)."""
    try:
        body = msgpack.packb(encoder_for(type(msg))(msg, []), use_bin_type=True)
        return framing.handshake_frame(version, body)
    except (TypeError, ValueError, OverflowError, struct.error) as exc:
        raise LocalProtocolError(f"cannot encode {type(msg).__name__}: {exc}") from None


def negotiate(hs: Handshake, supported: tuple[int, int] = (framing.PROTOCOL_VERSION, framing.PROTOCOL_VERSION)) -> int | None:
    """The highest version both sides speak, or None."""
    lo = max(hs.min_version, supported[0])
    hi = min(hs.max_version, supported[1])
    return hi if lo <= hi else None


def handshake_response(hs: Handshake, *, broker_id: int = 0, max_frame_size: int) -> HandshakeResponse:
    """The broker's answer to ``hs``: accepted, or UNSUPPORTED_VERSION."""
    version = negotiate(hs)
    if version is None:
        return HandshakeResponse(
            version=framing.PROTOCOL_VERSION,
            error_code=int(ErrorCode.UNSUPPORTED_VERSION),
            error_message=f"broker speaks protocol versions {framing.PROTOCOL_VERSION}..{framing.PROTOCOL_VERSION}",
        )
    return HandshakeResponse(
        version=version,
        broker_id=broker_id,
        max_frame_size=max_frame_size,
        api_versions=tuple(ApiVersionRange(k, lo, hi) for k, (lo, hi) in sorted(VERSIONS.items())),
    )
