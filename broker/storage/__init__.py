"""Ferry's storage engine: partition logs of segment files, and the topics that own them.

Synchronous and free of networking: the broker's event loop calls in, and
``flush`` may be called from a worker thread. See ``partition_log`` for how a
log works and ``paths`` for the layout of a data dir.
"""

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
