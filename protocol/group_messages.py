"""Ferry's consumer-group messages, as frozen dataclasses: the annotations are the schema.

The requests and responses a group member and its coordinator exchange
(FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup, OffsetCommit,
OffsetFetch) and those an admin client sends about groups (DescribeGroups,
ListGroups, DeleteGroups, OffsetDelete), with the structs inside them. They
follow the conventions of ``protocol.messages``, whose registry (``REQUESTS``,
``RESPONSES``, ``VERSIONS``) includes them; this module holds no registry of
its own.
"""

from __future__ import annotations

from typing import ClassVar

from .message_base import Message, _msg

# ---------------------------------------------------------------- consumer groups
#
# The classic, client-assigned group protocol (Kafka's JoinGroup/SyncGroup):
# the coordinator tracks members and generations, the leader's client computes
# the assignment, and the coordinator hands each member its opaque share.
# ``metadata`` and ``assignment`` are opaque bytes to the broker.


@_msg
class FindCoordinatorRequest(Message):
    API_KEY: ClassVar[int] = 10
    key: str = ""  # the group id
    key_type: int = 0  # 0: group (1, transaction, is reserved)


@_msg
class FindCoordinatorResponse(Message):
    API_KEY: ClassVar[int] = 10
    IS_RESPONSE: ClassVar[bool] = True
    error_code: int = 0
    error_message: str | None = None
    node_id: int = -1
    host: str = ""
    port: int = -1


@_msg
class JoinGroupProtocol:
    name: str  # e.g. an assignor name: "range", "cooperative-sticky"
    metadata: bytes = b""  # opaque: the member's subscription for this protocol


@_msg
class JoinGroupRequest(Message):
    API_KEY: ClassVar[int] = 11
    group_id: str = ""
    session_timeout_ms: int = 45000
    rebalance_timeout_ms: int = 300000  # the client's max_poll_interval_ms
    member_id: str = ""  # "" on the first join
    group_instance_id: str | None = None  # set for static membership
    protocol_type: str = "consumer"
    protocols: tuple[JoinGroupProtocol, ...] = ()  # in order of preference
    reason: str | None = None  # why the member (re)joins, for the broker's log


@_msg
class JoinGroupMember:
    member_id: str
    group_instance_id: str | None = None
    metadata: bytes = b""  # the member's metadata for the chosen protocol


@_msg
class JoinGroupResponse(Message):
    API_KEY: ClassVar[int] = 11
    IS_RESPONSE: ClassVar[bool] = True
    error_code: int = 0
    error_message: str | None = None
    generation_id: int = -1
    protocol_type: str | None = None
    protocol_name: str | None = None
    leader: str = ""
    skip_assignment: bool = False  # the leader must not assign: the group is already Stable
    member_id: str = ""
    members: tuple[JoinGroupMember, ...] = ()  # to the leader only


@_msg
class HeartbeatRequest(Message):
    API_KEY: ClassVar[int] = 12
    group_id: str = ""
    generation_id: int = -1
    member_id: str = ""
    group_instance_id: str | None = None


@_msg
class HeartbeatResponse(Message):
    API_KEY: ClassVar[int] = 12
    IS_RESPONSE: ClassVar[bool] = True
    error_code: int = 0
    error_message: str | None = None


@_msg
class LeaveGroupMember:
    member_id: str = ""
    group_instance_id: str | None = None
    reason: str | None = None


@_msg
class LeaveGroupRequest(Message):
    API_KEY: ClassVar[int] = 13
    group_id: str = ""
    members: tuple[LeaveGroupMember, ...] = ()


@_msg
class LeaveGroupMemberResponse:
    member_id: str
    group_instance_id: str | None = None
    error_code: int = 0


@_msg
class LeaveGroupResponse(Message):
    API_KEY: ClassVar[int] = 13
    IS_RESPONSE: ClassVar[bool] = True
    error_code: int = 0
    error_message: str | None = None
    members: tuple[LeaveGroupMemberResponse, ...] = ()


@_msg
class SyncGroupAssignment:
    member_id: str
    assignment: bytes = b""


@_msg
class SyncGroupRequest(Message):
    API_KEY: ClassVar[int] = 14
    group_id: str = ""
    generation_id: int = -1
    member_id: str = ""
    group_instance_id: str | None = None
    protocol_type: str | None = None
    protocol_name: str | None = None
    assignments: tuple[SyncGroupAssignment, ...] = ()  # from the leader only


