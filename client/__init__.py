"""Ferry's client library: producers, consumers and an admin client.

Blocking classes (kafka-python style) run their I/O in one background thread;
the ``Async*`` classes (aiokafka style) live in your asyncio loop::

    from client import Producer, Consumer

    with Producer(bootstrap_servers="localhost:9092") as producer:
        meta = producer.send("test", b"hello").get(timeout=10)
        print(meta.topic, meta.partition, meta.offset)

    with Consumer("test", bootstrap_servers="localhost:9092",
                  auto_offset_reset="earliest", consumer_timeout_ms=1000) as consumer:
        for record in consumer:
            print(record.offset, record.value)
"""

from .admin import Admin, AsyncAdmin
from .consumer import AsyncConsumer
from .errors import (
    ClientError,
    CommitFailedError,
    FerryTimeoutError,
    IllegalStateError,
    KafkaTimeoutError,
    NoBrokersAvailable,
    NoOffsetForPartitionError,
)
from .group import ConsumerRebalanceListener
from .producer import AsyncProducer
from .producer_batch import RecordFuture
from .structs import (
    ConsumerRecord,
    NewTopic,
    OffsetAndMetadata,
    OffsetAndTimestamp,
    PartitionDescription,
    RecordMetadata,
    TopicDescription,
    TopicPartition,
)
from .sync_consumer import Consumer
from .sync_producer import Producer

__all__ = [
    "Admin",
    "AsyncAdmin",
    "AsyncConsumer",
    "AsyncProducer",
    "ClientError",
    "CommitFailedError",
    "Consumer",
    "ConsumerRebalanceListener",
    "ConsumerRecord",
    "FerryTimeoutError",
    "IllegalStateError",
    "KafkaTimeoutError",
    "NewTopic",
    "NoBrokersAvailable",
    "NoOffsetForPartitionError",
    "OffsetAndMetadata",
    "OffsetAndTimestamp",
    "PartitionDescription",
    "Producer",
    "RecordFuture",
    "RecordMetadata",
    "TopicDescription",
    "TopicPartition",
]
