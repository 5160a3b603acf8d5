"""The asyncio producer and its sender task.

Theory of operation
-------------------
``send`` picks the partition (explicit, murmur2 of the key, or the topic's
sticky partition) and appends to the ``RecordAccumulator``; that is all the
per-record work. The ``Sender`` task drains sealed batches, groups them per
leader into ProduceRequests of at most ``max_request_size`` bytes (one batch
per partition per request, so each batch gets its own base offset), writes
them with up to ``max_in_flight_requests_per_connection`` awaiting answers per
broker, and completes each batch from its partition's answer.

Retriable errors (lost connection, timeout, stale leader, unknown partition
right after auto-creation ...) put the batch back, after ``retry_backoff_ms``,
ahead of newer batches of its partition, up to ``retries`` times and while the
batch is younger than ``delivery_timeout_ms``; errors that mean the metadata is
stale also ask for a refresh. Other errors fail the batch with the protocol's
exception class for the code (``ApiError.for_code``).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import defaultdict, deque
from functools import partial
from typing import Any, Callable, Iterable

from protocol.batch import Compression
from protocol.errors import (
    ApiError,
    ErrorCode,
    NetworkError,
)
from protocol.messages import ProducePartition, ProduceRequest

from .accumulator import ProducerBatch, RecordAccumulator, RecordFuture
from .cluster import Cluster
from .errors import FerryTimeoutError, IllegalStateError, NoBrokersAvailable
from .partitioner import StickyPartitioner, partition_for_key
from .structs import RecordMetadata

log = logging.getLogger(__name__)

_STALE_METADATA = {
    ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
    ErrorCode.NOT_LEADER_OR_FOLLOWER,
    ErrorCode.LEADER_NOT_AVAILABLE,
    ErrorCode.NETWORK_EXCEPTION,
}


def parse_acks(acks: "int | str") -> int:
    """0, 1, -1 or "all" (= -1); raises ValueError otherwise."""
    if acks == "all":
        return -1
    try:
        value = int(acks)
    except (TypeError, ValueError):
        raise ValueError(f"acks must be 0, 1, -1 or 'all', not {acks!r}") from None
    if value not in (0, 1, -1):
        raise ValueError(f"acks must be 0, 1, -1 or 'all', not {acks!r}")
    return value


def to_bytes(data: Any, what: str) -> bytes | None:
    """Accept bytes-like or None; anything else needs a serializer."""
    if data is None or type(data) is bytes:
        return data
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    raise TypeError(
        f"{what} must be bytes or None, not {type(data).__name__}: pass a {what}_serializer"
    )


class AsyncProducer:
    """Sends records to Ferry from asyncio code. Mirrors aiokafka's AIOKafkaProducer.

    ``await start()`` connects (NoBrokersAvailable if no broker answers),
    ``await send(...)`` returns an awaitable RecordFuture, ``await stop()``
    delivers what is buffered and closes. Also an async context manager.
    """

    def __init__(
        self,
        *,
        bootstrap_servers: "str | Iterable[str]" = "localhost:9092",
        client_id: str | None = None,
        acks: "int | str" = 1,
        linger_ms: float = 5,
        batch_size: int = 65536,
        buffer_memory: int = 33554432,
        compression_type: str | None = None,
        key_serializer: Callable[[Any], bytes] | None = None,
        value_serializer: Callable[[Any], bytes] | None = None,
        partitioner: Callable | None = None,
        retries: int = 2147483647,
        retry_backoff_ms: int = 100,
        request_timeout_ms: int = 30000,
        delivery_timeout_ms: int = 120000,
        max_block_ms: int = 60000,
        max_request_size: int = 1048576,
        max_in_flight_requests_per_connection: int = 5,
        metadata_max_age_ms: int = 300000,
        enable_idempotence: bool = False,
    ) -> None:
        if enable_idempotence:
            raise ValueError("enable_idempotence is not supported yet")
        if max_in_flight_requests_per_connection < 1:
            raise ValueError("max_in_flight_requests_per_connection must be at least 1")
        self.acks = parse_acks(acks)
        self.compression = Compression.parse(compression_type)
        self.client_id = client_id or "ferry-producer"
        self._key_serializer = key_serializer
        self._value_serializer = value_serializer
        self._partitioner = partitioner
        self._max_block = max_block_ms / 1000
        self._request_timeout_ms = request_timeout_ms
        self.cluster = Cluster(
            bootstrap_servers, client_id=self.client_id, request_timeout_ms=request_timeout_ms,
            retry_backoff_ms=retry_backoff_ms, metadata_max_age_ms=metadata_max_age_ms,
        )
        self._counts = self.cluster.metadata.partition_counts
        self._sticky = StickyPartitioner()
        self._accumulator = RecordAccumulator(
            batch_size=batch_size, linger_ms=linger_ms, buffer_memory=buffer_memory,
            max_request_size=max_request_size, on_seal=self._on_seal,
        )
        self._sender = Sender(
            self.cluster, self._accumulator, acks=self.acks, compression=self.compression,
            retries=retries, retry_backoff_ms=retry_backoff_ms,
            request_timeout_ms=request_timeout_ms, delivery_timeout_ms=delivery_timeout_ms,
            max_request_size=max_request_size,
            max_in_flight=max_in_flight_requests_per_connection,
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_ident: int | None = None
        self._started = False
        self._closed = False

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Connect to the cluster and start the sender. Raises NoBrokersAvailable."""
        if self._started:
            return
        self._loop = asyncio.get_running_loop()
        self._loop_ident = threading.get_ident()
        self._accumulator.wakeup = self._wakeup
        self._accumulator.block_in_thread = lambda: threading.get_ident() != self._loop_ident
        await self.cluster.start()
        self._sender.start()
        self._started = True

    async def stop(self, timeout: float | None = None) -> None:
        """Deliver buffered records (waiting up to ``timeout`` s, None: as long as
        delivery takes) then close. Records still undelivered fail with
        IllegalStateError. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._accumulator.close()
        if self._started:
            try:
                await self.flush(timeout)
            except FerryTimeoutError:
                log.warning("producer closed with undelivered records after %s s", timeout)
            await self._sender.stop()
        self._accumulator.fail_all(IllegalStateError("the producer was closed before delivery"))
        await self.cluster.close()

    close = stop

    async def __aenter__(self) -> "AsyncProducer":
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    def _wakeup(self) -> None:
        if threading.get_ident() == self._loop_ident:
            self._sender.wake.set()
        else:
            self._loop.call_soon_threadsafe(self._sender.wake.set)

    def _on_seal(self, topic: str, partition: int) -> None:
        n = self._counts.get(topic)
        if n:
            self._sticky.batch_sealed(topic, partition, n)

    # ------------------------------------------------------------ sending

    def _choose_partition(self, topic: str, key: bytes | None, n: int) -> int:
        if self._partitioner is not None:
            parts = list(range(n))
            leaders = self.cluster.metadata.leaders.get(topic, {})
            available = [p for p in parts if leaders.get(p, -1) >= 0]
            return self._partitioner(key, parts, available)
        if key is None:
            return self._sticky.partition(topic, n)
        return partition_for_key(key, n)

    def _serialize(self, topic: str, key, value) -> tuple:
        if self._key_serializer is not None and key is not None:
            key = self._key_serializer(key)
        if self._value_serializer is not None:
            value = self._value_serializer(value)
        if key is not None and type(key) is not bytes:
            key = to_bytes(key, "key")
        if value is not None and type(value) is not bytes:
            value = to_bytes(value, "value")
        return key, value

    def _check_open(self) -> None:
        if self._closed:
            raise IllegalStateError("cannot send: the producer is closed")
        if not self._started:
            raise IllegalStateError("cannot send: call await start() first")

    async def send(self, topic: str, value=None, key=None, partition: int | None = None,
                   timestamp_ms: int | None = None, headers=None) -> RecordFuture:
        """Queue one record; returns its RecordFuture (await it for RecordMetadata).

        Waits for the topic's metadata and for buffer room, each up to
        max_block_ms (FerryTimeoutError). Raises MessageTooLargeError for a
        record over max_request_size, IllegalStateError when closed.
        """
        self._check_open()
        key, value = self._serialize(topic, key, value)
        n = self._counts.get(topic)
        if n is None:
            n = await self.partitions_count(topic)
        if partition is None:
            partition = self._choose_partition(topic, key, n)
        elif not 0 <= partition < n:
            raise ValueError(f"topic {topic!r} has partitions 0-{n - 1}, not {partition}")
        acc = self._accumulator
        size = acc.record_size(key, value, headers)
        acc.check_size(size)
        if not acc.has_room(size):
            await acc.wait_for_room(size, self._max_block)
        return acc.append(topic, partition, key, value, timestamp_ms, headers)

    async def send_and_wait(self, topic: str, value=None, key=None, partition: int | None = None,
                            timestamp_ms: int | None = None, headers=None) -> RecordMetadata:
        """``send`` and await delivery; returns the RecordMetadata."""
        fut = await self.send(topic, value, key, partition, timestamp_ms, headers)
        return await fut

    async def partitions_count(self, topic: str) -> int:
        """The topic's partition count, waiting (up to max_block_ms) and auto-creating."""
        n = self._counts.get(topic)
        if n is None:
            self.cluster.tracked.add(topic)
            n = await self.cluster.wait_for_topic(topic, self._max_block, auto_create=True)
        return n

    async def partitions_for(self, topic: str) -> set[int]:
        """The topic's partition numbers (see ``partitions_count``)."""
        return set(range(await self.partitions_count(topic)))

    async def flush(self, timeout: float | None = None) -> None:
        """Send every buffered record now and wait for all to complete.

        Raises FerryTimeoutError if they are not all done within ``timeout`` s.
        """
        self._accumulator.seal_all()
        batches = self._accumulator.incomplete()
        if not batches:
            return
        futs = [b.async_done() for b in batches]
        done, pending = await asyncio.wait(futs, timeout=timeout)
        if pending:
            raise FerryTimeoutError(
                f"flush: {len(pending)} batch(es) not delivered within {timeout * 1000:.0f} ms"
            )


