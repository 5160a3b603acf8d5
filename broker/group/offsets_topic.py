"""The internal topic ``__consumer_offsets``: where committed offsets live on disk.

Blocking disk I/O through the storage engine, no asyncio. The topic is
created at start-up if missing (one partition, ``cleanup.policy=compact``);
commits are appended to partition 0, and start-up reads every partition from
its log start to rebuild the offset table. See ``offsets`` for the records.
"""

from __future__ import annotations

import logging
from typing import Iterator, Sequence

from protocol import batch as batchfmt
from protocol.errors import CorruptMessageError

from ..storage import PartitionLog, TopicStore

log = logging.getLogger("ferry.broker.group")

OFFSETS_TOPIC = "__consumer_offsets"
OFFSETS_TOPIC_CONFIG = {
    "cleanup.policy": "compact",
    "segment.bytes": str(100 * 1024 * 1024),  # Kafka's offsets.topic.segment.bytes
}
RECORDS_PER_BATCH = 100  # keeps a batch far below max.message.bytes even with 4 KiB metadata
READ_CHUNK = 1 << 20

Record = tuple[bytes, "bytes | None"]


class OffsetsTopic:
    """Appends to and reads back ``__consumer_offsets`` in ``store``."""

    def __init__(self, store: TopicStore) -> None:
        self.store = store

    def ensure(self) -> None:
        """Create the topic if it does not exist. Raises StorageError."""
        if not self.store.has_topic(OFFSETS_TOPIC):
            self.store.create_topic(OFFSETS_TOPIC, 1, OFFSETS_TOPIC_CONFIG)
            log.info("created the internal topic %s", OFFSETS_TOPIC)

    def append(self, records: Sequence[Record], now_ms: int) -> PartitionLog:
        """Append (key, value) records (value None: a tombstone) as batches; returns the log.

        The records are in the page cache, not yet on disk: fsync the log that
        is returned (``flush``) before acknowledging. Raises StorageError.
        """
        self.ensure()  # someone may have deleted it
        plog = self.store.partition(OFFSETS_TOPIC, 0)
        data = bytearray()
        for start in range(0, len(records), RECORDS_PER_BATCH):
            chunk = records[start : start + RECORDS_PER_BATCH]
            data += batchfmt.build_batch([v for _, v in chunk], [k for k, _ in chunk], timestamps=now_ms)
        plog.append(data)
        return plog

    def read_all(self) -> Iterator[Record]:
        """Every (key, value) record in log order. Blocks on disk reads; raises StorageError."""
        if not self.store.has_topic(OFFSETS_TOPIC):
            return
        for p in range(self.store.topic(OFFSETS_TOPIC).partitions):
            yield from _read_partition(self.store.partition(OFFSETS_TOPIC, p))


def _read_partition(plog: PartitionLog) -> Iterator[Record]:
    offset, end = plog.log_start_offset, plog.log_end_offset
    while offset < end:
        result = plog.read(offset, READ_CHUNK)
        data = b"".join(r.read() for r in result.ranges)
        advanced = False
        for pos, _size in batchfmt.iter_complete(data):
            try:
                header = batchfmt.parse_header(data, pos)
            except CorruptMessageError as exc:
                log.error("%s: unreadable batch at offset %d, not loading further: %s", plog, offset, exc)
                return
            try:
                decoded = batchfmt.decode(data, pos)
            except CorruptMessageError as exc:
                log.warning("%s: skipping a corrupt batch at offset %d: %s", plog, header.base_offset, exc)
            else:
                for record_offset, _ts, key, value, _headers in decoded.records():
                    if record_offset >= offset:
                        yield key, value
            offset = max(offset, header.base_offset + header.last_offset_delta + 1)
            advanced = True
        if not advanced:
            return
