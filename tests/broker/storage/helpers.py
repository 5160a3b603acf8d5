"""Shared helpers for the storage tests: batches, a fake clock, reading a log back."""

from __future__ import annotations

from protocol.batch import build_batch, decode, iter_complete


class FakeClock:
    """A clock the test moves by hand (seconds, like time.time)."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_batch(values, timestamp: int = 1_000, **kwargs) -> bytearray:
    """A producer batch (base offset 0) as a writable buffer."""
    return bytearray(build_batch(list(values), timestamps=timestamp, **kwargs))


def values_for(tag: int, count: int, size: int = 8) -> list[bytes]:
    """``count`` distinct values of about ``size`` bytes."""
    return [(b"%d:%d:" % (tag, i)).ljust(size, b"x") for i in range(count)]


def decode_ranges(result):
    """Every batch in a ReadResult, decoded (CRC checked)."""
    batches = []
    for file_range in result.ranges:
        data = file_range.read()
        assert len(data) == file_range.length
        covered = 0
        for pos, size in iter_complete(data):
            batches.append(decode(data, pos))
            covered = pos + size
        assert covered == len(data), "a range must hold whole batches only"
    return batches


def read_all(log, start: int | None = None, max_bytes: int = 1 << 20):
    """{offset: value} of every record from ``start`` to the log end, reading in steps."""
    offset = log.log_start_offset if start is None else start
    records = {}
    while offset < log.log_end_offset:
        batches = decode_ranges(log.read(offset, max_bytes))
        assert batches, f"no batch served at {offset}"
        for batch in batches:
            for rec_offset, value in zip(batch.offsets, batch.values):
                records[rec_offset] = value
            offset = batch.header.next_offset
    return records
