"""Producer ids: handed out once per data dir, never twice, even across restarts.

Theory of operation
-------------------
File ``<data-dir>/producer-ids``: one JSON object ``{"next_block": N}``,
replaced atomically (temp, fsync, rename). Every id below ``N`` may have been
handed out. The broker reserves ids in blocks: when its current block is used
up it first writes ``N + block_size`` and only then hands out ``N``, ``N + 1``
..., so the file is written once per block rather than once per producer, and
a crash can only skip the rest of a block, never reuse an id.

Epochs: a new producer gets epoch 0. A producer that sends back its id and
epoch gets the same id with the epoch bumped; the partitions it writes to then
fence the old epoch (see ``producer_state``). Past the largest epoch (32767)
it gets a fresh id at epoch 0, as in Kafka. The latest epoch handed out per id
is remembered in memory only (for ids that were bumped): a request with an
epoch below it comes from an instance that was already replaced, and gets
PRODUCER_FENCED.
"""

from __future__ import annotations

import json
from pathlib import Path

from protocol.errors import (
    InvalidProducerIdMappingError,
    InvalidRequestError,
    ProducerFencedError,
)

from . import fsio, paths
from .errors import CorruptMetadataError

MAX_EPOCH = (1 << 15) - 1
DEFAULT_BLOCK_SIZE = 1000


class ProducerIds:
    """The producer id allocator of one data dir. Reads its file on construction.

    Raises CorruptMetadataError if the file does not parse, OSError if it
    cannot be read.
    """

    def __init__(self, data_dir: Path, block_size: int = DEFAULT_BLOCK_SIZE) -> None:
        if block_size < 1:
            raise ValueError("block_size must be at least 1")
        self.path = paths.producer_ids_file(Path(data_dir))
        self.block_size = block_size
        self._next = self._block_end = self._read()
        self._epochs: dict[int, int] = {}  # latest epoch handed out, by id, this run only

    def _read(self) -> int:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return 0
        try:
            value = json.loads(raw)["next_block"]
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"bad next_block {value!r}")
        except (ValueError, KeyError, TypeError) as exc:
            raise CorruptMetadataError(f"{self.path}: {exc}") from exc
        return value

    def allocate(self) -> int:
        """A producer id never handed out before. Blocks on disk I/O once per block; raises OSError."""
        if self._next >= self._block_end:
            end = self._next + self.block_size
            fsio.atomic_write(self.path, json.dumps({"next_block": end}).encode() + b"\n")
            self._block_end = end
        pid = self._next
        self._next += 1
        return pid

    def init_producer(self, producer_id: int = -1, epoch: int = -1) -> tuple[int, int]:
        """(producer id, epoch) for an InitProducerId request.

        (-1, -1): a new id at epoch 0. A known id and its epoch: the same id,
        epoch + 1. Raises InvalidRequestError (only one of the two given),
        InvalidProducerIdMappingError (an id never handed out),
        ProducerFencedError (an epoch older than one already handed out), or
        OSError.
        """
        if producer_id == -1 and epoch == -1:
            return self.allocate(), 0
        if producer_id < 0 or epoch < 0 or epoch > MAX_EPOCH:
            raise InvalidRequestError(
                f"producer id {producer_id} with epoch {epoch}: give both, or -1 for both"
            )
        if producer_id >= self._block_end:
            raise InvalidProducerIdMappingError(f"producer id {producer_id} was never handed out")
        latest = self._epochs.get(producer_id, epoch)
        if epoch < latest:
            raise ProducerFencedError(
                f"producer {producer_id} epoch {epoch} was replaced by epoch {latest}"
            )
        if epoch >= MAX_EPOCH:
            self._epochs.pop(producer_id, None)
            return self.init_producer()
        self._epochs[producer_id] = epoch + 1
        return producer_id, epoch + 1
