import json
import os

import pytest

from broker.storage import LogConfig, StorageError, TopicStore, paths
from protocol.errors import (
    InvalidConfigError,
    InvalidPartitionsError,
    InvalidTopicError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
)

from .helpers import FakeClock, make_batch, read_all
from .test_paths import BAD_NAMES


def listing(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_new_store_is_empty_and_counts_as_clean(tmp_path):
    store = TopicStore(tmp_path / "data")
    assert store.topics() == [] and store.was_clean  # nothing to recover
    store.close()
    assert (tmp_path / "data" / ".clean-shutdown").exists()
    again = TopicStore(tmp_path / "data")
    assert again.was_clean
    assert not (tmp_path / "data" / ".clean-shutdown").exists()


def test_create_topic(tmp_path):
    store = TopicStore(tmp_path)
    info = store.create_topic("orders", 3, {"segment.bytes": "4096", "retention_ms": 1000})
    assert info.partitions == 3
    assert info.config.segment_bytes == 4096 and info.config.retention_ms == 1000
    assert info.overrides == {"segment.bytes": "4096", "retention.ms": "1000"}
    assert store.topics() == ["orders"] and store.has_topic("orders")
    assert store.topic("orders") == info
    for p in range(3):
        assert (tmp_path / f"orders-{p}").is_dir()
        assert store.partition("orders", p).config.segment_bytes == 4096
    meta = json.loads((tmp_path / "__topics__" / "orders.json").read_text())
    assert meta == {"name": "orders", "partitions": 3, "config": info.overrides}


@pytest.mark.parametrize("name", BAD_NAMES)
def test_invalid_names_create_nothing(tmp_path, name):
    data = tmp_path / "data"
    store = TopicStore(data)
    before = listing(tmp_path)
    with pytest.raises(InvalidTopicError):
        store.create_topic(name, 1)
    assert listing(tmp_path) == before


@pytest.mark.parametrize("count", [0, -1, 10001, "3", True, 1.5])
def test_invalid_partition_counts(tmp_path, count):
    store = TopicStore(tmp_path)
    with pytest.raises(InvalidPartitionsError):
        store.create_topic("t", count)
    assert store.topics() == []


def test_invalid_config_creates_nothing(tmp_path):
    store = TopicStore(tmp_path)
    with pytest.raises(InvalidConfigError):
        store.create_topic("t", 1, {"segment.bytes": "tiny"})
    with pytest.raises(InvalidConfigError):
        store.create_topic("t", 1, {"bogus": "1"})
    assert store.topics() == [] and not (tmp_path / "t-0").exists()


def test_topic_already_exists(tmp_path):
    store = TopicStore(tmp_path)
    store.create_topic("t", 1)
    with pytest.raises(TopicAlreadyExistsError):
        store.create_topic("t", 2)


def test_unknown_topics_and_partitions(tmp_path):
    store = TopicStore(tmp_path)
    store.create_topic("t", 2)
    for name, p in [("nope", 0), ("t", 2), ("t", -1), ("t", "0"), (None, 0)]:
        with pytest.raises(UnknownTopicOrPartitionError):
            store.partition(name, p)
    with pytest.raises(UnknownTopicOrPartitionError):
        store.topic("nope")
    with pytest.raises(UnknownTopicOrPartitionError):
        store.delete_topic("nope")
    with pytest.raises(UnknownTopicOrPartitionError):
        store.alter_config("nope", {})


def test_data_survives_a_clean_restart(tmp_path):
    clock = FakeClock()
    store = TopicStore(tmp_path, clock=clock)
    store.create_topic("a", 2)
    store.create_topic("b", 1, {"message.timestamp.type": "LogAppendTime"})
    store.partition("a", 1).append(make_batch([b"x", b"y"]))
    stamped = store.partition("b", 0).append(make_batch([b"z"]))
    store.flush_all()
    store.close()
    again = TopicStore(tmp_path, clock=clock)
    assert again.was_clean and again.topics() == ["a", "b"]
    assert read_all(again.partition("a", 1)) == {0: b"x", 1: b"y"}
    assert again.partition("a", 0).log_end_offset == 0
    assert again.topic("b").config.log_append_time
    assert again.partition("b", 0).offset_for_timestamp(0)[1] == stamped.log_append_time


def test_data_survives_a_crash(tmp_path):
    store = TopicStore(tmp_path)
    store.create_topic("a", 1, {"segment.bytes": "200"})
    for i in range(10):
        store.partition("a", 0).append(make_batch([b"v%d" % i]))
    log = store.partition("a", 0)
    last = log.segments()[-1].log_path
    del store, log  # no close: no marker
    with open(last, "ab") as f:
        f.write(b"\x00torn")
    again = TopicStore(tmp_path)
    assert not again.was_clean
    assert read_all(again.partition("a", 0)) == {i: b"v%d" % i for i in range(10)}


def test_alter_config(tmp_path):
    defaults = LogConfig(retention_ms=5000)
    store = TopicStore(tmp_path, defaults)
    store.create_topic("t", 2, {"segment.bytes": "4096"})
    info = store.alter_config("t", {"retention.ms": "100", "segment.bytes": None, "index_interval_bytes": "64"})
    assert info.overrides == {"retention.ms": "100", "index.interval.bytes": "64"}
    assert info.config.segment_bytes == defaults.segment_bytes
    assert store.partition("t", 1).config == info.config
    with pytest.raises(InvalidConfigError):
        store.alter_config("t", {"retention.ms": "soon"})
    assert store.topic("t") == info
    store.close()
    again = TopicStore(tmp_path, defaults)
    assert again.topic("t") == info
    info = again.alter_config("t", {"retention.ms": None})
    assert info.config.retention_ms == 5000 and info.overrides == {"index.interval.bytes": "64"}


def test_delete_topic(tmp_path):
    store = TopicStore(tmp_path)
    store.create_topic("gone", 3)
    store.create_topic("kept", 1)
    store.partition("gone", 0).append(make_batch([b"x"]))
    result = store.partition("gone", 0).read(0, 1000)
    store.delete_topic("gone")
    assert store.topics() == ["kept"]
    assert not any(p.name.startswith("gone") for p in tmp_path.iterdir())
    assert not (tmp_path / "__topics__" / "gone.json").exists()
    assert result.ranges[0].read()  # an in-flight fetch still has its bytes
    store.create_topic("gone", 1)
    assert store.partition("gone", 0).log_end_offset == 0
    store.close()
    assert TopicStore(tmp_path).topics() == ["gone", "kept"]


def test_crash_leftovers_are_ignored_or_removed(tmp_path):
    store = TopicStore(tmp_path)
    store.create_topic("t", 1)
    store.close()
    # a create that crashed before its metadata, with data from an older life
    orphan = tmp_path / "half-0"
    orphan.mkdir()
    (orphan / "00000000000000000000.log").write_bytes(b"old")
    # a delete that crashed after renaming
    doomed = paths.deletion_dir(tmp_path, tmp_path / "t-7")
    doomed.mkdir()
    (doomed / "00000000000000000000.log").write_bytes(b"old")
    # a metadata write that crashed before its rename
    (tmp_path / "__topics__" / "x.json.tmp").write_text("{")
    again = TopicStore(tmp_path)
    assert again.topics() == ["t"]
    assert not doomed.exists() and not (tmp_path / "__topics__" / "x.json.tmp").exists()
    assert orphan.exists()
    again.create_topic("half", 1)
    assert again.partition("half", 0).log_end_offset == 0
    assert os.listdir(tmp_path / "half-0") == ["00000000000000000000.log"]


def test_corrupt_metadata_is_an_error(tmp_path):
    store = TopicStore(tmp_path)
    store.create_topic("t", 1)
    store.close()
    (tmp_path / "__topics__" / "t.json").write_text('{"name": "other", "partitions": 1}')
    with pytest.raises(StorageError):
        TopicStore(tmp_path)
    (tmp_path / "__topics__" / "t.json").write_text("not json")
    with pytest.raises(StorageError):
        TopicStore(tmp_path)


def test_longest_topic_name_works(tmp_path):
    store = TopicStore(tmp_path)
    name = "x" * 249
    store.create_topic(name, 2)
    store.alter_config(name, {"retention.ms": "1"})
    store.delete_topic(name)
    assert store.topics() == []
