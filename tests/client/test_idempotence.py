"""The idempotent producer against the fake broker: numbering, retries, epochs.

Most tests use the AsyncProducer and the FakeBroker in one event loop, so what
is queued before the sender runs is deterministic: with a tiny batch_size
every record is a batch of its own, and records sent in one go become a queue
of batches of which five go out at once.
"""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from client import AsyncProducer, Producer
from client.errors import FerryTimeoutError
from client.sequences import SEQUENCE_MOD, PartitionQueue
from protocol import batch as batchcodec
from protocol.errors import (
    ErrorCode,
    MessageTooLargeError,
    ProducerFencedError,
    UnsupportedVersionError,
)
from protocol.messages import InitProducerIdRequest, ProducePartitionResponse, ProduceRequest, ProduceResponse

from .fakebroker import DROP, FakeBroker, FakeBrokerThread, Hangup
from .helpers import run

pytestmark = pytest.mark.timeout(60)

ONE_RECORD_BATCHES = 100  # batch_size: one small record per batch


def sent_batches(fb: FakeBroker, topic: str | None = None) -> list[tuple]:
    """(partition, producer id, epoch, base sequence, record count) of every batch sent, in order."""
    out = []
    for req in fb.requests:
        if isinstance(req, ProduceRequest):
            for p in req.partitions:
                if topic is None or p.topic == topic:
                    h = batchcodec.parse_header(p.records)
                    out.append((p.partition, h.producer_id, h.producer_epoch, h.base_sequence, h.record_count))
    return out


def stored(fb: FakeBroker, topic: str, partition: int) -> list:
    out = []
    for b in fb.topics[topic][partition].batches:
        out.extend(batchcodec.decode(b).values)
    return out


def refuse(req, code: ErrorCode) -> ProduceResponse:
    return ProduceResponse(partitions=tuple(
        ProducePartitionResponse(p.topic, p.partition, int(code)) for p in req.partitions),
        correlation_id=req.correlation_id)


def count_answers(fb: FakeBroker, log: list) -> None:
    """Record the error codes of every produce answer in ``log``."""
    def after(req, resp):
        if resp is not None:
            log.extend(p.error_code for p in resp.partitions)
    fb.after_hooks[ProduceRequest.API_KEY] = after


@pytest.fixture
def fake():
    srv = FakeBrokerThread(default_partitions=3)
    yield srv
    srv.stop()


# ---------------------------------------------------------------- configuration


def test_defaults_are_acks_all_and_idempotent():
    p = AsyncProducer()
    assert p.acks == -1 and p.enable_idempotence is True


@pytest.mark.parametrize("kwargs, expected", [
    ({"acks": 1}, True),
    ({"acks": "all"}, True),
    ({"acks": 0}, False),
    ({"retries": 0}, False),
    ({"max_in_flight_requests_per_connection": 6}, False),
    ({"max_in_flight_requests_per_connection": 5}, True),
    ({"enable_idempotence": False}, False),
    ({"acks": 1, "enable_idempotence": True}, True),
])
def test_idempotence_follows_the_config(kwargs, expected):
    assert AsyncProducer(**kwargs).enable_idempotence is expected


@pytest.mark.parametrize("kwargs, match", [
    ({"acks": 0}, "acks=0"),
    ({"retries": 0}, "retries=0"),
    ({"max_in_flight_requests_per_connection": 6}, "at most 5"),
])
def test_explicit_idempotence_refuses_a_conflicting_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AsyncProducer(enable_idempotence=True, **kwargs)


def test_blocking_producer_reports_the_effective_setting(fake):
    with Producer(bootstrap_servers=fake.bootstrap, acks=0) as p:
        assert p.enable_idempotence is False and p.acks == 0
    with Producer(bootstrap_servers=fake.bootstrap) as p:
        assert p.enable_idempotence is True and p.acks == -1


# ---------------------------------------------------------------- numbering


