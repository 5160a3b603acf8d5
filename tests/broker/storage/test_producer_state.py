"""Idempotent producers in the log: duplicates, sequence and epoch checks, snapshots, rebuilds."""

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.storage import LogConfig, LogWriteError, PartitionLog, paths
from broker.storage.producer_state import SEQ_MOD, ProducerState
from protocol.batch import build_batch
from protocol.errors import (
    CorruptMessageError,
    DuplicateSequenceNumberError,
    InvalidProducerEpochError,
    InvalidRequestError,
    OutOfOrderSequenceNumberError,
)

from .helpers import FakeClock, make_batch, read_all

CONFIG = LogConfig(segment_bytes=600, index_interval_bytes=100)


def pbatch(pid, epoch, seq, count=2, tag="v"):
    values = [f"{tag}{pid}.{epoch}.{seq + i}".encode() for i in range(count)]
    return make_batch(values, producer_id=pid, producer_epoch=epoch, base_sequence=seq)


def open_log(tmp_path, **kwargs):
    return PartitionLog(tmp_path / "t-0", CONFIG, **kwargs)


def test_a_retried_batch_is_answered_with_its_original_offsets(tmp_path):
    log = open_log(tmp_path)
    log.append(make_batch([b"plain"]))
    first = log.append(pbatch(7, 0, 0))
    second = log.append(pbatch(7, 0, 2, count=3))
    end = log.log_end_offset
    again = log.append(pbatch(7, 0, 0))
    assert again.duplicate and not first.duplicate
    assert (again.base_offset, again.last_offset) == (first.base_offset, first.last_offset)
    assert log.append(pbatch(7, 0, 2, count=3))[:2] == second[:2]
    assert log.log_end_offset == end  # nothing written
    assert len(read_all(log)) == 6


def test_only_the_last_five_batches_are_remembered(tmp_path):
    log = open_log(tmp_path)
    results = [log.append(pbatch(1, 0, 2 * i)) for i in range(7)]
    for i in range(2, 7):
        assert log.append(pbatch(1, 0, 2 * i)).base_offset == results[i].base_offset
    # older than the five: no longer recognised, and out of order
    with pytest.raises(OutOfOrderSequenceNumberError):
        log.append(pbatch(1, 0, 0))


def test_sequence_gaps_and_reordering_are_refused(tmp_path):
    log = open_log(tmp_path)
    log.append(pbatch(1, 0, 0))
    with pytest.raises(OutOfOrderSequenceNumberError):
        log.append(pbatch(1, 0, 3))  # expected 2
    with pytest.raises(OutOfOrderSequenceNumberError):
        log.append(pbatch(1, 0, 1))  # overlaps, not a duplicate
    assert log.log_end_offset == 2
    log.append(pbatch(1, 0, 2))


def test_epochs_fence_and_reset(tmp_path):
    log = open_log(tmp_path)
    log.append(pbatch(1, 3, 0))
    log.append(pbatch(1, 3, 2))
    with pytest.raises(InvalidProducerEpochError):
        log.append(pbatch(1, 2, 4))
    with pytest.raises(OutOfOrderSequenceNumberError):
        log.append(pbatch(1, 4, 4))  # a new epoch starts at 0
    log.append(pbatch(1, 4, 0))
    with pytest.raises(InvalidProducerEpochError):
        log.append(pbatch(1, 3, 4))  # the old epoch is fenced now
    log.append(pbatch(1, 4, 2))


def test_unknown_producers_are_accepted_at_any_sequence(tmp_path):
    log = open_log(tmp_path)
    assert not log.append(pbatch(9, 0, 1234)).duplicate
    log.append(pbatch(9, 0, 1236))


def test_sequences_wrap_around(tmp_path):
    log = open_log(tmp_path)
    log.append(pbatch(1, 0, SEQ_MOD - 2, count=2))
    log.append(pbatch(1, 0, 0, count=2))


def test_batches_without_a_producer_are_not_checked(tmp_path):
    log = open_log(tmp_path)
    batch = make_batch([b"a"])
    assert not log.append(batch).duplicate
    assert not log.append(make_batch([b"a"])).duplicate
    assert log.log_end_offset == 2


def test_several_batches_in_one_append_are_checked_in_order(tmp_path):
    log = open_log(tmp_path)
    data = pbatch(1, 0, 0) + pbatch(1, 0, 2) + pbatch(2, 0, 0)
    first = log.append(data)
    assert (first.base_offset, first.last_offset) == (0, 5)
    assert log.append(pbatch(1, 0, 0) + pbatch(1, 0, 2)).duplicate
    with pytest.raises(OutOfOrderSequenceNumberError):
        log.append(pbatch(1, 0, 4) + pbatch(1, 0, 7))
    with pytest.raises(DuplicateSequenceNumberError):
        log.append(pbatch(1, 0, 2) + pbatch(1, 0, 4))  # a duplicate, then a new one
    assert log.log_end_offset == 6


def test_producer_batches_need_a_sequence_and_consecutive_offsets(tmp_path):
    log = open_log(tmp_path)
    with pytest.raises(InvalidRequestError):
        log.append(make_batch([b"a"], producer_id=1, producer_epoch=0))
    gappy = bytearray(build_batch([b"a", b"b"], offset_deltas=[0, 5], timestamps=1))
    with pytest.raises(CorruptMessageError):
        log.append(gappy)
    assert log.log_end_offset == 0


