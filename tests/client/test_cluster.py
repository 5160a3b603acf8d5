import pytest

from client.cluster import ClusterMetadata, parse_bootstrap
from protocol.errors import ErrorCode
from protocol.messages import BrokerInfo, MetadataResponse, PartitionMetadata, TopicMetadata


@pytest.mark.parametrize("text,expected", [
    ("localhost:9092", [("localhost", 9092)]),
    ("a:1,b:2", [("a", 1), ("b", 2)]),
    (" a:1 , b ", [("a", 1), ("b", 9092)]),
    (["a:1", "b:2,c:3"], [("a", 1), ("b", 2), ("c", 3)]),
    ("[::1]:9093", [("::1", 9093)]),
    ("[::1]", [("::1", 9092)]),
    (":9000", [("localhost", 9000)]),
])
def test_parse_bootstrap(text, expected):
    assert parse_bootstrap(text) == expected


@pytest.mark.parametrize("bad", ["", " , ", "host:port", "host:0", "host:70000"])
def test_parse_bootstrap_rejects(bad):
    with pytest.raises(ValueError):
        parse_bootstrap(bad)


def response(*topics, brokers=(BrokerInfo(1, "h", 9),)):
    return MetadataResponse(brokers=brokers, controller_id=1, topics=topics)


def test_metadata_update_and_leaders():
    meta = ClusterMetadata()
    meta.update(response(
        TopicMetadata("a", partitions=(PartitionMetadata(0, leader=1), PartitionMetadata(1, leader=1),
                                       PartitionMetadata(2, int(ErrorCode.LEADER_NOT_AVAILABLE), leader=-1))),
        TopicMetadata("gone", int(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)),
    ), ["a", "gone"])
    assert meta.brokers == {1: ("h", 9)}
    assert meta.partition_counts == {"a": 3}
    assert meta.leader_for("a", 0) == 1 and meta.leader_for("a", 2) is None
    assert meta.leader_for("gone", 0) is None
    assert meta.partitions_for_topic("a") == {0, 1, 2}
    assert meta.topic_errors["gone"] == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION


def test_metadata_forgets_topics_missing_from_an_answer():
    meta = ClusterMetadata()
    meta.update(response(TopicMetadata("a", partitions=(PartitionMetadata(0),)),
                         TopicMetadata("b", partitions=(PartitionMetadata(0),))), None)
    assert meta.topics() == {"a", "b"}
    meta.update(response(TopicMetadata("a", partitions=(PartitionMetadata(0),))), ["a", "b"])
    assert meta.topics() == {"a"}
    meta.update(response(), None)
    assert meta.topics() == set()


def test_a_topic_being_created_has_no_partitions_yet():
    meta = ClusterMetadata()
    meta.update(response(TopicMetadata("new", int(ErrorCode.LEADER_NOT_AVAILABLE))), ["new"])
    assert "new" not in meta.partition_counts
    assert meta.topic_errors["new"] == ErrorCode.LEADER_NOT_AVAILABLE
