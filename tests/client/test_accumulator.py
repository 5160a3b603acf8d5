import threading

import pytest

from client.accumulator import BATCH_OVERHEAD, RECORD_OVERHEAD, RecordAccumulator, RecordFuture
from client.errors import FerryTimeoutError, IllegalStateError
from client.structs import RecordMetadata
from protocol import batch as batchcodec
from protocol.errors import MessageTooLargeError, NotLeaderOrFollowerError


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make(**kw) -> tuple[RecordAccumulator, Clock]:
    clock = Clock()
    kw.setdefault("linger_ms", 5)
    return RecordAccumulator(clock=clock, **kw), clock


def test_records_wait_in_an_open_batch_until_linger_ends():
    acc, clock = make(linger_ms=10)
    futs = [acc.append("t", 0, None, b"v%d" % i, None, None) for i in range(3)]
    assert [f.index for f in futs] == [0, 1, 2]
    assert futs[0].batch is futs[2].batch
    batches, due = acc.drain()
    assert batches == [] and due == pytest.approx(0.010)
    clock.now += 0.004
    assert acc.drain()[0] == []
    clock.now += 0.007
    batches, due = acc.drain()
    assert len(batches) == 1 and batches[0].values == [b"v0", b"v1", b"v2"]
    assert due is None


def test_batch_is_sealed_at_batch_size():
    value = b"x" * 100
    per_record = len(value) + RECORD_OVERHEAD
    acc, _ = make(batch_size=BATCH_OVERHEAD + 10 * per_record, linger_ms=10_000)
    futs = [acc.append("t", 0, None, value, None, None) for i in range(25)]
    batches, _ = acc.drain()
    assert [len(b) for b in batches] == [10, 10]
    assert futs[9].batch is batches[0] and futs[10].batch is batches[1]
    assert futs[10].index == 0
    assert len(futs[24].batch) == 5 and not futs[24].batch.sealed


def test_a_record_that_would_overflow_starts_a_new_batch():
    acc, _ = make(batch_size=BATCH_OVERHEAD + 300, linger_ms=10_000)
    a = acc.append("t", 0, None, b"a" * 50, None, None)
    b = acc.append("t", 0, None, b"b" * 260, None, None)
    assert a.batch is not b.batch and a.batch.sealed and len(a.batch) == 1


def test_a_batch_is_sealed_when_the_next_record_alike_would_not_fit():
    acc, _ = make(batch_size=BATCH_OVERHEAD + 250, linger_ms=10_000)
    a = acc.append("t", 0, None, b"a" * 92, None, None)  # 100 of 250 bytes
    assert not a.batch.sealed
    acc.append("t", 0, None, b"a" * 92, None, None)  # 200: a third would not fit
    assert a.batch.sealed and len(a.batch) == 2


def test_partitions_get_their_own_batches_and_wakeup_is_called_once_until_drained():
    acc, _ = make()
    wakes = []
    acc.wakeup = lambda: wakes.append(1)
    f0 = acc.append("t", 0, None, b"a", None, None)
    f1 = acc.append("t", 1, None, b"b", None, None)
    f2 = acc.append("u", 0, None, b"c", None, None)
    assert len({id(f.batch) for f in (f0, f1, f2)}) == 3
    assert wakes == [1]
    acc.drain()
    acc.append("t", 2, None, b"d", None, None)
    assert wakes == [1, 1]


def test_seal_all_and_seal_callback():
    sealed = []
    acc, _ = make(on_seal=lambda t, p: sealed.append((t, p)))
    acc.append("t", 0, None, b"a", None, None)
    acc.append("t", 1, None, b"a", None, None)
    acc.seal_all()
    assert sorted(sealed) == [("t", 0), ("t", 1)]
    assert len(acc.drain()[0]) == 2


def test_encoding_is_one_batch_with_every_column():
    acc, _ = make()
    acc.append("t", 0, b"k1", b"v1", None, None)
    acc.append("t", 0, None, b"v2", 1234, [("h", b"x")])
    acc.append("t", 0, b"k3", None, None, None)
    acc.seal_all()
    (b,), _ = acc.drain()
    data = b.encode("gzip")
    assert b.encode("gzip") is data  # built once, reused by retries
    decoded = batchcodec.decode(data)
    assert decoded.header.compression == batchcodec.Compression.GZIP
    assert list(decoded.keys) == [b"k1", None, b"k3"]
    assert list(decoded.values) == [b"v1", b"v2", None]
    assert [list(h) for h in decoded.headers] == [[], [("h", b"x")], []]
    assert decoded.timestamps[1] == 1234
    assert decoded.timestamps[0] == decoded.timestamps[2] == b.timestamp


def test_keyless_batches_carry_no_key_column():
    acc, _ = make()
    fut = acc.append("t", 0, None, b"v", None, None)
    assert fut.batch.keys is None and fut.batch.timestamps is None and fut.batch.headers is None


def test_completion_gives_each_record_its_offset():
    acc, _ = make()
    futs = [acc.append("t", 3, None, b"v", None, None) for _ in range(4)]
    acc.seal_all()
    (b,), _ = acc.drain()
    assert not futs[0].is_done
    acc.completed(b, base_offset=40)
    assert [f.get(0) for f in futs] == [RecordMetadata("t", 3, 40 + i, b.timestamp) for i in range(4)]
    assert futs[1].succeeded() and not futs[1].failed() and futs[1].exception is None
    assert futs[2].value.offset == 42
    assert acc.buffered_bytes == 0


