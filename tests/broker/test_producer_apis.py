"""InitProducerId, AlterConfigs and a retried produce, through the request handlers in process."""

from __future__ import annotations

from broker.storage import LogConfig, TopicStore
from protocol import batch
from protocol import messages as m
from protocol.errors import ErrorCode
from tests.broker.test_maintenance import NOW, make_handlers, produce_req, run


def idem(values, pid, epoch, seq, timestamp=NOW * 1000):
    return batch.build_batch(values, producer_id=pid, producer_epoch=epoch, base_sequence=seq, timestamps=timestamp)


def test_init_producer_id_and_a_retried_produce(tmp_path):
    store, _, h, _ = make_handlers(tmp_path)
    new = h.handle(m.InitProducerIdRequest(correlation_id=1))
    assert new.error_code == 0 and new.producer_epoch == 0
    bumped = h.handle(m.InitProducerIdRequest(producer_id=new.producer_id, producer_epoch=0, correlation_id=2))
    assert (bumped.producer_id, bumped.producer_epoch) == (new.producer_id, 1)
    fenced = h.handle(m.InitProducerIdRequest(producer_id=new.producer_id, producer_epoch=0, correlation_id=3))
    assert fenced.error_code == ErrorCode.PRODUCER_FENCED
    txn = h.handle(m.InitProducerIdRequest(transactional_id="t", correlation_id=4))
    assert txn.error_code == ErrorCode.INVALID_REQUEST

    pid = new.producer_id
    first = run(h.handle(produce_req("t", idem([b"a", b"b"], pid, 1, 0)))).partitions[0]
    again = run(h.handle(produce_req("t", idem([b"a", b"b"], pid, 1, 0), acks=-1))).partitions[0]
    assert first.error_code == again.error_code == 0
    assert again.base_offset == first.base_offset
    assert store.partition("t", 0).log_end_offset == 2
    gap = run(h.handle(produce_req("t", idem([b"c"], pid, 1, 5)))).partitions[0]
    assert gap.error_code == ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER
    old = run(h.handle(produce_req("t", idem([b"c"], pid, 0, 2)))).partitions[0]
    assert old.error_code == ErrorCode.INVALID_PRODUCER_EPOCH
    store.close()


def test_alter_configs(tmp_path):
    store, _, h, _ = make_handlers(tmp_path)
    store.create_topic("t", 1)
    req = m.AlterConfigsRequest(topics=(
        m.AlterConfigsTopic("t", {"retention.ms": "1000", "flush_interval_messages": "5"}),
        m.AlterConfigsTopic("nope", {"retention.ms": "1"}),
        m.AlterConfigsTopic("t", {"bogus.setting": "1"}),
    ), correlation_id=1)
    resp = h.handle(req)
    assert [r.error_code for r in resp.topics] == [0, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, ErrorCode.INVALID_CONFIG]
    info = store.topic("t")
    assert info.config.retention_ms == 1000 and info.config.flush_interval_messages == 5
    assert info.overrides == {"retention.ms": "1000", "flush.messages": "5"}
    dry = h.handle(m.AlterConfigsRequest(topics=(m.AlterConfigsTopic("t", {"retention.ms": None}),),
                                         validate_only=True, correlation_id=2))
    assert dry.topics[0].error_code == 0 and store.topic("t").config.retention_ms == 1000
    h.handle(m.AlterConfigsRequest(topics=(m.AlterConfigsTopic("t", {"retention.ms": None}),), correlation_id=3))
    assert store.topic("t").config.retention_ms == LogConfig().retention_ms
    described = h.handle(m.DescribeConfigsRequest(topics=("t",), correlation_id=4)).topics[0].configs
    assert described["flush.messages"] == "5" and "flush_interval_messages" not in described
    store.close()
    assert TopicStore(tmp_path / "data").topic("t").config.flush_interval_messages == 5


def test_create_topics_validate_only_creates_nothing(tmp_path):
    store, _, h, _ = make_handlers(tmp_path)
    resp = h.handle(m.CreateTopicsRequest(topics=(
        m.NewTopic("x", 2, configs={"cleanup.policy": "compact"}),
        m.NewTopic("y", 1, configs={"cleanup.policy": "shred"}),
    ), validate_only=True, correlation_id=1))
    assert [r.error_code for r in resp.topics] == [0, ErrorCode.INVALID_CONFIG]
    assert store.topics() == []
    store.close()
