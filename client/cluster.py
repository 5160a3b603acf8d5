"""What the client knows about the cluster, and the connections to it.

``parse_bootstrap`` reads "host:port,host:port". ``ClusterMetadata`` is plain
data (brokers, and per topic the leader of each partition) updated from
``MetadataResponse``s. ``Cluster`` owns one ``AsyncConnection`` per broker,
opened on first use and reopened after a loss, and keeps the metadata fresh:
a background task refreshes the topics its users track every
``metadata_max_age_ms``, at once when someone calls ``request_update()`` (a
request failed with a stale-metadata error), and every ``retry_backoff_ms``
while a tracked topic is missing and ``poll_missing_topics`` is set (a consumer
waiting for a topic to be created).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable, Iterable

from protocol.errors import ApiError, ErrorCode, NetworkError, RetriableError
from protocol.messages import MetadataRequest, MetadataResponse, Message

from .conn import AsyncConnection
from .errors import FerryTimeoutError, NoBrokersAvailable

log = logging.getLogger(__name__)

DEFAULT_PORT = 9092


def parse_bootstrap(servers: "str | Iterable[str]", default_port: int = DEFAULT_PORT) -> list[tuple[str, int]]:
    """``"a:1,b:2"`` (or a list of such strings) to ``[("a", 1), ("b", 2)]``.

    A missing port means 9092; IPv6 addresses go in brackets ("[::1]:9092").
    Raises ValueError for an empty list or a bad port.
    """
    if isinstance(servers, str):
        servers = [servers]
    out = []
    for chunk in servers:
        for item in str(chunk).split(","):
            item = item.strip()
            if not item:
                continue
            if item.startswith("["):
                host, _, rest = item[1:].partition("]")
                port_text = rest[1:] if rest.startswith(":") else ""
            elif item.count(":") == 1:
                host, _, port_text = item.partition(":")
            else:
                host, port_text = item, ""
            try:
                port = int(port_text) if port_text else default_port
            except ValueError:
                raise ValueError(f"bad port in bootstrap server {item!r}") from None
            if not 0 < port < 65536:
                raise ValueError(f"bad port in bootstrap server {item!r}")
            out.append((host or "localhost", port))
    if not out:
        raise ValueError("bootstrap_servers is empty")
    return out


class ClusterMetadata:
    """Brokers and partition leaders. Readers in other threads may use the dicts:
    entries are replaced whole, never mutated in place."""

    def __init__(self) -> None:
        self.brokers: dict[int, tuple[str, int]] = {}
        self.controller_id = -1
        self.leaders: dict[str, dict[int, int]] = {}  # topic -> {partition: leader node}
        self.partition_counts: dict[str, int] = {}
        self.topic_errors: dict[str, int] = {}
        self.updated_at = 0.0  # time.monotonic() of the last update

    def update(self, resp: MetadataResponse, requested: "Iterable[str] | None") -> None:
        """Apply a response; ``requested`` None means it listed every topic."""
        if resp.brokers:
            self.brokers = {b.node_id: (b.host, b.port) for b in resp.brokers}
        self.controller_id = resp.controller_id
        seen = set()
        for t in resp.topics:
            seen.add(t.name)
            if t.error_code == 0 and t.partitions:
                self.leaders[t.name] = {
                    p.partition: (p.leader if p.error_code == 0 else -1) for p in t.partitions
                }
                self.partition_counts[t.name] = max(p.partition for p in t.partitions) + 1
                self.topic_errors.pop(t.name, None)
            else:
                self.topic_errors[t.name] = t.error_code or int(ErrorCode.LEADER_NOT_AVAILABLE)
                if t.error_code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION:
                    self._forget(t.name)
        gone = (set(self.leaders) - seen) if requested is None else (set(requested) - seen)
        for name in gone:
            self._forget(name)
        self.updated_at = time.monotonic()

    def _forget(self, topic: str) -> None:
        self.leaders.pop(topic, None)
        self.partition_counts.pop(topic, None)

    def leader_for(self, topic: str, partition: int) -> int | None:
        """The leader's node id, or None if unknown or unavailable."""
        leader = self.leaders.get(topic, {}).get(partition, -1)
        return None if leader < 0 else leader

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        parts = self.leaders.get(topic)
        return None if parts is None else set(parts)

    def topics(self) -> set[str]:
        return set(self.leaders)


