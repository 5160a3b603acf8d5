"""Ferry's error table and the protocol layer's exception hierarchy.

Every error that crosses the wire is a small integer from ``ErrorCode``. Where
Kafka has an error with the same meaning, Ferry uses Kafka's name and number,
so tools and habits carry over. Each code has exactly one exception class,
found with ``ApiError.for_code(code)``; clients raise these.

Hierarchy::

    FerryError
    ├── ProtocolError
    │   ├── LocalProtocolError   you used the protocol objects wrongly
    │   └── RemoteProtocolError  the peer sent something invalid
    └── ApiError                 an error code answered by the broker
        ├── RetriableError       retrying the same request may succeed
        └── (one class per code)
"""

from __future__ import annotations

import enum


class ErrorCode(enum.IntEnum):
    NONE = 0
    UNKNOWN_SERVER_ERROR = -1
    OFFSET_OUT_OF_RANGE = 1
    CORRUPT_MESSAGE = 2
    UNKNOWN_TOPIC_OR_PARTITION = 3
    INVALID_FETCH_SIZE = 4
    LEADER_NOT_AVAILABLE = 5
    NOT_LEADER_OR_FOLLOWER = 6
    REQUEST_TIMED_OUT = 7
    MESSAGE_TOO_LARGE = 10
    OFFSET_METADATA_TOO_LARGE = 12
    NETWORK_EXCEPTION = 13
    COORDINATOR_LOAD_IN_PROGRESS = 14
    COORDINATOR_NOT_AVAILABLE = 15
    NOT_COORDINATOR = 16
    INVALID_TOPIC = 17
    RECORD_LIST_TOO_LARGE = 18
    NOT_ENOUGH_REPLICAS = 19
    NOT_ENOUGH_REPLICAS_AFTER_APPEND = 20
    INVALID_REQUIRED_ACKS = 21
    ILLEGAL_GENERATION = 22
    INCONSISTENT_GROUP_PROTOCOL = 23
    INVALID_GROUP_ID = 24
    UNKNOWN_MEMBER_ID = 25
    INVALID_SESSION_TIMEOUT = 26
    REBALANCE_IN_PROGRESS = 27
    INVALID_COMMIT_OFFSET_SIZE = 28
    INVALID_TIMESTAMP = 32
    UNSUPPORTED_VERSION = 35
    TOPIC_ALREADY_EXISTS = 36
    INVALID_PARTITIONS = 37
    INVALID_CONFIG = 40
    INVALID_REQUEST = 42
    POLICY_VIOLATION = 44
    OUT_OF_ORDER_SEQUENCE_NUMBER = 45
    DUPLICATE_SEQUENCE_NUMBER = 46
    INVALID_PRODUCER_EPOCH = 47
    INVALID_PRODUCER_ID_MAPPING = 49
    STORAGE_ERROR = 56
    UNKNOWN_PRODUCER_ID = 59
    NON_EMPTY_GROUP = 68
    GROUP_ID_NOT_FOUND = 69
    UNSUPPORTED_COMPRESSION_TYPE = 76
    MEMBER_ID_REQUIRED = 79
    GROUP_MAX_SIZE_REACHED = 81
    FENCED_INSTANCE_ID = 82
    PRODUCER_FENCED = 90


class FerryError(Exception):
    """Base of every exception the protocol layer raises."""


class ProtocolError(FerryError):
    pass


class LocalProtocolError(ProtocolError):
    """The caller used a Connection or codec wrongly (a bug on this side)."""


class RemoteProtocolError(ProtocolError):
    """The peer sent bytes that break the protocol: the connection is unusable."""


