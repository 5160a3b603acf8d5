"""A PartitionLog driven by random operations and checked against a list in memory."""

import itertools
import os

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from broker.storage import LogConfig, PartitionLog
from protocol.batch import build_batch

from .helpers import FakeClock, decode_ranges

batch_shapes = st.lists(
    st.tuples(st.integers(1, 5), st.integers(0, 200), st.integers(0, 50)), min_size=1, max_size=3
)


class LogMachine(RuleBasedStateMachine):
    """Model: a list of (base offset, values, timestamp), one per batch, in offset order."""

    def __init__(self, directory):
        super().__init__()
        self.directory = directory
        self.clock = FakeClock()
        self.batches: list[tuple[int, list[bytes], int]] = []
        self.end = 0
        self.tags = itertools.count()
        self.log = None

    @initialize(
        segment_bytes=st.sampled_from([300, 1000, 4000]),
        interval=st.sampled_from([0, 64, 512]),
    )
    def open(self, segment_bytes, interval):
        self.config = LogConfig(segment_bytes=segment_bytes, index_interval_bytes=interval)
        self.log = self._open(recover=False)

    def _open(self, recover):
        return PartitionLog(self.directory, self.config, clock=self.clock, recover=recover)

    def teardown(self):
        if self.log is not None:
            self.log.close()

    @rule(shapes=batch_shapes)
    def append(self, shapes):
        data = bytearray()
        new = []
        for count, size, ts in shapes:
            tag = next(self.tags)
            values = [(b"%d-%d|" % (tag, i)).ljust(size, b".") for i in range(count)]
            data += build_batch(values, timestamps=ts)
            new.append((values, ts))
        result = self.log.append(data)
        assert result.base_offset == self.end
        for values, ts in new:
            self.batches.append((self.end, values, ts))
            self.end += len(values)
        assert result.last_offset == self.end - 1
        self.clock.advance(1)

    @precondition(lambda self: self.batches)
    @rule(data=st.data(), max_bytes=st.integers(1, 3000))
    def read(self, data, max_bytes):
        offset = data.draw(st.integers(0, self.end))
        result = self.log.read(offset, max_bytes)
        got = decode_ranges(result)
        assert result.high_watermark == self.end
        if offset == self.end:
            assert got == []
            return
        assert got, "at least one batch"
        assert len(got) == 1 or result.size <= max_bytes
        first = next(i for i, (base, values, _) in enumerate(self.batches) if base + len(values) > offset)
        for batch, (base, values, _) in zip(got, self.batches[first:]):
            assert list(batch.offsets) == list(range(base, base + len(values)))
            assert batch.values == values
        assert len(got) <= len(self.batches) - first

    @rule(timestamp=st.integers(0, 60))
    def offset_for_timestamp(self, timestamp):
        expected = next(((b, ts) for b, _, ts in self.batches if ts >= timestamp), None)
        assert self.log.offset_for_timestamp(timestamp) == expected

    @rule()
    def roll(self):
        self.log.roll()

    @rule()
    def reopen_after_clean_close(self):
        self.log.close()
        self.log = self._open(recover=False)

    @rule(drop_indexes=st.booleans())
    def reopen_after_crash(self, drop_indexes):
        self.log = None  # never closed: index files of the active segment are stale
        if drop_indexes:
            for name in os.listdir(self.directory):
                if name.endswith((".index", ".timeindex")):
                    os.unlink(self.directory / name)
        self.log = self._open(recover=True)

    @precondition(lambda self: self.batches)
    @rule(data=st.data())
    def truncate(self, data):
        offset = data.draw(st.integers(0, self.end - 1))
        self.log.truncate_to(offset)
        self.batches = [b for b in self.batches if b[0] + len(b[1]) <= offset]
        self.end = self.batches[-1][0] + len(self.batches[-1][1]) if self.batches else 0

    @invariant()
    def offsets_match(self):
        if self.log is None:
            return
        assert self.log.log_end_offset == self.end
        assert self.log.log_start_offset == 0
        segments = self.log.segments()
        assert sum(s.size for s in segments) == self.log.size_bytes
        for before, after in zip(segments, segments[1:]):
            assert before.next_offset == after.base_offset


def test_partition_log_against_a_model(tmp_path):
    counter = itertools.count()
    run_state_machine_as_test(
        lambda: LogMachine(tmp_path / f"run{next(counter)}" / "t-0"),
        settings=settings(
            max_examples=50,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
