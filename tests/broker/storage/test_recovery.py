"""Recovery: torn or overwritten segment tails, lost indexes, damaged middle segments."""

import itertools
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.storage import LogConfig, PartitionLog, paths

from .helpers import make_batch, read_all, values_for

CONFIG = LogConfig(segment_bytes=2000, index_interval_bytes=100)
RECOVERY_SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def write_batches(directory, sizes):
    """Append one batch per entry of ``sizes`` (records per batch); returns [(base, values)]."""
    log = PartitionLog(directory, CONFIG)
    written = []
    for i, count in enumerate(sizes):
        values = values_for(i, count, 30 + 7 * (i % 5))
        result = log.append(make_batch(values, timestamp=100 + i))
        written.append((result.base_offset, values))
    return log, written


def batch_positions(log):
    """[(segment, position, size, base)] of every batch, read through the log's own lookups."""
    out = []
    for seg in log.segments():
        offset = seg.base_offset
        while offset < seg.next_offset:
            pos, header = seg.find(offset)
            out.append((seg, pos, header.size, header.base_offset))
            offset = header.next_offset
    return out


def expected_records(written, keep_below):
    return {
        base + i: v for base, values in written if base + len(values) <= keep_below for i, v in enumerate(values)
    }


def check_recovered(directory, written, end):
    log = PartitionLog(directory, CONFIG, recover=True)
    assert log.log_end_offset == end
    assert read_all(log) == expected_records(written, end)  # decoded, so CRCs pass
    result = log.append(make_batch([b"after"]))
    assert result.base_offset == end
    assert read_all(log)[end] == b"after"
    log.close()
    again = PartitionLog(directory, CONFIG, recover=False)
    assert again.log_end_offset == end + 1


sizes_strategy = st.lists(st.integers(1, 6), min_size=1, max_size=30)
counter = itertools.count()


@RECOVERY_SETTINGS
@given(sizes=sizes_strategy, data=st.data())
def test_cut_last_segment_at_any_byte(tmp_path, sizes, data):
    directory = tmp_path / f"c{next(counter)}" / "t-0"
    log, written = write_batches(directory, sizes)
    last = log.segments()[-1]
    batches = batch_positions(log)
    cut = data.draw(st.integers(0, last.size))
    os.truncate(last.log_path, cut)
    intact = [b for s, pos, size, b in batches if s is not last or pos + size <= cut]
    del log
    ends = {base: base + len(values) for base, values in written}
    end = ends[intact[-1]] if intact else last.base_offset
    check_recovered(directory, written, end)


@RECOVERY_SETTINGS
@given(sizes=sizes_strategy, data=st.data())
def test_garbage_over_the_tail_of_the_last_segment(tmp_path, sizes, data):
    directory = tmp_path / f"g{next(counter)}" / "t-0"
    log, written = write_batches(directory, sizes)
    last = log.segments()[-1]
    batches = batch_positions(log)
    start = data.draw(st.integers(0, last.size))
    garbage = data.draw(st.binary(min_size=1, max_size=300))
    original = os.pread(last.fd, len(garbage), start)
    with open(last.log_path, "r+b") as f:
        f.seek(start)
        f.write(garbage)
    # The append-time field (bytes 12..20 of a batch) is outside the CRC and has no
    # redundancy: damage there is undetectable, and harmless to the record values.
    blind = {pos + i for s, pos, size, b in batches if s is last for i in range(12, 20)}
    changed = [
        start + i
        for i, g in enumerate(garbage)
        if (i >= len(original) or original[i] != g) and start + i not in blind
    ]
    damage = changed[0] if changed else last.size
    intact = [b for s, pos, size, b in batches if s is not last or pos + size <= damage]
    del log
    ends = {base: base + len(values) for base, values in written}
    end = ends[intact[-1]] if intact else last.base_offset
    check_recovered(directory, written, end)


def test_deleting_index_files_loses_nothing(tmp_path):
    directory = tmp_path / "t-0"
    log, written = write_batches(directory, [3] * 60)
    expected = read_all(log)
    shape = [(s.base_offset, len(s.index), len(s.timeindex)) for s in log.segments()]
    assert len(shape) > 3
    log.close()
    for recover in (False, True):
        for name in os.listdir(directory):
            if name.endswith((".index", ".timeindex")):
                os.unlink(directory / name)
        reopened = PartitionLog(directory, CONFIG, recover=recover)
        assert read_all(reopened) == expected
        assert [(s.base_offset, len(s.index), len(s.timeindex)) for s in reopened.segments()] == shape
        assert reopened.offset_for_timestamp(130) == (90, 130)
        reopened.close()
        assert all(
            (directory / f"{base:020d}{ext}").exists()
            for base, _, _ in shape
            for ext in (".index", ".timeindex")
        )


def test_damaged_middle_segment_without_index_ends_the_log(tmp_path):
    directory = tmp_path / "t-0"
    log, written = write_batches(directory, [3] * 60)
    segments = log.segments()
    middle = segments[1]
    victim = batch_positions(log)
    pos = next(p for s, p, size, b in victim if s is middle and p > 0)
    cut_base = next(b for s, p, size, b in victim if s is middle and p == pos)
    log.close()
    with open(middle.log_path, "r+b") as f:
        f.seek(pos + 30)
        f.write(b"\xff" * 8)
    os.unlink(middle.index.path)
    reopened = PartitionLog(directory, CONFIG, recover=False)
    assert reopened.log_end_offset == cut_base
    assert len(reopened.segments()) == 2
    assert not paths.log_file(directory, segments[2].base_offset).exists()
    assert read_all(reopened) == expected_records(written, cut_base)


def test_clean_open_notices_a_torn_tail(tmp_path):
    directory = tmp_path / "t-0"
    log, written = write_batches(directory, [2] * 10)
    log.close()
    last = paths.log_file(directory, log.segments()[-1].base_offset if log.segments() else 0)
    logs = sorted(p for p in directory.iterdir() if p.suffix == ".log")
    os.truncate(logs[-1], os.path.getsize(logs[-1]) - 3)
    reopened = PartitionLog(directory, CONFIG, recover=False)
    assert reopened.log_end_offset == 18
    assert read_all(reopened) == expected_records(written, 18)
    assert last.parent == directory


def test_leftover_files_are_cleaned_up(tmp_path):
    directory = tmp_path / "t-0"
    log, written = write_batches(directory, [2] * 5)
    log.close()
    (directory / "00000000000000000000.index.tmp").write_bytes(b"x")
    paths.index_file(directory, 999).write_bytes(b"")
    reopened = PartitionLog(directory, CONFIG, recover=False)
    assert read_all(reopened) == expected_records(written, 10)
    assert sorted(os.listdir(directory)) == [
        "00000000000000000000.index",
        "00000000000000000000.log",
        "00000000000000000000.timeindex",
        "00000000000000000010.snapshot",  # producer state as of the clean close
    ]


def test_overlapping_segment_is_dropped(tmp_path):
    directory = tmp_path / "t-0"
    log, written = write_batches(directory, [2] * 5)
    log.close()
    # a stray segment whose base lies inside the first one's offsets
    data = paths.log_file(directory, 0).read_bytes()
    paths.log_file(directory, 4).write_bytes(data)
    reopened = PartitionLog(directory, CONFIG, recover=False)
    assert [s.base_offset for s in reopened.segments()] == [0]
    assert not paths.log_file(directory, 4).exists()
    assert read_all(reopened) == expected_records(written, 10)