class ApiError(FerryError):
    """An error code answered by the broker. ``code`` is an ``ErrorCode``."""

    code: ErrorCode = ErrorCode.UNKNOWN_SERVER_ERROR
    retriable: bool = False
    description: str = "the broker hit an unexpected error"
    _by_code: dict[int, type["ApiError"]] = {}

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.description)

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if "code" in cls.__dict__:
            ApiError._by_code[int(cls.code)] = cls

    @staticmethod
    def for_code(code: int) -> type["ApiError"]:
        """The exception class for ``code``; ``UnknownServerError`` if unknown."""
        return ApiError._by_code.get(int(code), UnknownServerError)

    @staticmethod
    def from_code(code: int, message: str | None = None) -> "ApiError":
        return ApiError.for_code(code)(message)


class RetriableError(ApiError):
    retriable = True


def raise_for_code(code: int, message: str | None = None) -> None:
    """Raise the matching exception unless ``code`` is NONE."""
    if code:
        raise ApiError.from_code(code, message)


class UnknownServerError(ApiError):
    code = ErrorCode.UNKNOWN_SERVER_ERROR


class OffsetOutOfRangeError(ApiError):
    code = ErrorCode.OFFSET_OUT_OF_RANGE
    description = "the requested offset is outside the partition's log"


class CorruptMessageError(RetriableError):
    code = ErrorCode.CORRUPT_MESSAGE
    description = "a record batch failed its CRC or is malformed"


class UnknownTopicOrPartitionError(RetriableError):
    code = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    description = "this topic or partition does not exist"


class InvalidFetchSizeError(ApiError):
    code = ErrorCode.INVALID_FETCH_SIZE
    description = "the fetch size is invalid"


class LeaderNotAvailableError(RetriableError):
    code = ErrorCode.LEADER_NOT_AVAILABLE
    description = "the partition is not available yet"


class NotLeaderOrFollowerError(RetriableError):
    code = ErrorCode.NOT_LEADER_OR_FOLLOWER
    description = "this broker does not host the partition"


class RequestTimedOutError(RetriableError):
    code = ErrorCode.REQUEST_TIMED_OUT
    description = "the request timed out"


class MessageTooLargeError(ApiError):
    code = ErrorCode.MESSAGE_TOO_LARGE
    description = "the record batch is larger than the broker accepts"


class OffsetMetadataTooLargeError(ApiError):
    code = ErrorCode.OFFSET_METADATA_TOO_LARGE
    description = "the commit metadata string is too large"


class NetworkError(RetriableError):
    code = ErrorCode.NETWORK_EXCEPTION
    description = "the connection to the broker was lost"


class CoordinatorLoadInProgressError(RetriableError):
    code = ErrorCode.COORDINATOR_LOAD_IN_PROGRESS
    description = "the group coordinator is loading"


class CoordinatorNotAvailableError(RetriableError):
    code = ErrorCode.COORDINATOR_NOT_AVAILABLE
    description = "the group coordinator is not available"


class NotCoordinatorError(RetriableError):
    code = ErrorCode.NOT_COORDINATOR
    description = "this broker is not the group's coordinator"


class InvalidTopicError(ApiError):
    code = ErrorCode.INVALID_TOPIC
    description = (
        "invalid topic name: use 1-249 letters, digits, '.', '_' or '-', not '.' or '..'"
    )


class RecordListTooLargeError(ApiError):
    code = ErrorCode.RECORD_LIST_TOO_LARGE
    description = "the request carries more record data than the broker accepts"


class NotEnoughReplicasError(RetriableError):
    code = ErrorCode.NOT_ENOUGH_REPLICAS
    description = "not enough in-sync replicas"


class NotEnoughReplicasAfterAppendError(RetriableError):
    code = ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND
    description = "appended, but not enough in-sync replicas acknowledged"


class InvalidRequiredAcksError(ApiError):
    code = ErrorCode.INVALID_REQUIRED_ACKS
    description = "acks must be 0, 1 or -1 (all)"


class IllegalGenerationError(ApiError):
    code = ErrorCode.ILLEGAL_GENERATION
    description = "the group generation is stale"