@_msg
class SyncGroupResponse(Message):
    API_KEY: ClassVar[int] = 14
    IS_RESPONSE: ClassVar[bool] = True
    error_code: int = 0
    error_message: str | None = None
    protocol_type: str | None = None
    protocol_name: str | None = None
    assignment: bytes = b""


@_msg
class DescribeGroupsRequest(Message):
    API_KEY: ClassVar[int] = 15
    groups: tuple[str, ...] = ()


@_msg
class DescribedGroupMember:
    member_id: str
    group_instance_id: str | None = None
    client_id: str = ""
    client_host: str = ""
    metadata: bytes = b""
    assignment: bytes = b""


@_msg
class DescribedGroup:
    group_id: str
    error_code: int = 0
    state: str = "Dead"  # Empty, PreparingRebalance, CompletingRebalance, Stable or Dead
    protocol_type: str = ""
    protocol: str = ""  # the chosen protocol (assignor) of the current generation
    generation_id: int = -1
    leader: str = ""
    members: tuple[DescribedGroupMember, ...] = ()


@_msg
class DescribeGroupsResponse(Message):
    API_KEY: ClassVar[int] = 15
    IS_RESPONSE: ClassVar[bool] = True
    groups: tuple[DescribedGroup, ...] = ()


@_msg
class ListGroupsRequest(Message):
    API_KEY: ClassVar[int] = 16
    states_filter: tuple[str, ...] | None = None  # None: groups in any state


@_msg
class ListedGroup:
    group_id: str
    protocol_type: str = ""
    state: str = ""


@_msg
class ListGroupsResponse(Message):
    API_KEY: ClassVar[int] = 16
    IS_RESPONSE: ClassVar[bool] = True
    error_code: int = 0
    groups: tuple[ListedGroup, ...] = ()


@_msg
class OffsetCommitPartition:
    topic: str
    partition: int
    offset: int  # the next offset to consume
    metadata: str = ""


@_msg
class OffsetCommitRequest(Message):
    API_KEY: ClassVar[int] = 8
    group_id: str = ""
    generation_id: int = -1  # -1: a commit outside group membership
    member_id: str = ""
    group_instance_id: str | None = None
    retention_time_ms: int = -1  # -1: the broker's offsets_retention_minutes
    partitions: tuple[OffsetCommitPartition, ...] = ()


@_msg
class OffsetCommitPartitionResponse:
    topic: str
    partition: int
    error_code: int = 0


@_msg
class OffsetCommitResponse(Message):
    API_KEY: ClassVar[int] = 8
    IS_RESPONSE: ClassVar[bool] = True
    partitions: tuple[OffsetCommitPartitionResponse, ...] = ()


@_msg
class OffsetFetchPartition:
    topic: str
    partition: int


@_msg
class OffsetFetchRequest(Message):
    API_KEY: ClassVar[int] = 9
    group_id: str = ""
    partitions: tuple[OffsetFetchPartition, ...] | None = None  # None: every committed partition


@_msg
class OffsetFetchPartitionResponse:
    topic: str
    partition: int
    offset: int = -1  # -1: nothing committed
    metadata: str = ""
    error_code: int = 0


@_msg
class OffsetFetchResponse(Message):
    API_KEY: ClassVar[int] = 9
    IS_RESPONSE: ClassVar[bool] = True
    error_code: int = 0
    partitions: tuple[OffsetFetchPartitionResponse, ...] = ()


@_msg
class DeleteGroupsRequest(Message):
    API_KEY: ClassVar[int] = 42
    groups: tuple[str, ...] = ()


@_msg
class DeleteGroupResult:
    group_id: str
    error_code: int = 0


@_msg
class DeleteGroupsResponse(Message):
    API_KEY: ClassVar[int] = 42
    IS_RESPONSE: ClassVar[bool] = True
    results: tuple[DeleteGroupResult, ...] = ()


@_msg
class OffsetDeletePartition:
    topic: str
    partition: int


@_msg
class OffsetDeleteRequest(Message):
    API_KEY: ClassVar[int] = 47
    group_id: str = ""
    partitions: tuple[OffsetDeletePartition, ...] = ()


@_msg
class OffsetDeletePartitionResponse:
    topic: str
    partition: int
    error_code: int = 0


@_msg
class OffsetDeleteResponse(Message):
    API_KEY: ClassVar[int] = 47
    IS_RESPONSE: ClassVar[bool] = True
    error_code: int = 0
    partitions: tuple[OffsetDeletePartitionResponse, ...] = ()
