"""The asyncio consumer (aiokafka's AIOKafkaConsumer shape).

Without ``group_id`` a subscribed consumer reads every partition of its
topics: the metadata listener keeps the assignment equal to the topics'
partitions. With ``group_id`` it is a member of that consumer group, which
splits the partitions among its members (``client.group``), and commits its
positions. While a subscribed topic does not exist the cluster polls for it
every ``retry_backoff_ms``, so a consumer can start before its topic.
"""

from __future__ import annotations

import asyncio
import time
from typing import Callable, Iterable

from protocol.messages import EARLIEST, LATEST

from .cluster import Cluster
from .errors import IllegalStateError, NoOffsetForPartitionError
from .fetcher import Fetcher, refine_to_records
from .group.assignors import resolve_assignors
from .group.consumer import AsyncGroupMixin, check_listener
from .group.coordinator import ConsumerCoordinator, GroupSettings
from .group.listener import StepQueue
from .record_buffer import RecordBuffer
from .structs import OffsetAndTimestamp, TopicPartition
from .subscription import SubscriptionState

ISOLATION_LEVELS = {"read_uncommitted": 0, "read_committed": 1}


class AsyncConsumer(AsyncGroupMixin):
    """Reads records from Ferry in asyncio code.

    ``await start()`` connects (NoBrokersAvailable if no broker answers);
    then ``async for record in consumer``, ``await getmany(...)`` or
    ``await getone()``. ``await stop()`` closes. Also an async context manager.

    Group settings (used with ``group_id``; kafka-python's names and Kafka 3's
    defaults): ``group_instance_id`` (static membership: a restart within the
    session timeout gets the same partitions back without a rebalance),
    ``session_timeout_ms`` (45000: evicted without a heartbeat for this
    long; heartbeats run in the background every ``heartbeat_interval_ms``,
    3000), ``max_poll_interval_ms`` (300000: the member leaves the group if the
    application does not poll for this long, and rejoins when it does),
    ``rebalance_timeout_ms`` (default max_poll_interval_ms),
    ``enable_auto_commit`` (True: positions are committed every
    ``auto_commit_interval_ms``, 5000, before partitions are revoked, and on
    close), ``partition_assignment_strategy`` (assignor names or objects,
    default ``("cooperative-sticky",)``; every member of a group must offer a
    common one). ``auto_offset_reset`` applies where the group has no
    committed offset.
    """

    def __init__(
        self,
        *topics: str,
        bootstrap_servers: "str | Iterable[str]" = "localhost:9092",
        client_id: str | None = None,
        group_id: str | None = None,
        auto_offset_reset: str = "latest",
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
        if isolation_level not in ISOLATION_LEVELS:
            raise ValueError("isolation_level must be 'read_uncommitted' or 'read_committed'")
        if len(topics) == 1 and isinstance(topics[0], (list, tuple, set, frozenset)):
            topics = tuple(topics[0])  # Consumer(["a", "b"]) as well as Consumer("a", "b")
        self.group_id = group_id
        self.client_id = client_id or "ferry-consumer"
        self._initial_topics = list(topics)
        self._request_timeout = request_timeout_ms / 1000
        self.cluster = Cluster(
            bootstrap_servers, client_id=self.client_id, request_timeout_ms=request_timeout_ms,
            retry_backoff_ms=retry_backoff_ms, metadata_max_age_ms=metadata_max_age_ms,
            max_frame_size=max(fetch_max_bytes, max_partition_fetch_bytes) + (16 << 20),
            poll_missing_topics=True,
        )
        self._subs = SubscriptionState(auto_offset_reset)
        self._fetcher = Fetcher(
            self.cluster, self._subs, key_deserializer=key_deserializer,
            value_deserializer=value_deserializer, fetch_max_wait_ms=fetch_max_wait_ms,
            fetch_min_bytes=fetch_min_bytes, fetch_max_bytes=fetch_max_bytes,
            max_partition_fetch_bytes=max_partition_fetch_bytes, check_crcs=check_crcs,
            isolation_level=ISOLATION_LEVELS[isolation_level],
            request_timeout_ms=request_timeout_ms, retry_backoff_ms=retry_backoff_ms,
        )
        self._buffer: RecordBuffer = self._fetcher.buffer
        self._started = False
        self._closed = False
        self._listener = None
        self._group_released = False
        self._steps = StepQueue(self._buffer.wake)
        self._awaiting_committed: set[TopicPartition] = set()
        self._committed_lookups: dict[TopicPartition, asyncio.Future] = {}  # under way
        self._coordinator: ConsumerCoordinator | None = None
        self._group_settings = None
        if group_id is not None:
            self._group_settings = GroupSettings(
                group_id=group_id, group_instance_id=group_instance_id,
                session_timeout_ms=session_timeout_ms, heartbeat_interval_ms=heartbeat_interval_ms,
                max_poll_interval_ms=max_poll_interval_ms, rebalance_timeout_ms=rebalance_timeout_ms,
                enable_auto_commit=enable_auto_commit, auto_commit_interval_ms=auto_commit_interval_ms,
            )
            self._assignors = resolve_assignors(partition_assignment_strategy)
            self._subs.group_managed = True

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Connect and start fetching. Raises NoBrokersAvailable."""
        if self._started:
            return
        if self._initial_topics:
            self._subs.subscribe(self._initial_topics)
            self.cluster.tracked |= set(self._initial_topics)
        self.cluster.add_listener(self._on_metadata)
        await self.cluster.start()
        self._fetcher.start()
        if self._group_settings is not None:
            self._coordinator = ConsumerCoordinator(
                self.cluster, self._subs, self._buffer, self._group_settings, self._assignors, self._steps,
                changed=self._changed, activity=self._activity,
            )
            self._coordinator.start()
            if self._awaiting_committed:
                self._look_up_committed(set(self._awaiting_committed))
        self._started = True

    async def stop(self) -> None:
        """Stop fetching and close the connections. Idempotent."""
        if self._closed:
            return
        if self._coordinator is not None:
            try:
                await self._release_group()
            finally:
                await self._coordinator.close()
        self._closed = True
        self._steps.cancel_all()
        await self._fetcher.stop()
        await self.cluster.close()
        self._buffer.wake()

    close = stop

    async def __aenter__(self) -> "AsyncConsumer":
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    def _on_metadata(self) -> None:
        if self._subs.update_from_metadata(self.cluster.metadata):
            self._changed()
        if self._coordinator is not None:
            self._coordinator.metadata_updated()

    def _changed(self) -> None:
        self._fetcher.wake.set()
        self._buffer.wake()

    # ------------------------------------------------------------ what to read

    def subscribe(self, topics: Iterable[str] = (), pattern: str | None = None, listener=None) -> None:
        """Read every partition of ``topics`` (or of the topics matching ``pattern``),
        including ones created later; with a group_id, the partitions the group assigns.

        ``listener`` (a ConsumerRebalanceListener) hears of partitions assigned
        and revoked; it is called from inside getmany(), getone() or iteration.
        """
        check_listener(listener)
        self._subs.subscribe(topics, pattern)
        self._listener = listener
        if pattern is not None:
            self.cluster.track_all = True
        else:
            self.cluster.tracked = set(self._subs.topics)
        if self._coordinator is None:
            self._buffer.discard()
        self._on_metadata()
        self.cluster.request_update()
        if self._coordinator is not None:
            self._coordinator.subscription_changed()

    def unsubscribe(self) -> None:
        """Stop reading; a group member leaves its group (without calling the listener)."""
        if self._coordinator is not None:
            self._coordinator.unsubscribed()
        self._subs.unsubscribe()
        self.cluster.track_all = False
        self._buffer.discard()
        self._changed()

    def subscription(self) -> set[str]:
        return set(self._subs.topics)

    def assign(self, partitions: Iterable[TopicPartition]) -> None:
        """Read exactly these partitions (positions from auto_offset_reset unless sought)."""
        before = set(self._subs.assignment)
        self._subs.assign(partitions)
        self._assigned_by_hand(set(self._subs.assignment) - before)
        self.cluster.track(self._subs.wanted_topics())
        self._buffer.discard()
        self._changed()

    def assignment(self) -> set[TopicPartition]:
        return set(self._subs.assignment)

    def pause(self, *partitions: TopicPartition) -> None:
        for tp in partitions:
            self._subs.state(tp).paused = True

    def resume(self, *partitions: TopicPartition) -> None:
        for tp in partitions:
            self._subs.state(tp).paused = False
        self._changed()

    def paused(self) -> set[TopicPartition]:
        return {tp for tp, st in self._subs.assignment.items() if st.paused}

    # ------------------------------------------------------------ positions

    def seek(self, partition: TopicPartition, offset: int) -> None:
        """Make ``offset`` the next record returned from ``partition``."""
        if not isinstance(offset, int) or offset < 0:
            raise ValueError(f"offset must be a non-negative int, not {offset!r}")
        st = self._subs.state(partition)
        self._buffer.discard(partition)
        st.seek(offset)
        self._changed()

    def _reset(self, partitions: tuple, strategy: int) -> None:
        tps = partitions or tuple(self._subs.assignment)
        for tp in tps:
            st = self._subs.state(tp)
            self._buffer.discard(tp)
            st.request_reset(strategy)
        self._changed()

    async def seek_to_beginning(self, *partitions: TopicPartition) -> None:
        """Next records come from the start of the logs (all assigned if none given)."""
        self._reset(partitions, EARLIEST)

    async def seek_to_end(self, *partitions: TopicPartition) -> None:
        """Only records produced from now on (all assigned if none given)."""
        self._reset(partitions, LATEST)

    async def position(self, partition: TopicPartition) -> int:
        """Offset of the next record this consumer will return from ``partition``.

        Looks it up (auto_offset_reset) if not known yet. Raises
        NoOffsetForPartitionError with auto_offset_reset="none".
        """
        pos = self._buffer.position(partition)
        if pos is not None:
            return pos
        st = self._subs.state(partition)
        if st.position is None:
            # hand-assigned in a group: it starts at the committed offset, which
            # a task may still be looking up
            await self._committed_known(partition)
        if st.position is None:
            if st.reset is None:
                raise NoOffsetForPartitionError(
                    f"no position for {partition.topic}/{partition.partition} and auto_offset_reset is 'none'"
                )
            epoch, reset = st.epoch, st.reset
            found = await self._fetcher.list_offsets({partition: reset})
            if st.epoch == epoch and st.position is None and found[partition][0] >= 0:
                st.seek(found[partition][0])
                self._changed()
        return st.position

    def highwater(self, partition: TopicPartition) -> int:
        """The partition's log end offset as of the last fetch (-1 before one)."""
        return self._subs.state(partition).highwater

    async def offsets_for_times(self, timestamps: dict) -> dict:
        """{tp: OffsetAndTimestamp of the first record at or after the time, or None}."""
        for ts in timestamps.values():
            if not isinstance(ts, int) or ts < 0:
                raise ValueError(f"timestamps must be non-negative ms, not {ts!r}")
        targets = {TopicPartition(*tp): ts for tp, ts in timestamps.items()}
        found = await self._fetcher.list_offsets(targets)
        found = await refine_to_records(self.cluster, found, targets, self._request_timeout)
        return {
            tp: (OffsetAndTimestamp(off, ts) if off >= 0 else None)
            for tp, (off, ts) in found.items()
        }

    async def beginning_offsets(self, partitions: Iterable[TopicPartition]) -> dict:
        """{tp: log start offset}."""
        found = await self._fetcher.list_offsets({TopicPartition(*tp): EARLIEST for tp in partitions})
        return {tp: off for tp, (off, _) in found.items()}

    async def end_offsets(self, partitions: Iterable[TopicPartition]) -> dict:
        """{tp: log end offset} (the offset the next produced record will get)."""
        found = await self._fetcher.list_offsets({TopicPartition(*tp): LATEST for tp in partitions})
        return {tp: off for tp, (off, _) in found.items()}

    # ------------------------------------------------------------ metadata

    async def topics(self) -> set[str]:
        """Every topic on the cluster."""
        await self.cluster.refresh(None)
        return self.cluster.metadata.topics()

    async def partitions_for_topic(self, topic: str) -> set[int] | None:
        """The topic's partition numbers, or None if it does not exist."""
        parts = self.cluster.metadata.partitions_for_topic(topic)
        if parts is None:
            await self.cluster.refresh(self.cluster.tracked | {topic})
            parts = self.cluster.metadata.partitions_for_topic(topic)
        return parts

    # ------------------------------------------------------------ records

    def _check_open(self) -> None:
        if self._closed:
            raise IllegalStateError("the consumer is closed")
        if not self._started:
            raise IllegalStateError("call await start() first")

    def _check_reading(self) -> None:
        if not self._subs.assignment and not self._subs.subscribed and not self._subs.manual:
            raise IllegalStateError("nothing to read: call subscribe() or assign() first")
        self._check_positions()

    def _check_positions(self) -> None:
        if self._subs.default_reset is None:
            for tp, st in self._subs.assignment.items():
                if st.position is None and st.reset is None and st.fetch_offset is None \
                        and tp not in self._awaiting_committed:
                    raise NoOffsetForPartitionError(
                        f"no position for {tp.topic}/{tp.partition} and auto_offset_reset is "
                        f"'none': seek() first"
                    )

    async def getmany(self, *partitions: TopicPartition, timeout_ms: float = 0,
                      max_records: int | None = None) -> dict[TopicPartition, list]:
        """{tp: [ConsumerRecord]} of what has arrived, waiting up to ``timeout_ms`` for some.

        Returns {} if nothing came in time. Only ``partitions`` if given.
        """
        self._check_open()
        buf = self._buffer
        wanted = set(partitions) if partitions else None
        deadline = time.monotonic() + timeout_ms / 1000
        while True:
            if self._steps:
                await self._run_steps()
            self._polled()
            buf.arm()
            recs = buf.take(max_records, wanted)
            if recs:
                return recs
            self._check_reading()
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._closed:
                return {}
            self._waiting(True)
            try:
                await buf.wait(remaining)
            finally:
                self._waiting(False)

    async def getone(self, *partitions: TopicPartition):
        """The next ConsumerRecord, waiting as long as it takes."""
        while True:
            recs = await self.getmany(*partitions, timeout_ms=3600_000, max_records=1)
            for records in recs.values():
                return records[0]
            if self._closed:
                raise IllegalStateError("the consumer is closed")

    def __aiter__(self):
        self._check_open()
        return self._records()

    async def _records(self):
        buf = self._buffer
        while not self._closed:
            if self._steps:
                await self._run_steps()
            self._polled()
            buf.arm()
            chunk = buf.next_chunk()
            if chunk is None:
                self._check_reading()
                self._waiting(True)
                try:
                    await buf.wait(None)
                finally:
                    self._waiting(False)
                continue
            it = chunk.iterate()
            for record in it:
                yield record
            chunk.iteration_ended(it)
