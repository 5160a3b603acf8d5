"""The asyncio shell of the group coordinator: group requests in, responses out.

``GroupHandlers`` owns the ``GroupCoordinator`` (see ``coordinator``), loads
the committed offsets from ``__consumer_offsets`` when it is built, and runs
the coordinator's clock: a task calls ``tick()`` every ``TICK_INTERVAL``
seconds, which expires sessions, ends rebalances whose time is up and expires
old offsets. ``close`` stops that task and answers every waiting request.

A JoinGroup or SyncGroup that must wait becomes a coroutine awaiting a future
that the coordinator's ``Deferred`` resolves; so it holds back the responses
queued behind it on its connection (responses keep request order), and
clients use a connection of their own for group coordination. Requests that
write offsets return a coroutine that answers once the fsync is done.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from typing import Any, Callable

from protocol import group_messages as m
from protocol.errors import ErrorCode
from protocol.messages import replace

from ..config import BrokerConfig
from ..flusher import GroupCommitFlusher
from ..storage import TopicStore
from .coordinator import Flushable, GroupConfig, GroupCoordinator
from .member import Deferred
from .offsets_topic import OffsetsTopic

log = logging.getLogger("ferry.broker.group")

TICK_INTERVAL = 0.1  # seconds between coordinator ticks: the precision of group timeouts


def group_config(config: BrokerConfig) -> GroupConfig:
    return GroupConfig(
        min_session_timeout_ms=config.group_min_session_timeout_ms,
        max_session_timeout_ms=config.group_max_session_timeout_ms,
        initial_rebalance_delay_ms=config.group_initial_rebalance_delay_ms,
        offsets_retention_ms=config.offsets_retention_minutes * 60000,
        offsets_retention_check_interval_ms=config.offsets_retention_check_interval_ms,
    )


class GroupHandlers:
    """Serve the group APIs. Building it creates and reads ``__consumer_offsets`` (blocks).

    Raises StorageError if the offsets topic cannot be created or read.
    """

    def __init__(
        self,
        config: BrokerConfig,
        store: TopicStore,
        flusher: GroupCommitFlusher,
        *,
        port: Callable[[], int] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.store = store
        self.flusher = flusher
        self._port = port or (lambda: config.port)
        topic = OffsetsTopic(store)
        topic.ensure()
        self.coordinator = GroupCoordinator(
            group_config(config), topic, clock=clock, partition_exists=self._partition_exists
        )
        started = time.monotonic()
        loaded = self.coordinator.load()
        if loaded:
            log.info("loaded %d committed offset(s) of %d group(s) in %.2fs",
                     len(self.coordinator.offsets), len(self.coordinator.offsets.groups()),
                     time.monotonic() - started)
        self._ticker: asyncio.Task | None = None

    def _partition_exists(self, topic: str, partition: int) -> bool:
        try:
            self.store.partition(topic, partition)
            return True
        except Exception:
            return False

    def table(self) -> dict[type, Callable[[Any, Any], Any]]:
        """Handlers by request type; each takes (request, client) and returns a
        response or a coroutine producing one."""
        return {
            m.FindCoordinatorRequest: self.find_coordinator,
            m.JoinGroupRequest: self.join_group,
            m.SyncGroupRequest: self.sync_group,
            m.HeartbeatRequest: self.heartbeat,
            m.LeaveGroupRequest: self.leave_group,
            m.DescribeGroupsRequest: self.describe_groups,
            m.ListGroupsRequest: self.list_groups,
            m.OffsetCommitRequest: self.offset_commit,
            m.OffsetFetchRequest: self.offset_fetch,
            m.DeleteGroupsRequest: self.delete_groups,
            m.OffsetDeleteRequest: self.offset_delete,
        }

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start the coordinator's clock (call on the event loop)."""
        if self._ticker is None:
            self._ticker = asyncio.get_running_loop().create_task(self._tick_forever())

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(TICK_INTERVAL)
            try:
                self.coordinator.tick()
            except Exception:  # a bug must not stop the clock of every other group
                log.exception("group coordinator tick failed")

    def close(self) -> None:
        """Stop the clock and answer waiting JoinGroup/SyncGroup requests (broker shutdown)."""
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        self.coordinator.shutdown()

    # ------------------------------------------------------------ helpers

    def _answer(self, deferred: Deferred, correlation_id: int):
        """The response now if the Deferred is resolved, else a coroutine awaiting it."""
        if deferred.done:
            return replace(deferred.result, correlation_id=correlation_id)
        future = asyncio.get_running_loop().create_future()

        def resolved(result) -> None:
            if not future.done():  # cancelled when the client went away
                future.set_result(result)

        deferred.on_done(resolved)
        return self._await_answer(future, correlation_id)

    async def _await_answer(self, future: asyncio.Future, correlation_id: int):
        return replace(await future, correlation_id=correlation_id)

    def _synced(self, response, flushable: Flushable | None):
        """``response`` once ``flushable`` is fsynced (a coroutine), or now if nothing was written."""
        if flushable is None:
            return response
        return self._await_sync(response, flushable)

    async def _await_sync(self, response, flushable: Flushable):
        try:
            await self.flusher.sync([flushable])
        except Exception as exc:
            log.error("fsync of %s failed: %s", flushable, exc)
            return _fail_written(response, int(ErrorCode.STORAGE_ERROR))
        return response

    # ------------------------------------------------------------ APIs

    def find_coordinator(self, req: m.FindCoordinatorRequest, client) -> m.FindCoordinatorResponse:
        if req.key_type != 0:
            return m.FindCoordinatorResponse(
                error_code=int(ErrorCode.INVALID_REQUEST), correlation_id=req.correlation_id,
                error_message=f"key_type {req.key_type} is not supported: only groups (0) have coordinators",
            )
        if not req.key:
            return m.FindCoordinatorResponse(error_code=int(ErrorCode.INVALID_GROUP_ID),
                                             correlation_id=req.correlation_id)
        return m.FindCoordinatorResponse(
            node_id=self.config.broker_id, host=self.config.advertised, port=self._port(),
            correlation_id=req.correlation_id,
        )

    def join_group(self, req: m.JoinGroupRequest, client):
        deferred = self.coordinator.join_group(req, client.client_id, client.host)
        return self._answer(deferred, req.correlation_id)

    def sync_group(self, req: m.SyncGroupRequest, client):
        return self._answer(self.coordinator.sync_group(req), req.correlation_id)

    def heartbeat(self, req: m.HeartbeatRequest, client) -> m.HeartbeatResponse:
        return replace(self.coordinator.heartbeat(req), correlation_id=req.correlation_id)

    def leave_group(self, req: m.LeaveGroupRequest, client) -> m.LeaveGroupResponse:
        return replace(self.coordinator.leave_group(req), correlation_id=req.correlation_id)

    def describe_groups(self, req: m.DescribeGroupsRequest, client) -> m.DescribeGroupsResponse:
        return replace(self.coordinator.describe_groups(req), correlation_id=req.correlation_id)

    def list_groups(self, req: m.ListGroupsRequest, client) -> m.ListGroupsResponse:
        return replace(self.coordinator.list_groups(req), correlation_id=req.correlation_id)

    def offset_commit(self, req: m.OffsetCommitRequest, client):
        response, flushable = self.coordinator.commit_offsets(req)
        return self._synced(replace(response, correlation_id=req.correlation_id), flushable)

    def offset_fetch(self, req: m.OffsetFetchRequest, client) -> m.OffsetFetchResponse:
        return replace(self.coordinator.fetch_offsets(req), correlation_id=req.correlation_id)

    def delete_groups(self, req: m.DeleteGroupsRequest, client):
        response, flushable = self.coordinator.delete_groups(req)
        return self._synced(replace(response, correlation_id=req.correlation_id), flushable)

    def offset_delete(self, req: m.OffsetDeleteRequest, client):
        response, flushable = self.coordinator.delete_offsets(req)
        return self._synced(replace(response, correlation_id=req.correlation_id), flushable)


def _fail_written(response, code: int):
    """``response`` with the entries that had succeeded turned into ``code`` (the fsync failed)."""
    for name in ("partitions", "results"):
        entries = getattr(response, name, None)
        if entries is not None:
            return replace(response, **{name: tuple(
                e if e.error_code else dataclasses.replace(e, error_code=code) for e in entries
            )})
    return response
