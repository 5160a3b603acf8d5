"""Request handlers: one method per API, from a decoded request to its response.

Handlers run on the event loop thread. Most answer at once and return the
response message; those that must wait (a fetch long-polling for data, a
produce with acks=all waiting for its fsync) return a ``LongPoll`` or a
coroutine, which the connection waits for while keeping responses in
request order. A produce with acks=0 returns None: no response is sent.

Errors are answered per topic or partition with the code of the exception
(``ApiError.code``); a storage failure is STORAGE_ERROR. Nothing here decodes
a record: a produce is checked batch by batch (header and CRC) and stored as
received, a fetch returns file ranges.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, Awaitable, Callable, NamedTuple

from protocol import batch as batchfmt
from protocol import messages as m
from protocol.errors import (
    ApiError,
    ErrorCode,
    InvalidRequestError,
    InvalidRequiredAcksError,
    InvalidTopicError,
    UnknownTopicOrPartitionError,
    UnsupportedVersionError,
)

from .config import BrokerConfig
from .flusher import GroupCommitFlusher
from .storage import StorageError, TopicStore
from .waiters import LogWaiters, LongPoll

if TYPE_CHECKING:
    from .group.handlers import GroupHandlers

log = logging.getLogger("ferry.broker.handlers")

# Topics the broker itself writes (committed offsets); clients may read them.
INTERNAL_TOPICS = frozenset({"__consumer_offsets"})

Result = m.Message | LongPoll | Awaitable[m.Message | None] | None


class ClientInfo(NamedTuple):
    """Who sent a request: the client id of its connection's handshake, and its address."""

    client_id: str = ""
    host: str = ""


def error_code(exc: BaseException) -> int:
    """The wire error code for an exception raised while serving a request."""
    if isinstance(exc, ApiError):
        return int(exc.code)
    if isinstance(exc, StorageError):
        return int(ErrorCode.STORAGE_ERROR)
    return int(ErrorCode.UNKNOWN_SERVER_ERROR)


