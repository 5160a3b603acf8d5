"""The producer's sender task: from sealed batches to ProduceRequests and back.

Theory of operation
-------------------
The task drains sealed batches from the accumulator, groups them per leader
into ProduceRequests of at most ``max_request_size`` bytes (one batch per
partition per request, so each batch gets its own base offset, oldest batch
of each partition first), writes them with up to
``max_in_flight_requests_per_connection`` awaiting answers per broker, and
completes each batch from its partition's answer.

Retriable errors (lost connection, timeout, stale leader, unknown partition
right after auto-creation ...) put the batch back, after ``retry_backoff_ms``,
ahead of newer batches of its partition, up to ``retries`` times and while the
batch is younger than ``delivery_timeout_ms``; errors that mean the metadata is
stale also ask for a refresh. Other errors fail the batch with the protocol's
exception class for the code (``ApiError.for_code``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict, deque
from functools import partial

from protocol.batch import Compression
from protocol.errors import ApiError, ErrorCode, NetworkError
from protocol.messages import ProducePartition, ProduceRequest

from .accumulator import ProducerBatch, RecordAccumulator
from .cluster import Cluster
from .errors import FerryTimeoutError, NoBrokersAvailable

log = logging.getLogger(__name__)

_STALE_METADATA = {
    ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
    ErrorCode.NOT_LEADER_OR_FOLLOWER,
    ErrorCode.LEADER_NOT_AVAILABLE,
    ErrorCode.NETWORK_EXCEPTION,
}


class Sender:
    """Moves sealed batches to the brokers (see the module doc). One task per producer."""

    def __init__(
        self, cluster: Cluster, accumulator: RecordAccumulator, *, acks: int, compression: Compression,
        retries: int, retry_backoff_ms: int, request_timeout_ms: int, delivery_timeout_ms: int,
        max_request_size: int, max_in_flight: int,
    ) -> None:
        self.cluster = cluster
        self.acc = accumulator
        self.acks = acks
        self.compression = compression
        self.retries = retries
        self.retry_backoff = retry_backoff_ms / 1000
        self.request_timeout_ms = request_timeout_ms
        self.delivery_timeout = delivery_timeout_ms / 1000
        self.max_request_size = max_request_size
        self.max_in_flight = max_in_flight
        self.wake = asyncio.Event()
        self._semaphores: dict[int, asyncio.Semaphore] = {}
        # partitions with batches waiting out a retry backoff: newer batches of
        # the same partition queue behind them, so order survives a retry
        self._held: dict[tuple[str, int], list[ProducerBatch]] = {}
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="ferry-sender")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _run(self) -> None:
        acc = self.acc
        while True:
            self.wake.clear()
            batches, next_due = acc.drain()
            if batches:
                try:
                    await self._send_ready(batches)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # a bug here must not strand the batches
                    log.exception("producer sender failed")
                    for b in batches:
                        if not b.done:
                            acc.completed(b, error=exc)
                continue
            if next_due is None:
                await self.wake.wait()
            else:
                try:
                    async with asyncio.timeout(next_due):
                        await self.wake.wait()
                except TimeoutError:
                    pass

    async def _send_ready(self, batches: list[ProducerBatch]) -> None:
        meta = self.cluster.metadata
        now = time.monotonic()
        # node -> partition -> its batches, oldest first
        by_node: dict[int, dict[tuple[str, int], deque[ProducerBatch]]] = defaultdict(dict)
        no_leader: list[ProducerBatch] = []
        for b in batches:
            tp = (b.topic, b.partition)
            held = self._held.get(tp)
            if held is not None:
                held.append(b)
                continue
            if now - b.created > self.delivery_timeout:
                self._expire(b)
                continue
            leader = meta.leader_for(b.topic, b.partition)
            if leader is None:
                no_leader.append(b)
                continue
            queues = by_node[leader]
            q = queues.get(tp)
            if q is None:
                q = queues[tp] = deque()
            q.append(b)
        if no_leader:
            self.cluster.request_update()
            self._hold(no_leader)
        for node, queues in by_node.items():
            while queues:
                await self._send_request(node, self._take_request(queues))

    def _take_request(self, queues: dict[tuple[str, int], deque]) -> list[ProducerBatch]:
        """A request's worth: the oldest batch of each partition, up to max_request_size
        bytes (at least one batch). Emptied queues are removed."""
        group: list[ProducerBatch] = []
        total = 0
        for tp in list(queues):
            q = queues[tp]
            data = q[0].encode(self.compression)
            if group and total + len(data) > self.max_request_size:
                break
            group.append(q.popleft())
            total += len(data)
            if not q:
                del queues[tp]
        return group

    def _semaphore(self, node: int) -> asyncio.Semaphore:
        sem = self._semaphores.get(node)
        if sem is None:
            sem = self._semaphores[node] = asyncio.Semaphore(self.max_in_flight)
        return sem

    async def _send_request(self, node: int, group: list[ProducerBatch]) -> None:
        sem = self._semaphore(node)
        await sem.acquire()
        try:
            conn = await self.cluster.connection(node)
            request = ProduceRequest(
                acks=self.acks, timeout_ms=self.request_timeout_ms,
                partitions=tuple(ProducePartition(b.topic, b.partition, b.data) for b in group),
            )
            fut = await conn.send(request)
        except (NetworkError, NoBrokersAvailable) as exc:
            sem.release()
            self.cluster.request_update()
            self._retry_or_fail(group, exc)
            return
        except BaseException:
            sem.release()
            raise
        if fut is None:  # acks=0: written is all we will know
            sem.release()
            for b in group:
                self.acc.completed(b)
            return
        fut.add_done_callback(partial(self._on_response, sem, group))

    def _on_response(self, sem: asyncio.Semaphore, group: list[ProducerBatch], fut: asyncio.Future) -> None:
        sem.release()
        if fut.cancelled():
            self._retry_or_fail(group, NetworkError("produce request cancelled"))
            return
        exc = fut.exception()
        if exc is not None:
            if isinstance(exc, ApiError) and exc.code in _STALE_METADATA:
                self.cluster.request_update()
            self._retry_or_fail(group, exc)
            return
        by_tp = {(b.topic, b.partition): b for b in group}
        retry: list[ProducerBatch] = []
        last_exc = None
        for p in fut.result().partitions:
            b = by_tp.pop((p.topic, p.partition), None)
            if b is None:
                continue
            if p.error_code == 0:
                self.acc.completed(b, p.base_offset, p.log_append_time)
                continue
            cls = ApiError.for_code(p.error_code)
            exc = cls(f"{p.topic}/{p.partition}: {p.error_message or cls.description}")
            if p.error_code in _STALE_METADATA:
                self.cluster.request_update()
            if cls.retriable:
                retry.append(b)
                last_exc = exc
            else:
                self.acc.completed(b, error=exc)
        for b in by_tp.values():  # the broker did not answer for it
            retry.append(b)
            last_exc = NetworkError(f"{b.topic}/{b.partition}: missing from the produce response")
        if retry:
            self._retry_or_fail(retry, last_exc)

    def _retry_or_fail(self, batches: list[ProducerBatch], exc: BaseException) -> None:
        retriable = isinstance(exc, NoBrokersAvailable) or getattr(exc, "retriable", False)
        now = time.monotonic()
        again = []
        for b in batches:
            if b.done:
                continue
            if not retriable or b.attempts >= self.retries:
                self.acc.completed(b, error=exc)
            elif now - b.created > self.delivery_timeout:
                self._expire(b, exc)
            else:
                b.attempts += 1
                again.append(b)
        if again:
            log.debug("retrying %d batch(es) after %s", len(again), exc)
            self._hold(again)

    def _hold(self, batches: list[ProducerBatch]) -> None:
        """Keep ``batches`` back for retry_backoff_ms, then requeue them in front."""
        new_tps = []
        for b in batches:
            tp = (b.topic, b.partition)
            held = self._held.get(tp)
            if held is None:
                held = self._held[tp] = []
                new_tps.append(tp)
            held.append(b)
        if new_tps:
            asyncio.get_running_loop().call_later(self.retry_backoff, self._release, new_tps)

    def _release(self, tps: list[tuple[str, int]]) -> None:
        out = []
        for tp in tps:
            out.extend(self._held.pop(tp, ()))
        if out:
            self.acc.reenqueue(out)

    def _expire(self, b: ProducerBatch, cause: BaseException | None = None) -> None:
        why = f" (last error: {cause})" if cause else ""
        self.acc.completed(b, error=FerryTimeoutError(
            f"{len(b)} record(s) for {b.topic}/{b.partition} expired: not delivered within "
            f"delivery_timeout_ms={self.delivery_timeout * 1000:.0f}{why}"
        ))
