"""The blocking consumer: kafka-python's KafkaConsumer, over the asyncio one.

An ``AsyncConsumer`` runs in a ``LoopThread`` and fetches ahead into its
``RecordBuffer``; this thread takes records straight from that buffer, so
iterating crosses into the loop thread only to wait when the buffer is empty.
``for record in consumer`` takes records from each chunk's iterator (C-level),
and ends after ``consumer_timeout_ms`` without a record (default: never).

With ``group_id`` the group's rebalance steps (commit-on-revoke and the
listener's callbacks) run in the application's thread, between chunks of
iteration or inside ``poll()``, so a listener may call the consumer's
blocking methods; heartbeats and auto-commits run in the loop thread.
"""

from __future__ import annotations

import concurrent.futures
import logging
import time
from itertools import chain
from typing import Callable, Iterable, Iterator, Mapping

from .background import LoopThread, call_in
from .consumer import AsyncConsumer
from .errors import IllegalStateError
from .group.consumer import check_listener, listener_method, offsets_arg
from .group.listener import Step
from .structs import ConsumerRecord, TopicPartition

log = logging.getLogger(__name__)


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
    topic ``t``: without ``group_id`` it reads all its partitions; with one,
    those the consumer group assigns it. The settings are AsyncConsumer's.
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
        group_instance_id: str | None = None,
        enable_auto_commit: bool = True,
        auto_commit_interval_ms: int = 5000,
        session_timeout_ms: int = 45000,
        heartbeat_interval_ms: int = 3000,
        max_poll_interval_ms: int = 300000,
        rebalance_timeout_ms: int | None = None,
        partition_assignment_strategy=("cooperative-sticky",),
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
        self._chunks_gen = None
        self._thread = LoopThread("ferry-consumer")
        try:
            self._ac = self._thread.run(_start_consumer(topics, configs))
        except BaseException:
            self._thread.stop()
            raise
        self._buffer = self._ac._buffer
        self._steps = self._ac._steps

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
        if it is None or self._chunks_gen.gi_frame is None:
            # chain runs the generator once per chunk; between, every record
            # comes from the chunk's C iterator with no Python frame in between
            self._chunks_gen = self._chunk_iterators()
            it = self._iterator = chain.from_iterable(self._chunks_gen)
        return it

    def __next__(self) -> ConsumerRecord:
        return next(self.__iter__())

    def _chunk_iterators(self) -> Iterator[Iterator[ConsumerRecord]]:
        """Each chunk's record iterator in turn; ends after consumer_timeout_ms without one."""
        buf = self._buffer
        timeout = self.consumer_timeout_ms / 1000
        deadline = None
        while not self._closed:
            if self._steps:
                self._run_steps()
            self._ac._polled()
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
                self._ac._waiting(True)
                try:
                    buf.wait_blocking(None if remaining == float("inf") else remaining)
                finally:
                    self._ac._waiting(False)
                continue
            deadline = None
            it = chunk.iterate()
            yield it
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
            if self._steps:
                self._run_steps()
            self._ac._polled()
            buf.arm()
            recs = buf.take(max_records)
            if recs:
                return recs
            self._ac._check_reading()
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._closed:
                return {}
            self._ac._waiting(True)
            try:
                buf.wait_blocking(remaining)
            finally:
                self._ac._waiting(False)

    # ------------------------------------------------------------ what to read

    def subscribe(self, topics: Iterable[str] = (), pattern: str | None = None, listener=None) -> None:
        """Read every partition of ``topics`` (or of topics matching ``pattern``);
        with a group_id, the partitions the group assigns.

        ``listener`` (a ConsumerRebalanceListener) is called from inside poll()
        or iteration, in this thread, when partitions are assigned or revoked.
        """
        if isinstance(topics, str):
            topics = [topics]
        check_listener(listener)
        self._call(self._ac.subscribe, list(topics), pattern, listener)

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

    # ------------------------------------------------------------ committed offsets

    def _coordinator(self):
        return self._ac._require_group()

    def commit(self, offsets: Mapping | None = None) -> None:
        """Commit ``offsets`` ({tp: offset or OffsetAndMetadata}), by default the
        position of every assigned partition; blocks for the broker's answer.

        Raises CommitFailedError if the group rebalanced and this member is no
        longer in its generation (its partitions may have moved: what it
        processed since the last commit will be processed again);
        IllegalStateError without a group_id.
        """
        coord = self._coordinator()
        offsets = coord.positions() if offsets is None else offsets_arg(offsets)
        self._run(coord.commit(offsets))

    def commit_async(self, offsets: Mapping | None = None,
                     callback: Callable[[dict, BaseException | None], None] | None = None
                     ) -> concurrent.futures.Future:
        """Start a commit and return a Future at once; ``callback(offsets,
        exception_or_None)`` runs in this thread, inside a later poll or iteration."""
        coord = self._coordinator()
        offsets = coord.positions() if offsets is None else offsets_arg(offsets)
        result: concurrent.futures.Future = concurrent.futures.Future()

        async def commit() -> None:
            try:
                await coord.commit(offsets)
                exc = None
                result.set_result(None)
            except Exception as e:  # handed to the future and the callback
                exc = e
                result.set_exception(e)
            if callback is not None:
                self._steps.post(Step("callback", callback=lambda: callback(offsets, exc)))
            elif exc is not None:
                log.warning("commit_async failed: %s", exc)

        self._thread.call_soon(lambda: self._thread.loop.create_task(commit()))
        return result

    def committed(self, partition: TopicPartition, metadata: bool = False):
        """The group's committed offset of ``partition`` (int), or None if it has none.

        ``metadata=True`` returns the OffsetAndMetadata instead.
        """
        return self._run(self._ac.committed(partition, metadata))

    # ------------------------------------------------------------ rebalance steps

    def _run_steps(self) -> None:
        """Run the group's pending rebalance steps here, in the application's thread."""
        while (step := self._steps.pop()) is not None:
            try:
                self._run_step(step)
            finally:
                step.finish()

    def _run_step(self, step: Step) -> None:
        coord = self._ac._coordinator
        if step.kind == "callback":
            try:
                step.callback()
            except Exception:
                log.exception("commit_async callback failed")
            return
        parts = set(step.partitions)
        if step.kind == "revoke":
            lost = step.generation != coord.generation
            if step.commit and not lost:
                self._thread.run(coord.auto_commit(step.partitions))
            self._call_listener("on_partitions_lost" if lost else "on_partitions_revoked", parts)
            call_in(self._thread, coord.drop, step.partitions)
        elif step.kind == "assign":
            self._call_listener("on_partitions_assigned", parts)
        elif step.kind == "lost":
            self._call_listener("on_partitions_lost", parts)

    def _call_listener(self, name: str, partitions: set) -> None:
        fn = listener_method(self._ac._listener, name)
        if fn is None:
            return
        try:
            fn(partitions)
        except Exception:
            log.exception("rebalance listener %s failed", name)

    def _release_group(self) -> None:
        """At close, in this thread: pending steps, the last commit, the revoke callback."""
        ac = self._ac
        coord = ac._coordinator
        if coord is None or ac._group_released:
            return
        ac._group_released = True
        self._thread.run(coord.stop_tasks())
        self._run_steps()
        held = set(ac._subs.assignment)
        if coord.settings.enable_auto_commit and held and (coord.generation >= 0 or not coord.managed):
            self._thread.run(coord.auto_commit())
        if coord.managed and coord.generation >= 0 and held:
            self._call_listener("on_partitions_revoked", held)

    # ------------------------------------------------------------ closing

    def close(self) -> None:
        """Commit (with auto-commit), leave the group, stop fetching and close
        the connections. Idempotent."""
        if self._closed:
            return
        try:
            if self._thread.running:
                self._release_group()
        finally:
            self._closed = True
            try:
                self._thread.run(self._ac.stop())
            finally:
                self._thread.stop()

    def __enter__(self) -> "Consumer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
