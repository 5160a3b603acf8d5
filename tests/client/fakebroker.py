"""A tiny in-memory Ferry broker for client tests that need no real broker.

It speaks the real protocol (asyncio server + the sans-IO
``Connection(Role.SERVER)``), answers each connection's requests in order, and
keeps each partition's log as a list of stored batches. Enough for Metadata
(with auto-creation), Produce, Fetch (with a short long-poll), ListOffsets,
CreateTopics, DeleteTopics and InitProducerId. Tests inject failures with
``hooks``: a callable per API key that may return a response, raise, or return
None to carry on; and with ``after_hooks``: called with the request and the
response that was computed (so a Produce was already appended), they may
return another response, ``DROP`` to send no answer at all (the connection
stays: an answer lost on the way), or raise ``Hangup`` to lose the answer
with the connection.

Idempotent producers get Kafka's rules (``PartitionLog.check_producer``): per
producer and partition the epoch and the last five batches; a repeat of one of
those is answered with its original base offset and error 0, a sequence that
does not follow with OUT_OF_ORDER_SEQUENCE_NUMBER, an older epoch with
INVALID_PRODUCER_EPOCH, a newer epoch must start at sequence 0, and an unknown
producer id with a non-zero sequence gets UNKNOWN_PRODUCER_ID
(``strict_unknown_producer``; the real broker accepts it, as Kafka 2.5+ does).
``forget_producers()`` loses that state, as a broker might.

``FakeBrokerThread`` runs it in its own event loop thread, so blocking
clients (which own a loop thread of their own) can talk to it.
"""

from __future__ import annotations

import asyncio
import threading
import time

from protocol import batch as batchcodec
from protocol.connection import (
    NEED_DATA,
    Connection,
    ConnectionClosed,
    ErrorResponse,
    Role,
    UnsupportedRequest,
)
from protocol.errors import ErrorCode, RemoteProtocolError
from protocol.handshake import handshake_response
from protocol.messages import (
    EARLIEST,
    LATEST,
    BrokerInfo,
    CreateTopicsRequest,
    CreateTopicsResponse,
    DeleteTopicsRequest,
    DeleteTopicsResponse,
    DescribeConfigsRequest,
    DescribeConfigsResponse,
    FetchPartitionResponse,
    FetchRequest,
    FetchResponse,
    Handshake,
    InitProducerIdRequest,
    InitProducerIdResponse,
    ListOffsetsPartitionResponse,
    ListOffsetsRequest,
    ListOffsetsResponse,
    MetadataRequest,
    MetadataResponse,
    PartitionMetadata,
    ProducePartitionResponse,
    ProduceRequest,
    ProduceResponse,
    TopicConfigs,
    TopicMetadata,
    TopicResult,
)

SEQ_MOD = 1 << 31
REMEMBERED = 5


class ProducerEntry:
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch
        self.batches: list[tuple[int, int, int]] = []  # (first_seq, last_seq, base_offset)


