"""Retention: the pure decision, and deleting segments from a live log."""

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.storage import LogConfig, PartitionLog, TopicStore, fsio, paths
from broker.storage.retention import SegmentInfo, expired_prefix
from protocol.errors import OffsetOutOfRangeError

from .helpers import FakeClock, make_batch, read_all, values_for

NOW = 1_700_000_000_000
DAY = 24 * 3600 * 1000


# ------------------------------------------------------------ the pure function


def infos(*specs):
    """SegmentInfo per (size, max_timestamp); base offsets 0, 10, 20, ..."""
    return [SegmentInfo(10 * i, size, ts, 0) for i, (size, ts) in enumerate(specs)]


def test_nothing_to_delete_without_closed_segments():
    config = LogConfig(retention_ms=0, retention_bytes=0)
    assert expired_prefix([], NOW, config) == 0
    assert expired_prefix(infos((100, 0)), NOW, config) == 0  # the active one stays


def test_by_age_deletes_the_old_prefix_and_stops_at_the_first_young_segment():
    config = LogConfig(retention_ms=DAY)
    segs = infos((1, NOW - 3 * DAY), (1, NOW - 2 * DAY), (1, NOW - 1), (1, NOW - 5 * DAY), (1, 0))
    assert expired_prefix(segs, NOW, config) == 2
    assert expired_prefix(segs, NOW, LogConfig(retention_ms=-1)) == 0
    # exactly retention_ms old is still kept (Kafka deletes when older than)
    assert expired_prefix(infos((1, NOW - DAY), (1, 0)), NOW, config) == 0


def test_by_age_never_deletes_the_active_segment():
    config = LogConfig(retention_ms=DAY)
    segs = infos((1, 0), (1, 0), (1, 0))
    assert expired_prefix(segs, NOW, config) == 2


def test_segment_without_timestamps_ages_by_modification_time():
    config = LogConfig(retention_ms=DAY)
    old = SegmentInfo(0, 10, -1, NOW - 2 * DAY)
    young = SegmentInfo(0, 10, -1, NOW - 1000)
    active = SegmentInfo(10, 10, -1, NOW)
    assert expired_prefix([old, active], NOW, config) == 1
    assert expired_prefix([young, active], NOW, config) == 0


def test_by_size():
    config = LogConfig(retention_bytes=250, retention_ms=-1)
    segs = infos((100, NOW), (100, NOW), (100, NOW), (100, NOW))
    # 400 total: dropping one leaves 300 >= 250, dropping two would leave 200 < 250
    assert expired_prefix(segs, NOW, config) == 1
    assert expired_prefix(segs, NOW, LogConfig(retention_bytes=0, retention_ms=-1)) == 3
    assert expired_prefix(segs, NOW, LogConfig(retention_bytes=400, retention_ms=-1)) == 0


def test_compact_only_topics_keep_everything():
    config = LogConfig(retention_ms=0, retention_bytes=0, cleanup_policy="compact")
    segs = infos((100, 0), (100, 0), (100, 0))
    assert expired_prefix(segs, NOW, config) == 0
    both = LogConfig(retention_ms=0, cleanup_policy="compact,delete")
    assert expired_prefix(segs, NOW, both) == 2


@given(
    sizes=st.lists(st.tuples(st.integers(0, 1000), st.integers(-1, 2 * DAY)), max_size=12),
    retention_ms=st.integers(-1, 2 * DAY),
    retention_bytes=st.integers(-1, 5000),
)
def test_expired_prefix_matches_the_two_rules(sizes, retention_ms, retention_bytes):
    segs = [SegmentInfo(i, size, NOW - age if age >= 0 else -1, NOW) for i, (size, age) in enumerate(sizes)]
    config = LogConfig(retention_ms=retention_ms, retention_bytes=retention_bytes)
    n = expired_prefix(segs, NOW, config)
    assert 0 <= n <= max(0, len(segs) - 1)

    def too_old(s):
        stamp = s.max_timestamp if s.max_timestamp >= 0 else s.modified_ms
        return retention_ms >= 0 and NOW - stamp > retention_ms

    def too_big(i):  # deleting segments 0..i still leaves at least retention_bytes
        return retention_bytes >= 0 and sum(s.size for s in segs[i + 1 :]) >= retention_bytes

    for i in range(n):
        assert all(too_old(s) for s in segs[: i + 1]) or too_big(i)
    if n < len(segs) - 1:
        assert not (all(too_old(s) for s in segs[: n + 1]) or too_big(n))


