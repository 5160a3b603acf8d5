"""Ferry's storage engine: partition logs of segment files, and the topics that own them.

Synchronous and free of networking: the broker's event loop calls in, and
``flush``, the cleaner's ``prepare`` and ``fsio.remove_files`` may be called
from worker threads. See ``partition_log`` for how a log works and ``paths``
for the layout of a data dir.

Files and the module that owns each
-----------------------------------
====================================  ===============================================
``<data-dir>/__topics__/<t>.json``    ``metadata``: a topic exists, its config overrides
``<data-dir>/.clean-shutdown``        ``metadata``: the last close was clean
``<data-dir>/producer-ids``           ``producer_ids``: the next free block of producer ids
``<t>-<p>/<base>.log``                ``segment``: record batches, offsets chaining exactly
``<t>-<p>/<base>.index``              ``offset_index``: sparse offset -> position (derived)
``<t>-<p>/<base>.timeindex``          ``time_index``: sparse timestamp -> offset (derived)
``<t>-<p>/<offset>.snapshot``         ``producer_state``: idempotent producers as of offset
``<t>-<p>/<base>.*.deleted``          retention or a swap doomed it; removed at open
``<t>-<p>/<base>.*.cleaned``          the cleaner is writing it; removed at open
``<t>-<p>/<base>.*.swap``             a committed cleaning; completed at open
====================================  ===============================================

Idempotent producers (``producer_state``): before an append writes, the
batches that carry a producer id are checked against the last five batches
remembered per producer: a retry is answered with the original offsets and
not written again, a gap is OUT_OF_ORDER_SEQUENCE_NUMBER, an old epoch
INVALID_PRODUCER_EPOCH. The state is snapshotted at each segment roll and at
close (the newest two snapshots are kept), and rebuilt at open from the
newest snapshot plus the batch headers after it; truncation rebuilds it the
same way, retention forgets producers whose batches all went.

Retention (``retention``, ``log_housekeeping``): a pure function picks the
closed segments to delete from the front, by age (largest timestamp older
than retention.ms) or by size (retention.bytes); they are renamed
``.deleted`` and dropped from the log, which moves the log start offset to
the next segment's base; the files are unlinked later, on any thread.

Compaction (``cleaner``, ``offset_map``, ``throttler``): for cleanup.policy
compact, the cleaner maps each key's newest offset over the dirty closed
segments (bounded memory), rewrites the closed segments keeping the newest
record per key and dropping old tombstones, with paced I/O, and swaps the
result in with Kafka's ``.cleaned`` -> ``.swap`` -> final renames, which
``log_loader`` finishes or rolls back after a crash. Offsets never change.
"""

from .cleaner import CleanStats, LogCleaner
from .config import LogConfig
from .errors import (
    DiskFullError,
    LogFlushError,
    LogOfflineError,
    LogReadError,
    LogWriteError,
    StorageError,
)
from .partition_log import PartitionLog
from .producer_ids import ProducerIds
from .results import AppendResult, FileRange, ReadResult
from .topic_store import TopicInfo, TopicStore

__all__ = [
    "LogConfig",
    "LogCleaner",
    "CleanStats",
    "ProducerIds",
    "PartitionLog",
    "FileRange",
    "AppendResult",
    "ReadResult",
    "TopicStore",
    "TopicInfo",
    "StorageError",
    "LogWriteError",
    "DiskFullError",
    "LogFlushError",
    "LogOfflineError",
    "LogReadError",
]
