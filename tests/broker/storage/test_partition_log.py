import errno
import os
import threading

import pytest

from broker.storage import (
    DiskFullError,
    LogConfig,
    LogOfflineError,
    LogWriteError,
    PartitionLog,
    StorageError,
)
from protocol.batch import build_batch, decode, split_batches
from protocol.errors import (
    CorruptMessageError,
    MessageTooLargeError,
    OffsetOutOfRangeError,
)

from .helpers import FakeClock, decode_ranges, make_batch, read_all, values_for

SMALL = LogConfig(segment_bytes=1024, index_interval_bytes=128)


def open_log(tmp_path, config=SMALL, **kwargs):
    return PartitionLog(tmp_path / "topic-0", config, **kwargs)


def append_n(log, n, records=3, size=20, start_tag=0, timestamp=None):
    """Append n batches; returns {offset: value}."""
    expected = {}
    for i in range(n):
        tag = start_tag + i
        values = values_for(tag, records, size)
        ts = timestamp if timestamp is not None else 1000 + tag
        result = log.append(make_batch(values, timestamp=ts))
        for j, v in enumerate(values):
            expected[result.base_offset + j] = v
    return expected


def test_new_log_is_empty(tmp_path):
    log = open_log(tmp_path)
    assert (log.topic, log.partition) == ("topic", 0)
    assert log.log_start_offset == log.log_end_offset == 0
    result = log.read(0, 1000)
    assert result.ranges == [] and result.size == 0 and result.high_watermark == 0
    with pytest.raises(OffsetOutOfRangeError):
        log.read(1, 1000)
    with pytest.raises(OffsetOutOfRangeError):
        log.read(-1, 1000)


def test_append_assigns_and_patches_offsets(tmp_path):
    log = open_log(tmp_path)
    first = log.append(make_batch([b"a", b"b", b"c"]))
    second = log.append(make_batch([b"d"]))
    assert (first.base_offset, first.last_offset, first.log_append_time) == (0, 2, -1)
    assert (second.base_offset, second.last_offset) == (3, 3)
    assert log.log_end_offset == 4
    batches = decode_ranges(log.read(0, 1 << 20))
    assert [list(b.offsets) for b in batches] == [[0, 1, 2], [3]]
    assert [b.values for b in batches] == [[b"a", b"b", b"c"], [b"d"]]


def test_one_append_of_several_batches_with_caller_verified_headers(tmp_path):
    log = open_log(tmp_path)
    log.append(make_batch([b"x"]))
    data = bytearray(build_batch([b"a", b"b"]) + build_batch([b"c"]) + build_batch([b"d"] * 4))
    result = log.append(data, split_batches(data))
    assert (result.base_offset, result.last_offset) == (1, 7)
    assert read_all(log) == {0: b"x", 1: b"a", 2: b"b", 3: b"c", 4: b"d", 5: b"d", 6: b"d", 7: b"d"}


def test_read_only_buffers_are_accepted(tmp_path):
    log = open_log(tmp_path)
    log.append(build_batch([b"frozen"]))
    assert read_all(log) == {0: b"frozen"}


def test_reading_from_the_middle_of_a_batch_returns_that_batch(tmp_path):
    log = open_log(tmp_path)
    append_n(log, 5, records=4)
    batches = decode_ranges(log.read(10, 1))
    assert len(batches) == 1
    assert list(batches[0].offsets) == [8, 9, 10, 11]


