"""Ferry's messages, as frozen dataclasses, and the registry of every message.

The annotations are the schema. API keys use Kafka's numbers where the
purpose is the same. Each request class has a matching response class with
the same ``API_KEY``. Every message carries ``correlation_id``
(keyword-only); it travels in the frame header, not in the msgpack body.
Per-partition entries are flat (topic and partition in each entry) rather
than nested per topic: simpler to build and to read in Python.

Offsets and timestamps are int64; -1 means "none". In ListOffsets a timestamp
of LATEST (-1) asks for the log end offset and EARLIEST (-2) for the log start.

The consumer-group messages are in ``protocol.group_messages`` and the
``Message`` base class in ``protocol.message_base``; the registry at the end
(``REQUESTS``, ``RESPONSES``, ``VERSIONS``) holds the messages of both modules.
"""

from __future__ import annotations

import dataclasses
from dataclasses import field
from typing import Any, ClassVar

from . import group_messages
from .errors import LocalProtocolError
from .message_base import Message, _msg
from .schema import Records

LATEST = -1
EARLIEST = -2

ACKS_NONE = 0
ACKS_LEADER = 1
ACKS_ALL = -1


# ---------------------------------------------------------------- handshake


@_msg
class ApiVersionRange:
    api_key: int
    min_version: int
    max_version: int


@_msg
class Handshake:
    """Client -> broker, first frame. Magic ``FRY`` + version byte on the wire."""

    client_id: str = ""
    min_version: int = 1
    max_version: int = 1
    auth: dict[str, Any] | None = None


@_msg
class HandshakeResponse:
    """Broker -> client, first frame. ``error_code`` != 0 means the broker will close."""

    version: int
    error_code: int = 0
    error_message: str | None = None
    broker_id: int = 0
    max_frame_size: int = 0
    api_versions: tuple[ApiVersionRange, ...] = ()


# ---------------------------------------------------------------- metadata


@_msg
class MetadataRequest(Message):
    API_KEY: ClassVar[int] = 3
    topics: tuple[str, ...] | None = None  # None: every topic
    allow_auto_topic_creation: bool = True


@_msg
class BrokerInfo:
    node_id: int
    host: str
    port: int


@_msg
class PartitionMetadata:
    partition: int
    error_code: int = 0
    leader: int = 0


@_msg
class TopicMetadata:
    name: str
    error_code: int = 0
    internal: bool = False
    partitions: tuple[PartitionMetadata, ...] = ()


@_msg
class MetadataResponse(Message):
    API_KEY: ClassVar[int] = 3
    IS_RESPONSE: ClassVar[bool] = True
    brokers: tuple[BrokerInfo, ...] = ()
    controller_id: int = 0
    topics: tuple[TopicMetadata, ...] = ()


# ---------------------------------------------------------------- topics


@_msg
class NewTopic:
    name: str
    num_partitions: int = -1  # -1: the broker's default_partitions
    replication_factor: int = 1
    configs: dict[str, str] = field(default_factory=dict)


@_msg
class TopicResult:
    name: str
    error_code: int = 0
    error_message: str | None = None


@_msg
class CreateTopicsRequest(Message):
    API_KEY: ClassVar[int] = 19
    topics: tuple[NewTopic, ...] = ()
    timeout_ms: int = 30000
    validate_only: bool = False


@_msg
class CreateTopicsResponse(Message):
    API_KEY: ClassVar[int] = 19
    IS_RESPONSE: ClassVar[bool] = True
    topics: tuple[TopicResult, ...] = ()


@_msg
class DeleteTopicsRequest(Message):
    API_KEY: ClassVar[int] = 20
    topics: tuple[str, ...] = ()
    timeout_ms: int = 30000


@_msg
class DeleteTopicsResponse(Message):
    API_KEY: ClassVar[int] = 20
    IS_RESPONSE: ClassVar[bool] = True
    topics: tuple[TopicResult, ...] = ()


@_msg
class DescribeConfigsRequest(Message):
    API_KEY: ClassVar[int] = 32
    topics: tuple[str, ...] = ()


@_msg
class TopicConfigs:
    name: str
    error_code: int = 0
    error_message: str | None = None
    configs: dict[str, str] = field(default_factory=dict)


@_msg
class DescribeConfigsResponse(Message):
    API_KEY: ClassVar[int] = 32
    IS_RESPONSE: ClassVar[bool] = True
    topics: tuple[TopicConfigs, ...] = ()


# ---------------------------------------------------------------- produce


@_msg
class ProducePartition:
    topic: str
    partition: int
    records: Records  # one or more whole record batches


@_msg
class ProduceRequest(Message):
    """acks: 0 (no response at all), 1 (appended), -1 (all: appended and fsynced)."""

    API_KEY: ClassVar[int] = 0
    acks: int = ACKS_LEADER
    timeout_ms: int = 30000
    partitions: tuple[ProducePartition, ...] = ()

    def __post_init__(self) -> None:
        if self.acks not in (0, 1, -1):
            raise LocalProtocolError(f"acks must be 0, 1 or -1, not {self.acks}")


