"""The admin client against the in-memory fake broker."""

import pytest

from client import Admin, NewTopic, TopicDescription
from client.errors import NoBrokersAvailable
from protocol.errors import TopicAlreadyExistsError, UnknownTopicOrPartitionError

from .fakebroker import FakeBrokerThread
from .helpers import refused_port

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def admin():
    srv = FakeBrokerThread()
    with Admin(bootstrap_servers=srv.bootstrap) as adm:
        yield adm
    srv.stop()


def test_create_list_describe_delete(admin):
    created = admin.create_topics(new_topics=[NewTopic("orders", num_partitions=3, replication_factor=1,
                                                       topic_configs={"retention_ms": "1000"}),
                                              ("events", 2), "plain"])
    assert created == ["orders", "events", "plain"]
    assert {"orders", "events", "plain"} <= set(admin.list_topics())
    (desc,) = admin.describe_topics(["orders"])
    assert isinstance(desc, TopicDescription)
    assert desc.name == "orders" and desc.num_partitions == 3
    assert [(p.partition, p.log_start_offset, p.log_end_offset) for p in desc.partitions] == [
        (0, 0, 0), (1, 0, 0), (2, 0, 0)]
    assert desc.configs["retention_ms"] == "1000"
    assert {d.name for d in admin.describe_topics()} >= {"orders", "events", "plain"}
    admin.delete_topics(["orders"])
    assert "orders" not in admin.list_topics()


def test_per_topic_errors_raise_the_protocol_class(admin):
    admin.create_topic("dup", 1)
    with pytest.raises(TopicAlreadyExistsError, match="dup"):
        admin.create_topics([NewTopic("dup", 1)])
    with pytest.raises(UnknownTopicOrPartitionError, match="missing"):
        admin.delete_topics("missing")
    with pytest.raises(UnknownTopicOrPartitionError, match="missing"):
        admin.describe_topics("missing")


def test_unreachable_broker():
    port = refused_port()
    with pytest.raises(NoBrokersAvailable, match=str(port)):
        Admin(bootstrap_servers=f"127.0.0.1:{port}", request_timeout_ms=2000)