class PartitionLog:
    def __init__(self, strict_unknown_producer: bool = True) -> None:
        self.batches: list[bytearray] = []  # stored batches, base offsets patched
        self.next_offset = 0
        self.producers: dict[int, ProducerEntry] = {}
        self.strict_unknown_producer = strict_unknown_producer
        self.duplicates = 0  # repeats answered with their original offset

    def check_producer(self, header) -> tuple[int, int]:
        """(error code, original base offset of a duplicate or -1) for one batch."""
        pid = header.producer_id
        if pid < 0:
            return 0, -1
        first = header.base_sequence
        last = (first + header.last_offset_delta) % SEQ_MOD
        entry = self.producers.get(pid)
        if entry is None:
            if first != 0 and self.strict_unknown_producer:
                return int(ErrorCode.UNKNOWN_PRODUCER_ID), -1
            return 0, -1
        if header.producer_epoch < entry.epoch:
            return int(ErrorCode.INVALID_PRODUCER_EPOCH), -1
        if header.producer_epoch > entry.epoch:
            return (0 if first == 0 else int(ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER)), -1
        for f, l, base in entry.batches:
            if (f, l) == (first, last):
                return 0, base
        if not entry.batches or first != (entry.batches[-1][1] + 1) % SEQ_MOD:
            return int(ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER), -1
        return 0, -1

    def _remember(self, header, base: int) -> None:
        if header.producer_id < 0:
            return
        entry = self.producers.get(header.producer_id)
        if entry is None or entry.epoch != header.producer_epoch:
            entry = self.producers[header.producer_id] = ProducerEntry(header.producer_epoch)
        last = (header.base_sequence + header.last_offset_delta) % SEQ_MOD
        entry.batches.append((header.base_sequence, last, base))
        del entry.batches[:-REMEMBERED]

    def append(self, data) -> int:
        """Append the batches of ``data``; returns the base offset (the original one
        for a duplicate). Raises _Refused with the code of a refused batch."""
        base = self.next_offset
        for pos, size in batchcodec.iter_complete(data):
            header = batchcodec.verify(data, pos)
            code, original = self.check_producer(header)
            if code:
                raise _Refused(code)
            if original >= 0:
                self.duplicates += 1
                return original
            stored = bytearray(data[pos : pos + size])
            batchcodec.patch_base_offset(stored, 0, self.next_offset)
            self.batches.append(stored)
            self._remember(header, self.next_offset)
            self.next_offset += header.last_offset_delta + 1
        return base

    def read(self, offset: int, max_bytes: int) -> bytes:
        out = bytearray()
        for b in self.batches:
            base, _ = batchcodec.peek_prefix(b)
            header = batchcodec.parse_header(b)
            if header.next_offset <= offset:
                continue
            if out and len(out) + len(b) > max_bytes:
                break
            out += b
        return bytes(out)

    def offset_for_time(self, ts: int) -> tuple[int, int]:
        for b in self.batches:
            d = batchcodec.decode(b)
            for off, t in zip(d.offsets, d.timestamps):
                if t >= ts:
                    return off, t
        return -1, -1


