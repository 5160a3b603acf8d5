"""Committed offsets in a real ``__consumer_offsets`` log: created, appended, read back after reopening."""

from __future__ import annotations

from protocol import group_messages as m

from broker.group import GroupConfig, GroupCoordinator
from broker.group.offsets_topic import OFFSETS_TOPIC, RECORDS_PER_BATCH, OffsetsTopic
from broker.storage import TopicStore

from .helpers import FakeClock, fetch


def open_coordinator(data_dir) -> tuple[TopicStore, GroupCoordinator]:
    store = TopicStore(data_dir)
    topic = OffsetsTopic(store)
    topic.ensure()
    coord = GroupCoordinator(GroupConfig(), topic, clock=FakeClock())
    coord.load()
    return store, coord


def test_topic_is_created_compacted(tmp_path):
    store, _ = open_coordinator(tmp_path)
    info = store.topic(OFFSETS_TOPIC)
    assert info.partitions == 1 and info.config.cleanup_policy == "compact"
    store.close()


def test_offsets_survive_reopening_the_store(tmp_path):
    store, coord = open_coordinator(tmp_path)
    many = {("t", p): p * 10 for p in range(RECORDS_PER_BATCH * 2 + 5)}  # several batches in one commit
    req = m.OffsetCommitRequest(group_id="g", partitions=tuple(
        m.OffsetCommitPartition(t, p, o, "md") for (t, p), o in many.items()))
    response, plog = coord.commit_offsets(req)
    assert all(p.error_code == 0 for p in response.partitions)
    plog.flush()
    coord.commit_offsets(m.OffsetCommitRequest(group_id="g", partitions=(m.OffsetCommitPartition("t", 0, 999),)))
    coord.commit_offsets(m.OffsetCommitRequest(group_id="gone", partitions=(m.OffsetCommitPartition("t", 0, 1),)))
    coord.delete_groups(m.DeleteGroupsRequest(groups=("gone",)))
    store.close()

    store, coord = open_coordinator(tmp_path)
    assert fetch(coord) == {**many, ("t", 0): 999}
    assert fetch(coord, group="gone") == {}
    assert coord.offsets.get("g", "t", 3).metadata == "md"
    store.close()


def test_a_deleted_offsets_topic_is_recreated_on_the_next_commit(tmp_path):
    store, coord = open_coordinator(tmp_path)
    store.delete_topic(OFFSETS_TOPIC)
    response, _ = coord.commit_offsets(m.OffsetCommitRequest(group_id="g", partitions=(
        m.OffsetCommitPartition("t", 0, 5),)))
    assert response.partitions[0].error_code == 0
    assert list(OffsetsTopic(store).read_all())
    store.close()
