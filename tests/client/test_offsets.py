"""offsets.list_offsets: when it backs off and when it does not."""

from __future__ import annotations

import asyncio

import pytest

from client import offsets
from client.structs import TopicPartition
from protocol.errors import ErrorCode
from protocol.messages import ListOffsetsPartitionResponse, ListOffsetsResponse


class FakeMeta:
    def __init__(self) -> None:
        self.leaders: dict[tuple[str, int], int] = {}

    def leader_for(self, topic: str, partition: int):
        return self.leaders.get((topic, partition))


class FakeCluster:
    """Knows no leader until refreshed; answers ListOffsets with ``codes`` in turn, then offset 7."""

    def __init__(self, codes=()) -> None:
        self.metadata = FakeMeta()
        self.tracked: set[str] = set()
        self.calls: list[str] = []
        self.codes = list(codes)

    async def refresh(self, topics):
        self.calls.append("refresh")
        for t in topics:
            self.metadata.leaders[(t, 0)] = 1

    async def send(self, node, req):
        self.calls.append("list_offsets")
        code = self.codes.pop(0) if self.codes else 0
        return ListOffsetsResponse(partitions=tuple(
            ListOffsetsPartitionResponse(p.topic, p.partition, error_code=code, offset=-1 if code else 7)
            for p in req.partitions))


@pytest.fixture
def sleeps(monkeypatch):
    slept: list[float] = []
    real_sleep = asyncio.sleep

    async def sleep(seconds, *args):
        slept.append(seconds)
        await real_sleep(0)

    monkeypatch.setattr(offsets.asyncio, "sleep", sleep)
    return slept


def test_a_leader_only_missing_from_metadata_is_looked_up_without_backing_off(sleeps):
    cluster = FakeCluster()
    tp = TopicPartition("t", 0)
    found = asyncio.run(offsets.list_offsets(cluster, {tp: -1}, timeout=5, retry_backoff=0.1))
    assert found == {tp: (7, -1)}
    assert cluster.calls == ["refresh", "list_offsets"] and sleeps == []


def test_retriable_errors_still_back_off(sleeps):
    cluster = FakeCluster(codes=[int(ErrorCode.LEADER_NOT_AVAILABLE)] * 2)
    cluster.metadata.leaders[("t", 0)] = 1
    tp = TopicPartition("t", 0)
    found = asyncio.run(offsets.list_offsets(cluster, {tp: -1}, timeout=5, retry_backoff=0.1))
    assert found == {tp: (7, -1)}
    assert sleeps == [0.1, 0.1]
