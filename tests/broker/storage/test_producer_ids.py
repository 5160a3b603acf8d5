"""Producer id allocation: unique across restarts, block-wise persisted, epochs bumped."""

import json

import pytest

from broker.storage import TopicStore, fsio, paths
from broker.storage.errors import CorruptMetadataError
from broker.storage.producer_ids import MAX_EPOCH, ProducerIds
from protocol.errors import (
    InvalidProducerIdMappingError,
    InvalidRequestError,
    ProducerFencedError,
)


def test_ids_are_unique_across_restarts_and_written_once_per_block(tmp_path, monkeypatch):
    writes = []
    ids = ProducerIds(tmp_path, block_size=10)
    original = fsio.atomic_write
    monkeypatch.setattr(fsio, "atomic_write", lambda p, d: (writes.append(d), original(p, d)))
    first = [ids.allocate() for _ in range(25)]
    assert first == list(range(25))
    assert len(writes) == 3  # blocks [0,10), [10,20), [20,30)
    assert json.loads(paths.producer_ids_file(tmp_path).read_bytes()) == {"next_block": 30}
    # a restart (or a crash) skips the rest of the block, never reuses an id
    again = ProducerIds(tmp_path, block_size=10)
    assert again.allocate() == 30


def test_init_producer_new_and_bumped(tmp_path):
    ids = ProducerIds(tmp_path)
    pid, epoch = ids.init_producer()
    assert epoch == 0
    assert ids.init_producer(pid, 0) == (pid, 1)
    assert ids.init_producer(pid, 1) == (pid, 2)
    with pytest.raises(ProducerFencedError):
        ids.init_producer(pid, 1)  # an instance that was already replaced
    other, _ = ids.init_producer()
    assert other != pid


def test_init_producer_errors(tmp_path):
    ids = ProducerIds(tmp_path)
    with pytest.raises(InvalidProducerIdMappingError):
        ids.init_producer(5, 0)  # never handed out
    with pytest.raises(InvalidRequestError):
        ids.init_producer(-1, 3)
    with pytest.raises(InvalidRequestError):
        ids.init_producer(0, -1)


def test_epoch_overflow_gets_a_fresh_id(tmp_path):
    ids = ProducerIds(tmp_path)
    pid, _ = ids.init_producer()
    new_pid, epoch = ids.init_producer(pid, MAX_EPOCH)
    assert new_pid != pid and epoch == 0


def test_corrupt_file(tmp_path):
    paths.producer_ids_file(tmp_path).write_text("{nope")
    with pytest.raises(CorruptMetadataError):
        ProducerIds(tmp_path)


def test_the_store_owns_one(tmp_path):
    store = TopicStore(tmp_path)
    pid, epoch = store.producer_ids.init_producer()
    store.close()
    assert TopicStore(tmp_path).producer_ids.init_producer()[0] > pid
