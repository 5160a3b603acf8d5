"""The sans-IO connection: bytes in, events out; events in, bytes out.

Theory of operation
-------------------
A ``Connection`` knows nothing of sockets. Feed it what the socket read with
``receive_data(data)`` (``b""`` means the peer closed), then drain
``next_event()`` until it returns ``NEED_DATA``. A shell that can read into a
buffer (asyncio's ``BufferedProtocol``) asks ``receive_buffer()`` first: while
a large frame arrives, that is the frame's own buffer, so its bytes go from
the socket to where the decoded event will point at them with no copy. To send, ``send(message)``
returns the bytes to write; ``send_parts(message)`` returns a list of bytes
and the sender's own ``Records`` objects unchanged, so a broker can pass file
ranges to ``os.sendfile`` instead of reading them into memory.

States, per side::

    client: START --send(Handshake)--> HANDSHAKING --HandshakeResponse ok--> READY
    server: START --receive Handshake--> HANDSHAKING --send(HandshakeResponse ok)--> READY
    any:    peer EOF, error response to the handshake, or protocol error --> CLOSED

In READY the client may have any number of requests in flight, each with its
own correlation id; responses may only answer an outstanding id and must carry
the matching API key. A Produce with acks=0 expects no response. The server
side hands out requests in arrival order; answering in order is its shell's
job. A request with an unknown API key or version is well framed, so it comes
out as an ``UnsupportedRequest`` event that the server answers with an
``ErrorResponse``; anything malformed raises ``RemoteProtocolError`` and the
connection is dead.

Limits (``max_frame_size``, ``max_header_size``) are checked on the length
prefix before any buffer of that size exists, so a peer cannot make us
allocate what it asks for.
"""

from __future__ import annotations

import enum
import threading
from dataclasses import dataclass
from typing import Any, ClassVar

import msgpack

from . import framing
from .errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from .framing import (
    FLAG_ERROR,
    FRAME_HEADER,
    FRAME_HEADER_SIZE,
    HANDSHAKE_PREFIX,
    encode_frame_prefix,
)
from .handshake import encode_handshake
from .messages import (
    REQUESTS,
    RESPONSES,
    VERSIONS,
    Handshake,
    HandshakeResponse,
    Message,
    ProduceRequest,
)
from .schema import DataCursor, decoder_for, encoder_for


class Role(enum.Enum):
    CLIENT = "client"
    SERVER = "server"


class State(enum.Enum):
    START = "start"
    HANDSHAKING = "handshaking"
    READY = "ready"
    CLOSED = "closed"


# The members Connection compares with, as module globals: in Python 3.11
# reading a member off its class (``State.READY``) goes through
# EnumType.__getattr__, about 0.1 us, a few percent of a small frame's cost.
_START, _HANDSHAKING, _READY, _CLOSED = State.START, State.HANDSHAKING, State.READY, State.CLOSED
_CLIENT, _SERVER = Role.CLIENT, Role.SERVER


