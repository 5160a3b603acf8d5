"""Topic administration: AsyncAdmin, and the blocking Admin over it.

Per-topic errors in an answer raise the protocol's exception class for the
code (e.g. TopicAlreadyExistsError), naming the topic.
"""

from __future__ import annotations

from typing import Iterable

from protocol.errors import ApiError, UnknownTopicOrPartitionError
from protocol.messages import (
    EARLIEST,
    LATEST,
    AlterConfigsRequest,
    AlterConfigsTopic,
    CreateTopicsRequest,
    DeleteTopicsRequest,
    DescribeConfigsRequest,
)
from protocol.messages import NewTopic as WireNewTopic

from .background import LoopThread
from .cluster import Cluster
from .group.admin import AsyncGroupAdmin, GroupAdmin
from .offsets import list_offsets
from .structs import NewTopic, PartitionDescription, TopicDescription, TopicPartition


def _wire_topic(t) -> WireNewTopic:
    if isinstance(t, WireNewTopic):
        return t
    if isinstance(t, str):
        return WireNewTopic(t)
    if isinstance(t, NewTopic):
        return WireNewTopic(t.name, t.num_partitions, t.replication_factor, dict(t.topic_configs or {}))
    if isinstance(t, dict):
        configs = t.get("topic_configs", t.get("configs")) or {}
        return WireNewTopic(t["name"], t.get("num_partitions", -1), t.get("replication_factor", 1),
                            {str(k): str(v) for k, v in configs.items()})
    name, *rest = t
    return WireNewTopic(name, *rest)


def _raise_results(results, action: str) -> None:
    for r in results:
        if r.error_code:
            cls = ApiError.for_code(r.error_code)
            raise cls(f"cannot {action} topic {r.name!r}: {r.error_message or cls.description}")


class AsyncAdmin(AsyncGroupAdmin):
    """Creates, lists, describes and deletes topics, and administers consumer
    groups (``client.group.admin``). ``await start()`` connects."""

    def __init__(
        self,
        *,
        bootstrap_servers: "str | Iterable[str]" = "localhost:9092",
        client_id: str | None = None,
        request_timeout_ms: int = 30000,
        retry_backoff_ms: int = 100,
    ) -> None:
        self._timeout_ms = request_timeout_ms
        self._retry_backoff = retry_backoff_ms / 1000
        self.cluster = Cluster(
            bootstrap_servers, client_id=client_id or "ferry-admin",
            request_timeout_ms=request_timeout_ms, retry_backoff_ms=retry_backoff_ms,
        )

    async def start(self) -> None:
        """Connect. Raises NoBrokersAvailable."""
        await self.cluster.start()

    async def stop(self) -> None:
        await self.cluster.close()

    close = stop

    async def __aenter__(self) -> "AsyncAdmin":
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    def _controller(self) -> int | None:
        cid = self.cluster.metadata.controller_id
        return cid if cid in self.cluster.metadata.brokers else None

    async def create_topics(self, new_topics, timeout_ms: int | None = None,
                            validate_only: bool = False) -> list[str]:
        """Create topics: NewTopic, (name, num_partitions[, replication_factor]) or names.

        Returns the names. Raises e.g. TopicAlreadyExistsError, InvalidTopicError,
        InvalidPartitionsError for the first topic the broker refused.
        """
        if isinstance(new_topics, (str, NewTopic, WireNewTopic)):
            new_topics = [new_topics]
        topics = tuple(_wire_topic(t) for t in new_topics)
        resp = await self.cluster.send(self._controller(), CreateTopicsRequest(
            topics=topics, timeout_ms=timeout_ms or self._timeout_ms, validate_only=validate_only,
        ))
        _raise_results(resp.topics, "create")
        return [t.name for t in topics]

    async def create_topic(self, name: str, num_partitions: int = -1, replication_factor: int = 1,
                           topic_configs: dict | None = None) -> None:
        await self.create_topics([NewTopic(name, num_partitions, replication_factor, topic_configs)])

    async def delete_topics(self, topics: "str | Iterable[str]", timeout_ms: int | None = None) -> None:
        """Delete topics. Raises UnknownTopicOrPartitionError for one that does not exist."""
        if isinstance(topics, str):
            topics = [topics]
        resp = await self.cluster.send(self._controller(), DeleteTopicsRequest(
            topics=tuple(topics), timeout_ms=timeout_ms or self._timeout_ms,
        ))
        _raise_results(resp.topics, "delete")

    async def list_topics(self) -> list[str]:
        """Every topic's name, sorted."""
        await self.cluster.refresh(None)
        return sorted(self.cluster.metadata.topics())

    async def alter_configs(self, configs: "dict[str, dict[str, str | None]]",
                            validate_only: bool = False) -> None:
        """Change topic settings: ``{topic: {name: value}}``; a None value resets
        the setting to the broker's default. Names are Kafka's (``retention.ms``)
        or with underscores. Raises e.g. InvalidConfigError or
        UnknownTopicOrPartitionError for the first topic the broker refused.
        """
        topics = tuple(
            AlterConfigsTopic(name, {str(k): (None if v is None else str(v)) for k, v in changes.items()})
            for name, changes in configs.items()
        )
        resp = await self.cluster.send(self._controller(), AlterConfigsRequest(
            topics=topics, validate_only=validate_only,
        ))
        _raise_results(resp.topics, "alter the config of")

    async def describe_configs(self, topics: "str | Iterable[str]") -> dict[str, dict[str, str]]:
        """{topic: {config name: value}}."""
        if isinstance(topics, str):
            topics = [topics]
        resp = await self.cluster.send(None, DescribeConfigsRequest(topics=tuple(topics)))
        out = {}
        for t in resp.topics:
            if t.error_code:
                cls = ApiError.for_code(t.error_code)
                raise cls(f"topic {t.name!r}: {t.error_message or cls.description}")
            out[t.name] = dict(t.configs)
        return out

    async def describe_topics(self, topics: "str | Iterable[str] | None" = None) -> list[TopicDescription]:
        """Partitions (leader, log start and end offsets) and configs of ``topics``
        (None: all). Raises UnknownTopicOrPartitionError for a missing topic."""
        if isinstance(topics, str):
            topics = [topics]
        resp = await self.cluster.refresh(None if topics is None else list(topics))
        meta = self.cluster.metadata
        names = sorted(t.name for t in resp.topics) if topics is None else list(topics)
        for t in resp.topics:
            if t.error_code and t.name in names:
                cls = ApiError.for_code(t.error_code)
                raise cls(f"topic {t.name!r}: {cls.description}")
        for name in names:
            if name not in meta.leaders:
                raise UnknownTopicOrPartitionError(f"topic {name!r} does not exist")
        if not names:
            return []
        tps = [TopicPartition(n, p) for n in names for p in sorted(meta.leaders[n])]
        timeout = self._timeout_ms / 1000
        starts = await list_offsets(self.cluster, {tp: EARLIEST for tp in tps}, timeout, self._retry_backoff)
        ends = await list_offsets(self.cluster, {tp: LATEST for tp in tps}, timeout, self._retry_backoff)
        configs = await self.describe_configs(names)
        out = []
        for name in names:
            parts = [
                PartitionDescription(p, meta.leaders[name][p], starts[TopicPartition(name, p)][0],
                                     ends[TopicPartition(name, p)][0])
                for p in sorted(meta.leaders[name])
            ]
            out.append(TopicDescription(name, parts, configs.get(name, {})))
        return out