def test_batches_are_numbered_per_partition():
    async def main():
        fb = await FakeBroker(default_partitions=2).start()
        async with AsyncProducer(bootstrap_servers=fb.bootstrap, batch_size=ONE_RECORD_BATCHES) as p:
            await p.partitions_for("seq")
            futs = [await p.send("seq", b"v%03d" % i, partition=i % 2) for i in range(20)]
            await p.flush(10)
        await fb.stop()
        assert [f.result().offset for f in futs] == [i // 2 for i in range(20)]
        inits = [r for r in fb.requests if isinstance(r, InitProducerIdRequest)]
        assert len(inits) == 1 and inits[0].producer_id == -1
        sent = sent_batches(fb, "seq")
        pids = {pid for _, pid, _, _, _ in sent}
        assert len(pids) == 1 and pids.pop() >= 0
        for part in (0, 1):
            seqs = [seq for pa, _, epoch, seq, _ in sent if pa == part]
            assert seqs == list(range(10))
        assert {epoch for _, _, epoch, _, _ in sent} == {0}
    run(main())


def test_sequences_count_records_not_batches():
    async def main():
        fb = await FakeBroker().start()
        async with AsyncProducer(bootstrap_servers=fb.bootstrap, linger_ms=1000) as p:
            await p.partitions_for("count")
            for size in (3, 1, 4):
                for i in range(size):
                    await p.send("count", b"x", partition=0)
                await p.flush(10)
        await fb.stop()
        assert [(seq, n) for _, _, _, seq, n in sent_batches(fb, "count")] == [(0, 3), (3, 1), (4, 4)]
    run(main())


def test_sequence_wraps_at_2_to_the_31():
    async def main():
        fb = await FakeBroker(strict_unknown_producer=False).start()
        async with AsyncProducer(bootstrap_servers=fb.bootstrap, linger_ms=1000) as p:
            await p.partitions_for("wrap")
            sender = p._sender
            async with asyncio.timeout(5):
                while not sender.has_producer_id:
                    await asyncio.sleep(0.005)
            # let the first batch start just below the wrap (the broker does not know the id yet)
            st = sender._parts[("wrap", 0)] = PartitionQueue(("wrap", 0))
            st.producer_id, st.producer_epoch = sender.producer_id, sender.producer_epoch
            st.next_seq = SEQUENCE_MOD - 3
            for n in (2, 2, 2):
                futs = [await p.send("wrap", b"x", partition=0) for _ in range(n)]
                await p.flush(10)
                assert all(f.result().offset >= 0 for f in futs)
        await fb.stop()
        seqs = [seq for _, _, _, seq, _ in sent_batches(fb, "wrap")]
        assert seqs == [SEQUENCE_MOD - 3, SEQUENCE_MOD - 1, 1]
        assert len(stored(fb, "wrap", 0)) == 6
    run(main())


def test_idempotence_off_sends_no_producer_id(fake):
    with Producer(bootstrap_servers=fake.bootstrap, enable_idempotence=False) as p:
        p.send("plain", b"v", partition=0).get(5)
    assert [(pid, seq) for _, pid, _, seq, _ in sent_batches(fake.broker, "plain")] == [(-1, -1)]
    assert not any(isinstance(r, InitProducerIdRequest) for r in fake.broker.requests)


# ---------------------------------------------------------------- retries


def test_a_lost_answer_is_retried_and_answered_as_a_duplicate():
    async def main():
        fb = await FakeBroker().start()
        lost = {"left": 1}

        def after(req, resp):
            if lost["left"]:
                lost["left"] -= 1
                raise Hangup()  # appended, but the answer is lost with the connection

        async with AsyncProducer(bootstrap_servers=fb.bootstrap, retry_backoff_ms=10) as p:
            await p.partitions_for("dup")
            assert (await p.send_and_wait("dup", b"first", partition=0)).offset == 0
            fb.after_hooks[ProduceRequest.API_KEY] = after
            fut = await p.send("dup", b"second", partition=0)
            assert (await fut).offset == 1
            assert (await p.send_and_wait("dup", b"third", partition=0)).offset == 2
        await fb.stop()
        assert stored(fb, "dup", 0) == [b"first", b"second", b"third"]
        assert fb.topics["dup"][0].duplicates == 1
        seqs = [seq for _, _, _, seq, _ in sent_batches(fb, "dup")]
        assert seqs == [0, 1, 1, 2]  # the retry carried the same sequence
    run(main())


def test_a_failed_batch_makes_the_later_ones_out_of_order_and_all_are_resent_in_order():
    async def main():
        fb = await FakeBroker().start()
        answers: list[int] = []
        first = {"left": 1}

        def hook(req):
            if first["left"]:
                first["left"] -= 1
                return refuse(req, ErrorCode.NOT_LEADER_OR_FOLLOWER)  # not appended

        count_answers(fb, answers)
        async with AsyncProducer(bootstrap_servers=fb.bootstrap, batch_size=ONE_RECORD_BATCHES,
                                 retry_backoff_ms=10) as p:
            await p.send_and_wait("ooo", b"first", partition=0)
            fb.hooks[ProduceRequest.API_KEY] = hook
            futs = [await p.send("ooo", b"%03d" % i, partition=0) for i in range(30)]
            await p.flush(10)
        await fb.stop()
        assert [f.result().offset for f in futs] == list(range(1, 31))
        assert stored(fb, "ooo", 0) == [b"first"] + [b"%03d" % i for i in range(30)]
        # the four batches in flight behind the refused one were refused as out of order
        assert answers.count(int(ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER)) == 4
        seqs = [seq for _, _, _, seq, _ in sent_batches(fb, "ooo")]
        assert seqs[:11] == [0, 1, 2, 3, 4, 5, 1, 2, 3, 4, 5]
    run(main())


def test_lost_requests_and_answers_with_five_in_flight_neither_reorder_nor_duplicate():
    async def main():
        fb = await FakeBroker(default_partitions=3).start()
        rng = random.Random(7)
        faults = {"before": 0, "after": 0, "refused": 0, "dropped": 0, "in_doubt": 0}

        def hook(req):
            r = rng.random()
            if r < 0.05:
                faults["before"] += 1
                raise Hangup()  # the request is lost
            if r < 0.10:
                faults["refused"] += 1
                return refuse(req, ErrorCode.NOT_LEADER_OR_FOLLOWER)

        def after(req, resp):
            r = rng.random()
            if r < 0.04:
                faults["after"] += 1
                raise Hangup()  # appended, the answer is lost with the connection
            if r < 0.08:
                faults["dropped"] += 1
                return DROP  # appended, the answer is lost, the connection stays
            if r < 0.10:
                faults["in_doubt"] += 1
                return refuse(req, ErrorCode.STORAGE_ERROR)  # appended, but answered as failed

        windows = []
        async with AsyncProducer(bootstrap_servers=fb.bootstrap, batch_size=160, linger_ms=0,
                                 retry_backoff_ms=1, request_timeout_ms=200) as p:
            await p.partitions_for("storm")
            sender = p._sender
            original = sender._send_request

            def watched(node, conn, group):
                # batches numbered from the oldest unacknowledged one on
                windows.extend(s.numbered - s.unacked[0].ordinal
                               for s in sender._parts.values() if s.unacked)
                return original(node, conn, group)

            sender._send_request = watched
            fb.hooks[ProduceRequest.API_KEY] = hook
            fb.after_hooks[ProduceRequest.API_KEY] = after
            futs = []
            for i in range(3000):
                futs.append((i, await p.send("storm", b"%05d" % i, key=b"k%d" % (i % 30))))
                if i % 100 == 0:
                    await asyncio.sleep(0)
            await p.flush(30)
        await fb.stop()
        assert all(n >= 5 for n in faults.values()), faults
        assert max(windows) == 5
        by_partition: dict[int, list] = {0: [], 1: [], 2: []}
        for i, f in futs:
            md = f.result()
            by_partition[md.partition].append((md.offset, b"%05d" % i))
        for part, items in by_partition.items():
            log = stored(fb, "storm", part)
            assert log == [v for _, v in items], f"partition {part} differs from send order"
            assert [o for o, _ in items] == list(range(len(log)))
        assert sum(fb.topics["storm"][q].duplicates for q in range(3)) > 0
    run(main(), timeout=60)


# ---------------------------------------------------------------- epochs


def test_lost_producer_state_bumps_the_epoch_and_restarts_sequences():
    async def main():
        fb = await FakeBroker().start()
        answers: list[int] = []
        count_answers(fb, answers)
        async with AsyncProducer(bootstrap_servers=fb.bootstrap, linger_ms=1, retry_backoff_ms=10) as p:
            await p.partitions_for("lost")
            for i in range(3):
                await p.send_and_wait("lost", b"a%d" % i, partition=0)
            pid = p._sender.producer_id
            fb.forget_producers()
            futs = [await p.send("lost", b"b%d" % i, partition=0) for i in range(3)]
            await p.flush(10)
            assert [f.result().offset for f in futs] == [3, 4, 5]
            assert (p._sender.producer_id, p._sender.producer_epoch) == (pid, 1)
        await fb.stop()
        assert int(ErrorCode.UNKNOWN_PRODUCER_ID) in answers
        inits = [(r.producer_id, r.producer_epoch) for r in fb.requests if isinstance(r, InitProducerIdRequest)]
        assert inits == [(-1, -1), (pid, 0)]
        sent = [(epoch, seq) for _, _, epoch, seq, _ in sent_batches(fb, "lost")]
        assert sent[-1] == (1, 0)
        assert stored(fb, "lost", 0) == [b"a0", b"a1", b"a2", b"b0", b"b1", b"b2"]
    run(main())


def test_a_bump_whose_answer_was_lost_falls_back_to_a_new_producer_id():
    async def main():
        fb = await FakeBroker().start()
        lost = {"left": 1}

        def after(req, resp):
            if req.producer_id >= 0 and lost["left"]:
                lost["left"] -= 1
                return DROP  # the broker bumped the epoch; the producer never hears of it

        fb.after_hooks[InitProducerIdRequest.API_KEY] = after
        async with AsyncProducer(bootstrap_servers=fb.bootstrap, linger_ms=1, retry_backoff_ms=10,
                                 request_timeout_ms=200) as p:
            await p.send_and_wait("bump", b"a", partition=0)
            pid = p._sender.producer_id
            fb.forget_producers()
            assert (await p.send_and_wait("bump", b"b", partition=0)).offset == 1
            new_pid = p._sender.producer_id
        await fb.stop()
        inits = [(r.producer_id, r.producer_epoch) for r in fb.requests if isinstance(r, InitProducerIdRequest)]
        # the retried bump is refused (PRODUCER_FENCED): the epoch it asks to bump is stale now
        assert inits == [(-1, -1), (pid, 0), (pid, 0), (-1, -1)]
        assert new_pid != pid
        assert sent_batches(fb, "bump")[-1][1:4] == (new_pid, 0, 0)
        assert stored(fb, "bump", 0) == [b"a", b"b"]
    run(main())


def test_a_batch_failing_for_good_renumbers_the_rest_under_a_new_epoch():
    async def main():
        fb = await FakeBroker().start()

        def hook(req):
            for part in req.partitions:
                if batchcodec.decode(part.records).values == [b"03"]:
                    return refuse(req, ErrorCode.MESSAGE_TOO_LARGE)

        async with AsyncProducer(bootstrap_servers=fb.bootstrap, batch_size=ONE_RECORD_BATCHES,
                                 retry_backoff_ms=10) as p:
            await p.partitions_for("gap")
            fb.hooks[ProduceRequest.API_KEY] = hook
            futs = [await p.send("gap", b"%02d" % i, partition=0) for i in range(12)]
            await p.flush(10)
            epoch = p._sender.producer_epoch
        await fb.stop()
        assert isinstance(futs[3].exception, MessageTooLargeError)
        expected = [b"%02d" % i for i in range(12) if i != 3]
        assert stored(fb, "gap", 0) == expected
        assert [f.result().offset for i, f in enumerate(futs) if i != 3] == list(range(11))
        assert epoch == 1
    run(main())


def values_of(req) -> list:
    return [v for p in req.partitions for v in batchcodec.decode(p.records).values]


def test_an_expired_batch_that_was_written_is_not_written_again():
    """X is appended but every answer about it is lost until it expires: the next
    batch goes under a new epoch, so nothing is written twice."""
    async def main():
        fb = await FakeBroker().start()
        state = {"appended": False}

        def hook(req):
            if b"X" in values_of(req) and state["appended"]:
                raise Hangup()  # the broker never sees the retries

        def after(req, resp):
            if b"X" in values_of(req) and not state["appended"]:
                state["appended"] = True
                raise Hangup()  # appended, answer lost

        async with AsyncProducer(bootstrap_servers=fb.bootstrap, linger_ms=0, retry_backoff_ms=10,
                                 delivery_timeout_ms=300) as p:
            await p.send_and_wait("doubt", b"W", partition=0)
            fb.hooks[ProduceRequest.API_KEY] = hook
            fb.after_hooks[ProduceRequest.API_KEY] = after
            with pytest.raises(FerryTimeoutError):
                await p.send_and_wait("doubt", b"X", partition=0)
            assert (await p.send_and_wait("doubt", b"Y", partition=0)).offset == 2
            assert p._sender.producer_epoch == 1
        await fb.stop()
        assert stored(fb, "doubt", 0) == [b"W", b"X", b"Y"]
        assert [(epoch, seq) for _, _, epoch, seq, _ in sent_batches(fb, "doubt")][-1] == (1, 0)
    run(main())


def test_a_later_batch_taken_by_the_broker_mends_the_chain_without_a_new_epoch():
    """X is written but its answer lost; its retry is refused for good. Y, sent
    behind it, is then accepted: so X was written, and the epoch stays."""
    X, Y = b"X" * 8, b"Y" * 8  # one record per batch

    async def main():
        fb = await FakeBroker().start()
        state = {"round": 0}

        def hook(req):
            if X in values_of(req) and state["round"] == 1:
                state["round"] = 2
                return refuse(req, ErrorCode.MESSAGE_TOO_LARGE)

        def after(req, resp):
            if X in values_of(req) and state["round"] == 0:
                state["round"] = 1
                raise Hangup()  # X appended, its answer and Y's request lost

        async with AsyncProducer(bootstrap_servers=fb.bootstrap, batch_size=ONE_RECORD_BATCHES,
                                 retry_backoff_ms=10) as p:
            await p.send_and_wait("mend", b"W", partition=0)
            fb.hooks[ProduceRequest.API_KEY] = hook
            fb.after_hooks[ProduceRequest.API_KEY] = after
            x = await p.send("mend", X, partition=0)
            y = await p.send("mend", Y, partition=0)
            await p.flush(10)
            assert isinstance(x.exception, MessageTooLargeError)  # in doubt: it is in the log
            assert y.result().offset == 2
            assert (await p.send_and_wait("mend", b"Z", partition=0)).offset == 3
            assert p._sender.producer_epoch == 0
        await fb.stop()
        assert stored(fb, "mend", 0) == [b"W", X, Y, b"Z"]
        assert sum(isinstance(r, InitProducerIdRequest) for r in fb.requests) == 1
    run(main())


@pytest.mark.parametrize("code", [ErrorCode.PRODUCER_FENCED, ErrorCode.INVALID_PRODUCER_EPOCH])
def test_a_fenced_producer_fails_its_records_for_good(code):
    async def main():
        fb = await FakeBroker(default_partitions=2).start()
        async with AsyncProducer(bootstrap_servers=fb.bootstrap, retry_backoff_ms=10) as p:
            await p.partitions_for("fenced")
            await p.send_and_wait("fenced", b"ok", partition=0)
            fb.hooks[ProduceRequest.API_KEY] = lambda req: refuse(req, code)
            with pytest.raises(ProducerFencedError):
                await p.send_and_wait("fenced", b"refused", partition=0)
            fb.hooks.clear()
            with pytest.raises(ProducerFencedError):
                await p.send_and_wait("fenced", b"after", partition=1)
        await fb.stop()
        assert stored(fb, "fenced", 0) == [b"ok"]
    run(main())


def test_a_broker_without_producer_ids_gets_plain_batches_unless_idempotence_was_asked_for():
    async def main():
        fb = await FakeBroker(idempotence=False).start()
        async with AsyncProducer(bootstrap_servers=fb.bootstrap) as p:
            assert (await p.send_and_wait("old", b"v", partition=0)).offset == 0
        async with AsyncProducer(bootstrap_servers=fb.bootstrap, enable_idempotence=True) as p:
            with pytest.raises(UnsupportedVersionError, match="enable_idempotence=False"):
                await p.send_and_wait("old", b"w", partition=0)
        await fb.stop()
        assert [(pid, seq) for _, pid, _, seq, _ in sent_batches(fb, "old")] == [(-1, -1)]
    run(main())


# ---------------------------------------------------------------- broker restarts


def test_records_wait_for_a_broker_that_comes_back_on_the_same_port():
    async def main():
        fb = await FakeBroker().start()
        port = fb.port
        async with AsyncProducer(bootstrap_servers=fb.bootstrap, retry_backoff_ms=20,
                                 request_timeout_ms=1000, delivery_timeout_ms=20000) as p:
            await p.send_and_wait("back", b"before", partition=0)
            await fb.stop()
            fb.drop_connections()
            futs = [await p.send("back", b"while-down-%d" % i, partition=0) for i in range(3)]
            async with asyncio.timeout(5):  # until a reconnection was refused
                while 0 not in p._sender._node_error:
                    await asyncio.sleep(0.01)
            assert not any(f.done() for f in futs)
            await fb.start(port)
            offsets = [(await f).offset for f in futs]
        await fb.stop()
        assert offsets == [1, 2, 3]
        assert stored(fb, "back", 0) == [b"before", b"while-down-0", b"while-down-1", b"while-down-2"]
    run(main())


def test_records_expire_when_the_broker_stays_away():
    async def main():
        fb = await FakeBroker().start()
        async with AsyncProducer(bootstrap_servers=fb.bootstrap, retry_backoff_ms=20,
                                 request_timeout_ms=500, delivery_timeout_ms=600) as p:
            await p.send_and_wait("away", b"before", partition=0)
            await fb.stop()
            fb.drop_connections()
            start = time.monotonic()
            fut = await p.send("away", b"lost", partition=0)
            with pytest.raises(FerryTimeoutError, match="delivery_timeout_ms"):
                await fut
            assert time.monotonic() - start < 3
            await p.stop(0)
    run(main())
