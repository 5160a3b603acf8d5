"""Records kept as columns: made one at a time, with the position read back from the cursor."""

from __future__ import annotations

from itertools import islice

from hypothesis import given
from hypothesis import strategies as st

from client.record_buffer import PartitionRecords
from client.record_columns import RecordColumns
from client.structs import ConsumerRecord, TopicPartition


def columns(batches: list[int]) -> tuple[RecordColumns, list[ConsumerRecord]]:
    cols = RecordColumns("t", 3)
    expected = []
    offset = 10
    for n in batches:
        offsets = range(offset, offset + n)
        values = [b"v%d" % o for o in offsets]
        keys = [None if o % 2 else b"k" for o in offsets]
        timestamps = [1000 + o for o in offsets]
        headers = [()] * n
        cols.extend(offsets, timestamps, keys, values, headers)
        expected += [ConsumerRecord("t", 3, o, 1000 + o, k, v, ())
                     for o, k, v in zip(offsets, keys, values)]
        offset += n + 5  # a gap, as after compaction
    return cols, expected


@given(st.lists(st.integers(0, 20), max_size=5), st.data())
def test_iteration_slices_and_position(batches, data):
    cols, expected = columns(batches)
    assert len(cols) == len(expected)
    assert cols.to_list() == expected
    assert all(type(r) is ConsumerRecord for r in cols.to_list())
    start = data.draw(st.integers(0, len(expected)))
    end = data.draw(st.integers(start, len(expected)))
    assert cols.slice(start, end) == expected[start:end]
    cursor, records = cols.iterate(start)
    taken = data.draw(st.integers(0, len(expected) - start))
    assert list(islice(records, taken)) == expected[start:start + taken]
    assert len(cols) - cursor.__length_hint__() == start + taken


@given(st.lists(st.integers(1, 20), min_size=1, max_size=4), st.data())
def test_a_chunk_stopped_mid_iteration_resumes_where_the_user_stopped(batches, data):
    cols, expected = columns(batches)
    chunk = PartitionRecords(TopicPartition("t", 3), 0, cols, next_offset=999)
    first = data.draw(st.integers(0, len(expected)))
    it = chunk.iterate()
    got = list(islice(it, first))
    chunk.stop_iteration()
    assert next(it, None) is None  # a stopped iterator ends at once
    assert chunk.pos == first
    assert chunk.position() == (expected[first].offset if first < len(expected) else 999)
    it = chunk.iterate()
    got += list(it)
    chunk.iteration_ended(it)
    assert got == expected and chunk.exhausted and chunk.position() == 999


def test_a_partition_is_fetched_ahead_by_at_most_two_chunks():
    from client.subscription import FETCH_AHEAD, PartitionState

    st = PartitionState(None)
    st.seek(0)
    assert st.fetchable()
    st.fetched += 1  # one chunk waits: the next fetch may still go
    assert st.fetchable() and not st.full
    st.fetched += 1
    assert FETCH_AHEAD == 2 and st.full and not st.fetchable()
    st.taken += 1  # the consumer took one
    assert st.fetchable()
    st.in_flight = st.epoch  # a fetch of this epoch is out
    assert not st.fetchable()
    st.seek(5)  # a seek forgets waiting chunks and the old fetch
    assert st.fetchable() and st.fetched == st.taken
    st.stalled = True  # an error waits for the consumer
    assert st.full and not st.fetchable()
