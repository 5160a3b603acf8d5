"""The order the broker writes answers in: the fetches an append woke, then the append's own.

The broker's connections are driven in process here, with transports that
note each write, so the order is seen exactly rather than raced over sockets.
"""

from __future__ import annotations

import asyncio

import pytest

from broker.config import BrokerConfig
from broker.server import Broker, BrokerProtocol
from protocol import batch
from protocol import messages as m
from protocol.connection import NEED_DATA, Connection, Role

pytestmark = pytest.mark.timeout(30)


class NotingTransport(asyncio.Transport):
    """Appends (name, bytes) to ``written`` for every write."""

    def __init__(self, name: str, written: list) -> None:
        super().__init__()
        self.name = name
        self.written = written
        self.closing = False

    def write(self, data) -> None:
        self.written.append((self.name, bytes(data)))

    def writelines(self, parts) -> None:
        self.write(b"".join(bytes(p) for p in parts))

    def get_extra_info(self, name, default=None):
        return ("127.0.0.1", 40000) if name == "peername" else default

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class Peer:
    """A client ``Connection`` talking to one in-process ``BrokerProtocol``."""

    def __init__(self, broker: Broker, name: str, written: list) -> None:
        self.name = name
        self.written = written
        self.client = Connection(Role.CLIENT)
        self.protocol = BrokerProtocol(broker)
        self.protocol.connection_made(NotingTransport(name, written))
        self.next_id = 0
        self.send(m.Handshake())
        assert isinstance(self.answers()[0], m.HandshakeResponse)

    def send(self, *messages) -> None:
        """Hand the broker ``messages`` in one read."""
        data = b""
        for msg in messages:
            if isinstance(msg, m.Handshake):
                data += self.client.send(msg)
            else:
                self.next_id += 1
                data += self.client.send(msg, self.next_id)
        self.protocol._feed(data)

    def answers(self) -> list:
        """Decode what the broker wrote to this peer so far (and forget it)."""
        mine = [data for name, data in self.written if name == self.name]
        self.written[:] = [w for w in self.written if w[0] != self.name]
        for data in mine:
            self.client.receive_data(data)
        out = []
        while (event := self.client.next_event()) is not NEED_DATA:
            out.append(event)
        return out


def produce(topic: str, *values: bytes) -> m.ProduceRequest:
    return m.ProduceRequest(acks=1, partitions=(
        m.ProducePartition(topic, 0, batch.build_batch(list(values))),))


def run_with_broker(tmp_path, body) -> None:
    async def go() -> None:
        broker = Broker(BrokerConfig(port=0, data_dir=tmp_path / "data"))
        await broker.start()
        try:
            await body(broker)
        finally:
            await broker.shutdown()

    asyncio.run(asyncio.wait_for(go(), 20))


def parked_fetch(broker: Broker, topic: str) -> tuple[list, Peer, Peer]:
    """(written, producer, consumer): one record in ``topic``, the consumer's
    fetch for the next one parked."""
    written: list = []
    producer = Peer(broker, "producer", written)
    consumer = Peer(broker, "consumer", written)
    producer.send(produce(topic, b"first"))
    assert producer.answers()[0].partitions[0].base_offset == 0
    consumer.send(m.FetchRequest(max_wait_ms=20000, min_bytes=1,
                                 partitions=(m.FetchPartition(topic, 0, 1),)))
    assert written == []  # parked: nothing to answer yet
    return written, producer, consumer


def test_a_fetch_woken_by_an_append_is_answered_before_the_append(tmp_path):
    async def body(broker: Broker) -> None:
        written, producer, consumer = parked_fetch(broker, "order")
        producer.send(produce("order", b"second"))
        for _ in range(3):
            await asyncio.sleep(0)  # whatever the loop would still do
        assert [name for name, _ in written] == ["consumer", "producer"]
        fetched = consumer.answers()[0].partitions[0]
        values = [v for pos, _ in batch.iter_complete(fetched.records)
                  for v in batch.decode(fetched.records, pos).values]
        assert values == [b"second"]
        assert producer.answers()[0].partitions[0].base_offset == 1

    run_with_broker(tmp_path, body)


def test_requests_in_one_read_are_answered_in_order_after_the_fetches_they_woke(tmp_path):
    async def body(broker: Broker) -> None:
        written, producer, consumer = parked_fetch(broker, "pipe")
        producer.send(produce("pipe", b"1"), m.MetadataRequest(topics=("pipe",)),
                      produce("pipe", b"2"))
        for _ in range(3):
            await asyncio.sleep(0)
        assert [name for name, _ in written] == ["consumer", "producer", "producer", "producer"]
        answers = producer.answers()
        assert [type(a).__name__ for a in answers] == [
            "ProduceResponse", "MetadataResponse", "ProduceResponse"]
        assert [a.correlation_id for a in answers] == [2, 3, 4]
        assert [answers[0].partitions[0].base_offset, answers[2].partitions[0].base_offset] == [1, 2]
        # the fetch answered with what the whole read appended
        fetched = consumer.answers()[0].partitions[0]
        assert fetched.high_watermark == 3

    run_with_broker(tmp_path, body)


def test_more_requests_in_one_read_than_a_connection_may_have_in_progress(tmp_path):
    """Held answers count against max_inflight_requests: the connection stops
    reading at the limit, sends them, and reads on, until all are answered in order."""
    async def body(broker: Broker) -> None:
        written: list = []
        producer = Peer(broker, "producer", written)
        n = broker.config.max_inflight_requests * 3 + 5
        producer.send(*[produce("many", str(i).encode()) for i in range(n)])
        for _ in range(3):
            await asyncio.sleep(0)
        answers = producer.answers()
        assert [a.correlation_id for a in answers] == list(range(1, n + 1))
        assert [a.partitions[0].base_offset for a in answers] == list(range(n))
        assert not producer.protocol.read_paused and not producer.protocol.slots

    run_with_broker(tmp_path, body)
