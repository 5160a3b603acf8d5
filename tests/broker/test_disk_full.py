"""A full disk: the produce gets STORAGE_ERROR, reads go on, nothing acknowledged is lost.

The broker runs as a subprocess with its data dir on a small filesystem made
for the test: a loop-mounted ext4 image, or failing that a size-limited
tmpfs. Both need root (or a user namespace that allows mounting); where
neither works the test is skipped and says why.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from protocol import batch
from protocol import messages as m
from protocol.errors import ErrorCode
from tests.brokerproc import BrokerProcess
from tests.rawclient import RawClient

pytestmark = pytest.mark.timeout(120)

FS_BYTES = 24 << 20
FILLER_BYTES = 4 << 20


def _run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def _mount_small_fs(tmp_path: Path) -> tuple[Path, str]:
    """Mount a small filesystem; returns (mount point, kind). Skips if impossible."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small filesystem needs root (not running as root)")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    reasons = []
    if shutil.which("mkfs.ext4") and shutil.which("mount"):
        image = tmp_path / "fs.img"
        with open(image, "wb") as f:
            f.truncate(FS_BYTES)
        made = _run("mkfs.ext4", "-q", "-F", "-m", "0", str(image))
        if made.returncode == 0:
            mounted = _run("mount", "-o", "loop", str(image), str(mnt))
            if mounted.returncode == 0:
                return mnt, "ext4"
            reasons.append(f"mount -o loop: {mounted.stderr.strip()}")
        else:
            reasons.append(f"mkfs.ext4: {made.stderr.strip()}")
    else:
        reasons.append("mkfs.ext4 or mount not installed")
    mounted = _run("mount", "-t", "tmpfs", "-o", f"size={FS_BYTES}", "tmpfs", str(mnt))
    if mounted.returncode == 0:
        return mnt, "tmpfs"
    reasons.append(f"mount -t tmpfs: {mounted.stderr.strip()}")
    pytest.skip("cannot mount a small filesystem: " + "; ".join(reasons))


@pytest.fixture
def small_fs(tmp_path):
    mnt, _kind = _mount_small_fs(tmp_path)
    try:
        yield mnt
    finally:
        if _run("umount", str(mnt)).returncode != 0:
            _run("umount", "-l", str(mnt))


def produce(c, topic, values, partition=0):
    return c.request(m.ProduceRequest(acks=1, partitions=(
        m.ProducePartition(topic, partition, batch.build_batch(values)),), correlation_id=c.next_id())).partitions[0]


def read_partition(c, topic, partition=0):
    """{offset: value} of the whole partition; every served batch must be whole and pass its CRC."""
    got = {}
    offset = 0
    while True:
        resp = c.request(m.FetchRequest(max_wait_ms=0, partitions=(
            m.FetchPartition(topic, partition, offset, max_bytes=1 << 20),), correlation_id=c.next_id()))
        p = resp.partitions[0]
        assert p.error_code == 0
        records = bytes(p.records)
        if not records:
            assert offset == p.high_watermark
            return got
        covered = 0
        for pos, size in batch.iter_complete(records):
            decoded = batch.decode(records, pos)  # checks the CRC
            got.update(zip(decoded.offsets, decoded.values))
            offset = decoded.header.next_offset
            covered = pos + size
        assert covered == len(records), "a fetch served part of a batch"


def test_a_full_disk_fails_produces_cleanly_and_loses_nothing(small_fs):
    broker = BrokerProcess(small_fs / "data", "--segment-bytes", "2097152",
                           "--log-cleaner-interval-ms", "3600000").start()
    try:
        with RawClient(broker.host, broker.port) as c:
            created = c.request(m.CreateTopicsRequest(topics=(m.NewTopic("a", 2), m.NewTopic("b", 1)),
                                                      correlation_id=c.next_id()))
            assert all(t.error_code == 0 for t in created.topics)
            assert produce(c, "b", [b"other topic"]).error_code == 0
            assert produce(c, "a", [b"other partition"], partition=1).error_code == 0
            filler = small_fs / "filler"
            filler.write_bytes(os.urandom(FILLER_BYTES))

            acked: dict[int, bytes] = {}
            failure = None
            for i in range(4 * FS_BYTES // 65536):
                values = [os.urandom(16) + b"%d" % i + b"x" * 4000 for _ in range(16)]
                r = produce(c, "a", values)
                if r.error_code:
                    failure = r
                    break
                acked.update({r.base_offset + j: v for j, v in enumerate(values)})
            assert failure is not None, "the disk never filled up"
            assert failure.error_code == ErrorCode.STORAGE_ERROR, failure
            assert acked

            # still serving: every acknowledged record, whole batches only, other partitions too
            assert read_partition(c, "a") == acked
            assert read_partition(c, "a", 1) == {0: b"other partition"}
            assert read_partition(c, "b") == {0: b"other topic"}
            meta = c.request(m.MetadataRequest(topics=("a", "b"), correlation_id=c.next_id()))
            assert all(t.error_code == 0 for t in meta.topics)

            filler.unlink()
            after = produce(c, "a", [b"after freeing space"])
            assert after.error_code == 0 and after.base_offset == max(acked) + 1
            acked[after.base_offset] = b"after freeing space"

        broker.kill()  # no clean shutdown: the restart recovers the logs
        broker.start()
        with RawClient(broker.host, broker.port) as c:
            assert read_partition(c, "a") == acked
            assert read_partition(c, "b") == {0: b"other topic"}
            assert produce(c, "a", [b"and on"]).base_offset == max(acked) + 1
        assert broker.stop() == 0
    finally:
        broker.kill()
