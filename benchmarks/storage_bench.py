#!/usr/bin/env python3
"""Storage engine throughput: appends beside plain file writes, reads, batch decoding.

For each batch size (1 KiB, 16 KiB, 1 MiB) one pre-built batch is appended
over and over to a fresh PartitionLog (the log patches its offsets in place
each time, as it does for a producer's buffer), and the same bytes are written
with os.write to a plain file in the same directory: the ratio of the two is
the storage layer's overhead. "append" passes the batch headers the broker has
already verified; "+crc" lets the log verify them itself. Reads walk the
whole log with PartitionLog.read in 1 MiB fetches and either os.sendfile every
range to /dev/null (the kernel drops it uncopied, so this is the log's own
lookup cost) or pread it into Python. Decode is protocol.batch.decode of one
1,000-record batch.
Every figure is the median of three runs; nothing is fsynced (the broker
flushes on its own schedule), so these measure the page cache, not the disk.

    python benchmarks/storage_bench.py            # ~256 MB per measurement
    python benchmarks/storage_bench.py --quick    # ~32 MB, a few seconds
    python benchmarks/storage_bench.py --json     # machine-readable
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from broker.storage import LogConfig, PartitionLog  # noqa: E402
from protocol.batch import build_batch, decode, split_batches  # noqa: E402

BATCH_SIZES = [("1 KiB", 1 << 10), ("16 KiB", 16 << 10), ("1 MiB", 1 << 20)]
RECORD_BYTES = 100
RUNS = 3


def make_batch(target: int) -> bytearray:
    """A batch of about ``target`` bytes made of random (incompressible) 100-byte records."""
    count = max(1, (target - 70) // (RECORD_BYTES + 2))
    values = [os.urandom(RECORD_BYTES) for _ in range(count)]
    return bytearray(build_batch(values, timestamps=1_700_000_000_000))


def plain_write(directory: Path, batch: bytearray, count: int) -> float:
    """Seconds to os.write ``batch`` ``count`` times to a plain file."""
    path = directory / "plain.bin"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
    view = memoryview(batch)
    try:
        start = time.perf_counter()
        for _ in range(count):
            done = 0
            while done < len(view):
                done += os.write(fd, view[done:])
        elapsed = time.perf_counter() - start
    finally:
        os.close(fd)
        path.unlink()
    return elapsed


def log_append(directory: Path, batch: bytearray, count: int, verified: bool) -> tuple[float, PartitionLog]:
    """Seconds to append ``batch`` ``count`` times to a new log; returns the log too."""
    log = PartitionLog(directory / "bench-0", LogConfig(), recover=False)
    batches = split_batches(batch) if verified else None
    append = log.append
    start = time.perf_counter()
    for _ in range(count):
        append(batch, batches)
    return time.perf_counter() - start, log


def read_all(log: PartitionLog, records_per_batch: int, batch_size: int, copy: bool) -> float:
    """Seconds to fetch the whole log in 1 MiB reads.

    Each range is sent with os.sendfile to /dev/null (which the kernel drops
    without copying: this measures the log's lookup work), or with ``copy``
    read into Python with FileRange.read (pread: a copy out of the page cache).
    """
    out = os.open(os.devnull, os.O_WRONLY)
    try:
        start = time.perf_counter()
        offset = 0
        end = log.log_end_offset
        while offset < end:
            result = log.read(offset, 1 << 20)
            for r in result.ranges:
                if copy:
                    r.read()
                    continue
                sent = 0
                while sent < r.length:
                    n = os.sendfile(out, r.fileno(), r.position + sent, r.length - sent)
                    if n == 0:
                        break
                    sent += n
            offset += result.size // batch_size * records_per_batch
        return time.perf_counter() - start
    finally:
        os.close(out)


def bench_size(base: Path, label: str, size: int, total: int) -> dict:
    batch = make_batch(size)
    records = len(decode(batch).values)
    count = max(1, total // len(batch))
    nbytes = count * len(batch)
    plain, verified, unverified, reads, copies = [], [], [], [], []
    for run in range(RUNS):
        directory = Path(tempfile.mkdtemp(prefix="storage-bench-", dir=base))
        try:
            # Alternate which goes first, so neither always meets a cleaner page cache.
            if run % 2:
                plain.append(plain_write(directory, batch, count))
            seconds, log = log_append(directory / "a", batch, count, verified=True)
            verified.append(seconds)
            reads.append(read_all(log, records, len(batch), copy=False))
            copies.append(read_all(log, records, len(batch), copy=True))
            log.delete()  # (close would fsync 256 MB; the data is not needed)
            if not run % 2:
                plain.append(plain_write(directory, batch, count))
            seconds, log = log_append(directory / "b", batch, count, verified=False)
            unverified.append(seconds)
            log.delete()
        finally:
            shutil.rmtree(directory)
    med = statistics.median
    mb = nbytes / 1e6
    return {
        "batch": label,
        "batch_bytes": len(batch),
        "batches": count,
        "mb": round(mb, 1),
        "plain_mb_s": mb / med(plain),
        "append_mb_s": mb / med(verified),
        "append_batches_s": count / med(verified),
        "append_crc_mb_s": mb / med(unverified),
        "ratio": med(plain) / med(verified),
        "ratio_crc": med(plain) / med(unverified),
        "read_sendfile_mb_s": mb / med(reads),
        "read_pread_mb_s": mb / med(copies),
    }


def bench_decode(seconds: float) -> dict:
    batch = bytes(build_batch([os.urandom(RECORD_BYTES) for _ in range(1000)], timestamps=1))
    rates = []
    for _ in range(RUNS):
        n = 0
        start = time.perf_counter()
        while True:
            decode(batch)
            n += 1
            elapsed = time.perf_counter() - start
            if elapsed >= seconds:
                break
        rates.append(n * 1000 / elapsed)
    return {"records": 1000, "record_bytes": RECORD_BYTES, "records_s": statistics.median(rates)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="about 32 MB per measurement")
    parser.add_argument("--mb", type=int, help="megabytes per measurement (default 256, quick 32)")
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: the temp dir)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    total = (args.mb or (32 if args.quick else 256)) * 1_000_000
    base = args.dir or Path(tempfile.gettempdir())
    base.mkdir(parents=True, exist_ok=True)

    rows = [bench_size(base, label, size, total) for label, size in BATCH_SIZES]
    dec = bench_decode(0.2 if args.quick else 1.0)
    if args.json:
        print(json.dumps({"append": rows, "decode": dec}, indent=2))
        return 0
    print(f"storage bench: {total / 1e6:.0f} MB per measurement, median of {RUNS}, dir {base}")
    header = (
        f"{'batch':>7} {'bytes':>8} {'plain MB/s':>11} {'append MB/s':>12} {'batches/s':>10} {'ratio':>6} "
        f"{'+crc MB/s':>10} {'ratio':>6} {'sendfile MB/s':>14} {'pread MB/s':>11}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['batch']:>7} {r['batch_bytes']:>8} {r['plain_mb_s']:>11.0f} {r['append_mb_s']:>12.0f} "
            f"{r['append_batches_s']:>10.0f} {r['ratio']:>6.0%} {r['append_crc_mb_s']:>10.0f} "
            f"{r['ratio_crc']:>6.0%} {r['read_sendfile_mb_s']:>14.0f} {r['read_pread_mb_s']:>11.0f}"
        )
    print(
        f"decode: {dec['records_s'] / 1e6:.2f} M records/s "
        f"({dec['records']} records of {dec['record_bytes']} bytes per batch)"
    )
    print("goals: append of 16 KiB+ batches >= 80% of plain write; decode >= 5 M records/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