class Handlers:
    def __init__(
        self,
        config: BrokerConfig,
        store: TopicStore,
        *,
        waiters: LogWaiters | None = None,
        flusher: GroupCommitFlusher | None = None,
        port: Callable[[], int] | None = None,
        clock: Callable[[], float] = time.time,
        groups: "GroupHandlers | None" = None,
    ) -> None:
        self.config = config
        self.store = store
        self.waiters = waiters or LogWaiters()
        self.flusher = flusher or GroupCommitFlusher()
        self._port = port or (lambda: config.port)
        self.clock = clock
        self.closing = False  # set by shutdown: long polls answer at once
        self._table: dict[type, Callable[[Any], Result]] = {
            m.MetadataRequest: self.metadata,
            m.CreateTopicsRequest: self.create_topics,
            m.DeleteTopicsRequest: self.delete_topics,
            m.DescribeConfigsRequest: self.describe_configs,
            m.ProduceRequest: self.produce,
            m.FetchRequest: self.fetch,
            m.ListOffsetsRequest: self.list_offsets,
            m.InitProducerIdRequest: self.init_producer_id,
            m.AlterConfigsRequest: self.alter_configs,
        }
        # The group APIs (broker/group/handlers.py) also take the ClientInfo.
        self.groups = groups
        self._group_table = groups.table() if groups is not None else {}

    def handle(self, request: m.Message, client: ClientInfo | None = None) -> Result:
        """The response to ``request``, a coroutine producing it, or None (acks=0).

        ``client`` is who sent it; the group APIs record it for each member.
        """
        group_api = self._group_table.get(type(request))
        if group_api is not None:
            return group_api(request, client or ClientInfo())
        handler = self._table.get(type(request))
        if handler is None:
            raise UnsupportedVersionError(f"this broker does not serve {type(request).__name__}")
        return handler(request)

    # ------------------------------------------------------------ topics

    def _auto_create(self, name: str) -> bool:
        """Create ``name`` if auto-creation is on. True if it exists afterwards."""
        if self.store.has_topic(name):
            return True
        if not self.config.auto_create_topics:
            return False
        try:
            self.store.create_topic(name, self.config.default_partitions)
            log.info("auto-created topic %s with %d partition(s)", name, self.config.default_partitions)
        except ApiError as exc:
            if not self.store.has_topic(name):
                raise exc
        return True

    def metadata(self, req: m.MetadataRequest) -> m.MetadataResponse:
        names = sorted(self.store.topics()) if req.topics is None else list(req.topics)
        topics = []
        for name in names:
            try:
                if req.topics is not None and req.allow_auto_topic_creation:
                    exists = self._auto_create(name)
                else:
                    exists = self.store.has_topic(name)
                if not exists:
                    raise UnknownTopicOrPartitionError()
                info = self.store.topic(name)
            except (ApiError, StorageError) as exc:
                topics.append(m.TopicMetadata(name=name, error_code=error_code(exc)))
                continue
            parts = tuple(
                m.PartitionMetadata(partition=p, leader=self.config.broker_id)
                for p in range(info.partitions)
            )
            topics.append(
                m.TopicMetadata(name=name, internal=name in INTERNAL_TOPICS, partitions=parts)
            )
        broker = m.BrokerInfo(node_id=self.config.broker_id, host=self.config.advertised, port=self._port())
        return m.MetadataResponse(
            brokers=(broker,),
            controller_id=self.config.broker_id,
            topics=tuple(topics),
            correlation_id=req.correlation_id,
        )

    def create_topics(self, req: m.CreateTopicsRequest) -> m.CreateTopicsResponse:
        results = []
        for t in req.topics:
            try:
                n = t.num_partitions if t.num_partitions != -1 else self.config.default_partitions
                if req.validate_only:
                    self.store.validate_new_topic(t.name, n, dict(t.configs))
                else:
                    self.store.create_topic(t.name, n, dict(t.configs))
                    log.info("created topic %s with %d partition(s)", t.name, n)
                results.append(m.TopicResult(name=t.name))
            except (ApiError, StorageError) as exc:
                results.append(m.TopicResult(name=t.name, error_code=error_code(exc), error_message=str(exc)))
        return m.CreateTopicsResponse(topics=tuple(results), correlation_id=req.correlation_id)

    def delete_topics(self, req: m.DeleteTopicsRequest) -> m.DeleteTopicsResponse:
        results = []
        for name in req.topics:
            try:
                info = self.store.topic(name)
                if name in INTERNAL_TOPICS:
                    raise InvalidTopicError(f"{name} is an internal topic and cannot be deleted")
                self.store.delete_topic(name)
                log.info("deleted topic %s", name)
                for p in range(info.partitions):
                    self.waiters.notify((name, p))
                results.append(m.TopicResult(name=name))
            except (ApiError, StorageError) as exc:
                results.append(m.TopicResult(name=name, error_code=error_code(exc), error_message=str(exc)))
        return m.DeleteTopicsResponse(topics=tuple(results), correlation_id=req.correlation_id)

    def describe_configs(self, req: m.DescribeConfigsRequest) -> m.DescribeConfigsResponse:
        out = []
        for name in req.topics:
            try:
                info = self.store.topic(name)
                out.append(m.TopicConfigs(name=name, configs=info.config.to_dict()))
            except (ApiError, StorageError) as exc:
                out.append(m.TopicConfigs(name=name, error_code=error_code(exc), error_message=str(exc)))
        return m.DescribeConfigsResponse(topics=tuple(out), correlation_id=req.correlation_id)

    def alter_configs(self, req: m.AlterConfigsRequest) -> m.AlterConfigsResponse:
        results = []
        for t in req.topics:
            try:
                self.store.alter_config(t.name, dict(t.configs), validate_only=req.validate_only)
                if not req.validate_only:
                    log.info("altered the config of topic %s: %s", t.name, dict(t.configs))
                results.append(m.TopicResult(name=t.name))
            except (ApiError, StorageError) as exc:
                results.append(m.TopicResult(name=t.name, error_code=error_code(exc), error_message=str(exc)))
        return m.AlterConfigsResponse(topics=tuple(results), correlation_id=req.correlation_id)

    # ------------------------------------------------------------ producer ids

    def init_producer_id(self, req: m.InitProducerIdRequest) -> m.InitProducerIdResponse:
        try:
            if req.transactional_id is not None:
                raise InvalidRequestError("transactions are not supported; send transactional_id nil")
            pid, epoch = self.store.producer_ids.init_producer(req.producer_id, req.producer_epoch)
        except (ApiError, StorageError, OSError) as exc:
            code = int(ErrorCode.STORAGE_ERROR) if isinstance(exc, OSError) else error_code(exc)
            return m.InitProducerIdResponse(error_code=code, correlation_id=req.correlation_id)
        return m.InitProducerIdResponse(producer_id=pid, producer_epoch=epoch, correlation_id=req.correlation_id)

    # ------------------------------------------------------------ produce

    def produce(self, req: m.ProduceRequest) -> Result:
        if req.acks not in (0, 1, -1):
            raise InvalidRequiredAcksError()
        results = []
        synced = []
        flush_due = []  # logs that reached their topic's flush.messages
        for p in req.partitions:
            try:
                if p.topic in INTERNAL_TOPICS:
                    raise InvalidTopicError(f"{p.topic} is an internal topic: only the broker writes to it")
                if not self._auto_create(p.topic):
                    raise UnknownTopicOrPartitionError()
                plog = self.store.partition(p.topic, p.partition)
                batches = batchfmt.split_batches(p.records)
                res = plog.append(p.records, batches)  # a retried batch: its original offsets
                if not res.duplicate:
                    self.waiters.notify((p.topic, p.partition))
                synced.append(plog)
                limit = plog.config.flush_interval_messages
                if 0 < limit <= plog.unflushed_messages:
                    flush_due.append(plog)
                results.append(
                    m.ProducePartitionResponse(
                        topic=p.topic,
                        partition=p.partition,
                        base_offset=res.base_offset,
                        log_append_time=res.log_append_time,
                        log_start_offset=plog.log_start_offset,
                    )
                )
            except (ApiError, StorageError) as exc:
                if isinstance(exc, StorageError):
                    log.error("append to %s-%d failed: %s", p.topic, p.partition, exc)
                results.append(
                    m.ProducePartitionResponse(
                        topic=p.topic, partition=p.partition, error_code=error_code(exc), error_message=str(exc)
                    )
                )
        if req.acks == 0:
            if flush_due:
                asyncio.ensure_future(self.flusher.sync(flush_due)).add_done_callback(_log_flush_failure)
            return None
        if req.acks == -1 and synced:
            return self._produce_synced(req, results, synced)
        if flush_due:
            # flush.messages reached: answer once fsynced, as Kafka flushes in its append path.
            return self._produce_synced(req, results, flush_due)
        return m.ProduceResponse(partitions=tuple(results), correlation_id=req.correlation_id)

    async def _produce_synced(self, req, results, synced) -> m.ProduceResponse:
        try:
            await self.flusher.sync(synced)
        except Exception as exc:
            code = error_code(exc) if not isinstance(exc, OSError) else int(ErrorCode.STORAGE_ERROR)
            results = [
                r if r.error_code else m.ProducePartitionResponse(
                    topic=r.topic, partition=r.partition, error_code=code, error_message=f"fsync failed: {exc}"
                )
                for r in results
            ]
        return m.ProduceResponse(partitions=tuple(results), correlation_id=req.correlation_id)

    # ------------------------------------------------------------ fetch

    def _read_all(self, req: m.FetchRequest) -> tuple[list[m.FetchPartitionResponse], int]:
        out = []
        total = 0
        budget = req.max_bytes
        for fp in req.partitions:
            try:
                plog = self.store.partition(fp.topic, fp.partition)
                limit = min(fp.max_bytes, budget)
                # The storage read returns at least one whole batch even past the
                # limit, as Kafka does for the first partition with data, so a
                # large batch can never stall a consumer; later partitions keep
                # to what is left of max_bytes.
                res = plog.read(fp.fetch_offset, max(limit, 1))
                ranges: list = list(res.ranges)
                size = res.size
                if total and size > budget:
                    ranges, size = [], 0
                total += size
                budget = max(0, budget - size)
                out.append(
                    m.FetchPartitionResponse(
                        topic=fp.topic,
                        partition=fp.partition,
                        high_watermark=res.high_watermark,
                        log_start_offset=res.log_start_offset,
                        records=_Ranges(ranges, size),
                    )
                )
            except (ApiError, StorageError) as exc:
                hw = ls = -1
                try:
                    plog = self.store.partition(fp.topic, fp.partition)
                    hw, ls = plog.log_end_offset, plog.log_start_offset
                except Exception:
                    pass
                out.append(
                    m.FetchPartitionResponse(
                        topic=fp.topic, partition=fp.partition, error_code=error_code(exc),
                        high_watermark=hw, log_start_offset=ls,
                    )
                )
        return out, total

    def fetch(self, req: m.FetchRequest) -> Result:
        parts, total = self._read_all(req)
        if total >= req.min_bytes or req.max_wait_ms <= 0 or any(p.error_code for p in parts):
            return m.FetchResponse(partitions=tuple(parts), correlation_id=req.correlation_id)

        def read(final: bool) -> m.FetchResponse | None:
            parts, total = self._read_all(req)
            if final or self.closing or total >= req.min_bytes or any(p.error_code for p in parts):
                return m.FetchResponse(partitions=tuple(parts), correlation_id=req.correlation_id)
            return None

        # Parked now, before returning: an append that lands next must wake it.
        return self.waiters.park(((p.topic, p.partition) for p in req.partitions), read,
                                 req.max_wait_ms / 1000)

    # ------------------------------------------------------------ offsets

    def list_offsets(self, req: m.ListOffsetsRequest) -> m.ListOffsetsResponse:
        out = []
        for lp in req.partitions:
            try:
                plog = self.store.partition(lp.topic, lp.partition)
                if lp.timestamp == m.LATEST:
                    offset, ts = plog.log_end_offset, -1
                elif lp.timestamp == m.EARLIEST:
                    offset, ts = plog.log_start_offset, -1
                else:
                    found = plog.offset_for_timestamp(lp.timestamp)
                    offset, ts = found if found is not None else (-1, -1)
                out.append(m.ListOffsetsPartitionResponse(lp.topic, lp.partition, timestamp=ts, offset=offset))
            except (ApiError, StorageError) as exc:
                out.append(m.ListOffsetsPartitionResponse(lp.topic, lp.partition, error_code=error_code(exc)))
        return m.ListOffsetsResponse(partitions=tuple(out), correlation_id=req.correlation_id)


def _log_flush_failure(task: asyncio.Future) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("flush.messages flush failed: %s", task.exception())


class _Ranges:
    """Fetch records for one partition: file ranges that the server sends with sendfile."""

    __slots__ = ("ranges", "size")

    def __init__(self, ranges: list, size: int) -> None:
        self.ranges = ranges
        self.size = size

    def __len__(self) -> int:
        return self.size


__all__ = ["Handlers", "error_code", "InvalidTopicError"]
