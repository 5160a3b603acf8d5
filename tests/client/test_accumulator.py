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


# ------------------------------------------------------------ the lock-free path


class CountingLock:
    """Wraps the accumulator's lock and counts how often it is taken."""

    def __init__(self, lock) -> None:
        self.lock = lock
        self.taken = 0

    def acquire(self, *args):
        self.taken += 1
        return self.lock.acquire(*args)

    def release(self):
        self.lock.release()

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()


def fast(acc: RecordAccumulator, partition: int = 0):
    """``fast_send`` whose slow path appends to ``partition``."""
    def slow(topic, value, key=None, part=None, timestamp_ms=None, headers=None):
        return acc.append(topic, partition if part is None else part, key, value, timestamp_ms, headers)
    return acc.fast_send(slow)


def test_plain_records_take_the_lock_once_per_reserved_chunk():
    from client.accumulator import RESERVE_CHUNK
    acc, _ = make(linger_ms=10_000)
    counting = acc._lock = CountingLock(acc._lock)
    acc._acquire, acc._release = counting.acquire, counting.release
    send = fast(acc)
    value = b"x" * 100
    futs = [send("t", value) for _ in range(2000)]  # one batch's worth
    per_chunk = RESERVE_CHUNK // (len(value) + RECORD_OVERHEAD)
    assert counting.taken <= 2000 // per_chunk + 3
    assert [f.index for f in futs] == list(range(2000))
    assert futs[0].batch is futs[-1].batch


def test_a_seal_in_the_middle_of_a_lock_free_append_waits_for_it():
    acc, _ = make(linger_ms=10_000)
    send = fast(acc)
    first = send("t", b"a")  # opens the batch (the locked path)
    b = first.batch
    seen = {}
    wakes = []
    acc.wakeup = lambda: wakes.append(1)

    class SealedWhileAppending(list):
        def append(self, value):
            super().append(value)
            acc.seal_all()  # another thread seals it at the worst moment
            seen["drained"] = acc.drain()[0]
            seen["wakes"] = len(wakes)

    b.values = SealedWhileAppending(b.values)
    second = send("t", b"b")
    assert second.batch is b and second.index == 1
    assert seen["drained"] == []  # not handed to the sender while being appended to
    assert len(wakes) > seen["wakes"]  # the appending thread told the sender when it was done
    batches, _ = acc.drain()
    assert batches == [b] and list(b.values) == [b"a", b"b"]
    third = send("t", b"c")
    assert third.batch is not b and third.index == 0


def test_a_batch_sealed_before_the_append_sends_the_record_to_a_new_one():
    acc, clock = make(linger_ms=5)
    send = fast(acc)
    first = send("t", b"a")
    clock.now += 1
    lingered, _ = acc.drain()
    assert lingered == [first.batch]
    second = send("t", b"b")
    assert second.batch is not first.batch and second.index == 0


def test_sealing_returns_the_unused_reservation():
    acc, _ = make(linger_ms=10_000, buffer_memory=1_000_000)
    send = fast(acc)
    futs = [send("t", b"x" * 100) for _ in range(10)]
    assert acc.buffered_bytes >= 10 * (100 + RECORD_OVERHEAD)
    acc.seal_all()
    batches, _ = acc.drain()
    assert acc.buffered_bytes == 10 * (100 + RECORD_OVERHEAD)
    acc.completed(batches[0], base_offset=0)
    assert acc.buffered_bytes == 0 and futs[9].get(0).offset == 9


def test_threads_fill_batches_of_their_own_and_lose_nothing_to_concurrent_seals():
    import sys
    acc, _ = make(linger_ms=0, batch_size=BATCH_OVERHEAD + 40 * (12 + RECORD_OVERHEAD))
    send = fast(acc)
    threads, per_thread = 4, 3000
    futures: dict[int, list] = {}
    drained: list = []
    stop = threading.Event()

    def producer(n: int) -> None:
        futures[n] = [send("t", b"%02d:%08d" % (n, i) + b"ab") for i in range(per_thread)]

    def sender() -> None:
        while not stop.is_set():
            drained.extend(acc.drain()[0])
            for b in drained[-5:]:
                acc.completed(b, base_offset=0)

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as the interpreter allows
    try:
        workers = [threading.Thread(target=producer, args=(n,)) for n in range(threads)]
        drainer = threading.Thread(target=sender)
        drainer.start()
        for w in workers:
            w.start()
        for w in workers:
            w.join(60)
        stop.set()
        drainer.join(60)
    finally:
        sys.setswitchinterval(old)
    acc.seal_all()
    drained.extend(acc.drain()[0])
    assert len(set(map(id, drained))) == len(drained), "a batch was handed over twice"
    assert all(not b.busy and b.sealed for b in drained)
    seen = set(map(id, drained))
    for n in range(threads):
        for i, f in enumerate(futures[n]):
            assert id(f.batch) in seen
            assert f.batch.values[f.index] == b"%02d:%08d" % (n, i) + b"ab"
        # each thread's records reach the sender in the order they were sent
        order = [v for b in drained for v in b.values if v.startswith(b"%02d:" % n)]
        assert order == [b"%02d:%08d" % (n, i) + b"ab" for i in range(per_thread)]
    for b in drained:
        acc.completed(b, base_offset=0)
    assert acc.buffered_bytes == 0


def test_close_stops_the_lock_free_path():
    acc, _ = make(linger_ms=10_000)
    send = fast(acc)
    send("t", b"a")
    acc.close()
    with pytest.raises(IllegalStateError):
        send("t", b"b")


def test_an_exception_in_the_middle_of_a_lock_free_append_leaves_the_batch_usable():
    acc, _ = make(linger_ms=10_000)
    send = fast(acc)
    b = send("t", b"a").batch

    class Interrupted(list):
        def append(self, value):
            raise KeyboardInterrupt  # as a signal handler's exception would arrive

    b.values = Interrupted(b.values)
    with pytest.raises(KeyboardInterrupt):
        send("t", b"b")
    assert not b.busy
    b.values = list(b.values)
    acc.seal_all()
    batches, _ = acc.drain()
    assert batches == [b] and b.values == [b"a"]
