import pytest

from broker.storage.offset_index import OffsetIndex
from broker.storage.sparse_index import IndexMismatch
from broker.storage.time_index import TimeIndex


def offset_index(tmp_path, base=100):
    index = OffsetIndex(tmp_path / "x.index", base)
    for rel, pos in [(5, 4100), (12, 8300), (20, 12500)]:
        index.append(base + rel, pos)
    return index


def test_offset_lookup_finds_the_floor_entry(tmp_path):
    index = offset_index(tmp_path)
    assert index.lookup(100) == (100, 0)
    assert index.lookup(104) == (100, 0)
    assert index.lookup(105) == (105, 4100)
    assert index.lookup(111) == (105, 4100)
    assert index.lookup(10**9) == (120, 12500)
    assert index.lookup_position(8299) == (105, 4100)
    assert index.lookup_position(8300) == (112, 8300)
    assert index.last() == (120, 12500)


def test_offset_index_refuses_unordered_entries(tmp_path):
    index = offset_index(tmp_path)
    with pytest.raises(ValueError):
        index.append(120, 20000)


def test_files_hold_exactly_the_entries_and_reload(tmp_path):
    index = offset_index(tmp_path)
    index.write_pending()
    assert index.path.stat().st_size == 3 * 8
    index.append(130, 16000)
    index.write_pending()
    assert index.path.stat().st_size == 4 * 8
    loaded = OffsetIndex.load(index.path, 100)
    assert len(loaded) == 4 and loaded.last() == (130, 16000)


def test_truncate_cuts_memory_and_file(tmp_path):
    index = offset_index(tmp_path)
    index.write_pending()
    index.truncate_to(112)
    assert index.last() == (105, 4100)
    assert index.path.stat().st_size == 8
    index.append(112, 9000)
    index.write_pending()
    assert OffsetIndex.load(index.path, 100).last() == (112, 9000)


def test_rewrite_replaces_the_file(tmp_path):
    index = offset_index(tmp_path)
    index.path.write_bytes(b"garbage!" * 10)
    index.rewrite()
    assert OffsetIndex.load(index.path, 100).last() == (120, 12500)


@pytest.mark.parametrize("content", [b"1234567", b"\x00\x00\x00\x05\x00\x00\x10\x00" * 2])
def test_malformed_files_are_detected(tmp_path, content):
    path = tmp_path / "x.index"
    path.write_bytes(content)
    with pytest.raises(IndexMismatch):
        OffsetIndex.load(path, 0)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        OffsetIndex.load(tmp_path / "nope.index", 0)


def test_time_index_keeps_only_growing_timestamps(tmp_path):
    index = TimeIndex(tmp_path / "x.timeindex", 50)
    assert not index.maybe_append(-1, 50)
    assert index.maybe_append(1000, 50)
    assert not index.maybe_append(1000, 55)
    assert not index.maybe_append(900, 56)
    assert index.maybe_append(2000, 60)
    assert index.last() == (2000, 60)
    assert index.lookup(500) == 50
    assert index.lookup(1000) == 50
    assert index.lookup(1001) == 50
    assert index.lookup(2001) == 60
    index.write_pending()
    assert index.path.stat().st_size == 2 * 12
    assert TimeIndex.load(index.path, 50).last() == (2000, 60)
    index.truncate_to(60)
    assert index.last() == (1000, 50)
    assert index.path.stat().st_size == 12


def test_time_index_rejects_decreasing_timestamps_on_load(tmp_path):
    index = TimeIndex(tmp_path / "x.timeindex", 0)
    index.maybe_append(10, 1)
    index.maybe_append(20, 2)
    index.write_pending()
    data = index.path.read_bytes()
    index.path.write_bytes(data[12:] + data[:12])
    with pytest.raises(IndexMismatch):
        TimeIndex.load(index.path, 0)