def test_a_failed_write_records_nothing(tmp_path):
    log = open_log(tmp_path)
    log.append(pbatch(1, 0, 0))
    active = log.segments()[-1]
    real = active.append

    def broken(*args, **kwargs):
        raise OSError(5, "I/O error")

    active.append = broken
    with pytest.raises(LogWriteError):
        log.append(pbatch(1, 0, 2))
    active.append = real
    assert not log.append(pbatch(1, 0, 2)).duplicate  # the retry is new, not a duplicate


def test_log_append_time_of_a_duplicate_is_the_original(tmp_path):
    clock = FakeClock()
    log = PartitionLog(tmp_path / "t-0", LogConfig(message_timestamp_type="LogAppendTime"), clock=clock)
    first = log.append(pbatch(1, 0, 0))
    clock.advance(10)
    again = log.append(pbatch(1, 0, 0))
    assert again.duplicate and again.log_append_time == first.log_append_time != -1


# ------------------------------------------------------------ surviving restarts


def state_of(log):
    return {pid: (e.epoch, list(e.batches)) for pid, e in log.producers._producers.items()}


def write_some(log, producers=3, rounds=8):
    seqs = {}
    for r in range(rounds):
        for pid in range(producers):
            seq = seqs.get(pid, 0)
            log.append(pbatch(pid, 0, seq, count=1 + (r + pid) % 3))
            seqs[pid] = seq + 1 + (r + pid) % 3
    return seqs


def test_snapshots_are_written_at_roll_and_close_and_two_are_kept(tmp_path):
    log = open_log(tmp_path)
    write_some(log)
    assert len(log.segments()) > 3
    snaps = log.producers.snapshot_offsets()
    assert len(snaps) == 2 and snaps[-1] == log.segments()[-1].base_offset
    before = state_of(log)
    log.close()
    assert log.producers.snapshot_offsets()[-1] == log.log_end_offset
    again = open_log(tmp_path, recover=False)
    assert state_of(again) == before


@pytest.mark.parametrize("remove_snapshots", [False, True])
def test_state_is_rebuilt_after_a_crash(tmp_path, remove_snapshots):
    log = open_log(tmp_path)
    seqs = write_some(log)
    before = state_of(log)
    directory = log.directory
    del log  # a crash: no close, no final snapshot
    if remove_snapshots:
        for name in os.listdir(directory):
            if name.endswith(".snapshot"):
                os.unlink(directory / name)
    again = PartitionLog(directory, CONFIG, recover=True)
    assert state_of(again) == before
    # retries of the last batch are still recognised, and the sequence goes on
    assert again.append(pbatch(0, 0, seqs[0] - 1 - ((7 + 0) % 3), count=1 + 7 % 3)).duplicate
    again.append(pbatch(0, 0, seqs[0]))


def test_a_corrupt_or_stale_snapshot_is_ignored(tmp_path):
    log = open_log(tmp_path)
    write_some(log)
    before = state_of(log)
    log.close()
    newest = log.producers.snapshot_offsets()[-1]
    snap = paths.snapshot_file(tmp_path / "t-0", newest)
    data = bytearray(snap.read_bytes())
    data[-1] ^= 0xFF
    snap.write_bytes(bytes(data))
    paths.snapshot_file(tmp_path / "t-0", newest + 1000).write_bytes(b"from a longer log")
    again = open_log(tmp_path, recover=False)
    assert state_of(again) == before
    assert again.producers.snapshot_offsets()[-1] < newest


def test_truncation_rebuilds_the_state_below_the_cut(tmp_path):
    log = open_log(tmp_path)
    log.append(pbatch(1, 0, 0))
    cut = log.log_end_offset
    log.append(pbatch(1, 0, 2))
    log.append(pbatch(2, 0, 0))
    for _ in range(6):
        log.append(make_batch([b"x" * 80]))
    log.truncate_to(cut)
    assert set(state_of(log)) == {1}
    assert log.producers.get(1).last_seq == 1
    assert not log.append(pbatch(1, 0, 2)).duplicate  # was cut, so it is new again
    assert all(o <= log.log_end_offset for o in log.producers.snapshot_offsets())


def test_retention_forgets_producers_whose_batches_are_gone(tmp_path):
    config = LogConfig(segment_bytes=600, index_interval_bytes=100, retention_ms=1000)
    log = PartitionLog(tmp_path / "t-0", config)
    log.append(make_batch([b"a"], timestamp=0, producer_id=1, producer_epoch=0, base_sequence=0))
    for _ in range(8):
        log.append(make_batch([b"x" * 80], timestamp=0))
    log.roll()
    log.append(make_batch([b"b"], timestamp=10**12, producer_id=2, producer_epoch=0, base_sequence=0))
    log.apply_retention(10**12)
    assert set(state_of(log)) == {2}
    log.close()
    assert set(state_of(open_log(tmp_path, recover=False))) == {2}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 2), st.integers(1, 3), st.booleans()), max_size=40))
def test_state_after_reopen_equals_state_before(tmp_path_factory, ops):
    directory = tmp_path_factory.mktemp("p") / "t-0"
    log = PartitionLog(directory, CONFIG)
    seqs: dict[int, tuple[int, int]] = {}
    for pid, epoch_bump, count, retry in ops:
        epoch, seq = seqs.get(pid, (0, 0))
        if epoch_bump == 2:
            epoch, seq = epoch + 1, 0
        if retry and pid in seqs and seq:
            continue
        log.append(pbatch(pid, epoch, seq, count=count))
        seqs[pid] = (epoch, seq + count)
    before = state_of(log)
    del log
    assert state_of(PartitionLog(directory, CONFIG, recover=True)) == before


def test_producer_state_alone(tmp_path):
    state = ProducerState(tmp_path)
    assert len(state) == 0 and state.load_snapshot(100) is None
    state.write_snapshot(0)
    assert state.load_snapshot(100) == 0
