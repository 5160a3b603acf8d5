"""One connection to a broker: a thin asyncio shell around ``protocol.connection``.

Theory of operation
-------------------
``AsyncConnection`` is an ``asyncio.BufferedProtocol``. Bytes read go straight
into the sans-IO ``Connection`` (a large response, such as a fetch, is read
into its own buffer and never copied) and the events that come out are matched
to the waiting request by correlation id (``_pending``: id -> future). There is
no reader task: ``buffer_updated`` is the one reader, so responses are
dispatched in the order they arrive without extra scheduling.

``send()`` writes a request and returns the future of its response (None for a
Produce with acks=0, which the broker never answers) after the bytes are handed
to the transport; if the transport's buffer is above its high-water mark it
first awaits ``resume_writing`` (backpressure). Every request carries a
deadline: when it passes the request fails with ``RequestTimedOutError`` and
the connection is closed, as Kafka's clients do, since a late answer could no
longer be matched with certainty. One timer per connection watches the
earliest deadline (requests mostly end long before it fires), so a request
costs no timer of its own. The broker answers in request order, so an answer that
arrives while an earlier request still waits means the earlier answer was lost:
that closes the connection too. Closing, for any reason, fails every pending
future with a ``NetworkError`` naming the broker and the reason.
"""

from __future__ import annotations

import asyncio
import logging
import socket

from protocol.connection import (
    NEED_DATA,
    Connection,
    ConnectionClosed,
    ErrorResponse,
    Role,
    scratch_buffer,
)
from protocol.errors import (
    ApiError,
    NetworkError,
    RemoteProtocolError,
    RequestTimedOutError,
)
from protocol.messages import Handshake, HandshakeResponse, Message, ProduceRequest, api_name

from .errors import NoBrokersAvailable

log = logging.getLogger(__name__)

DEFAULT_MAX_FRAME_SIZE = 128 * 1024 * 1024