class InconsistentGroupProtocolError(ApiError):
    code = ErrorCode.INCONSISTENT_GROUP_PROTOCOL
    description = "the member's protocols do not match the group's"


class InvalidGroupIdError(ApiError):
    code = ErrorCode.INVALID_GROUP_ID
    description = "the group id is invalid"


class UnknownMemberIdError(ApiError):
    code = ErrorCode.UNKNOWN_MEMBER_ID
    description = "the group does not know this member"


class InvalidSessionTimeoutError(ApiError):
    code = ErrorCode.INVALID_SESSION_TIMEOUT
    description = "the session timeout is outside the broker's bounds"


class RebalanceInProgressError(ApiError):
    code = ErrorCode.REBALANCE_IN_PROGRESS
    description = "the group is rebalancing"


class InvalidCommitOffsetSizeError(ApiError):
    code = ErrorCode.INVALID_COMMIT_OFFSET_SIZE
    description = "the offset commit is too large"


class InvalidTimestampError(ApiError):
    code = ErrorCode.INVALID_TIMESTAMP
    description = "a record timestamp is invalid"


class UnsupportedVersionError(ApiError):
    code = ErrorCode.UNSUPPORTED_VERSION
    description = "the broker does not support this API version"


class TopicAlreadyExistsError(ApiError):
    code = ErrorCode.TOPIC_ALREADY_EXISTS
    description = "the topic already exists"


class InvalidPartitionsError(ApiError):
    code = ErrorCode.INVALID_PARTITIONS
    description = "the partition count is invalid"


class InvalidConfigError(ApiError):
    code = ErrorCode.INVALID_CONFIG
    description = "a configuration value is invalid"


class InvalidRequestError(ApiError):
    code = ErrorCode.INVALID_REQUEST
    description = "the request is malformed"


class PolicyViolationError(ApiError):
    code = ErrorCode.POLICY_VIOLATION
    description = "the request violates a broker policy"


class OutOfOrderSequenceNumberError(ApiError):
    code = ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER
    description = "the broker received an out-of-order sequence number"


class DuplicateSequenceNumberError(ApiError):
    code = ErrorCode.DUPLICATE_SEQUENCE_NUMBER
    description = "the broker received a duplicate sequence number"


class InvalidProducerEpochError(ApiError):
    code = ErrorCode.INVALID_PRODUCER_EPOCH
    description = "the producer epoch is stale: another producer took over"


class InvalidProducerIdMappingError(ApiError):
    code = ErrorCode.INVALID_PRODUCER_ID_MAPPING
    description = "the producer id is not known"


class StorageError(RetriableError):
    code = ErrorCode.STORAGE_ERROR
    description = "the broker could not write to disk"


class UnknownProducerIdError(ApiError):
    code = ErrorCode.UNKNOWN_PRODUCER_ID
    description = "the broker has no state for this producer id"


class NonEmptyGroupError(ApiError):
    code = ErrorCode.NON_EMPTY_GROUP
    description = "the group still has members"


class GroupIdNotFoundError(ApiError):
    code = ErrorCode.GROUP_ID_NOT_FOUND
    description = "the group does not exist"


class UnsupportedCompressionTypeError(ApiError):
    code = ErrorCode.UNSUPPORTED_COMPRESSION_TYPE
    description = "the compression codec is not supported"


class MemberIdRequiredError(ApiError):
    code = ErrorCode.MEMBER_ID_REQUIRED
    description = "the group requires a member id: join again with the one given"


class GroupMaxSizeReachedError(ApiError):
    code = ErrorCode.GROUP_MAX_SIZE_REACHED
    description = "the group is full"


class FencedInstanceIdError(ApiError):
    code = ErrorCode.FENCED_INSTANCE_ID
    description = "another member with this group instance id took over"


class ProducerFencedError(ApiError):
    code = ErrorCode.PRODUCER_FENCED
    description = "a newer producer with the same id fenced this one"
