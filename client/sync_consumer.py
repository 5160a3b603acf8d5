"""The blocking consumer: kafka-python's KafkaConsumer, over the asyncio one.

An ``AsyncConsumer`` runs in a ``LoopThread`` and fetches ahead into its
``RecordBuffer``; this thread takes records straight from that buffer, so
iterating crosses into the loop thread only to wait when the buffer is empty.
``for record in consumer`` yields from each chunk's list iterator (C-level),
and ends after ``consumer_timeout_ms`` without a record (default: never).
"""

from __future__ import annotations

import time
from typing import Callable, Iterable, Iterator

from .background import LoopThread, call_in
from .consumer import AsyncConsumer
from .errors import IllegalStateError
from .structs import ConsumerRecord, TopicPartition


async def _start_consumer(topics: tuple, configs: dict) -> AsyncConsumer:
    consumer = AsyncConsumer(*topics, **configs)
    try:
        await consumer.start()
    except BaseException:
        await consumer.stop()
        raise
    return consumer


class Consumer:
    """Reads records from Ferry. Use it from one thread.

    Connects on construction (NoBrokersAvailable if no bootstrap server
    answers within request_timeout_ms). ``Consumer("t", ...)`` subscribes to
    topic ``t``; with ``group_id`` or without, it reads all its partitions.
    """

    def __init__(
        self,
        *topics: str,
        bootstrap_servers: "str | Iterable[str]" = "localhost:9092",
        client_id: str | None = None,
        group_id: str | None = None,
        auto_offset_reset: str = "latest",
        consumer_timeout_ms: float = float("inf"),
        key_deserializer: Callable | None = None,
        value_deserializer: Callable | None = None,
        fetch_max_wait_ms: int = 500,
        fetch_min_bytes: int = 1,
        fetch_max_bytes: int = 52428800,
        max_partition_fetch_bytes: int = 1048576,
        request_timeout_ms: int = 30000,
        retry_backoff_ms: int = 100,
        metadata_max_age_ms: int = 300000,
        check_crcs: bool = True,
        isolation_level: str = "read_uncommitted",
    ) -> None:
        configs = dict(locals())
        for name in ("self", "topics", "consumer_timeout_ms"):
            del configs[name]
        if consumer_timeout_ms is None or consumer_timeout_ms < 0:
            consumer_timeout_ms = float("inf")
        self.consumer_timeout_ms = consumer_timeout_ms
        self.group_id = group_id
        self._closed = False
        self._iterator: Iterator[ConsumerRecord] | None = None
        self._thread = LoopThread("ferry-consumer")
        try:
            self._ac = self._thread.run(_start_consumer(topics, configs))
        except BaseException:
            self._thread.stop()
            raise
        self._buffer = self._ac._buffer

    def _run(self, coro):
        if self._closed:
            coro.close()
            raise IllegalStateError("the consumer is closed")
        return self._thread.run(coro)

    def _call(self, fn, *args):
        if self._closed:
            raise IllegalStateError("the consumer is closed")
        return call_in(self._thread, fn, *args)

    # ------------------------------------------------------------ records

    def __iter__(self) -> Iterator[ConsumerRecord]:
        it = self._iterator
        if it is None or it.gi_frame is None:
            it = self._iterator = self._records()
        return it

    def __next__(self) -> ConsumerRecord:
        return next(self.__iter__())

    def _records(self) -> Iterator[ConsumerRecord]:
        buf = self._buffer
        timeout = self.consumer_timeout_ms / 1000
        deadline = None
        while not self._closed:
            buf.arm()
            chunk = buf.next_chunk()
            if chunk is None:
                self._ac._check_reading()
                now = time.monotonic()
                if deadline is None:
                    deadline = now + timeout
                remaining = deadline - now
                if remaining <= 0:
                    return
                buf.wait_blocking(None if remaining == float("inf") else remaining)
                continue
            deadline = None
            it = chunk.iterate()
            yield from it
            chunk.iteration_ended(it)

    def poll(self, timeout_ms: float = 0, max_records: int | None = None,
             update_offsets: bool = True) -> dict[TopicPartition, list[ConsumerRecord]]:
        """{tp: [ConsumerRecord]} of what has arrived, waiting up to ``timeout_ms`` for some.

        Returns {} if nothing arrived in time; at most ``max_records`` records.
        """
        if self._closed:
            raise IllegalStateError("the consumer is closed")
        buf = self._buffer
        deadline = time.monotonic() + timeout_ms / 1000
        while True:
            buf.arm()
            recs = buf.take(max_records)
            if recs:
                return recs
            self._ac._check_reading()
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._closed:
                return {}
            buf.wait_blocking(remaining)

    # ------------------------------------------------------------ what to read

    def subscribe(self, topics: Iterable[str] = (), pattern: str | None = None) -> None:
        """Read every partition of ``topics`` (or of topics matching ``pattern``)."""
        if isinstance(topics, str):
            topics = [topics]
        self._call(self._ac.subscribe, list(topics), pattern)

    def unsubscribe(self) -> None:
        self._call(self._ac.unsubscribe)

    def subscription(self) -> set[str]:
        return self._ac.subscription()

    def assign(self, partitions: Iterable[TopicPartition]) -> None:
        """Read exactly these partitions."""
        self._call(self._ac.assign, list(partitions))

    def assignment(self) -> set[TopicPartition]:
        return self._ac.assignment()

    def pause(self, *partitions: TopicPartition) -> None:
        self._call(self._ac.pause, *partitions)

    def resume(self, *partitions: TopicPartition) -> None:
        self._call(self._ac.resume, *partitions)

    def paused(self) -> set[TopicPartition]:
        return self._ac.paused()

    # ------------------------------------------------------------ positions

    def seek(self, partition: TopicPartition, offset: int) -> None:
        """Make ``offset`` the next record returned from ``partition``."""
        self._call(self._ac.seek, partition, offset)

    def seek_to_beginning(self, *partitions: TopicPartition) -> None:
        self._run(self._ac.seek_to_beginning(*partitions))

    def seek_to_end(self, *partitions: TopicPartition) -> None:
        self._run(self._ac.seek_to_end(*partitions))

    def position(self, partition: TopicPartition) -> int:
        """Offset of the next record to be returned from ``partition`` (blocks to look it up if needed)."""
        pos = self._buffer.position(partition)
        if pos is not None:
            return pos
        return self._run(self._ac.position(partition))

    def highwater(self, partition: TopicPartition) -> int:
        return self._ac.highwater(partition)

    def offsets_for_times(self, timestamps: dict) -> dict:
        """{tp: OffsetAndTimestamp(offset, timestamp) of the first record at or after ts, or None}."""
        return self._run(self._ac.offsets_for_times(timestamps))

    def beginning_offsets(self, partitions: Iterable[TopicPartition]) -> dict:
        return self._run(self._ac.beginning_offsets(list(partitions)))

    def end_offsets(self, partitions: Iterable[TopicPartition]) -> dict:
        return self._run(self._ac.end_offsets(list(partitions)))

    # ------------------------------------------------------------ metadata

    def topics(self) -> set[str]:
        return self._run(self._ac.topics())

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return self._run(self._ac.partitions_for_topic(topic))

    # ------------------------------------------------------------ closing

    def close(self) -> None:
        """Stop fetching and close the connections. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self._thread.run(self._ac.stop())
        finally:
            self._thread.stop()

    def __enter__(self) -> "Consumer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