class AsyncConnection(asyncio.BufferedProtocol):
    """A handshaken connection to one broker. Create it with ``await AsyncConnection.connect(...)``."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        client_id: str = "",
        request_timeout: float = 30.0,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
    ) -> None:
        self.host = host
        self.port = port
        self.client_id = client_id
        self.request_timeout = request_timeout
        self.broker_id: int | None = None
        self.max_frame_size = 0  # the broker's limit, learnt from the handshake
        self._conn = Connection(Role.CLIENT, max_frame_size=max_frame_size)
        self._reading_into_frame = False  # the last get_buffer gave the frame's own buffer
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        # correlation id -> (future, deadline in loop time, api key, timeout in s)
        self._pending: dict[int, tuple[asyncio.Future, float, int, float]] = {}
        self._timer: asyncio.TimerHandle | None = None  # fires at _timer_at
        self._timer_at = 0.0
        self._next_id = 0
        self._handshake: asyncio.Future = self._loop.create_future()
        self._drain_waiter: asyncio.Future | None = None
        self._paused = False
        self._closed = False
        self.close_reason: str | None = None
        self._closed_event = asyncio.Event()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        *,
        client_id: str = "",
        connect_timeout: float = 30.0,
        request_timeout: float = 30.0,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
    ) -> "AsyncConnection":
        """Open a TCP connection and complete the Ferry handshake.

        Raises NoBrokersAvailable (naming the address) when the broker cannot be
        reached or does not answer the handshake within ``connect_timeout``
        seconds; the ApiError of the code if the broker refuses the handshake.
        """
        loop = asyncio.get_running_loop()
        addr = f"{host}:{port}"
        proto: AsyncConnection | None = None
        try:
            async with asyncio.timeout(connect_timeout):
                _, proto = await loop.create_connection(
                    lambda: cls(host, port, client_id=client_id, request_timeout=request_timeout,
                                max_frame_size=max_frame_size),
                    host, port,
                )
                await proto._do_handshake()
        except TimeoutError:
            if proto is not None:
                proto.close("handshake timed out")
            raise NoBrokersAvailable(
                f"cannot connect to a broker at {addr}: no answer within {connect_timeout:g} s"
            ) from None
        except OSError as exc:
            raise NoBrokersAvailable(
                f"cannot connect to a broker at {addr}: {exc.strerror or exc}"
            ) from None
        except (NetworkError, RemoteProtocolError) as exc:
            if proto is not None:
                proto.close(str(exc))
            raise NoBrokersAvailable(f"cannot connect to a broker at {addr}: {exc}") from None
        return proto

    async def _do_handshake(self) -> None:
        self._transport.write(self._conn.send(Handshake(client_id=self.client_id)))
        resp: HandshakeResponse = await self._handshake
        if resp.error_code:
            self.close("handshake refused")
            raise ApiError.from_code(
                resp.error_code, f"broker at {self.address} refused the handshake: {resp.error_message}"
            )
        self.broker_id = resp.broker_id
        self.max_frame_size = resp.max_frame_size

    # ------------------------------------------------------------ requests

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    @property
    def paused(self) -> bool:
        """The transport asked us to stop writing until it drains."""
        return self._paused

    async def send(self, request: Message, timeout: float | None = None) -> asyncio.Future | None:
        """Write ``request``; returns the future of its response, or None for acks=0 Produce.

        The future resolves to the response message, or fails with the ApiError of
        a request-level error response, RequestTimedOutError after ``timeout``
        seconds (default: the connection's request_timeout), or NetworkError when
        the connection closes. Raises NetworkError if it is already closed.
        Waits while the transport is paused.
        """
        fut = self.send_nowait(request, timeout)
        if self._paused:
            await self._drain()
        return fut

    def send_nowait(self, request: Message, timeout: float | None = None) -> asyncio.Future | None:
        """``send`` without waiting for a paused transport: the bytes queue in it."""
        if self._closed:
            raise NetworkError(f"connection to {self.address} is closed: {self.close_reason}")
        corr = self._next_id
        self._next_id = (corr + 1) & 0x7FFFFFFF
        parts = self._conn.send_parts(request, corr)
        fut = None
        if not (type(request) is ProduceRequest and request.acks == 0):
            loop = self._loop
            fut = loop.create_future()
            t = self.request_timeout if timeout is None else timeout
            deadline = loop.time() + t
            self._pending[corr] = (fut, deadline, request.API_KEY, t)
            if self._timer is None or deadline < self._timer_at:
                self._arm(deadline)
        if len(parts) == 1:
            self._transport.write(parts[0])
        else:
            self._transport.writelines(parts)
        return fut

    async def request(self, request: Message, timeout: float | None = None) -> Message:
        """Send ``request`` and await its response (see ``send`` for the errors)."""
        fut = await self.send(request, timeout)
        if fut is None:
            return None
        return await fut

    async def drained(self) -> None:
        """Return once the transport takes writes again (at once if it does).

        Raises NetworkError if the connection is or becomes closed.
        """
        await self._drain()

    async def _drain(self) -> None:
        while self._paused and not self._closed:
            if self._drain_waiter is None or self._drain_waiter.done():
                self._drain_waiter = self._loop.create_future()
            await asyncio.shield(self._drain_waiter)
        if self._closed:
            raise NetworkError(f"connection to {self.address} closed: {self.close_reason}")

    def _arm(self, deadline: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = self._loop.call_at(deadline, self._check_deadlines)

    def _check_deadlines(self) -> None:
        """The timer fired: fail the first request past its deadline, or re-arm."""
        self._timer = None
        now = self._loop.time()
        earliest = None
        for corr, (fut, deadline, api_key, timeout) in self._pending.items():
            if deadline <= now:
                del self._pending[corr]
                if not fut.done():
                    fut.set_exception(RequestTimedOutError(
                        f"no answer to {api_name(api_key)} from the broker at {self.address} "
                        f"within {timeout * 1000:.0f} ms"
                    ))
                self.close(f"a {api_name(api_key)} request timed out")
                return
            if earliest is None or deadline < earliest:
                earliest = deadline
        if earliest is not None:
            self._arm(earliest)

    # ------------------------------------------------------------ closing

    def close(self, reason: str = "closed by the client") -> None:
        """Close now; every pending request fails with NetworkError(reason). Idempotent."""
        if self._closed:
            return
        self._closed = True
        self.close_reason = reason
        if self._transport is not None:
            self._transport.close()
        exc_text = f"connection to the broker at {self.address} closed: {reason}"
        pending, self._pending = self._pending, {}
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for fut, *_ in pending.values():
            if not fut.done():
                fut.set_exception(NetworkError(exc_text))
                fut.exception()  # a waiter gone (cancelled) must not leave a log line
        if not self._handshake.done():
            self._handshake.set_exception(NetworkError(exc_text))
            self._handshake.exception()  # read, so an unawaited one is not logged
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)
        self._conn.fail_pending()
        if self._transport is None or self._transport.is_closing():
            self._closed_event.set()

    async def wait_closed(self) -> None:
        await self._closed_event.wait()

    # ------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport) -> None:
        self._transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:  # pragma: no cover - not every platform allows it
                pass

    def connection_lost(self, exc: Exception | None) -> None:
        self.close(f"lost: {exc}" if exc else "closed by the broker")
        self._closed_event.set()

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)

    def get_buffer(self, sizehint: int) -> memoryview:
        view = self._conn.receive_buffer()
        self._reading_into_frame = view is not None
        return scratch_buffer() if view is None else view

    def buffer_updated(self, nbytes: int) -> None:
        if self._closed:  # what is still buffered after a close is of no use
            return
        conn = self._conn
        if self._reading_into_frame:
            conn.received_into(nbytes)
        else:
            conn.receive_data(scratch_buffer()[:nbytes])
        try:
            while not self._closed:
                event = conn.next_event()
                if event is NEED_DATA:
                    return
                self._dispatch(event)
        except RemoteProtocolError as exc:
            log.warning("broker at %s broke the protocol: %s", self.address, exc)
            self.close(f"protocol error: {exc}")

    def eof_received(self) -> bool:
        self._conn.receive_data(b"")
        try:
            while (event := self._conn.next_event()) is not NEED_DATA:
                self._dispatch(event)
                if isinstance(event, ConnectionClosed):
                    break
        except RemoteProtocolError as exc:
            self.close(f"protocol error: {exc}")
        return False

    def _dispatch(self, event) -> None:
        if isinstance(event, ConnectionClosed):
            self.close("closed by the broker")
            return
        if type(event) is HandshakeResponse:
            if not self._handshake.done():
                self._handshake.set_result(event)
            return
        pending = self._pending
        corr = event.correlation_id
        if pending and corr != next(iter(pending)) and corr in pending:
            # The broker answers in request order: the answer to an earlier
            # request was lost on the way. Nothing on this connection can be
            # trusted any more (Kafka's clients do the same).
            self.close(f"the answer to request {next(iter(pending))} was lost "
                       f"(request {corr} was answered first)")
            return
        entry = pending.pop(corr, None)
        if entry is None:  # timed out already: the connection is closing
            return
        fut = entry[0]
        if fut.done():
            return
        if type(event) is ErrorResponse:
            fut.set_exception(ApiError.from_code(
                event.error_code,
                event.error_message or f"{api_name(event.api_key)} failed at the broker",
            ))
        else:
            fut.set_result(event)


__all__ = ["AsyncConnection", "DEFAULT_MAX_FRAME_SIZE"]
