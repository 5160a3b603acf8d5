"""The connections a consumer group member keeps to its group coordinator.

FindCoordinator names the broker that coordinates the group (any broker can
answer; on one node it is always that node). The member then opens two
connections of its own to it, apart from the fetch connections: responses
come back in request order on a connection, so a JoinGroup the coordinator
holds until the whole group has joined (up to the rebalance timeout) would
hold back whatever was sent after it.

* ``"join"`` carries JoinGroup and SyncGroup, which may wait at the broker;
* ``"main"`` carries Heartbeat, OffsetCommit, OffsetFetch and LeaveGroup,
  which the broker answers at once, so a heartbeat never waits behind a
  fetch's long poll either.

A network error, or an answer saying this broker is not (or not yet) the
coordinator, marks the coordinator unknown: both connections close and the
next request looks it up again.
"""

from __future__ import annotations

import asyncio
import logging
import time

from protocol.errors import ApiError, ErrorCode, NetworkError, RetriableError
from protocol.group_messages import FindCoordinatorRequest
from protocol.messages import Message

from ..cluster import Cluster
from ..conn import AsyncConnection
from ..errors import FerryTimeoutError, NoBrokersAvailable

log = logging.getLogger("client.group")

COORDINATOR_ERRORS = frozenset({
    ErrorCode.COORDINATOR_NOT_AVAILABLE, ErrorCode.NOT_COORDINATOR, ErrorCode.COORDINATOR_LOAD_IN_PROGRESS,
})


class CoordinatorLink:
    """Finds the coordinator of ``group_id`` and keeps connections to it. Lives in one event loop."""

    def __init__(self, cluster: Cluster, group_id: str) -> None:
        self.cluster = cluster
        self.group_id = group_id
        self.address: tuple[str, int] | None = None
        self.node_id: int | None = None
        self._conns: dict[str, AsyncConnection] = {}
        self._connecting: dict[str, asyncio.Task] = {}
        self._closed = False

    @property
    def known(self) -> bool:
        return self.address is not None

    async def find(self, timeout: float) -> tuple[str, int]:
        """The coordinator's address, asking a broker if it is not known.

        Retries retriable errors until ``timeout`` seconds, then raises
        FerryTimeoutError; raises the ApiError of a refusal (InvalidGroupIdError).
        """
        deadline = time.monotonic() + timeout
        last: BaseException | None = None
        while self.address is None:
            if self._closed:
                raise NetworkError("the consumer is closed")
            try:
                resp = await self.cluster.send(None, FindCoordinatorRequest(key=self.group_id))
                if resp.error_code:
                    raise ApiError.from_code(resp.error_code, resp.error_message)
                self.address, self.node_id = (resp.host, resp.port), resp.node_id
                log.debug("group %s: coordinator is broker %d at %s:%d",
                          self.group_id, resp.node_id, resp.host, resp.port)
                break
            except (NetworkError, NoBrokersAvailable, RetriableError) as exc:
                last = exc
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise FerryTimeoutError(f"no coordinator found for group {self.group_id!r}: {last}")
            await asyncio.sleep(min(self.cluster.retry_backoff, remaining))
        return self.address

    async def _connection(self, channel: str, timeout: float) -> AsyncConnection:
        conn = self._conns.get(channel)
        if conn is not None and not conn.closed:
            return conn
        host, port = await self.find(timeout)
        task = self._connecting.get(channel)
        if task is None:
            task = self._connecting[channel] = asyncio.ensure_future(AsyncConnection.connect(
                host, port, client_id=self.cluster.client_id,
                connect_timeout=self.cluster.request_timeout, request_timeout=self.cluster.request_timeout,
            ))
        try:
            conn = await asyncio.shield(task)
        except NoBrokersAvailable as exc:
            self.mark_unknown(str(exc))
            raise
        finally:
            if self._connecting.get(channel) is task and task.done():
                del self._connecting[channel]
        if self._closed or self.address != (host, port):
            conn.close()
            raise NetworkError("the coordinator changed while connecting")
        self._conns[channel] = conn
        return conn

    async def send(self, request: Message, *, channel: str = "main", timeout: float | None = None) -> Message:
        """Send ``request`` to the coordinator and await the response.

        ``timeout`` bounds the wait for the response (default: request_timeout_ms).
        Raises NetworkError or NoBrokersAvailable (the coordinator is then
        unknown), FerryTimeoutError if no coordinator can be found.
        """
        conn = await self._connection(channel, self.cluster.request_timeout)
        try:
            return await conn.request(request, timeout)
        except (NetworkError, RetriableError) as exc:
            if isinstance(exc, NetworkError) or getattr(exc, "code", None) in COORDINATOR_ERRORS:
                self.mark_unknown(str(exc))
            raise

    def mark_unknown(self, reason: str) -> None:
        """Forget the coordinator and close its connections (an error said it moved or died)."""
        if self.address is not None and not self._closed:
            log.info("group %s: coordinator %s:%d unavailable (%s); looking it up again",
                     self.group_id, *self.address, reason)
        self.address = self.node_id = None
        conns, self._conns = self._conns, {}
        for conn in conns.values():
            conn.close(reason)

    def close(self) -> None:
        self._closed = True
        for task in self._connecting.values():
            task.cancel()
        self._connecting.clear()
        self.mark_unknown("the consumer is closing")
