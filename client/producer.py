"""The asyncio producer (aiokafka's AIOKafkaProducer shape).

``send`` picks the partition (explicit, murmur2 of the key, or the topic's
sticky partition) and appends to the ``RecordAccumulator``; that is all the
per-record work. The ``Sender`` (sender.py) does the rest, in passes run by the loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any, Callable, Iterable

from protocol.batch import Compression

from .accumulator import DEFAULT_BATCH_SIZE, RecordAccumulator, RecordFuture
from .cluster import Cluster
from .errors import FerryTimeoutError, IllegalStateError
from .partitioner import StickyPartitioner, partition_for_key
from .sender import Sender
from .structs import RecordMetadata

log = logging.getLogger(__name__)


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


MAX_IDEMPOTENT_IN_FLIGHT = 5  # the broker remembers the last five batches per producer and partition


def resolve_idempotence(enable_idempotence: "bool | None", acks: int, retries: int,
                        max_in_flight: int) -> bool:
    """Whether the producer is idempotent (see ``AsyncProducer``); ValueError on a conflict.

    None (the default) means on unless acks=0, retries=0 or more than five
    requests in flight say otherwise; True insists (a conflict raises); False
    is off.
    """
    conflicts = []
    if acks == 0:
        conflicts.append("acks=0 (no answers, so nothing to number or retry)")
    if retries < 1:
        conflicts.append("retries=0")
    if max_in_flight > MAX_IDEMPOTENT_IN_FLIGHT:
        conflicts.append(f"max_in_flight_requests_per_connection={max_in_flight} (at most "
                         f"{MAX_IDEMPOTENT_IN_FLIGHT})")
    if enable_idempotence is None:
        return not conflicts
    if enable_idempotence and conflicts:
        raise ValueError("enable_idempotence=True conflicts with " + " and ".join(conflicts))
    return bool(enable_idempotence)


class AsyncProducer:
    """Sends records to Ferry from asyncio code. Mirrors aiokafka's AIOKafkaProducer.

    ``await start()`` connects (NoBrokersAvailable if no broker answers),
    ``await send(...)`` returns an awaitable RecordFuture, ``await stop()``
    delivers what is buffered and closes. Also an async context manager.

    Delivery guarantees (as in Kafka 3.x). ``acks`` is how much the broker
    must do before it answers: "all" (-1, the default) means the record is
    fsynced, 1 that it was appended (in the page cache), 0 that no answer is
    awaited at all. acks=1 is faster; with it, as with "all", retries cannot
    duplicate records: the producer is *idempotent* by default.

    Idempotence (``enable_idempotence``): the producer gets a producer id from
    the broker and numbers its batches per partition, so the broker writes a
    retried batch only once (answering a repeat with the original offsets)
    and never out of order, with up to five batches in flight per partition.
    Records of one partition are then delivered exactly once and in send
    order, across lost connections, timeouts and broker restarts, as long as
    they are delivered within ``delivery_timeout_ms`` (a record whose future
    failed may or may not be in the log).

    - ``None`` (the default): on, unless the configuration conflicts with it
      (acks=0, retries=0, or max_in_flight_requests_per_connection above 5),
      which turns it off silently. If the broker does not support idempotent
      producers, the producer logs a warning and sends without.
    - ``True``: on; a conflicting configuration raises ValueError, and a
      broker without support fails every record with UnsupportedVersionError.
    - ``False``: off. Retries may then duplicate records, and with more than
      one request in flight reorder them.

    ``enable_idempotence`` reads back the effective setting (True or False).
    If another producer takes over the producer id (PRODUCER_FENCED) the
    producer is unusable: every incomplete record fails with the error.

    Retries: a batch that fails with a lost connection, a timeout or a
    retriable error code is sent again after ``retry_backoff_ms``, up to
    ``retries`` times, and the producer reconnects (refreshing metadata)
    every ``retry_backoff_ms`` while a broker is unreachable. A record's
    future fails once ``delivery_timeout_ms`` has passed since its batch was
    created (a batch waiting for an answer first gets it, or
    ``request_timeout_ms`` runs out).
    """

    def __init__(
        self,
        *,
        bootstrap_servers: "str | Iterable[str]" = "localhost:9092",
        client_id: str | None = None,
        acks: "int | str" = "all",
        linger_ms: float = 5,
        batch_size: int = DEFAULT_BATCH_SIZE,
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
        enable_idempotence: bool | None = None,
    ) -> None:
        if max_in_flight_requests_per_connection < 1:
            raise ValueError("max_in_flight_requests_per_connection must be at least 1")
        if retries < 0:
            raise ValueError("retries must be at least 0")
        self.acks = parse_acks(acks)
        self.enable_idempotence = resolve_idempotence(
            enable_idempotence, self.acks, retries, max_in_flight_requests_per_connection)
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
            idempotent=self.enable_idempotence, idempotence_required=bool(enable_idempotence),
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
            self._sender.wake()
        else:
            self._loop.call_soon_threadsafe(self._sender.wake)

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
