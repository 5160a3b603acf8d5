import os

from hypothesis import given, settings
from hypothesis import strategies as st

from broker.storage import paths
from broker.storage.segment import Segment
from protocol.batch import decode, patch_base_offset, split_batches

from .helpers import make_batch, values_for


def fill(directory, n=30, interval=100, size=20):
    """A segment with n batches of (i % 3 + 1) records; returns it and [(base, next, ts)]."""
    seg = Segment.create(directory, 1000, interval)
    offset = 1000
    written = []
    for i in range(n):
        batch = make_batch(values_for(i, i % 3 + 1, size), timestamp=10_000 + i * 10)
        patch_base_offset(batch, 0, offset)
        count = i % 3 + 1
        seg.append(batch, split_batches(batch), offset, offset + count, -1, 0)
        written.append((offset, offset + count, 10_000 + i * 10))
        offset += count
    return seg, written


def test_append_indexes_every_interval(tmp_path):
    seg, written = fill(tmp_path)
    assert seg.next_offset == written[-1][1]
    assert seg.size == os.path.getsize(seg.log_path)
    assert len(seg.index) >= seg.size // (100 + 120) - 1
    assert seg.max_timestamp == written[-1][2]


def test_find_returns_the_batch_holding_an_offset(tmp_path):
    seg, written = fill(tmp_path)
    for base, nxt, _ in written:
        for offset in range(base, nxt):
            pos, header = seg.find(offset)
            assert header.base_offset == base
            data = os.pread(seg.fd, header.size, pos)
            assert decode(data).offsets[0] == base
    assert seg.find(written[-1][1]) is None


def test_read_end_respects_the_limit_but_serves_one(tmp_path):
    seg, _ = fill(tmp_path)
    pos, first = seg.find(1000)
    assert seg.read_end(0, 1, min_one=True) == first.size
    assert seg.read_end(0, 1, min_one=False) == 0
    assert seg.read_end(0, 10**9, min_one=True) == seg.size
    end = seg.read_end(0, 500, min_one=True)
    assert 500 - 200 < end <= 500


def test_find_timestamp(tmp_path):
    seg, written = fill(tmp_path)
    assert seg.find_timestamp(0) == (1000, 10_000)
    assert seg.find_timestamp(10_055) == (written[6][0], 10_060)
    assert seg.find_timestamp(10_060) == (written[6][0], 10_060)
    assert seg.find_timestamp(99_999) is None


def test_reopen_loads_indexes(tmp_path):
    seg, written = fill(tmp_path)
    seg.finalize()
    entries = len(seg.index)
    again = Segment.open(tmp_path, 1000, 100, recover=False)
    assert (again.next_offset, again.size, again.max_timestamp) == (seg.next_offset, seg.size, seg.max_timestamp)
    assert len(again.index) == entries
    assert again.rolling_timestamp_ms == 10_000


def test_reopen_without_indexes_rebuilds_them(tmp_path):
    seg, _ = fill(tmp_path)
    seg.finalize()
    expected = (len(seg.index), len(seg.timeindex))
    os.unlink(seg.index.path)
    os.unlink(seg.timeindex.path)
    again = Segment.open(tmp_path, 1000, 100, recover=False)
    assert (len(again.index), len(again.timeindex)) == expected
    assert again.index.path.exists() and again.timeindex.path.exists()


def test_reopen_with_an_index_pointing_past_the_end_rebuilds(tmp_path):
    seg, _ = fill(tmp_path)
    seg.finalize()
    with open(seg.index.path, "ab") as f:
        f.write(b"\x00\x01\x00\x00\x00\x10\x00\x00")
    again = Segment.open(tmp_path, 1000, 100, recover=False)
    assert again.index.last() == seg.index.last()


def test_recover_cuts_a_torn_tail(tmp_path):
    seg, written = fill(tmp_path)
    size = seg.size
    os.truncate(seg.log_path, size - 5)
    again = Segment.open(tmp_path, 1000, 100, recover=True)
    assert again.truncated_bytes > 0
    assert again.next_offset == written[-2][1]
    assert os.path.getsize(seg.log_path) == again.size


def test_truncate_to_cuts_at_the_batch_holding_the_offset(tmp_path):
    seg, written = fill(tmp_path)
    base, nxt, _ = written[10]
    seg.truncate_to(nxt - 1)
    assert seg.next_offset == base
    assert seg.max_timestamp == written[9][2]
    assert seg.find(base) is None
    assert seg.find(base - 1)[1].next_offset == base


def test_create_replaces_leftovers(tmp_path):
    paths.log_file(tmp_path, 7).write_bytes(b"junk")
    paths.index_file(tmp_path, 7).write_bytes(b"junk")
    seg = Segment.create(tmp_path, 7, 4096)
    assert seg.size == 0 and os.path.getsize(seg.log_path) == 0
    assert not paths.index_file(tmp_path, 7).exists()


def _positions_agree(seg, written):
    for base, nxt, _ in written:
        for offset in range(base, nxt):
            assert seg.position_of(offset) == seg.find(offset)[0], offset
    assert seg.position_of(written[-1][1]) is None


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 40), interval=st.sampled_from([1, 60, 100, 400, 4096]),
       cut=st.integers(0, 39))
def test_position_of_agrees_with_find_after_appends_truncation_and_reopen(tmp_path_factory, n, interval, cut):
    directory = tmp_path_factory.mktemp("seg")
    seg, written = fill(directory, n=n, interval=interval)
    _positions_agree(seg, written)
    if cut < n:
        base = written[cut][0]
        seg.truncate_to(base)
        written = written[:cut]
    if written:
        _positions_agree(seg, written)
    seg.finalize()
    seg.release_file()
    seg = Segment.open(directory, 1000, interval, recover=False)
    if written:
        _positions_agree(seg, written)
    seg.release_file()