def test_max_bytes_is_respected_but_one_batch_always_comes(tmp_path):
    log = open_log(tmp_path, LogConfig(index_interval_bytes=64))
    append_n(log, 20, records=2)
    batch_size = log.read(0, 1).size
    assert len(decode_ranges(log.read(0, 1))) == 1
    assert len(decode_ranges(log.read(0, 0))) == 1
    result = log.read(0, batch_size * 5 + batch_size // 2)
    assert result.size == batch_size * 5
    assert len(decode_ranges(result)) == 5
    assert log.read(0, 1 << 30).size == log.size_bytes


def test_big_batch_is_served_whole(tmp_path):
    log = open_log(tmp_path)
    log.append(make_batch([os.urandom(5000)]))
    result = log.read(0, 100)
    assert result.size > 5000
    assert len(decode_ranges(result)) == 1


def test_reads_span_segments(tmp_path):
    log = open_log(tmp_path)
    expected = append_n(log, 40)
    segments = log.segments()
    assert len(segments) > 3
    assert all(s.size <= SMALL.segment_bytes for s in segments)
    result = log.read(0, 1 << 20)
    assert len(result.ranges) == len(segments)
    got = {o: v for b in decode_ranges(result) for o, v in zip(b.offsets, b.values)}
    assert got == expected
    middle = segments[2].base_offset + 1
    assert decode_ranges(log.read(middle, 1 << 20))[0].offsets[0] <= middle
    assert read_all(log, max_bytes=300) == expected


def test_read_result_reports_watermark_and_start(tmp_path):
    log = open_log(tmp_path)
    append_n(log, 3)
    result = log.read(0, 10)
    assert (result.high_watermark, result.log_start_offset) == (9, 0)


def test_offset_for_timestamp(tmp_path):
    log = open_log(tmp_path)
    append_n(log, 40)  # batch i has timestamp 1000 + i and base offset 3 * i
    assert len(log.segments()) > 3
    assert log.offset_for_timestamp(0) == (0, 1000)
    for i in (0, 7, 25, 39):
        assert log.offset_for_timestamp(1000 + i) == (3 * i, 1000 + i)
    assert log.offset_for_timestamp(2000) is None


def test_offset_for_timestamp_with_unordered_timestamps(tmp_path):
    log = open_log(tmp_path, LogConfig(index_interval_bytes=0))
    for ts in (100, 300, 200, 500, 400):
        log.append(make_batch([b"v"], timestamp=ts))
    assert log.offset_for_timestamp(250) == (1, 300)
    assert log.offset_for_timestamp(450) == (3, 500)
    assert log.offset_for_timestamp(501) is None


def test_rolls_by_size(tmp_path):
    log = open_log(tmp_path)
    append_n(log, 40)
    segments = log.segments()
    for before, after in zip(segments, segments[1:]):
        assert before.next_offset == after.base_offset
        assert before.size + 100 > SMALL.segment_bytes  # full, up to about one batch
    logs = sorted(n for n in os.listdir(tmp_path / "topic-0") if n.endswith(".log"))
    assert logs == [f"{s.base_offset:020d}.log" for s in segments]


def test_a_batch_bigger_than_a_segment_gets_its_own(tmp_path):
    log = open_log(tmp_path)
    append_n(log, 2)
    log.append(make_batch([os.urandom(3000)]))
    append_n(log, 1, start_tag=10)
    sizes = [s.size for s in log.segments()]
    assert len(sizes) == 3 and sizes[1] > SMALL.segment_bytes


def test_rolls_by_age(tmp_path):
    clock = FakeClock()
    log = open_log(tmp_path, LogConfig(segment_ms=60_000), clock=clock)
    append_n(log, 2)
    clock.advance(59)
    append_n(log, 1, start_tag=2)
    assert len(log.segments()) == 1
    clock.advance(2)
    append_n(log, 1, start_tag=3)
    assert [s.base_offset for s in log.segments()] == [0, 9]
    clock.advance(30)
    append_n(log, 1, start_tag=4)
    assert len(log.segments()) == 2


def test_explicit_roll(tmp_path):
    log = open_log(tmp_path)
    log.roll()
    assert len(log.segments()) == 1  # the active segment was empty
    append_n(log, 1)
    log.roll()
    log.roll()
    assert [s.base_offset for s in log.segments()] == [0, 3]
    assert (tmp_path / "topic-0" / "00000000000000000000.index").exists()
    append_n(log, 1, start_tag=1)
    assert read_all(log) == append_n(open_log(tmp_path / "other"), 2)


def test_truncate_to_drops_from_the_batch_holding_the_offset(tmp_path):
    log = open_log(tmp_path)
    expected = append_n(log, 40)
    log.truncate_to(50)  # batch 16 holds offsets 48..50
    assert log.log_end_offset == 48
    assert read_all(log) == {o: v for o, v in expected.items() if o < 48}
    assert all(s.base_offset < 48 for s in log.segments())
    append_n(log, 1, start_tag=99)
    assert log.log_end_offset == 51
    log.close()
    reopened = open_log(tmp_path, recover=False)
    assert reopened.log_end_offset == 51
    assert read_all(reopened)[48] == values_for(99, 3, 20)[0]


def test_truncate_to_a_segment_boundary_and_below_the_start(tmp_path):
    log = open_log(tmp_path)
    append_n(log, 40)
    boundary = log.segments()[2].base_offset
    log.truncate_to(boundary)
    assert log.log_end_offset == boundary
    assert log.segments()[-1].base_offset == boundary and log.segments()[-1].size == 0
    log.truncate_to(0)
    assert log.log_start_offset == log.log_end_offset == 0
    assert log.size_bytes == 0
    log.truncate_to(10)  # at or past the end: nothing to drop
    assert log.log_end_offset == 0


def test_ranges_of_deleted_segments_stay_readable(tmp_path):
    log = open_log(tmp_path)
    append_n(log, 40)
    ranges = log.read(0, 1 << 20).ranges
    before = [r.read() for r in ranges]
    log.truncate_to(log.segments()[1].base_offset)
    log.append(make_batch([os.urandom(2000)]))
    log.append(make_batch([os.urandom(2000)]))
    # segment 1 was cut in place (its range now covers other bytes); the later ones
    # were deleted, but their open files still serve every byte
    assert ranges[0].read() == before[0]
    assert [r.read() for r in ranges[2:]] == before[2:]


def test_log_append_time_is_stamped(tmp_path):
    clock = FakeClock(1_234_567.891)
    log = open_log(tmp_path, LogConfig(message_timestamp_type="LogAppendTime"), clock=clock)
    result = log.append(make_batch([b"a", b"b"], timestamp=5))
    assert result.log_append_time == 1_234_567_891
    (batch,) = decode_ranges(log.read(0, 1000))
    assert batch.header.log_append_time == 1_234_567_891
    assert list(batch.timestamps) == [1_234_567_891] * 2
    assert log.offset_for_timestamp(1_234_567_000) == (0, 1_234_567_891)


def test_create_time_topics_clear_a_producer_set_append_time(tmp_path):
    log = open_log(tmp_path)
    data = bytearray(build_batch([b"a"], timestamps=77))
    data[12:20] = (999).to_bytes(8, "big")
    log.append(data)
    (batch,) = decode_ranges(log.read(0, 1000))
    assert batch.header.log_append_time == -1 and list(batch.timestamps) == [77]


def test_message_too_large_writes_nothing(tmp_path):
    log = open_log(tmp_path, LogConfig(max_message_bytes=500))
    small = build_batch([b"ok"])
    big = build_batch([os.urandom(600)])
    with pytest.raises(MessageTooLargeError):
        log.append(bytearray(small + big))
    assert log.log_end_offset == 0 and log.size_bytes == 0


def test_corrupt_batches_are_refused(tmp_path):
    log = open_log(tmp_path)
    data = make_batch([b"a"])
    data[-1] ^= 0xFF
    with pytest.raises(CorruptMessageError):
        log.append(data)
    with pytest.raises(CorruptMessageError):
        log.append(bytearray(make_batch([b"a"]) + b"\x00\x00"))
    assert log.size_bytes == 0


@pytest.mark.parametrize("partial", [0, 1, 37])
def test_failed_write_leaves_the_log_valid(tmp_path, monkeypatch, partial):
    log = open_log(tmp_path)
    expected = append_n(log, 5)
    size = log.size_bytes
    real_write = os.write
    calls = []

    def failing_write(fd, data):
        calls.append(len(data))
        if partial and len(calls) == 1:
            return real_write(fd, bytes(data)[:partial])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", failing_write)
    with pytest.raises(DiskFullError) as info:
        log.append(make_batch(values_for(100, 3, 20)))
    assert isinstance(info.value, StorageError) and isinstance(info.value, LogWriteError)
    monkeypatch.setattr(os, "write", real_write)
    assert log.size_bytes == size
    assert os.path.getsize(log.segments()[-1].log_path) == log.segments()[-1].size
    assert read_all(log) == expected
    expected.update(append_n(log, 3, start_tag=200))
    assert read_all(log) == expected
    reopened = open_log(tmp_path, recover=True)
    assert read_all(reopened) == expected


def test_other_write_errors_are_log_write_errors(tmp_path, monkeypatch):
    log = open_log(tmp_path)

    def failing_write(fd, data):
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(os, "write", failing_write)
    with pytest.raises(LogWriteError) as info:
        log.append(make_batch([b"a"]))
    assert not isinstance(info.value, DiskFullError)


def test_a_write_that_cannot_be_undone_takes_the_log_offline(tmp_path, monkeypatch):
    log = open_log(tmp_path)
    expected = append_n(log, 2)
    real_write = os.write

    def half_write(fd, data):
        real_write(fd, bytes(data)[:10])
        raise OSError(errno.EIO, "I/O error")

    def no_truncate(fd, size):
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(os, "write", half_write)
    monkeypatch.setattr(os, "ftruncate", no_truncate)
    with pytest.raises(LogOfflineError):
        log.append(make_batch([b"a"]))
    monkeypatch.undo()
    with pytest.raises(LogOfflineError):
        log.append(make_batch([b"b"]))
    assert read_all(log) == expected  # the garbage past the end is never served
    assert read_all(open_log(tmp_path, recover=True)) == expected


def test_flush_runs_beside_appends(tmp_path):
    log = open_log(tmp_path)
    stop = threading.Event()
    errors = []

    def flusher():
        while not stop.is_set():
            try:
                log.flush()
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)
                return

    thread = threading.Thread(target=flusher)
    thread.start()
    try:
        expected = append_n(log, 500)
    finally:
        stop.set()
        thread.join(timeout=10)
    assert not thread.is_alive() and not errors
    log.flush()
    assert log.unflushed_messages == 0
    assert read_all(log) == expected


