"""Compaction: newest record per key, tombstones, bounded memory, pacing, crash-safe swaps."""

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.storage import LogConfig, PartitionLog, fsio, log_housekeeping
from broker.storage.cleaner import LogCleaner
from broker.storage.offset_map import BYTES_PER_ENTRY, OffsetMap
from broker.storage.throttler import Throttler
from protocol.batch import build_batch

from .helpers import FakeClock, decode_ranges

NOW = 1_700_000_000_000
COMPACT = LogConfig(
    segment_bytes=700, index_interval_bytes=120, cleanup_policy="compact", delete_retention_ms=1000
)


def keyed(pairs, timestamp=NOW, **kwargs):
    """A batch of (key, value) records; value None is a tombstone."""
    keys = [k if k is None else k.encode() for k, _ in pairs]
    values = [v if v is None else v.encode() for _, v in pairs]
    return bytearray(build_batch(values, keys=keys, timestamps=timestamp, **kwargs))


def records(log):
    """[(offset, key, value)] of every record in the log, decoded with CRC checks."""
    out = []
    offset = log.log_start_offset
    while offset < log.log_end_offset:
        batches = decode_ranges(log.read(offset, 1 << 20))
        if not batches:  # compaction emptied everything up to the (empty) active segment
            break
        for b in batches:
            out.extend((o, k, v) for o, k, v in zip(b.offsets, b.keys, b.values) if o >= offset)
            offset = b.header.next_offset
    return out


def write(log, ops, per_batch=3, timestamp=NOW):
    """Append (key, value) pairs in batches; returns [(offset, key, value)]."""
    written = []
    for i in range(0, len(ops), per_batch):
        chunk = ops[i : i + per_batch]
        res = log.append(keyed(chunk, timestamp=timestamp))
        written.extend(
            (res.base_offset + j, None if k is None else k.encode(), None if v is None else v.encode())
            for j, (k, v) in enumerate(chunk)
        )
    return written


def compacted(written, upto, now_ms=NOW, delete_retention_ms=1000, timestamp=NOW):
    """What cleaning everything below ``upto`` should leave."""
    newest = {}
    for o, k, _ in written:
        if o < upto and k is not None:
            newest[k] = o
    out = []
    for o, k, v in written:
        if o >= upto:
            out.append((o, k, v))
        elif k is not None and newest[k] == o:
            if v is None and now_ms - timestamp > delete_retention_ms:
                continue
            out.append((o, k, v))
    return out


def reopen_fully_checked(log):
    """Close, delete every index (forcing a batch-by-batch check of every segment), reopen."""
    directory, config = log.directory, log.config
    log.close()
    for name in os.listdir(directory):
        if name.endswith((".index", ".timeindex", ".snapshot")):
            os.unlink(directory / name)
    return PartitionLog(directory, config, recover=True)


def test_keeps_the_newest_record_per_key_at_its_offset(tmp_path):
    log = PartitionLog(tmp_path / "t-0", COMPACT)
    ops = [(f"k{i % 5}", f"v{i}") for i in range(60)]
    written = write(log, ops)
    log.roll()
    active_base = log.segments()[-1].base_offset
    written += write(log, [("k0", "last")])
    assert len(log.segments()) >= 4
    cleaner = LogCleaner()
    stats = cleaner.clean(log, NOW)
    assert stats.records_removed > 0 and stats.groups_swapped >= 1
    expected = compacted(written, active_base)
    assert records(log) == expected
    assert {k for _, k, _ in expected} == {b"k0", b"k1", b"k2", b"k3", b"k4"}
    assert log.log_start_offset == 0 and log.log_end_offset == written[-1][0] + 1
    assert not [n for n in os.listdir(log.directory) if n.endswith((".cleaned", ".swap", ".deleted"))]
    # nothing left to do until new segments close
    assert not cleaner.needs_cleaning(log) and cleaner.clean(log, NOW) is None
    # the rewritten segments pass a full batch-by-batch recovery (offsets chain exactly)
    again = reopen_fully_checked(log)
    assert records(again) == expected
    assert again.append(keyed([("k9", "after")])).base_offset == written[-1][0] + 1


def test_the_active_segment_is_never_cleaned(tmp_path):
    log = PartitionLog(tmp_path / "t-0", COMPACT)
    written = write(log, [("a", "1"), ("a", "2"), ("a", "3")])
    assert len(log.segments()) == 1
    assert LogCleaner().clean(log, NOW) is None
    assert records(log) == written


def test_delete_only_topics_are_not_cleaned(tmp_path):
    log = PartitionLog(tmp_path / "t-0", LogConfig(segment_bytes=300))
    write(log, [("a", str(i)) for i in range(30)])
    assert LogCleaner().clean(log, NOW) is None


