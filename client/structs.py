"""The small records the client hands to its callers (named like kafka-python's)."""

from __future__ import annotations

from typing import NamedTuple


class TopicPartition(NamedTuple):
    topic: str
    partition: int


class RecordMetadata(NamedTuple):
    """Where the broker stored a produced record. ``offset`` is -1 with acks=0."""

    topic: str
    partition: int
    offset: int
    timestamp: int

    @property
    def topic_partition(self) -> TopicPartition:
        return TopicPartition(self.topic, self.partition)


class ConsumerRecord(NamedTuple):
    """One consumed record. ``headers`` is a sequence of (str, bytes | None) pairs."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: object
    value: object
    headers: tuple


class OffsetAndMetadata(NamedTuple):
    """A committed offset (the next record to read) and the committer's note."""

    offset: int
    metadata: str = ""


class OffsetAndTimestamp(NamedTuple):
    offset: int
    timestamp: int


class NewTopic(NamedTuple):
    """A topic to create. ``num_partitions=-1`` takes the broker's default."""

    name: str
    num_partitions: int = -1
    replication_factor: int = 1
    topic_configs: dict | None = None


class PartitionDescription(NamedTuple):
    partition: int
    leader: int
    log_start_offset: int
    log_end_offset: int


class TopicDescription(NamedTuple):
    name: str
    partitions: list  # [PartitionDescription], by partition number
    configs: dict

    @property
    def num_partitions(self) -> int:
        return len(self.partitions)