class Admin(GroupAdmin):
    """The blocking admin client (kafka-python's KafkaAdminClient shape)."""

    def __init__(
        self,
        *,
        bootstrap_servers: "str | Iterable[str]" = "localhost:9092",
        client_id: str | None = None,
        request_timeout_ms: int = 30000,
        retry_backoff_ms: int = 100,
    ) -> None:
        self._closed = False
        self._thread = LoopThread("ferry-admin")
        self._admin = AsyncAdmin(bootstrap_servers=bootstrap_servers, client_id=client_id,
                                 request_timeout_ms=request_timeout_ms, retry_backoff_ms=retry_backoff_ms)
        try:
            self._thread.run(self._admin.start())
        except BaseException:
            try:
                self._thread.run(self._admin.stop())
            finally:
                self._thread.stop()
            raise

    def create_topics(self, new_topics, timeout_ms: int | None = None, validate_only: bool = False) -> list[str]:
        return self._thread.run(self._admin.create_topics(new_topics, timeout_ms, validate_only))

    def create_topic(self, name: str, num_partitions: int = -1, replication_factor: int = 1,
                     topic_configs: dict | None = None) -> None:
        return self._thread.run(self._admin.create_topic(name, num_partitions, replication_factor, topic_configs))

    def delete_topics(self, topics, timeout_ms: int | None = None) -> None:
        return self._thread.run(self._admin.delete_topics(topics, timeout_ms))

    def list_topics(self) -> list[str]:
        return self._thread.run(self._admin.list_topics())

    def describe_topics(self, topics=None) -> list[TopicDescription]:
        return self._thread.run(self._admin.describe_topics(topics))

    def describe_configs(self, topics) -> dict[str, dict[str, str]]:
        return self._thread.run(self._admin.describe_configs(topics))

    def alter_configs(self, configs: "dict[str, dict[str, str | None]]", validate_only: bool = False) -> None:
        return self._thread.run(self._admin.alter_configs(configs, validate_only))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._thread.run(self._admin.stop())
        finally:
            self._thread.stop()

    def __enter__(self) -> "Admin":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


__all__ = ["Admin", "AsyncAdmin", "NewTopic"]