def test_tombstones_remove_older_values_and_go_after_delete_retention(tmp_path):
    log = PartitionLog(tmp_path / "t-0", COMPACT)
    written = write(log, [("a", "1"), ("b", "1"), ("a", "2"), ("a", None), ("c", "1")] * 4)
    log.roll()
    write(log, [("z", "keep")])
    cleaner = LogCleaner()
    cleaner.clean(log, NOW)  # the tombstone is young: it stays, the values before it go
    got = records(log)
    assert [(k, v) for _, k, v in got if k == b"a"] == [(b"a", None)]
    # later: new closed data makes the log dirty again, and the tombstone is old now
    write(log, [("d", "1")] * 10)
    log.roll()
    stats = cleaner.clean(log, NOW + 5000)
    assert stats.tombstones_removed == 1
    assert not [k for _, k, _ in records(log) if k == b"a"]
    assert {k for _, k, _ in records(log)} >= {b"b", b"c", b"d", b"z"}
    del written


def test_records_without_a_key_are_dropped_like_kafka(tmp_path):
    log = PartitionLog(tmp_path / "t-0", COMPACT)
    write(log, [(None, "x"), ("a", "1")] * 10)
    log.roll()
    LogCleaner().clean(log, NOW)
    assert [k for _, k, _ in records(log)] == [b"a"]


def test_codecs_timestamps_and_producer_fields_survive_a_rewrite(tmp_path):
    config = LogConfig(
        segment_bytes=4000, cleanup_policy="compact", message_timestamp_type="LogAppendTime"
    )
    clock = FakeClock(NOW / 1000)
    log = PartitionLog(tmp_path / "t-0", config, clock=clock)
    for i, codec in enumerate(["gzip", "lz4", "zstd", None]):
        log.append(
            bytearray(
                build_batch(
                    [b"old", b"v%d" % i, b"x"], keys=[b"dup", b"k%d" % i, b"dup"],
                    timestamps=[NOW - 5, NOW - 3, NOW - 1], compression=codec,
                    producer_id=7, producer_epoch=1, base_sequence=3 * i,
                )
            )
        )
        clock.advance(1)
    before = {b.header.base_offset: b.header for b in decode_ranges(log.read(0, 1 << 20))}
    last_seqs = {o: h.last_sequence for o, h in before.items()}
    log.roll()
    LogCleaner().clean(log, NOW)
    batches = decode_ranges(log.read(0, 1 << 20))
    for b in batches:
        h = b.header
        original = before[max(o for o in before if o <= b.offsets[0])]
        assert h.compression == original.compression
        assert h.log_append_time == original.log_append_time != -1
        assert (h.producer_id, h.producer_epoch) == (7, 1)
        assert h.last_sequence == last_seqs[original.base_offset]
        assert set(b.timestamps) == {original.log_append_time}
    assert [(o, k) for o, k, _ in records(log)] == [(1, b"k0"), (4, b"k1"), (7, b"k2"), (10, b"k3"), (11, b"dup")]


def test_a_small_map_cleans_in_several_passes(tmp_path):
    log = PartitionLog(tmp_path / "t-0", COMPACT)
    ops = [(f"k{i % 40}", f"v{i}") for i in range(200)]
    written = write(log, ops, per_batch=4)
    log.roll()
    end = log.segments()[-1].base_offset
    # room for 25 keys, and each segment has about 20: a pass maps one segment
    cleaner = LogCleaner(dedupe_buffer_size=25 * BYTES_PER_ENTRY)
    passes = 0
    while cleaner.clean(log, NOW) is not None:
        passes += 1
        assert passes < 100
    assert passes > 2
    # not necessarily as compact as one big pass, but never wrong: every key's newest
    # record is there, at its offset, and nothing else but older versions went
    got = records(log)
    assert set(got) <= set(written)
    newest = {k: o for o, k, _ in written}
    assert {o for o, k, _ in got} >= set(newest.values())
    assert len(got) < len(written) / 2
    del end


def test_a_segment_with_more_keys_than_the_map_makes_the_log_uncleanable(tmp_path):
    log = PartitionLog(tmp_path / "t-0", COMPACT)
    write(log, [(f"k{i}", "v") for i in range(30)])
    log.roll()
    cleaner = LogCleaner(dedupe_buffer_size=2 * BYTES_PER_ENTRY)
    before = records(log)
    assert cleaner.clean(log, NOW) is None
    assert records(log) == before and not cleaner.needs_cleaning(log)


def test_cleaning_io_is_paced(tmp_path):
    log = PartitionLog(tmp_path / "t-0", COMPACT)
    write(log, [(f"k{i % 3}", "v" * 50) for i in range(100)])
    log.roll()
    clock = FakeClock(0)
    slept = []

    def sleep(seconds):
        slept.append(seconds)
        clock.advance(seconds)

    cleaner = LogCleaner(io_max_bytes_per_second=1000, clock=clock, sleep=sleep)
    stats = cleaner.clean(log, NOW)
    io = stats.bytes_read + stats.bytes_written
    assert io > 5000
    assert io / 1000 - 0.02 <= clock.now <= io / 1000 + 0.02
    assert len(slept) > 3


