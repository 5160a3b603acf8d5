"""Idempotent produce against a real broker: retries across a SIGKILL and a restart stay single."""

from __future__ import annotations

import pytest

from protocol import batch
from protocol import messages as m
from protocol.errors import ErrorCode
from tests.rawclient import RawClient

pytestmark = pytest.mark.timeout(60)


def send(c, values, pid, epoch, seq, acks=-1):
    data = batch.build_batch(values, producer_id=pid, producer_epoch=epoch, base_sequence=seq)
    return c.request(m.ProduceRequest(acks=acks, partitions=(m.ProducePartition("idem", 0, data),),
                                      correlation_id=c.next_id())).partitions[0]


def test_retries_after_a_crash_are_answered_with_the_original_offsets(broker_factory):
    broker = broker_factory("--segment-bytes", "1024")
    with RawClient(broker.host, broker.port) as c:
        init = c.request(m.InitProducerIdRequest(correlation_id=c.next_id()))
        assert init.error_code == 0
        pid, epoch = init.producer_id, init.producer_epoch
        offsets = [send(c, [b"r%d" % i] * 3, pid, epoch, 3 * i).base_offset for i in range(20)]
        assert offsets == list(range(0, 60, 3))
    broker.kill()
    broker.start()
    with RawClient(broker.host, broker.port) as c:
        for i in range(15, 20):  # the last five batches are remembered
            r = send(c, [b"r%d" % i] * 3, pid, epoch, 3 * i)
            assert (r.error_code, r.base_offset) == (0, offsets[i])
        assert send(c, [b"gap"], pid, epoch, 61).error_code == ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER
        assert send(c, [b"next"], pid, epoch, 60).base_offset == 60
        fresh = c.request(m.InitProducerIdRequest(correlation_id=c.next_id()))
        assert fresh.producer_id > pid  # ids are not reused after a restart
        bumped = c.request(m.InitProducerIdRequest(producer_id=pid, producer_epoch=epoch,
                                                   correlation_id=c.next_id()))
        assert (bumped.producer_id, bumped.producer_epoch) == (pid, epoch + 1)
        assert send(c, [b"new epoch"], pid, epoch + 1, 0).error_code == 0
        assert send(c, [b"zombie"], pid, epoch, 61).error_code == ErrorCode.INVALID_PRODUCER_EPOCH
        end = c.request(m.ListOffsetsRequest(partitions=(m.ListOffsetsPartition("idem", 0),),
                                             correlation_id=c.next_id())).partitions[0].offset
        assert end == 62