def test_unflushed_messages_counts_records(tmp_path):
    log = open_log(tmp_path)
    append_n(log, 4, records=3)
    assert log.unflushed_messages == 12
    log.flush()
    assert log.unflushed_messages == 0


def test_clean_reopen_keeps_everything(tmp_path):
    clock = FakeClock()
    log = open_log(tmp_path, clock=clock)
    expected = append_n(log, 40)
    segments = [(s.base_offset, s.next_offset, len(s.index), len(s.timeindex)) for s in log.segments()]
    log.close()
    assert log.log_end_offset == 120
    with pytest.raises(StorageError):
        log.read(0, 100)
    reopened = open_log(tmp_path, recover=False, clock=clock)
    assert [(s.base_offset, s.next_offset, len(s.index), len(s.timeindex)) for s in reopened.segments()] == segments
    assert read_all(reopened) == expected
    assert reopened.offset_for_timestamp(1020) == (60, 1020)


def test_delete_removes_the_directory(tmp_path):
    log = open_log(tmp_path)
    append_n(log, 40)
    result = log.read(0, 1 << 20)
    log.delete()
    assert os.listdir(tmp_path) == []
    assert len(decode_ranges(result)) == 40  # open ranges still read


def test_decode_of_stored_bytes_matches(tmp_path):
    log = open_log(tmp_path)
    data = bytes(build_batch([b"k1", None], keys=[b"a", None], headers=[[("h", b"1")], []], timestamps=[5, 9]))
    log.append(bytearray(data))
    stored = log.read(0, 1000).ranges[0].read()
    batch = decode(stored)
    assert batch.keys == [b"a", None] and batch.values == [b"k1", None]
    assert list(batch.timestamps) == [5, 9] and batch.headers[0] == [("h", b"1")]


def _open_log_files(directory):
    fds = "/proc/self/fd"
    found = []
    for name in os.listdir(fds):
        try:
            target = os.readlink(f"{fds}/{name}")
        except OSError:
            continue
        if target.startswith(str(directory)) and target.endswith(".log"):
            found.append(os.path.basename(target))
    return sorted(found)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_only_the_active_segment_keeps_its_file_open(tmp_path):
    log = open_log(tmp_path)
    append_n(log, 40)
    names = [s.log_path.name for s in log.segments()]
    assert len(names) > 2
    assert _open_log_files(tmp_path) == [names[-1]]
    log.close()
    assert _open_log_files(tmp_path) == []
    reopened = open_log(tmp_path, recover=False)
    assert _open_log_files(tmp_path) == [names[-1]]
    result = reopened.read(0, 10)
    assert _open_log_files(tmp_path) == [names[0], names[-1]]
    assert decode_ranges(result)