def test_throttler_alone():
    clock = FakeClock(0)
    throttler = Throttler(100, clock=clock, sleep=clock.advance)
    for _ in range(10):
        throttler.tick(50)
    assert clock.now == pytest.approx(5.0)
    unlimited = Throttler(None, clock=clock, sleep=lambda s: pytest.fail("slept"))
    unlimited.tick(10**9)


def test_offset_map_capacity():
    m = OffsetMap(2)
    assert m.put(b"a", 1) and m.put(b"b", 2) and m.put(b"a", 3)
    assert not m.put(b"c", 4) and m.full
    assert m.get(b"a") == 3 and m.get(b"c") is None and len(m) == 2
    assert OffsetMap.for_memory(10 * BYTES_PER_ENTRY).capacity == 10


# ------------------------------------------------------------ the swap under concurrency and crashes


def prepared(tmp_path):
    log = PartitionLog(tmp_path / "t-0", COMPACT)
    written = write(log, [(f"k{i % 4}", f"v{i}") for i in range(60)])
    log.roll()
    cleaner = LogCleaner()
    plan = cleaner.prepare(log, NOW)
    assert plan is not None and plan.groups
    return log, written, cleaner, plan


def test_retention_or_truncation_during_a_cleaning_makes_it_stale(tmp_path):
    log, written, cleaner, plan = prepared(tmp_path)
    log.truncate_to(written[-6][0])  # a batch boundary (batches of 3)
    assert cleaner.commit(plan) == []
    assert not [n for n in os.listdir(log.directory) if n.endswith(".cleaned")]
    assert records(log) == written[:-6]


def test_reads_handed_out_before_the_swap_stay_readable(tmp_path):
    log, written, cleaner, plan = prepared(tmp_path)
    ranges = log.read(0, 1 << 20).ranges
    fsio.remove_files(cleaner.commit(plan))
    assert all(len(r.read()) == r.length for r in ranges)


@pytest.mark.parametrize("crash_at", range(1, 11))
def test_a_crash_anywhere_in_the_swap_loses_nothing(tmp_path, monkeypatch, crash_at):
    log, written, cleaner, plan = prepared(tmp_path)
    active_base = log.segments()[-1].base_offset
    before = records(log)
    after = compacted(written, active_base)
    calls = []
    real_replace = os.replace

    def crashing_replace(src, dst):
        calls.append((src, dst))
        if len(calls) == crash_at:
            raise OSError(5, "simulated crash")
        real_replace(src, dst)

    monkeypatch.setattr(log_housekeeping.os, "replace", crashing_replace)
    try:
        cleaner.commit(plan)
        crashed = False
    except Exception:
        crashed = True
    monkeypatch.setattr(log_housekeeping.os, "replace", real_replace)
    directory = log.directory
    del log, plan  # no close: the process died
    again = PartitionLog(directory, COMPACT, recover=True)
    got = records(again)
    # each group was swapped in completely or not at all
    assert set(after) <= set(got) <= set(before), (crash_at, crashed)
    assert got == sorted(got)
    if not crashed:
        assert got == after
    left = [n for n in os.listdir(directory) if n.endswith((".cleaned", ".swap", ".deleted"))]
    assert not left


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    ops=st.lists(
        st.tuples(st.sampled_from(["a", "b", "c", "d", "e", None]), st.one_of(st.none(), st.text("xyz", max_size=30))),
        min_size=1,
        max_size=80,
    ),
    rolls=st.sets(st.integers(0, 80), max_size=8),
    age=st.sampled_from([0, 5000]),
)
def test_cleaning_matches_the_model(tmp_path_factory, ops, rolls, age):
    log = PartitionLog(tmp_path_factory.mktemp("c") / "t-0", COMPACT)
    written = []
    for i, op in enumerate(ops):
        if i in rolls:
            log.roll()
        written += write(log, [op])
    log.roll()
    upto = log.segments()[-1].base_offset
    LogCleaner().clean(log, NOW + age)
    expected = compacted(written, upto, now_ms=NOW + age)
    assert records(log) == expected
    assert records(reopen_fully_checked(log)) == expected


def test_a_crash_before_the_swap_leaves_only_cleaned_files_which_go_at_open(tmp_path):
    log, written, cleaner, plan = prepared(tmp_path)
    before = records(log)
    directory = log.directory
    assert [n for n in os.listdir(directory) if n.endswith(".cleaned")]
    del log, plan  # the process died before commit
    again = PartitionLog(directory, COMPACT, recover=True)
    assert records(again) == before
    assert not [n for n in os.listdir(directory) if n.endswith(".cleaned")]
