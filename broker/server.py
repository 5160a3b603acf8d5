"""The asyncio shell: sockets in, sans-IO connection, handlers, sockets out.

Theory of operation
-------------------
Each TCP connection gets a ``BrokerProtocol``: bytes read go into a
``protocol.Connection(Role.SERVER)``; each request event goes to
``Handlers.handle``. A handler answers at once (most requests), later (a
coroutine: long-polling fetch, acks=all produce), or never (acks=0). Responses
leave in request order: a per-connection queue of slots, written from the head
as they complete.

Flow control, as in uvicorn: a connection with ``max_inflight_requests``
unanswered requests, or whose transport asked us to stop writing, is paused
(no more reading and no more decoding of buffered frames) until it drains, so
a slow or stalled client costs only its own bounded buffers and never delays
others. A malformed frame closes that one connection with a logged reason.

Fetch data goes from the segment file to the socket with ``os.sendfile``
whenever nothing is queued in the transport; if the socket cannot take it all
at once, the remainder is read with ``pread`` and queued, keeping order.

Shutdown (SIGINT/SIGTERM): stop accepting, stop reading, let requests in
progress finish within ``shutdown_timeout_ms``, close connections, fsync and
close the logs, write the clean-shutdown marker. A second signal exits at once.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import signal
import socket
from typing import Any

from protocol import messages as m
from protocol.connection import (
    NEED_DATA,
    Connection,
    ConnectionClosed,
    ErrorResponse,
    Role,
    UnsupportedRequest,
    scratch_buffer,
)
from protocol.errors import ApiError, ErrorCode, RemoteProtocolError
from protocol.handshake import handshake_response
from protocol.messages import Handshake

from .config import BrokerConfig
from .flusher import GroupCommitFlusher
from .group.handlers import GroupHandlers
from .handlers import INTERNAL_TOPICS, ClientInfo, Handlers, _Ranges, error_code
from .maintenance import Maintenance
from .storage import LogConfig, TopicStore
from .waiters import LogWaiters, LongPoll

log = logging.getLogger("ferry.broker")


SMALL_RESPONSE = 64 * 1024  # a response up to this size is written in one piece
_PENDING = (asyncio.Future, LongPoll)  # slot items answered later


def _read_part(part) -> bytes:
    """The bytes of one part of a response: as given, or read from its file ranges."""
    if isinstance(part, _Ranges):
        return b"".join([rng.read() for rng in part.ranges])
    if isinstance(part, (bytes, bytearray, memoryview)):
        return part
    return part.read()  # a bare storage FileRange


class BrokerProtocol(asyncio.BufferedProtocol):
    def __init__(self, broker: "Broker") -> None:
        self.broker = broker
        self.handlers = broker.handlers
        self.max_inflight = broker.config.max_inflight_requests
        self.conn = Connection(Role.SERVER, max_frame_size=broker.config.max_frame_size)
        self.reading_into_frame = False  # the last get_buffer gave a large frame's own buffer
        self.parked: LongPoll | None = None  # the last request, if it is a parked fetch
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.client = ClientInfo()
        self.slots: collections.deque = collections.deque()
        self.waiters = broker.handlers.waiters
        self.corked = False  # answers queue in slots while a read is handled
        self.read_paused = False
        self.write_paused = False
        self.stopping = False
        self.closed = False
        self.sock_fd = -1

    # ------------------------------------------------------------ lifecycle

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.client = ClientInfo(host=peer[0] if isinstance(peer, tuple) else str(peer))
        state = self.broker.connections
        if len(state) >= self.broker.config.max_connections:
            log.warning("refusing %s: %d connections open (max_connections)", self.peer, len(state))
            self.closed = True
            transport.close()
            return
        state.add(self)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
            self.sock_fd = sock.fileno()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.broker.connections.discard(self)
        for slot in self.slots:
            task = slot[2]
            if isinstance(task, _PENDING) and not task.done():
                task.cancel()
        self.slots.clear()
        self.broker.connection_gone()

    def eof_received(self) -> bool:
        self._feed(b"")
        return False

    def pause_writing(self) -> None:
        self.write_paused = True
        self._pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        self._drain()

    def _pause_reading(self) -> None:
        if not self.read_paused and self.transport is not None and not self.closed:
            self.read_paused = True
            self.transport.pause_reading()

    def _maybe_resume(self) -> None:
        if self.closed or self.stopping or self.write_paused:
            return
        if len(self.slots) >= self.max_inflight:
            return
        if self.read_paused:
            self.read_paused = False
            self._process()
            if not self.read_paused and self.transport is not None and not self.closed:
                self.transport.resume_reading()

    def close(self, reason: str | None = None) -> None:
        if self.closed:
            return
        if reason:
            log.warning("closing connection from %s: %s", self.peer, reason)
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def stop_reading(self) -> None:
        """Shutdown: read no further requests; those in progress still complete."""
        self.stopping = True
        self._pause_reading()

    # ------------------------------------------------------------ input

    def get_buffer(self, sizehint: int) -> memoryview:
        # A large produce request is read straight into its own buffer, from
        # which the storage engine writes it: the broker never copies it.
        view = self.conn.receive_buffer()
        self.reading_into_frame = view is not None
        return scratch_buffer() if view is None else view

    def buffer_updated(self, nbytes: int) -> None:
        if self.reading_into_frame:
            try:
                self.conn.received_into(nbytes)
            except Exception as exc:  # the transport's bug, not the peer's
                self.close(f"receive failed: {exc}")
                return
            self._process()
        else:
            self._feed(scratch_buffer()[:nbytes])

    def _feed(self, data) -> None:
        try:
            self.conn.receive_data(data)
        except Exception as exc:  # data after EOF: the transport's bug, not the peer's
            self.close(f"receive failed: {exc}")
            return
        self._process()

    def _process(self) -> None:
        # Answers to what this read brought wait until it is all handled, and
        # the fetches its appends woke (on other connections) answer first:
        # a consumer waiting on the log is the latency that counts end to end,
        # and its answer would otherwise follow this client's acknowledgements.
        self.corked = True
        self.waiters.hold()
        try:
            self._process_events()
        finally:
            self.corked = False
            self.waiters.release()
            if self.slots:
                self._drain()

    def _process_events(self) -> None:
        conn = self.conn
        while not self.closed and not self.read_paused:
            try:
                event = conn.next_event()
            except RemoteProtocolError as exc:
                self.close(f"protocol error: {exc}")
                return
            if event is NEED_DATA:
                return
            if isinstance(event, ConnectionClosed):
                self.closed = True
                if self.transport is not None and not self.slots:
                    self.transport.close()
                return
            if isinstance(event, Handshake):
                self._handshake(event)
            elif isinstance(event, UnsupportedRequest):
                self._enqueue(event.api_key, event.correlation_id, ErrorResponse(
                    api_key=event.api_key,
                    error_code=int(ErrorCode.UNSUPPORTED_VERSION),
                    error_message=f"unsupported api {m.api_name(event.api_key)} version {event.api_version}",
                    correlation_id=event.correlation_id,
                ))
            else:
                self._dispatch(event)
            if len(self.slots) >= self.max_inflight:
                self._pause_reading()

    def _handshake(self, hs: Handshake) -> None:
        resp = handshake_response(hs, broker_id=self.broker.config.broker_id,
                                  max_frame_size=self.broker.config.max_frame_size)
        self._write(self.conn.send(resp))
        if resp.error_code:
            log.warning("refused handshake from %s: %s", self.peer, resp.error_message)
            self.close()
        else:
            log.debug("client %r connected from %s", hs.client_id, self.peer)
            self.client = self.client._replace(client_id=hs.client_id)

    def _dispatch(self, request: m.Message) -> None:
        self.broker.requests_served += 1
        if self.parked is not None:
            # its answer goes out first: make it answer now, not at max_wait_ms
            self.parked.cut_short()
            self.parked = None
        try:
            result = self.handlers.handle(request, self.client)
        except ApiError as exc:
            result = ErrorResponse(api_key=request.API_KEY, error_code=int(exc.code),
                                   error_message=str(exc), correlation_id=request.correlation_id)
        except Exception as exc:
            log.exception("error handling %s from %s", type(request).__name__, self.peer)
            result = ErrorResponse(api_key=request.API_KEY, error_code=error_code(exc),
                                   error_message=f"{type(exc).__name__}: {exc}",
                                   correlation_id=request.correlation_id)
        if result is None:
            return
        if isinstance(result, m.Message):  # most requests: answered at once
            self._enqueue(request.API_KEY, request.correlation_id, result)
            return
        if isinstance(result, LongPoll):
            # answered by a plain call when the log grows: no task, no future
            self.parked = result
            self.slots.append((request.API_KEY, request.correlation_id, result))
            result.on_done = self._task_done
            return
        if asyncio.iscoroutine(result):
            task = asyncio.ensure_future(result)
            self.slots.append((request.API_KEY, request.correlation_id, task))
            task.add_done_callback(self._task_done)
            return
        self._enqueue(request.API_KEY, request.correlation_id, result)

    def _enqueue(self, api_key: int, corr_id: int, response: Any) -> None:
        if not self.slots and not self.write_paused and not self.corked:
            self._send(response)
        else:
            self.slots.append((api_key, corr_id, response))

    def _task_done(self, _task: asyncio.Future) -> None:
        self._drain()

    def _drain(self) -> None:
        slots = self.slots
        # While the transport is over its high-water mark, responses wait here
        # (file ranges, not bytes), so a client that stops reading costs at most
        # one response beyond the mark, however many requests it pipelined.
        while slots and not self.write_paused:
            api_key, corr_id, item = slots[0]
            if isinstance(item, _PENDING):
                if not item.done():
                    break
                slots.popleft()
                if item.cancelled():
                    continue
                exc = item.exception()
                if exc is not None:
                    if not isinstance(exc, ApiError):
                        log.error("error serving api %s for %s: %r", api_key, self.peer, exc)
                    response = ErrorResponse(api_key=api_key, error_code=error_code(exc),
                                             error_message=str(exc), correlation_id=corr_id)
                else:
                    response = item.result()
                    if response is None:
                        continue
            else:
                slots.popleft()
                response = item
            self._send(response)
        if self.conn.state.name == "CLOSED" and not slots and self.transport is not None:
            self.transport.close()
        self._maybe_resume()

    # ------------------------------------------------------------ output

    def _write(self, data) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _send(self, response: Any) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        try:
            parts = self.conn.send_parts(response)
        except Exception as exc:
            log.exception("cannot encode response for %s", self.peer)
            self.close(f"encoding failed: {exc}")
            return
        if len(parts) > 1 and sum(map(len, parts)) <= SMALL_RESPONSE:
            # One write, so one wake-up of the client, not one for the frame's
            # prefix and another for the records: what a consumer keeping up
            # is sent, a few records at a time. Larger ones go by sendfile.
            self.transport.write(b"".join([_read_part(p) for p in parts]))
            return
        for part in parts:
            if isinstance(part, _Ranges):
                for rng in part.ranges:
                    self._send_range(rng)
            elif isinstance(part, (bytes, bytearray, memoryview)):
                self.transport.write(part)
            else:  # a bare storage FileRange
                self._send_range(part)

    def _send_range(self, rng) -> None:
        """Send a file range: sendfile while the socket takes it, then queue the rest."""
        transport = self.transport
        pos, left = rng.position, rng.length
        if self.sock_fd >= 0 and transport.get_write_buffer_size() == 0:
            try:
                while left > 0:
                    sent = os.sendfile(self.sock_fd, rng.fileno(), pos, left)
                    if sent == 0:
                        break
                    pos += sent
                    left -= sent
            except (BlockingIOError, InterruptedError):
                pass
            except OSError as exc:
                self.close(f"sendfile failed: {exc}")
                return
        if left > 0:
            transport.write(os.pread(rng.fileno(), left, pos))


class Broker:
    """A Ferry broker: storage, handlers and the TCP server. Not thread-safe."""

    def __init__(self, config: BrokerConfig) -> None:
        self.config = config
        self.store: TopicStore | None = None
        self.handlers: Handlers | None = None
        self.server: asyncio.base_events.Server | None = None
        self.connections: set[BrokerProtocol] = set()
        self.requests_served = 0
        self.port = config.port
        self._stopped = asyncio.Event()
        self._signals = 0
        self._idle = asyncio.Event()
        self.groups: GroupHandlers | None = None
        self.maintenance: Maintenance | None = None

    async def start(self) -> None:
        """Open the data directory, recover the logs, and start listening."""
        cfg = self.config
        defaults = LogConfig.from_dict(cfg.topic_defaults())
        self.store = TopicStore(cfg.data_dir, defaults)
        if not self.store.was_clean:
            log.warning("previous shutdown was not clean: logs recovered")
        flusher = GroupCommitFlusher()
        self.groups = GroupHandlers(cfg, self.store, flusher, port=lambda: cfg.advertised_port or self.port)
        self.handlers = Handlers(
            cfg, self.store, waiters=LogWaiters(), flusher=flusher,
            port=lambda: cfg.advertised_port or self.port, groups=self.groups,
        )
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            lambda: BrokerProtocol(self), cfg.host, cfg.port, reuse_address=True, backlog=1024
        )
        self.port = self.server.sockets[0].getsockname()[1]
        self.groups.start()
        self.maintenance = Maintenance(cfg, self.store, flusher)  # retention, cleaner, flush.ms
        self.maintenance.start()
        log.info(
            "Ferry broker ready on %s:%d (data dir %s, %d topic(s))",
            cfg.host, self.port, cfg.data_dir,
            len([t for t in self.store.topics() if t not in INTERNAL_TOPICS]),
        )

    def connection_gone(self) -> None:
        if not self.connections:
            self._idle.set()

    def request_stop(self) -> None:
        self._stopped.set()

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_signal, sig)

    def _on_signal(self, sig: int) -> None:
        self._signals += 1
        if self._signals == 1:
            log.info("received %s: shutting down (send it again to exit at once)", signal.Signals(sig).name)
            self._stopped.set()
        else:
            log.warning("received %s again: exiting at once", signal.Signals(sig).name)
            logging.shutdown()
            os._exit(1)

    async def serve_forever(self) -> None:
        await self._stopped.wait()
        await self.shutdown()

    async def shutdown(self) -> None:
        """Stop accepting, finish in-flight requests within the bound, close the logs."""
        if self.server is None:
            return
        server, self.server = self.server, None
        server.close()
        self.handlers.closing = True
        self.handlers.waiters.notify_all()
        for conn in list(self.connections):
            conn.stop_reading()
        self.groups.close()  # answers JoinGroup/SyncGroup requests still waiting
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.shutdown_timeout_ms / 1000
        while any(c.slots for c in self.connections) and loop.time() < deadline:
            self.handlers.waiters.notify_all()
            await asyncio.sleep(0.01)
        for conn in list(self.connections):
            conn.close()
        if self.connections:
            self._idle.clear()
            try:
                await asyncio.wait_for(self._idle.wait(), 1.0)
            except asyncio.TimeoutError:
                pass
        if self.maintenance is not None:
            await self.maintenance.stop()
        self.handlers.flusher.close()
        self.store.close()
        log.info("Ferry broker stopped cleanly after %d request(s)", self.requests_served)


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def run(config: BrokerConfig) -> None:
    """Run a broker in the foreground until SIGINT or SIGTERM. Blocks."""
    configure_logging(config.log_level)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on POSIX
        uvloop = None

    async def main() -> None:
        broker = Broker(config)
        # before start(): a signal right after the "ready" line must already
        # mean a graceful shutdown
        broker.install_signal_handlers()
        await broker.start()
        await broker.serve_forever()

    if uvloop is not None:
        uvloop.run(main())
    else:
        asyncio.run(main())