class Cluster:
    """Connections and metadata shared by one producer, consumer or admin client.

    Lives in one event loop; ``start()`` connects to a bootstrap server
    (raising NoBrokersAvailable if none answers) and ``close()`` ends it.
    """

    def __init__(
        self,
        bootstrap_servers: "str | Iterable[str]" = "localhost:9092",
        *,
        client_id: str = "",
        request_timeout_ms: int = 30000,
        retry_backoff_ms: int = 100,
        metadata_max_age_ms: int = 300000,
        max_frame_size: int | None = None,
        poll_missing_topics: bool = False,
    ) -> None:
        self.bootstrap = parse_bootstrap(bootstrap_servers)
        self.client_id = client_id
        self.request_timeout = request_timeout_ms / 1000
        self.retry_backoff = retry_backoff_ms / 1000
        self.metadata_max_age = metadata_max_age_ms / 1000
        self.max_frame_size = max_frame_size
        self.poll_missing_topics = poll_missing_topics
        self.metadata = ClusterMetadata()
        self.tracked: set[str] = set()
        self.track_all = False
        self._conns: dict[int, AsyncConnection] = {}
        self._connecting: dict[int, asyncio.Future] = {}
        self._refresh_lock = asyncio.Lock()
        self._update_requested = asyncio.Event()
        self._updated = asyncio.Event()
        self._listeners: list[Callable[[], None]] = []
        self._task: asyncio.Task | None = None
        self._closed = False

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Connect to the first reachable bootstrap server and load metadata.

        Raises NoBrokersAvailable naming every address tried; never waits more
        than request_timeout_ms per address.
        """
        await self.refresh(topics=list(self.tracked) if not self.track_all else None)
        self._task = asyncio.create_task(self._refresher(), name="ferry-metadata")

    async def close(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        for fut in list(self._connecting.values()):
            fut.cancel()
        conns = list(self._conns.values())
        self._conns.clear()
        for conn in conns:
            conn.close()

    # ------------------------------------------------------------ connections

    def _open(self, host: str, port: int) -> "asyncio.Future[AsyncConnection]":
        kwargs = {}
        if self.max_frame_size:
            kwargs["max_frame_size"] = self.max_frame_size
        return asyncio.ensure_future(AsyncConnection.connect(
            host, port, client_id=self.client_id, connect_timeout=self.request_timeout,
            request_timeout=self.request_timeout, **kwargs,
        ))

    def open_connection(self, node_id: int) -> AsyncConnection | None:
        """The open connection to broker ``node_id``, or None (no waiting, no connecting)."""
        conn = self._conns.get(node_id)
        return conn if conn is not None and not conn.closed else None

    async def connection(self, node_id: int) -> AsyncConnection:
        """The open connection to broker ``node_id``, connecting if needed.

        Raises NoBrokersAvailable if it cannot be reached.
        """
        if self._closed:
            raise NetworkError("the client is closed")
        conn = self._conns.get(node_id)
        if conn is not None and not conn.closed:
            return conn
        fut = self._connecting.get(node_id)
        if fut is None:
            addr = self.metadata.brokers.get(node_id)
            if addr is None:
                raise NoBrokersAvailable(f"no address known for broker {node_id}")
            fut = self._connecting[node_id] = self._open(*addr)
            fut.add_done_callback(lambda f, n=node_id: self._connected(n, f))
        return await asyncio.shield(fut)

    def _connected(self, node_id: int, fut: asyncio.Future) -> None:
        if self._connecting.get(node_id) is fut:
            del self._connecting[node_id]
        if not fut.cancelled() and fut.exception() is None:
            conn = fut.result()
            if self._closed:
                conn.close()
            else:
                self._conns[node_id] = conn

    async def any_connection(self) -> AsyncConnection:
        """A connection to any broker: an open one, else a known broker, else a bootstrap address.

        Raises NoBrokersAvailable naming the addresses tried.
        """
        for conn in self._conns.values():
            if not conn.closed:
                return conn
        errors = []
        for node_id in list(self.metadata.brokers):
            try:
                return await self.connection(node_id)
            except NoBrokersAvailable as exc:
                errors.append(str(exc))
        for host, port in self.bootstrap:
            try:
                conn = await self._open(host, port)
            except NoBrokersAvailable as exc:
                errors.append(str(exc))
                continue
            if self._closed:
                conn.close()
                raise NetworkError("the client is closed")
            old = self._conns.get(conn.broker_id)
            if old is not None and not old.closed:
                conn.close()
                return old
            self._conns[conn.broker_id] = conn
            return conn
        addrs = ", ".join(f"{h}:{p}" for h, p in self.bootstrap)
        detail = "; ".join(errors[-3:])
        raise NoBrokersAvailable(f"no broker available at {addrs} ({detail})")

    async def send(self, node_id: int | None, request: Message, timeout: float | None = None) -> Message:
        """Send ``request`` to ``node_id`` (None: any broker) and await the response."""
        conn = await (self.any_connection() if node_id is None else self.connection(node_id))
        return await conn.request(request, timeout)

    # ------------------------------------------------------------ metadata

    def add_listener(self, fn: Callable[[], None]) -> None:
        """Call ``fn()`` after every metadata update."""
        self._listeners.append(fn)

    def track(self, topics: Iterable[str]) -> None:
        new = set(topics) - self.tracked
        if new:
            self.tracked |= new
            self.request_update()

    def request_update(self) -> None:
        """Ask the background task for a metadata refresh soon."""
        self._update_requested.set()

    async def refresh(self, topics: "Iterable[str] | None" = None, *, auto_create: bool = False) -> MetadataResponse:
        """Fetch metadata for ``topics`` (None: every topic) and apply it."""
        req_topics = None if topics is None else tuple(topics)
        async with self._refresh_lock:
            resp = await self.send(None, MetadataRequest(topics=req_topics, allow_auto_topic_creation=auto_create))
            self.metadata.update(resp, req_topics)
        for fn in self._listeners:
            try:
                fn()
            except Exception:  # a listener's bug must not stop metadata refresh
                log.exception("metadata listener failed")
        self._updated.set()
        self._updated = asyncio.Event()
        return resp

    async def wait_for_topic(self, topic: str, timeout: float, *, auto_create: bool = False) -> int:
        """The topic's partition count, refreshing metadata until it is known.

        Raises the topic's ApiError if the broker refuses it for good (e.g. an
        invalid name), FerryTimeoutError after ``timeout`` seconds.
        """
        n = self.metadata.partition_counts.get(topic)
        if n:
            return n
        self.tracked.add(topic)
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while True:
            try:
                async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                    await self.refresh([topic], auto_create=auto_create)
            except TimeoutError:
                pass
            except (NoBrokersAvailable, NetworkError, RetriableError) as exc:
                last = exc
            n = self.metadata.partition_counts.get(topic)
            if n:
                return n
            code = self.metadata.topic_errors.get(topic)
            if code:
                cls = ApiError.for_code(code)
                if not cls.retriable:
                    raise cls(f"topic {topic!r}: {cls.description}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                why = f" (last error: {last})" if last else ""
                raise FerryTimeoutError(
                    f"topic {topic!r} not available after {timeout * 1000:.0f} ms{why}"
                )
            await asyncio.sleep(min(self.retry_backoff, remaining))

    async def wait_for_update(self, timeout: float) -> bool:
        """Wait for the next metadata update; False if none came within ``timeout`` s."""
        ev = self._updated
        try:
            async with asyncio.timeout(timeout):
                await ev.wait()
            return True
        except TimeoutError:
            return False

    def _missing(self) -> bool:
        counts = self.metadata.partition_counts
        return any(t not in counts for t in self.tracked)

    async def _refresher(self) -> None:
        while True:
            if self.poll_missing_topics and (self._missing()):
                wait = self.retry_backoff
            else:
                wait = self.metadata_max_age - (time.monotonic() - self.metadata.updated_at)
            try:
                async with asyncio.timeout(max(wait, 0)):
                    await self._update_requested.wait()
            except TimeoutError:
                pass
            self._update_requested.clear()
            if not self.tracked and not self.track_all:
                self.metadata.updated_at = time.monotonic()
                continue
            try:
                await self.refresh(None if self.track_all else list(self.tracked))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.debug("metadata refresh failed: %s", exc)
                await asyncio.sleep(self.retry_backoff)