class _NeedData:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA = _NeedData()


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The peer closed the connection cleanly (between frames)."""


@dataclass(frozen=True, slots=True)
class UnsupportedRequest:
    """A well-framed request this side cannot decode (unknown API key or version)."""

    api_key: int
    api_version: int
    correlation_id: int


@dataclass(frozen=True, slots=True)
class ErrorResponse(Message):
    """A request-level error: the broker could not process the request at all."""

    api_key: int = -1
    error_code: int = int(ErrorCode.UNKNOWN_SERVER_ERROR)
    error_message: str | None = None
    IS_RESPONSE: ClassVar[bool] = True


LARGE_FRAME = 64 * 1024  # frames this size and up are read into a buffer of their own
SCRATCH_SIZE = 256 * 1024
_scratch = threading.local()


def scratch_buffer() -> memoryview:
    """A buffer for the reads ``receive_buffer`` has no place for, one per thread.

    A shell reads into it and passes what was read to ``receive_data`` (which
    copies it) before its next read, so the connections served by one thread
    can all share it.
    """
    view = getattr(_scratch, "view", None)
    if view is None:
        view = _scratch.view = memoryview(bytearray(SCRATCH_SIZE))
    return view


_ERROR_BODY = {"error_code": int, "error_message": (str, type(None))}


class Connection:
    """One end of a Ferry connection. Not thread-safe; does no I/O.

    ``role`` is Role.CLIENT or Role.SERVER. ``max_frame_size`` bounds any frame
    the peer may send; ``max_header_size`` bounds a frame's msgpack header.
    """

    def __init__(
        self,
        role: Role,
        *,
        max_frame_size: int = framing.DEFAULT_MAX_FRAME_SIZE,
        max_header_size: int = framing.DEFAULT_MAX_HEADER_SIZE,
        supported_versions: tuple[int, int] = (framing.PROTOCOL_VERSION, framing.PROTOCOL_VERSION),
    ) -> None:
        self.role = role
        self.max_frame_size = max_frame_size
        self.max_header_size = max_header_size
        self.supported_versions = supported_versions
        self.state = _START
        self.protocol_version: int | None = None
        self.peer_handshake: Handshake | HandshakeResponse | None = None
        self._buf = bytearray()
        self._pos = 0
        self._eof = False
        # a large frame being received into a buffer of its own (see receive_buffer)
        self._frame: bytearray | None = None
        self._frame_filled = 0
        self._frame_prefix: tuple = ()  # api_key, version, flags, corr_id, header_len
        # client: correlation id -> api key of requests awaiting a response
        self._pending: dict[int, int] = {}

    # ------------------------------------------------------------ inspection

    @property
    def in_flight(self) -> int:
        """Requests sent that still await a response (client side)."""
        return len(self._pending)

    def pending_ids(self) -> list[int]:
        return list(self._pending)

    # ------------------------------------------------------------ receiving

    def receive_data(self, data) -> None:
        """Buffer bytes read from the peer; ``b""`` marks the end of the stream."""
        if self._eof:
            if data:
                raise LocalProtocolError("received data after end of stream")
            return
        if not data:
            self._eof = True
            return
        frame = self._frame
        if frame is not None and self._frame_filled < len(frame):
            n = min(len(data), len(frame) - self._frame_filled)
            view = memoryview(data)
            frame[self._frame_filled : self._frame_filled + n] = view[:n]
            self._frame_filled += n
            if n == len(data):
                return
            data = view[n:]
        if self._pos and self._pos * 2 >= len(self._buf):
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    def receive_buffer(self) -> memoryview | None:
        """Where the next bytes read should go, if the socket can read into it.

        While a frame of ``LARGE_FRAME`` bytes or more is arriving it has a
        buffer of its own: this returns the part still to be filled, so the
        read lands there directly and the frame is never copied (report the
        count with ``received_into``). Otherwise None: pass the bytes to
        ``receive_data``.
        """
        frame = self._frame
        if frame is None or self._frame_filled >= len(frame) or self._eof:
            return None
        return memoryview(frame)[self._frame_filled:]

    def received_into(self, n: int) -> None:
        """``n`` bytes were read into the view the last ``receive_buffer`` returned."""
        frame = self._frame
        if frame is None or n < 0 or self._frame_filled + n > len(frame):
            raise LocalProtocolError("received_into() does not match receive_buffer()")
        self._frame_filled += n

    def next_event(self) -> Any:
        """The next complete event, or NEED_DATA.

        Returns a message dataclass, ``UnsupportedRequest``, ``ConnectionClosed``
        or NEED_DATA. Raises RemoteProtocolError when the peer broke the
        protocol; the connection is then CLOSED.
        """
        if self.state is _CLOSED:
            return ConnectionClosed() if self._eof else NEED_DATA
        try:
            if self._expect_handshake():
                event = self._read_handshake()
            else:
                event = self._read_frame()
        except RemoteProtocolError:
            self.state = _CLOSED
            raise
        if event is NEED_DATA and self._eof:
            self.state = _CLOSED
            if len(self._buf) > self._pos or self._frame is not None:
                raise RemoteProtocolError("connection closed in the middle of a frame")
            return ConnectionClosed()
        return event

    def _expect_handshake(self) -> bool:
        if self.role is _SERVER:
            return self.state is _START
        return self.state is _HANDSHAKING

    def _read_handshake(self) -> Any:
        avail = len(self._buf) - self._pos
        if avail < HANDSHAKE_PREFIX.size:
            n = min(avail, 3)
            if bytes(self._buf[self._pos : self._pos + n]) != framing.MAGIC[:n]:
                raise RemoteProtocolError("not a Ferry connection: bad magic")
            return NEED_DATA
        magic, version, length = HANDSHAKE_PREFIX.unpack_from(self._buf, self._pos)
        if magic != framing.MAGIC:
            raise RemoteProtocolError("not a Ferry connection: bad magic")
        if length > framing.MAX_HANDSHAKE_SIZE:
            raise RemoteProtocolError(f"handshake of {length} bytes is too large")
        end = self._pos + HANDSHAKE_PREFIX.size + length
        if len(self._buf) < end:
            return NEED_DATA
        body = self._unpack(memoryview(self._buf)[self._pos + HANDSHAKE_PREFIX.size : end])
        self._pos = end
        if self.role is _SERVER:
            hs = decoder_for(Handshake)(body, None)
            self.state = _HANDSHAKING
            self.peer_handshake = hs
            return hs
        resp = decoder_for(HandshakeResponse)(body, None)
        self.peer_handshake = resp
        if resp.error_code:
            self.state = _CLOSED
            return resp
        lo, hi = self.supported_versions
        if not lo <= resp.version <= hi or version != resp.version:
            raise RemoteProtocolError(f"broker chose unsupported protocol version {resp.version}")
        self.protocol_version = resp.version
        self.state = _READY
        return resp

    def _read_frame(self) -> Any:
        if self.state is not _READY:
            return NEED_DATA
        if self._frame is not None:
            return self._large_frame()
        buf = self._buf
        pos = self._pos
        avail = len(buf) - pos
        if avail < FRAME_HEADER_SIZE:
            if avail >= 4:
                self._check_length(framing.LENGTH.unpack_from(buf, pos)[0])
            return NEED_DATA
        length, api_key, version, flags, corr_id, header_len = FRAME_HEADER.unpack_from(buf, pos)
        self._check_length(length)
        end = pos + 4 + length
        if header_len > length - (FRAME_HEADER_SIZE - 4) or header_len > self.max_header_size:
            raise RemoteProtocolError(f"frame header length {header_len} is invalid")
        hstart = pos + FRAME_HEADER_SIZE
        if len(buf) < end:
            if length >= LARGE_FRAME:
                # Give the rest of it a buffer of its own, filled straight from the socket.
                frame = bytearray(end - hstart)
                have = len(buf) - hstart
                frame[:have] = memoryview(buf)[hstart:]
                self._frame, self._frame_filled = frame, have
                self._frame_prefix = (api_key, version, flags, corr_id, header_len)
                self._pos = len(buf)
            return NEED_DATA
        # One copy of the frame: the events' Records views point into it and
        # stay valid (and writable) after the receive buffer moves on.
        frame = memoryview(buf[hstart:end])  # slicing a bytearray copies it
        self._pos = end
        return self._frame_event(api_key, version, flags, corr_id, header_len, frame)

    def _large_frame(self) -> Any:
        frame = self._frame
        if self._frame_filled < len(frame):
            return NEED_DATA
        self._frame = None
        return self._frame_event(*self._frame_prefix, memoryview(frame))

    def _frame_event(self, api_key: int, version: int, flags: int, corr_id: int,
                     header_len: int, frame: memoryview) -> Any:
        header = frame[:header_len]  # unpacked by the decoder, once it knows the API
        data = frame[header_len:]
        if self.role is _SERVER:
            return self._decode_request(api_key, version, flags, corr_id, header, data)
        return self._decode_response(api_key, version, flags, corr_id, header, data)

    def _check_length(self, length: int) -> None:
        if length < FRAME_HEADER_SIZE - 4:
            raise RemoteProtocolError(f"frame length {length} is below the minimum")
        if length > self.max_frame_size:
            raise RemoteProtocolError(
                f"frame of {length} bytes exceeds the limit of {self.max_frame_size}"
            )

    def _unpack(self, raw) -> Any:
        try:
            return msgpack.unpackb(raw, raw=False, strict_map_key=True)
        except Exception as exc:
            raise RemoteProtocolError(f"malformed msgpack: {exc}") from None

    def _decode_request(self, api_key, version, flags, corr_id, header, data) -> Any:
        if flags:
            raise RemoteProtocolError("request frame with response flags")
        cls = REQUESTS.get(api_key)
        if cls is None or not VERSIONS[api_key][0] <= version <= VERSIONS[api_key][1]:
            # Its header may be in a layout only that API's version defines.
            return UnsupportedRequest(api_key, version, corr_id)
        return self._decode_body(cls, self._unpack(header), data, corr_id)

    def _decode_response(self, api_key, version, flags, corr_id, header, data) -> Any:
        expected = self._pending.pop(corr_id, None)
        if expected is None:
            raise RemoteProtocolError(f"response to unknown correlation id {corr_id}")
        if expected != api_key:
            raise RemoteProtocolError(
                f"response for api {api_key} answers a request for api {expected}"
            )
        if flags & ~FLAG_ERROR:
            raise RemoteProtocolError(f"response frame with unknown flags {flags:#x}")
        header = self._unpack(header)
        if flags & FLAG_ERROR:
            if type(header) is not dict:
                raise RemoteProtocolError("error response body is not a map")
            code = header.get("error_code")
            msg = header.get("error_message")
            if type(code) is not int or not (msg is None or type(msg) is str):
                raise RemoteProtocolError("error response body is malformed")
            if len(data):
                raise RemoteProtocolError("error response has a data section")
            return ErrorResponse(
                api_key=api_key, error_code=code, error_message=msg, correlation_id=corr_id
            )
        cls = RESPONSES.get(api_key)
        if cls is None:  # we sent a request of an API we cannot decode answers to
            raise RemoteProtocolError(f"no response type for api {api_key}")
        return self._decode_body(cls, header, data, corr_id)

    def _decode_body(self, cls, header, data, corr_id) -> Message:
        cursor = DataCursor(data)
        msg = decoder_for(cls)(header, cursor, correlation_id=corr_id)
        if cursor.pos != len(data):
            raise RemoteProtocolError("frame data section has unclaimed bytes")
        return msg

    # ------------------------------------------------------------ sending

    def send(self, event: Any, correlation_id: int | None = None) -> bytes:
        """Bytes to write for ``event``. Raises LocalProtocolError if not allowed now."""
        parts = self.send_parts(event, correlation_id)
        if len(parts) == 1:
            return parts[0]
        try:
            return b"".join(parts)
        except TypeError:  # it never went out
            self._pending.pop(event.correlation_id if correlation_id is None else correlation_id, None)
            raise LocalProtocolError("send() needs bytes records; use send_parts()") from None

    def send_parts(self, event: Any, correlation_id: int | None = None) -> list:
        """Like ``send`` but returns [prefix bytes, *records objects as given].

        ``correlation_id``, if given, goes in the frame instead of the event's
        own (a client numbering its requests need not copy each one).

        Raises LocalProtocolError if the event may not be sent now or cannot be
        encoded (a field of the wrong type, an integer out of its range); the
        connection's state is then unchanged.
        """
        if self.state is _CLOSED:
            raise LocalProtocolError("connection is closed")
        if isinstance(event, Handshake):
            return [self._send_handshake(event)]
        if isinstance(event, HandshakeResponse):
            return [self._send_handshake_response(event)]
        if self.state is not _READY:
            raise LocalProtocolError(f"cannot send {type(event).__name__} in state {self.state.name}")
        if isinstance(event, ErrorResponse):
            if self.role is not _SERVER:
                raise LocalProtocolError("only the server sends error responses")
            body = {"error_code": event.error_code, "error_message": event.error_message}
            return [encode_frame_prefix(event.api_key, FLAG_ERROR, event.correlation_id, body, 0)]
        if not isinstance(event, Message):
            raise LocalProtocolError(f"cannot send {event!r}")
        if event.IS_RESPONSE != (self.role is _SERVER):
            raise LocalProtocolError(f"a {self.role.value} cannot send {type(event).__name__}")
        corr = event.correlation_id if correlation_id is None else correlation_id
        if self.role is _CLIENT and corr in self._pending:
            raise LocalProtocolError(f"correlation id {corr} is in flight")
        parts: list = []
        try:
            body = encoder_for(type(event))(event, parts)
            data_len = sum(map(len, parts))
        except (TypeError, ValueError) as exc:
            raise LocalProtocolError(f"cannot encode {type(event).__name__}: {exc}") from None
        prefix = encode_frame_prefix(event.API_KEY, 0, corr, body, data_len)
        if self.role is _CLIENT and not (isinstance(event, ProduceRequest) and event.acks == 0):
            self._pending[corr] = event.API_KEY
        if not parts:
            return [prefix]
        for p in parts:
            if not isinstance(p, (bytes, bytearray, memoryview)):
                return [prefix, *parts]
        return [prefix, *parts] if data_len > 4096 else [b"".join([prefix, *parts])]

    def _send_handshake(self, hs: Handshake) -> bytes:
        if self.role is not _CLIENT or self.state is not _START:
            raise LocalProtocolError("only a new client connection sends a Handshake")
        frame = encode_handshake(hs, hs.max_version)
        self.state = _HANDSHAKING
        return frame

    def _send_handshake_response(self, resp: HandshakeResponse) -> bytes:
        if self.role is not _SERVER or self.state is not _HANDSHAKING:
            raise LocalProtocolError("HandshakeResponse answers a received Handshake")
        frame = encode_handshake(resp, resp.version)
        if resp.error_code:
            self.state = _CLOSED
        else:
            self.protocol_version = resp.version
            self.state = _READY
        return frame

    def fail_pending(self) -> list[int]:
        """Forget every in-flight request (client side); returns their ids."""
        ids = list(self._pending)
        self._pending.clear()
        return ids


__all__ = [
    "Connection",
    "ConnectionClosed",
    "ErrorResponse",
    "NEED_DATA",
    "Role",
    "State",
    "UnsupportedRequest",
]