class FakeBroker:
    def __init__(self, *, default_partitions: int = 1, auto_create: bool = True, node_id: int = 0,
                 strict_unknown_producer: bool = True, idempotence: bool = True) -> None:
        self.default_partitions = default_partitions
        self.auto_create = auto_create
        self.node_id = node_id
        self.strict_unknown_producer = strict_unknown_producer
        self.idempotence = idempotence  # False: answer InitProducerId as an old broker would
        self.topics: dict[str, list[PartitionLog]] = {}
        self.configs: dict[str, dict[str, str]] = {}
        self.hooks: dict[int, object] = {}
        self.after_hooks: dict[int, object] = {}
        self.next_producer_id = 1000
        self.producer_epochs: dict[int, int] = {}
        self.requests: list = []
        self.connections: set[asyncio.Transport] = set()
        self.server: asyncio.AbstractServer | None = None
        self.host = "127.0.0.1"
        self.port = 0
        self._data = asyncio.Event()

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    async def start(self, port: int = 0) -> "FakeBroker":
        self.server = await asyncio.start_server(self._serve, self.host, port)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for w in list(self.connections):
            w.close()
        if self.server is not None:
            await self.server.wait_closed()

    def drop_connections(self) -> None:
        for w in list(self.connections):
            w.transport.abort()

    def forget_producers(self) -> None:
        """Lose every partition's producer state (as a broker that lost its snapshots might)."""
        for parts in self.topics.values():
            for log in parts:
                log.producers.clear()

    def create(self, name: str, partitions: int | None = None) -> None:
        if name not in self.topics:
            self.topics[name] = [PartitionLog(self.strict_unknown_producer)
                                 for _ in range(partitions or self.default_partitions)]
            self.configs[name] = {"retention_ms": "604800000"}

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = Connection(Role.SERVER)
        self.connections.add(writer)
        try:
            while True:
                data = await reader.read(1 << 20)
                conn.receive_data(data)
                while True:
                    event = conn.next_event()
                    if event is NEED_DATA:
                        break
                    if isinstance(event, ConnectionClosed):
                        return
                    if isinstance(event, Handshake):
                        writer.write(conn.send(handshake_response(event, max_frame_size=1 << 26)))
                        continue
                    if isinstance(event, UnsupportedRequest):
                        writer.write(conn.send(ErrorResponse(
                            api_key=event.api_key, error_code=int(ErrorCode.UNSUPPORTED_VERSION),
                            correlation_id=event.correlation_id)))
                        continue
                    self.requests.append(event)
                    resp = await self._handle(event)
                    if resp is not None and resp is not DROP:
                        writer.write(conn.send(resp))
                        await writer.drain()
                if not data:
                    return
        except (ConnectionError, RemoteProtocolError, _Hangup, asyncio.CancelledError):
            pass
        finally:
            self.connections.discard(writer)
            writer.close()

    async def _handle(self, req):
        hook = self.hooks.get(type(req).API_KEY)
        if hook is not None:
            resp = hook(req)
            if asyncio.iscoroutine(resp):
                resp = await resp
            if resp is not None:
                return resp
        resp = await self._default(req)
        after = self.after_hooks.get(type(req).API_KEY)
        if after is not None:
            changed = after(req, resp)
            if asyncio.iscoroutine(changed):
                changed = await changed
            if changed is not None:
                return changed
        return resp

    async def _default(self, req):
        if isinstance(req, InitProducerIdRequest):
            return self._init_producer_id(req)
        if isinstance(req, MetadataRequest):
            return self._metadata(req)
        if isinstance(req, ProduceRequest):
            return self._produce(req)
        if isinstance(req, FetchRequest):
            return await self._fetch(req)
        if isinstance(req, ListOffsetsRequest):
            return self._list_offsets(req)
        if isinstance(req, CreateTopicsRequest):
            out = []
            for t in req.topics:
                if t.name in self.topics:
                    out.append(TopicResult(t.name, int(ErrorCode.TOPIC_ALREADY_EXISTS), "exists"))
                else:
                    self.create(t.name, t.num_partitions if t.num_partitions > 0 else None)
                    self.configs[t.name].update(t.configs)
                    out.append(TopicResult(t.name))
            return CreateTopicsResponse(topics=tuple(out), correlation_id=req.correlation_id)
        if isinstance(req, DeleteTopicsRequest):
            out = []
            for name in req.topics:
                if self.topics.pop(name, None) is None:
                    out.append(TopicResult(name, int(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)))
                else:
                    out.append(TopicResult(name))
            return DeleteTopicsResponse(topics=tuple(out), correlation_id=req.correlation_id)
        if isinstance(req, DescribeConfigsRequest):
            return DescribeConfigsResponse(topics=tuple(
                TopicConfigs(n, configs=self.configs.get(n, {})) if n in self.topics
                else TopicConfigs(n, int(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION))
                for n in req.topics
            ), correlation_id=req.correlation_id)
        return ErrorResponse(api_key=type(req).API_KEY, error_code=int(ErrorCode.UNSUPPORTED_VERSION),
                             correlation_id=req.correlation_id)

    def _metadata(self, req: MetadataRequest) -> MetadataResponse:
        names = list(self.topics) if req.topics is None else list(req.topics)
        out = []
        for name in names:
            if name not in self.topics and req.allow_auto_topic_creation and self.auto_create:
                self.create(name)
            parts = self.topics.get(name)
            if parts is None:
                out.append(TopicMetadata(name, int(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)))
            else:
                out.append(TopicMetadata(name, partitions=tuple(
                    PartitionMetadata(i, leader=self.node_id) for i in range(len(parts)))))
        return MetadataResponse(
            brokers=(BrokerInfo(self.node_id, self.host, self.port),), controller_id=self.node_id,
            topics=tuple(out), correlation_id=req.correlation_id,
        )

    def _init_producer_id(self, req: InitProducerIdRequest):
        if not self.idempotence:
            return ErrorResponse(api_key=req.API_KEY, error_code=int(ErrorCode.UNSUPPORTED_VERSION),
                                 correlation_id=req.correlation_id)
        if req.producer_id < 0:
            pid, epoch = self.next_producer_id, 0
            self.next_producer_id += 1
        else:
            pid = req.producer_id
            latest = self.producer_epochs.get(pid, req.producer_epoch)
            if req.producer_epoch < latest:
                return InitProducerIdResponse(error_code=int(ErrorCode.PRODUCER_FENCED),
                                              correlation_id=req.correlation_id)
            epoch = req.producer_epoch + 1
        self.producer_epochs[pid] = epoch
        return InitProducerIdResponse(producer_id=pid, producer_epoch=epoch, correlation_id=req.correlation_id)

    def _produce(self, req: ProduceRequest):
        out = []
        for p in req.partitions:
            if p.topic not in self.topics and self.auto_create:
                self.create(p.topic)
            parts = self.topics.get(p.topic)
            if parts is None or p.partition >= len(parts):
                out.append(ProducePartitionResponse(p.topic, p.partition, int(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)))
                continue
            try:
                base = parts[p.partition].append(p.records)
            except _Refused as refused:
                out.append(ProducePartitionResponse(p.topic, p.partition, refused.code))
                continue
            out.append(ProducePartitionResponse(p.topic, p.partition, base_offset=base))
        self._data.set()
        self._data = asyncio.Event()
        if req.acks == 0:
            return None
        return ProduceResponse(partitions=tuple(out), correlation_id=req.correlation_id)

    async def _fetch(self, req: FetchRequest) -> FetchResponse:
        deadline = time.monotonic() + req.max_wait_ms / 1000
        while True:
            out = []
            total = 0
            for p in req.partitions:
                parts = self.topics.get(p.topic)
                if parts is None or p.partition >= len(parts):
                    out.append(FetchPartitionResponse(p.topic, p.partition, int(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)))
                    continue
                log = parts[p.partition]
                if p.fetch_offset > log.next_offset or p.fetch_offset < 0:
                    out.append(FetchPartitionResponse(p.topic, p.partition, int(ErrorCode.OFFSET_OUT_OF_RANGE),
                                                      high_watermark=log.next_offset, log_start_offset=0))
                    continue
                data = log.read(p.fetch_offset, p.max_bytes)
                total += len(data)
                out.append(FetchPartitionResponse(p.topic, p.partition, high_watermark=log.next_offset,
                                                  log_start_offset=0, records=data))
            remaining = deadline - time.monotonic()
            if total >= req.min_bytes or remaining <= 0:
                return FetchResponse(partitions=tuple(out), correlation_id=req.correlation_id)
            ev = self._data
            try:
                await asyncio.wait_for(ev.wait(), remaining)
            except asyncio.TimeoutError:
                pass

    def _list_offsets(self, req: ListOffsetsRequest) -> ListOffsetsResponse:
        out = []
        for p in req.partitions:
            parts = self.topics.get(p.topic)
            if parts is None or p.partition >= len(parts):
                out.append(ListOffsetsPartitionResponse(p.topic, p.partition, int(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)))
                continue
            log = parts[p.partition]
            if p.timestamp == LATEST:
                off, ts = log.next_offset, -1
            elif p.timestamp == EARLIEST:
                off, ts = 0, -1
            else:
                off, ts = log.offset_for_time(p.timestamp)
            out.append(ListOffsetsPartitionResponse(p.topic, p.partition, timestamp=ts, offset=off))
        return ListOffsetsResponse(partitions=tuple(out), correlation_id=req.correlation_id)


DROP = object()  # an after-hook's answer: send nothing back


class _Refused(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class _Hangup(Exception):
    """Raised by a hook to make the fake broker drop the connection."""


Hangup = _Hangup


class FakeBrokerThread:
    """A FakeBroker serving from its own event loop thread."""

    def __init__(self, **kwargs) -> None:
        self.loop = asyncio.new_event_loop()
        self.broker = FakeBroker(**kwargs)
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.call(self.broker.start())

    def call(self, coro, timeout: float = 10.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def run(self, fn, *args, timeout: float = 10.0):
        async def wrapper():
            return fn(*args)
        return self.call(wrapper(), timeout)

    @property
    def bootstrap(self) -> str:
        return self.broker.bootstrap

    def stop(self) -> None:
        self.call(self.broker.stop())

        async def cancel_rest():
            rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in rest:
                t.cancel()
            await asyncio.gather(*rest, return_exceptions=True)

        self.call(cancel_rest())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()