class Sender:
    """Moves sealed batches to the brokers (see the module doc). One task per producer."""

    def __init__(
        self, cluster: Cluster, accumulator: RecordAccumulator, *, acks: int, compression: Compression,
        retries: int, retry_backoff_ms: int, request_timeout_ms: int, delivery_timeout_ms: int,
        max_request_size: int, max_in_flight: int,
    ) -> None:
        self.cluster = cluster
        self.acc = accumulator
        self.acks = acks
        self.compression = compression
        self.retries = retries
        self.retry_backoff = retry_backoff_ms / 1000
        self.request_timeout_ms = request_timeout_ms
        self.delivery_timeout = delivery_timeout_ms / 1000
        self.max_request_size = max_request_size
        self.max_in_flight = max_in_flight
        self.wake = asyncio.Event()
        self._semaphores: dict[int, asyncio.Semaphore] = {}
        # partitions with batches waiting out a retry backoff: newer batches of
        # the same partition queue behind them, so order survives a retry
        self._held: dict[tuple[str, int], list[ProducerBatch]] = {}
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="ferry-sender")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _run(self) -> None:
        acc = self.acc
        while True:
            self.wake.clear()
            batches, next_due = acc.drain()
            if batches:
                try:
                    await self._send_ready(batches)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # a bug here must not strand the batches
                    log.exception("producer sender failed")
                    for b in batches:
                        if not b.done:
                            acc.completed(b, error=exc)
                continue
            if next_due is None:
                await self.wake.wait()
            else:
                try:
                    async with asyncio.timeout(next_due):
                        await self.wake.wait()
                except TimeoutError:
                    pass

    async def _send_ready(self, batches: list[ProducerBatch]) -> None:
        meta = self.cluster.metadata
        now = time.monotonic()
        # node -> partition -> its batches, oldest first
        by_node: dict[int, dict[tuple[str, int], deque[ProducerBatch]]] = defaultdict(dict)
        no_leader: list[ProducerBatch] = []
        for b in batches:
            tp = (b.topic, b.partition)
            held = self._held.get(tp)
            if held is not None:
                held.append(b)
                continue
            if now - b.created > self.delivery_timeout:
                self._expire(b)
                continue
            leader = meta.leader_for(b.topic, b.partition)
            if leader is None:
                no_leader.append(b)
                continue
            queues = by_node[leader]
            q = queues.get(tp)
            if q is None:
                q = queues[tp] = deque()
            q.append(b)
        if no_leader:
            self.cluster.request_update()
            self._hold(no_leader)
        for node, queues in by_node.items():
            while queues:
                await self._send_request(node, self._take_request(queues))

    def _take_request(self, queues: dict[tuple[str, int], deque]) -> list[ProducerBatch]:
        """A request's worth: the oldest batch of each partition, up to max_request_size
        bytes (at least one batch). Emptied queues are removed."""
        group: list[ProducerBatch] = []
        total = 0
        for tp in list(queues):
            q = queues[tp]
            data = q[0].encode(self.compression)
            if group and total + len(data) > self.max_request_size:
                break
            group.append(q.popleft())
            total += len(data)
            if not q:
                del queues[tp]
        return group

    def _semaphore(self, node: int) -> asyncio.Semaphore:
        sem = self._semaphores.get(node)
        if sem is None:
            sem = self._semaphores[node] = asyncio.Semaphore(self.max_in_flight)
        return sem

    async def _send_request(self, node: int, group: list[ProducerBatch]) -> None:
        sem = self._semaphore(node)
        await sem.acquire()
        try:
            conn = await self.cluster.connection(node)
            request = ProduceRequest(
                acks=self.acks, timeout_ms=self.request_timeout_ms,
                partitions=tuple(ProducePartition(b.topic, b.partition, b.data) for b in group),
            )
            fut = await conn.send(request)
        except (NetworkError, NoBrokersAvailable) as exc:
            sem.release()
            self.cluster.request_update()
            self._retry_or_fail(group, exc)
            return
        except BaseException:
            sem.release()
            raise
        if fut is None:  # acks=0: written is all we will know
            sem.release()
            for b in group:
                self.acc.completed(b)
            return
        fut.add_done_callback(partial(self._on_response, sem, group))

    def _on_response(self, sem: asyncio.Semaphore, group: list[ProducerBatch], fut: asyncio.Future) -> None:
        sem.release()
        if fut.cancelled():
            self._retry_or_fail(group, NetworkError("produce request cancelled"))
            return
        exc = fut.exception()
        if exc is not None:
            if isinstance(exc, ApiError) and exc.code in _STALE_METADATA:
                self.cluster.request_update()
            self._retry_or_fail(group, exc)
            return
        by_tp = {(b.topic, b.partition): b for b in group}
        retry: list[ProducerBatch] = []
        last_exc = None
        for p in fut.result().partitions:
            b = by_tp.pop((p.topic, p.partition), None)
            if b is None:
                continue
            if p.error_code == 0:
                self.acc.completed(b, p.base_offset, p.log_append_time)
                continue
            cls = ApiError.for_code(p.error_code)
            exc = cls(f"{p.topic}/{p.partition}: {p.error_message or cls.description}")
            if p.error_code in _STALE_METADATA:
                self.cluster.request_update()
            if cls.retriable:
                retry.append(b)
                last_exc = exc
            else:
                self.acc.completed(b, error=exc)
        for b in by_tp.values():  # the broker did not answer for it
            retry.append(b)
            last_exc = NetworkError(f"{b.topic}/{b.partition}: missing from the produce response")
        if retry:
            self._retry_or_fail(retry, last_exc)

    def _retry_or_fail(self, batches: list[ProducerBatch], exc: BaseException) -> None:
        retriable = isinstance(exc, NoBrokersAvailable) or getattr(exc, "retriable", False)
        now = time.monotonic()
        again = []
        for b in batches:
            if b.done:
                continue
            if not retriable or b.attempts >= self.retries:
                self.acc.completed(b, error=exc)
            elif now - b.created > self.delivery_timeout:
                self._expire(b, exc)
            else:
                b.attempts += 1
                again.append(b)
        if again:
            log.debug("retrying %d batch(es) after %s", len(again), exc)
            self._hold(again)

    def _hold(self, batches: list[ProducerBatch]) -> None:
        """Keep ``batches`` back for retry_backoff_ms, then requeue them in front."""
        new_tps = []
        for b in batches:
            tp = (b.topic, b.partition)
            held = self._held.get(tp)
            if held is None:
                held = self._held[tp] = []
                new_tps.append(tp)
            held.append(b)
        if new_tps:
            asyncio.get_running_loop().call_later(self.retry_backoff, self._release, new_tps)

    def _release(self, tps: list[tuple[str, int]]) -> None:
        out = []
        for tp in tps:
            out.extend(self._held.pop(tp, ()))
        if out:
            self.acc.reenqueue(out)

    def _expire(self, b: ProducerBatch, cause: BaseException | None = None) -> None:
        why = f" (last error: {cause})" if cause else ""
        self.acc.completed(b, error=FerryTimeoutError(
            f"{len(b)} record(s) for {b.topic}/{b.partition} expired: not delivered within "
            f"delivery_timeout_ms={self.delivery_timeout * 1000:.0f}{why}"
        ))
