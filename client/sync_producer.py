"""The blocking producer: kafka-python's KafkaProducer, over the asyncio one.

An ``AsyncProducer`` runs in a ``LoopThread``. ``send`` does not cross into
that thread: it serializes, picks the partition and appends to the shared,
thread-safe accumulator in the caller's thread, returning a RecordFuture
(``get(timeout)``, ``add_callback``, ``add_errback``). The accumulator wakes the
sender at most once per batch; sealing, encoding and I/O happen in the loop
thread. Only a first send to an unknown topic blocks on the loop, to fetch
its metadata (auto-creating it), for at most max_block_ms.
"""

from __future__ import annotations

import atexit
import logging
import weakref
from typing import Any, Callable, Iterable

from .accumulator import DEFAULT_BATCH_SIZE, RecordFuture
from .background import LoopThread
from .errors import IllegalStateError
from .producer import AsyncProducer, to_bytes


log = logging.getLogger(__name__)

EXIT_TIMEOUT = 5.0  # seconds an unclosed producer gets at interpreter exit
_open_producers: "weakref.WeakSet[Producer]" = weakref.WeakSet()


@atexit.register
def _close_at_exit() -> None:
    for producer in list(_open_producers):
        try:
            producer.close(EXIT_TIMEOUT)
        except Exception as exc:  # exiting anyway: say what was lost, do not raise
            log.warning("closing a producer at exit failed: %s", exc)


async def _start_producer(configs: dict) -> AsyncProducer:
    producer = AsyncProducer(**configs)
    try:
        await producer.start()
    except BaseException:
        await producer.stop()
        raise
    return producer


class Producer:
    """Sends records to Ferry. Thread-safe; share one between threads.

    Connects on construction (NoBrokersAvailable if no bootstrap server
    answers within request_timeout_ms). Use as a context manager, or call
    ``close()``, so buffered records are delivered; a producer still open at
    interpreter exit gets EXIT_TIMEOUT seconds to deliver them.

    The settings are those of ``AsyncProducer``, whose docstring explains the
    delivery guarantees. In short: by default acks="all" and the producer is
    idempotent (retries never duplicate or reorder records of a partition).
    acks=1 is faster and stays idempotent; acks=0 turns idempotence off
    (and raises ValueError together with enable_idempotence=True), as do
    retries=0 and max_in_flight_requests_per_connection above 5.
    ``enable_idempotence=False`` turns it off.
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
        configs = dict(locals())
        del configs["self"]
        self._closed = False
        self._thread = LoopThread("ferry-producer")
        try:
            self._ap = self._thread.run(_start_producer(configs))
        except BaseException:
            self._thread.stop()
            raise
        ap = self._ap
        self._counts = ap._counts
        self._sticky = ap._sticky
        self._sticky_current = ap._sticky._current
        self._append = ap._accumulator.append
        self._max_block = max_block_ms / 1000
        self._plain = key_serializer is None and value_serializer is None and partitioner is None
        if self._plain:
            # an instance attribute over the method: the common record costs one call
            self.send = ap._accumulator.fast_send(self._send)
        self.acks = ap.acks
        self.enable_idempotence = ap.enable_idempotence
        _open_producers.add(self)

    def send(self, topic: str, value=None, key=None, partition: int | None = None,
             timestamp_ms: int | None = None, headers=None) -> RecordFuture:
        """Queue one record; returns its RecordFuture (``.get(timeout)`` -> RecordMetadata).

        Blocks only while the topic's metadata is unknown or buffer_memory is
        full, each at most max_block_ms (then FerryTimeoutError). Raises
        MessageTooLargeError for a record over max_request_size, TypeError for
        a key or value that is not bytes without a serializer,
        IllegalStateError after close().
        """
        if self._closed:
            raise IllegalStateError("cannot send: the producer is closed")
        if self._plain:
            if value is not None and value.__class__ is not bytes:
                value = to_bytes(value, "value")
            if key is not None and key.__class__ is not bytes:
                key = to_bytes(key, "key")
        else:
            key, value = self._ap._serialize(topic, key, value)
        n = self._counts.get(topic)
        if n is None:
            n = self._thread.run(self._ap.partitions_count(topic))
        if partition is None:
            if key is None and self._plain:
                partition = self._sticky_current.get(topic)
                if partition is None or partition >= n:
                    partition = self._sticky.partition(topic, n)
            else:
                partition = self._ap._choose_partition(topic, key, n)
        elif not 0 <= partition < n:
            raise ValueError(f"topic {topic!r} has partitions 0-{n - 1}, not {partition}")
        return self._append(topic, partition, key, value, timestamp_ms, headers, self._max_block)

    _send = send  # the full path, behind the instance's fast send (see __init__)

    def flush(self, timeout: float | None = None) -> None:
        """Send everything buffered and block until delivered (or failed).

        Raises FerryTimeoutError after ``timeout`` seconds.
        """
        if self._closed:
            return
        self._thread.run(self._ap.flush(timeout))

    def partitions_for(self, topic: str) -> set[int]:
        """The topic's partition numbers (fetching metadata, auto-creating it)."""
        return self._thread.run(self._ap.partitions_for(topic))

    def close(self, timeout: float | None = None) -> None:
        """Deliver what is buffered (up to ``timeout`` s), then stop. Idempotent."""
        if self._closed:
            return
        self._closed = True
        _open_producers.discard(self)
        try:
            self._thread.run(self._ap.stop(timeout))
        finally:
            self._thread.stop()

    def __enter__(self) -> "Producer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
