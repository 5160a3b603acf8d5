import pytest

from client.fetcher import decode_records
from client.structs import ConsumerRecord
from protocol import batch as batchcodec
from protocol.errors import CorruptMessageError


def batch(base, values, **kw):
    kw.setdefault("timestamps", 1000)
    return batchcodec.build_batch(values, base_offset=base, **kw)


def test_records_become_consumer_records():
    data = batch(0, [b"a", b"b"], keys=[b"k", None], headers=[[("h", b"1")], None])
    records, next_offset, complete = decode_records("t", 2, memoryview(data), 0)
    assert complete and next_offset == 2
    assert records == [
        ConsumerRecord("t", 2, 0, 1000, b"k", b"a", [("h", b"1")]),
        ConsumerRecord("t", 2, 1, 1000, None, b"b", ()),
    ]
    assert type(records[0]) is ConsumerRecord


def test_records_below_the_fetch_offset_are_skipped():
    data = batch(0, [b"0", b"1"]) + batch(2, [b"2", b"3", b"4"]) + batch(5, [b"5"])
    records, next_offset, _ = decode_records("t", 0, data, 3)
    assert [r.offset for r in records] == [3, 4, 5]
    assert [r.value for r in records] == [b"3", b"4", b"5"]
    assert next_offset == 6


def test_a_cut_last_batch_is_left_for_the_next_fetch():
    first = batch(0, [b"a", b"b"])
    second = batch(2, [b"c" * 100])
    data = first + second[: len(second) // 2]
    records, next_offset, complete = decode_records("t", 0, data, 0)
    assert [r.value for r in records] == [b"a", b"b"] and next_offset == 2 and complete


def test_only_a_cut_batch_reports_nothing_complete():
    data = batch(0, [b"x" * 1000])
    records, next_offset, complete = decode_records("t", 0, data[:500], 0)
    assert records == [] and next_offset == 0 and not complete


def test_empty_data():
    assert decode_records("t", 0, b"", 7) == ([], 7, False)


def test_compacted_batch_keeps_original_offsets():
    data = batch(100, [b"a", b"b", b"c"], offset_deltas=[0, 2, 5])
    records, next_offset, _ = decode_records("t", 0, data, 101)
    assert [r.offset for r in records] == [102, 105]
    assert next_offset == 106


def test_control_batches_are_skipped_but_advance_the_offset():
    data = batch(0, [b"a"]) + batch(1, [b"marker"], control=True) + batch(2, [b"c"])
    records, next_offset, _ = decode_records("t", 0, data, 0)
    assert [r.offset for r in records] == [0, 2] and next_offset == 3


def test_deserializers_leave_none_alone():
    data = batch(0, [b"1", None, b"3"], keys=[b"x", None, b"z"])
    records, _, _ = decode_records("t", 0, data, 0, key_deserializer=bytes.decode,
                                   value_deserializer=int)
    assert [(r.key, r.value) for r in records] == [("x", 1), (None, None), ("z", 3)]


def test_per_record_timestamps_and_log_append_time():
    data = bytearray(batch(0, [b"a", b"b"], timestamps=[10, 20]))
    records, _, _ = decode_records("t", 0, data, 0)
    assert [r.timestamp for r in records] == [10, 20]
    batchcodec.patch_log_append_time(data, 0, 99)
    records, _, _ = decode_records("t", 0, data, 0)
    assert [r.timestamp for r in records] == [99, 99]


@pytest.mark.parametrize("codec", ["gzip", "lz4", "zstd"])
def test_compressed_batches(codec):
    values = [b"v%d" % i * 10 for i in range(50)]
    data = batch(10, values, compression=codec)
    records, next_offset, _ = decode_records("t", 0, data, 20)
    assert [r.value for r in records] == values[10:] and next_offset == 60


def test_corrupt_batch_raises():
    data = bytearray(batch(0, [b"hello"]))
    data[-1] ^= 0xFF
    with pytest.raises(CorruptMessageError):
        decode_records("t", 0, data, 0)