def test_log_append_time_and_explicit_timestamps():
    acc, _ = make()
    f0 = acc.append("t", 0, None, b"v", 111, None)
    f1 = acc.append("t", 0, None, b"v", None, None)
    acc.completed(f0.batch, base_offset=0)
    assert f0.get(0).timestamp == 111 and f1.get(0).timestamp == f1.batch.timestamp
    acc2, _ = make()
    g = acc2.append("t", 0, None, b"v", 111, None)
    acc2.completed(g.batch, base_offset=5, log_append_time=999)
    assert g.get(0) == RecordMetadata("t", 0, 5, 999)


def test_failure_reaches_every_record_and_callbacks():
    acc, _ = make()
    futs = [acc.append("t", 0, None, b"v", None, None) for _ in range(3)]
    got, errs = [], []
    futs[0].add_callback(got.append).add_errback(errs.append)
    acc.completed(futs[0].batch, error=NotLeaderOrFollowerError("moved"))
    for f in futs:
        assert f.failed()
        with pytest.raises(NotLeaderOrFollowerError):
            f.get(0)
    assert got == [] and len(errs) == 1 and isinstance(errs[0], NotLeaderOrFollowerError)
    late = []
    futs[2].add_errback(lambda tag, exc: late.append((tag, exc)), "tag")  # done: runs at once
    assert late == [("tag", futs[2].exception)]


def test_callbacks_get_metadata_with_bound_args():
    acc, _ = make()
    fut = acc.append("t", 0, None, b"v", None, None)
    seen = []
    fut.add_callback(lambda tag, md, extra=None: seen.append((tag, md.offset, extra)), "a", extra=1)
    acc.completed(fut.batch, base_offset=7)
    assert seen == [("a", 7, 1)]


def test_get_times_out():
    acc, _ = make()
    fut = acc.append("t", 0, None, b"v", None, None)
    with pytest.raises(FerryTimeoutError):
        fut.get(0.01)


def test_record_future_is_small():
    acc, _ = make()
    fut = acc.append("t", 0, None, b"v", None, None)
    assert isinstance(fut, RecordFuture) and not hasattr(fut, "__dict__")


def test_too_large_records_are_refused_at_send():
    acc, _ = make(max_request_size=1000)
    with pytest.raises(MessageTooLargeError):
        acc.append("t", 0, None, b"x" * 1000, None, None)
    acc.append("t", 0, None, b"x" * (1000 - BATCH_OVERHEAD - RECORD_OVERHEAD), None, None)


@pytest.mark.timeout(10)
def test_full_buffer_blocks_then_times_out():
    acc, _ = make(buffer_memory=1000, linger_ms=0)
    acc.append("t", 0, None, b"x" * 600, None, None)
    with pytest.raises(FerryTimeoutError, match="buffer_memory"):
        acc.append("t", 0, None, b"x" * 600, None, None, max_block=0.05)


@pytest.mark.timeout(10)
def test_full_buffer_unblocks_when_a_batch_completes():
    acc, _ = make(buffer_memory=1000, linger_ms=0)
    first = acc.append("t", 0, None, b"x" * 600, None, None)
    acc.seal_all()
    acc.drain()
    result = {}
    started = threading.Event()

    def blocked_send():
        started.set()
        result["fut"] = acc.append("t", 0, None, b"y" * 600, None, None, max_block=5)

    t = threading.Thread(target=blocked_send)
    t.start()
    started.wait(5)
    assert "fut" not in result
    acc.completed(first.batch, base_offset=0)
    t.join(5)
    assert not t.is_alive() and result["fut"].batch is not first.batch


def test_closed_accumulator_refuses_records():
    acc, _ = make()
    acc.close()
    with pytest.raises(IllegalStateError):
        acc.append("t", 0, None, b"v", None, None)


def test_reenqueue_puts_batches_back_in_front_in_order():
    acc, _ = make(batch_size=BATCH_OVERHEAD + 20, linger_ms=10_000)
    for i in range(4):
        acc.append("t", 0, None, b"%d" % i * 15, None, None)
    first, _ = acc.drain()
    acc.append("t", 0, None, b"z" * 15, None, None)
    acc.seal_all()
    acc.reenqueue(first[:2])
    batches, _ = acc.drain()
    assert batches[:2] == first[:2] and len(batches) == 3


def test_fail_all_fails_open_and_sealed_batches():
    acc, _ = make()
    a = acc.append("t", 0, None, b"v", None, None)
    acc.seal_all()
    b = acc.append("t", 1, None, b"v", None, None)
    acc.fail_all(IllegalStateError("closed"))
    assert a.failed() and b.failed() and acc.buffered_bytes == 0


def test_asyncio_style_done_callback():
    acc, _ = make()
    ok = acc.append("t", 0, None, b"v", None, None)
    seen = []
    ok.add_done_callback(seen.append)
    assert seen == [] and not ok.cancelled()
    acc.completed(ok.batch, base_offset=3)
    assert seen == [ok] and ok.result().offset == 3
    bad = acc.append("t", 1, None, b"v", None, None)
    acc.completed(bad.batch, error=NotLeaderOrFollowerError())
    bad.add_done_callback(seen.append)
    assert seen == [ok, bad]