# ------------------------------------------------------------ a live log


SMALL = LogConfig(segment_bytes=400, index_interval_bytes=100, retention_ms=DAY)


def fill(log, batches, timestamp, tag=0):
    expected = {}
    for i in range(batches):
        values = values_for(tag + i, 2, 40)
        res = log.append(make_batch(values, timestamp=timestamp))
        expected.update({res.base_offset + j: v for j, v in enumerate(values)})
    return expected


def test_age_retention_deletes_old_segments_and_moves_the_log_start(tmp_path):
    clock = FakeClock(NOW / 1000)
    log = PartitionLog(tmp_path / "t-0", SMALL, clock=clock)
    old = fill(log, 12, NOW - 3 * DAY)
    log.roll()
    young = fill(log, 4, NOW, tag=100)
    assert len(log.segments()) > 3
    first_young = min(young)
    range_into_old = log.read(0, 1 << 20).ranges[0]

    assert log.apply_retention(NOW) > 0
    assert log.log_start_offset == first_young == log.segments()[0].base_offset
    assert read_all(log) == young
    with pytest.raises(OffsetOutOfRangeError):
        log.read(0, 1000)
    with pytest.raises(OffsetOutOfRangeError):
        log.read(first_young - 1, 1000)
    # a read handed out before the deletion still has its bytes
    assert len(range_into_old.read()) == range_into_old.length
    assert not [p for p in os.listdir(log.directory) if p.endswith(".deleted")]
    assert log.apply_retention(NOW) == 0
    del old

    log.close()
    again = PartitionLog(tmp_path / "t-0", SMALL, clock=clock)
    assert again.log_start_offset == first_young
    assert read_all(again) == young


def test_retention_never_deletes_the_active_segment(tmp_path):
    log = PartitionLog(tmp_path / "t-0", SMALL)
    expected = fill(log, 12, NOW - 3 * DAY)
    active_base = log.segments()[-1].base_offset
    log.apply_retention(NOW)
    assert [s.base_offset for s in log.segments()] == [active_base]
    assert log.log_start_offset == active_base
    assert read_all(log) == {o: v for o, v in expected.items() if o >= active_base}
    # appends go on at the same offsets
    assert log.append(make_batch([b"next"])).base_offset == log.log_end_offset - 1


def test_size_retention(tmp_path):
    config = LogConfig(segment_bytes=400, index_interval_bytes=100, retention_ms=-1, retention_bytes=900)
    log = PartitionLog(tmp_path / "t-0", config)
    fill(log, 30, NOW)
    log.apply_retention(NOW)
    sizes = [s.size for s in log.segments()]
    assert sum(sizes) >= 900 and sum(sizes) - sizes[0] < 900


def test_mark_then_unlink_elsewhere(tmp_path):
    log = PartitionLog(tmp_path / "t-0", SMALL)
    fill(log, 12, NOW - 3 * DAY)
    files = log.mark_expired_segments(NOW)
    assert files and all(f.name.endswith(".deleted") and f.exists() for f in files)
    start = log.log_start_offset
    # a crash here: the leftovers go at open, and the log start stays
    log.close()
    again = PartitionLog(tmp_path / "t-0", SMALL)
    assert not any(f.exists() for f in files)
    assert again.log_start_offset == start
    fsio.remove_files(files)  # missing files are fine


def test_store_applies_retention_to_every_log(tmp_path):
    store = TopicStore(tmp_path, LogConfig(segment_bytes=400, retention_ms=DAY))
    store.create_topic("a", 2)
    store.create_topic("kept", 1, {"cleanup.policy": "compact"})
    for name, p in (("a", 0), ("a", 1), ("kept", 0)):
        fill(store.partition(name, p), 12, NOW - 3 * DAY)
    deleted = store.apply_retention(NOW)
    assert deleted > 0
    assert store.partition("a", 0).log_start_offset > 0
    assert store.partition("a", 1).log_start_offset > 0
    assert store.partition("kept", 0).log_start_offset == 0
    store.close()


def test_deleted_suffix_names_are_recognised():
    path = paths.log_file(Path("/x"), 5)
    assert paths.parse_suffixed_segment_file(paths.deleted_file(path)) == (5, "log", ".deleted")
    assert paths.parse_segment_file(paths.deleted_file(path)) is None
