"""What the consumer reads: its subscription or assignment, and a state per partition.

``PartitionState`` separates the *position* (offset of the next record handed
to the user, advanced as records are consumed) from the *fetch offset* (next
offset to request, advanced when a fetch arrives, so it runs ahead). Seeking
sets both and bumps ``epoch``: fetched records stamped with an older epoch are
dropped. The state is changed in the event loop's thread, except ``position``,
``taken`` and ``stalled``, which the consuming side updates as it takes records
(``fetched`` and ``taken`` each have one writer, so neither update is lost).
"""

from __future__ import annotations

import re
from typing import Iterable

from protocol.messages import EARLIEST, LATEST

from .cluster import ClusterMetadata
from .errors import IllegalStateError
from .structs import TopicPartition

RESET_STRATEGIES = {"earliest": EARLIEST, "latest": LATEST, "none": None}
# Chunks of one partition that may wait for the consumer: with two, the next
# fetch is parked at the broker while the consumer works through the last one.
FETCH_AHEAD = 2


class PartitionState:
    __slots__ = ("position", "fetch_offset", "epoch", "reset", "fetched", "taken", "stalled",
                 "in_flight", "highwater", "log_start", "paused", "max_bytes")

    def __init__(self, reset: int | None) -> None:
        self.position: int | None = None
        self.fetch_offset: int | None = None
        self.epoch = 0
        self.reset = reset  # EARLIEST/LATEST/a timestamp: look the position up
        self.fetched = 0  # chunks the fetcher put in the buffer (loop thread)
        self.taken = 0  # of those, chunks the consumer took (consuming thread)
        self.stalled = False  # an error chunk waits: fetch nothing until it is taken
        self.in_flight = -1  # the epoch of this partition's fetch in flight, or -1
        self.highwater = -1
        self.log_start = -1
        self.paused = False
        self.max_bytes: int | None = None  # raised for a batch over max_partition_fetch_bytes

    @property
    def full(self) -> bool:
        """As many chunks wait for the consumer as may be fetched ahead, or an error does."""
        return self.fetched - self.taken >= FETCH_AHEAD or self.stalled

    def fetchable(self) -> bool:
        return (self.fetch_offset is not None and self.reset is None and not self.full
                and self.in_flight != self.epoch and not self.paused)

    def _forget_chunks(self) -> None:
        # chunks of the old epoch are dropped unread: they no longer count
        self.fetched = self.taken
        self.stalled = False

    def seek(self, offset: int) -> None:
        self.position = self.fetch_offset = offset
        self.reset = None
        self.epoch += 1
        self._forget_chunks()

    def request_reset(self, strategy: int) -> None:
        self.position = self.fetch_offset = None
        self.reset = strategy
        self.epoch += 1
        self._forget_chunks()


class SubscriptionState:
    """Topics subscribed (or partitions assigned) and the per-partition states."""

    def __init__(self, auto_offset_reset: str = "latest") -> None:
        if auto_offset_reset not in RESET_STRATEGIES:
            raise ValueError(
                f"auto_offset_reset must be 'earliest', 'latest' or 'none', not {auto_offset_reset!r}"
            )
        self.auto_offset_reset = auto_offset_reset
        self.default_reset = RESET_STRATEGIES[auto_offset_reset]
        self.topics: set[str] = set()
        self.pattern: re.Pattern | None = None
        self.manual = False
        # With a group id, subscribed partitions are the group's to assign
        # (client.group); the assignment dict is then replaced whole, in the
        # loop thread, so the consuming thread always sees a consistent one.
        self.group_managed = False
        self.assignment: dict[TopicPartition, PartitionState] = {}

    def _new_state(self) -> PartitionState:
        return PartitionState(self.default_reset)

    @property
    def subscribed(self) -> bool:
        return bool(self.topics) or self.pattern is not None

    def subscribe(self, topics: Iterable[str] = (), pattern: "str | re.Pattern | None" = None) -> None:
        """Follow all partitions of ``topics`` (or of topics matching ``pattern``)."""
        if self.manual and self.assignment:
            raise IllegalStateError("subscribe() after assign(): call unsubscribe() first")
        if isinstance(topics, str):
            topics = [topics]
        topics = set(topics)
        if pattern is not None and topics:
            raise ValueError("give topics or a pattern, not both")
        if pattern is None and not topics:
            raise ValueError("subscribe needs topics or a pattern")
        self.manual = False
        self.topics = topics
        self.pattern = re.compile(pattern) if isinstance(pattern, str) else pattern

    def assign(self, partitions: Iterable[TopicPartition]) -> None:
        """Read exactly these partitions; keeps the positions of ones already assigned."""
        if self.subscribed:
            raise IllegalStateError("assign() after subscribe(): call unsubscribe() first")
        tps = [TopicPartition(*tp) for tp in partitions]
        self.manual = True
        self.assignment = {tp: self.assignment.get(tp) or self._new_state() for tp in tps}

    def unsubscribe(self) -> None:
        self.topics = set()
        self.pattern = None
        self.manual = False
        self.assignment = {}

    def wanted_topics(self) -> set[str]:
        if self.manual:
            return {tp.topic for tp in self.assignment}
        return set(self.topics)

    def update_from_metadata(self, meta: ClusterMetadata) -> bool:
        """Subscribed without a group: assign every partition of the topics; True if it changed."""
        if self.manual or not self.subscribed or self.group_managed:
            return False
        if self.pattern is not None:
            topics = {t for t in meta.leaders if self.pattern.fullmatch(t)}
        else:
            topics = self.topics
        wanted = [
            TopicPartition(t, p)
            for t in sorted(topics)
            for p in sorted(meta.leaders.get(t, ()))
        ]
        if wanted == list(self.assignment):
            return False
        self.assignment = {tp: self.assignment.get(tp) or self._new_state() for tp in wanted}
        return True

    def state(self, tp: TopicPartition) -> PartitionState:
        """The state of an assigned partition; IllegalStateError if not assigned."""
        st = self.assignment.get(tp)
        if st is None:
            raise IllegalStateError(f"partition {tp.topic}/{tp.partition} is not assigned to this consumer")
        return st