@_msg
class ProducePartitionResponse:
    topic: str
    partition: int
    error_code: int = 0
    base_offset: int = -1
    log_append_time: int = -1
    log_start_offset: int = -1
    error_message: str | None = None


@_msg
class ProduceResponse(Message):
    API_KEY: ClassVar[int] = 0
    IS_RESPONSE: ClassVar[bool] = True
    partitions: tuple[ProducePartitionResponse, ...] = ()


# ---------------------------------------------------------------- fetch


@_msg
class FetchPartition:
    topic: str
    partition: int
    fetch_offset: int
    max_bytes: int = 1048576  # per partition


@_msg
class FetchRequest(Message):
    API_KEY: ClassVar[int] = 1
    max_wait_ms: int = 500
    min_bytes: int = 1
    max_bytes: int = 52428800
    isolation_level: int = 0
    partitions: tuple[FetchPartition, ...] = ()


@_msg
class FetchPartitionResponse:
    topic: str
    partition: int
    error_code: int = 0
    high_watermark: int = -1
    log_start_offset: int = -1
    records: Records = b""  # whole batches, except perhaps a cut last one


@_msg
class FetchResponse(Message):
    API_KEY: ClassVar[int] = 1
    IS_RESPONSE: ClassVar[bool] = True
    partitions: tuple[FetchPartitionResponse, ...] = ()


# ---------------------------------------------------------------- list offsets


@_msg
class ListOffsetsPartition:
    topic: str
    partition: int
    timestamp: int = LATEST  # LATEST, EARLIEST, or ms since the epoch


@_msg
class ListOffsetsRequest(Message):
    API_KEY: ClassVar[int] = 2
    partitions: tuple[ListOffsetsPartition, ...] = ()


@_msg
class ListOffsetsPartitionResponse:
    topic: str
    partition: int
    error_code: int = 0
    timestamp: int = -1
    offset: int = -1


@_msg
class ListOffsetsResponse(Message):
    API_KEY: ClassVar[int] = 2
    IS_RESPONSE: ClassVar[bool] = True
    partitions: tuple[ListOffsetsPartitionResponse, ...] = ()


# ---------------------------------------------------------------- producer ids


@_msg
class InitProducerIdRequest(Message):
    """Ask for a producer id and epoch for an idempotent producer.

    A new producer sends producer_id=-1. A producer that already has an id and
    wants to continue after an error may send it back with its epoch; the
    broker answers the same id with the epoch bumped, fencing older instances.
    """

    API_KEY: ClassVar[int] = 22
    transactional_id: str | None = None
    transaction_timeout_ms: int = 60000
    producer_id: int = -1
    producer_epoch: int = -1


@_msg
class InitProducerIdResponse(Message):
    API_KEY: ClassVar[int] = 22
    IS_RESPONSE: ClassVar[bool] = True
    error_code: int = 0
    producer_id: int = -1
    producer_epoch: int = -1


# ---------------------------------------------------------------- topic configs


@_msg
class AlterConfigsTopic:
    """Changes to one topic's settings; a value of None resets it to the broker default."""

    name: str
    configs: dict[str, str | None] = field(default_factory=dict)


@_msg
class AlterConfigsRequest(Message):
    API_KEY: ClassVar[int] = 33
    topics: tuple[AlterConfigsTopic, ...] = ()
    validate_only: bool = False


@_msg
class AlterConfigsResponse(Message):
    API_KEY: ClassVar[int] = 33
    IS_RESPONSE: ClassVar[bool] = True
    topics: tuple[TopicResult, ...] = ()


# ---------------------------------------------------------------- registry

# API keys the protocol reserves for messages that later versions define
# (Kafka's numbers); a broker answers them with UNSUPPORTED_VERSION until then.
RESERVED_API_KEYS: dict[int, str] = {}

REQUESTS: dict[int, type[Message]] = {}
RESPONSES: dict[int, type[Message]] = {}
VERSIONS: dict[int, tuple[int, int]] = {}


def _messages_in(namespace: dict[str, Any]) -> list[type[Message]]:
    """The Message subclasses a module defines, given its namespace (not those it imports)."""
    return [cls for cls in namespace.values()
            if isinstance(cls, type) and issubclass(cls, Message) and cls is not Message
            and cls.__module__ == namespace["__name__"]]


for _cls in _messages_in(globals()) + _messages_in(vars(group_messages)):
    (RESPONSES if _cls.IS_RESPONSE else REQUESTS)[_cls.API_KEY] = _cls
    VERSIONS[_cls.API_KEY] = (0, 0)

assert set(REQUESTS) == set(RESPONSES)
assert not set(REQUESTS) & set(RESERVED_API_KEYS)


def api_name(api_key: int) -> str:
    cls = REQUESTS.get(api_key)
    if cls is not None:
        return cls.__name__.removesuffix("Request")
    return RESERVED_API_KEYS.get(api_key, f"api {api_key}")


def replace(message, **changes):
    """``dataclasses.replace`` for messages (e.g. to set correlation_id)."""
    return dataclasses.replace(message, **changes)
