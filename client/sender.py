"""The producer's sender: from sealed batches to ProduceRequests and back.

Theory of operation
-------------------
The sender is a *pass*, a plain function that runs in the producer's event
loop whenever there is something to do: ``wake()`` (a new or sealed batch, an
answer, new metadata, a connection made) schedules one pass with
``call_soon``, however often it is called before the pass runs, and one timer
schedules a pass when the earliest thing waiting is due (a batch's linger, a
retry backoff, a delivery timeout). A pass never waits: it writes what may go
now and returns, so a record costs no task step, event or timeout of its own.

A pass drains sealed batches from the accumulator into one queue per
partition (``PartitionQueue.queue``, oldest first) and sends from the heads of
those queues: per leader, requests of at most ``max_request_size`` bytes with
at most one batch per partition (so each batch gets its own base offset), and
at most ``max_in_flight_requests_per_connection`` requests awaiting answers
per broker. A batch leaves its queue only when its request is written to an
open connection; while a leader is unknown or unreachable its batches wait in
their queues (the connection is retried every ``retry_backoff_ms`` and the
metadata refreshed) until they are sent or their ``delivery_timeout_ms`` runs
out. Each batch is completed from its partition's answer.

Retries. A failed attempt (lost connection, timeout, a retriable error code
such as NOT_LEADER_OR_FOLLOWER) puts the batch back at the front of its queue
in its original order and *stalls* the partition: nothing more of it is sent
until every attempt of it still on the wire has been answered and
``retry_backoff_ms`` has passed; then its queue is sent again from the front,
in order. A batch is retried up to ``retries`` times and while it is younger
than ``delivery_timeout_ms``; errors that mean the metadata is stale also ask
for a refresh. Other errors fail the batch with the protocol's exception class
for the code (``ApiError.for_code``). batch_outcomes.py holds these outcomes:
the ``Sender`` inherits them from ``BatchOutcomes``.

Idempotence (``idempotent=True``) numbers each batch per partition under a
producer id and epoch, so the broker writes it at most once however often it
is sent. sequences.py explains the numbering, the resets under a new epoch and
fencing, and holds the per-partition state (``PartitionQueue``) and the
InitProducerId exchange; the sender decides when a batch is numbered, when a
partition is reset and when the epoch is bumped.
"""

from __future__ import annotations

import asyncio
import logging
import time

from protocol.batch import Compression
from protocol.errors import (
    ApiError,
    ErrorCode,
    NetworkError,
    OutOfOrderSequenceNumberError,
    UnsupportedVersionError,
)
from protocol.messages import ProducePartition, ProduceRequest

from .accumulator import ProducerBatch, RecordAccumulator
from .batch_outcomes import BatchOutcomes
from .cluster import Cluster
from .sequences import PartitionQueue, init_producer_id

log = logging.getLogger(__name__)

_STALE_METADATA = {
    ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
    ErrorCode.NOT_LEADER_OR_FOLLOWER,
    ErrorCode.LEADER_NOT_AVAILABLE,
    ErrorCode.NETWORK_EXCEPTION,
}


class Sender(BatchOutcomes):
    """Moves sealed batches to the brokers (see the module doc). One task per producer."""

    def __init__(
        self, cluster: Cluster, accumulator: RecordAccumulator, *, acks: int, compression: Compression,
        retries: int, retry_backoff_ms: int, request_timeout_ms: int, delivery_timeout_ms: int,
        max_request_size: int, max_in_flight: int, idempotent: bool = False,
        idempotence_required: bool = False,
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
        self.idempotent = idempotent
        self.idempotence_required = idempotence_required  # explicit: no fallback if unsupported
        self.producer_id = -1
        self.producer_epoch = -1
        self.fatal: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # set by start()
        self._scheduled = False  # a pass is scheduled with call_soon
        self._timer: asyncio.TimerHandle | None = None  # a pass at _timer_at (loop time)
        self._timer_at = 0.0
        self._parts: dict[tuple[str, int], PartitionQueue] = {}
        self._active: dict[tuple[str, int], PartitionQueue] = {}  # those with queued batches
        self._node_inflight: dict[int, int] = {}
        self._node_retry_at: dict[int, float] = {}
        self._node_error: dict[int, BaseException] = {}
        self._connecting: dict[int, asyncio.Task] = {}
        self._draining: dict[int, asyncio.Task] = {}  # node -> waiting for a paused transport
        self._id_task: asyncio.Task | None = None
        self._stopped = False
        cluster.add_listener(self.wake)

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self.idempotent:
            self._init_producer_id()
        self.wake()

    async def stop(self) -> None:
        self._stopped = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for task in (self._id_task, *self._connecting.values(), *self._draining.values()):
            if task is not None:
                task.cancel()
                try:
                    await task
                except (asyncio.CancelledError, Exception):
                    pass

    @property
    def has_producer_id(self) -> bool:
        return self.producer_id >= 0

    def wake(self) -> None:
        """Run a pass soon (in the loop's next round). Call in the loop's thread."""
        if not self._scheduled and not self._stopped and self._loop is not None:
            self._scheduled = True
            self._loop.call_soon(self._pass)

    def _timer_fired(self) -> None:
        self._timer = None
        self.wake()

    def _pass(self) -> None:
        self._scheduled = False
        if self._stopped:
            return
        batches, next_due = self.acc.drain(hold=self._window_full)
        parts = self._parts
        active = self._active
        for b in batches:
            tp = (b.topic, b.partition)
            st = parts.get(tp)
            if st is None:
                st = parts[tp] = PartitionQueue(tp)
            st.queue.append(b)
            active[tp] = st
        try:
            due = self._dispatch()
        except Exception as exc:  # a bug here must not strand the batches
            log.exception("producer sender failed")
            self._fail_queued(exc)
            due = None
        if due is not None and (next_due is None or due < next_due):
            next_due = due
        if next_due is not None:
            at = self._loop.time() + max(next_due, 0.001)
            timer = self._timer
            if timer is None or at < self._timer_at:
                if timer is not None:
                    timer.cancel()
                self._timer_at = at
                self._timer = self._loop.call_at(at, self._timer_fired)

    def _window_full(self, tp: tuple[str, int]) -> bool:
        """True if ``tp`` cannot send another batch now (its next one may grow meanwhile)."""
        st = self._parts.get(tp)
        if st is None:
            return False
        if st.queue:
            return True
        if self.idempotent:
            return bool(st.unacked) and st.numbered - st.unacked[0].ordinal >= self.max_in_flight
        return st.inflight >= self.max_in_flight

    # ------------------------------------------------------------ sending

    def _dispatch(self) -> float | None:
        """Send what may go now; returns seconds until something waiting is due, or None."""
        if not self._active:
            return None
        if self.fatal is not None:
            self._fail_queued(self.fatal)
            return None
        now = time.monotonic()
        due: float | None = None
        if self.idempotent and not self.has_producer_id:  # still asking for one
            for st in list(self._active.values()):
                expiry = self._expire_queued(now, st)
                if expiry is not None and (due is None or expiry < due):
                    due = expiry
            return due
        meta = self.cluster.metadata
        by_node: dict[int, list[PartitionQueue]] = {}
        for tp, st in list(self._active.items()):
            expiry = self._expire_queued(now, st)
            if not st.queue:  # a pending reset waits for the partition's next batch
                del self._active[tp]
                continue
            if expiry is not None and (due is None or expiry < due):
                due = expiry
            if st.stalled:
                if st.inflight:
                    continue  # the answers wake us
                if st.retry_at > now:
                    wait = st.retry_at - now
                    if due is None or wait < due:
                        due = wait
                    continue
            leader = meta.leader_for(tp[0], tp[1])
            if leader is None:
                self.cluster.request_update()
                if due is None or self.retry_backoff < due:
                    due = self.retry_backoff
                continue
            by_node.setdefault(leader, []).append(st)
        for node, parts in by_node.items():
            wait = self._send_to_node(node, parts, now)
            if wait is not None and (due is None or wait < due):
                due = wait
        return due

    def _send_to_node(self, node: int, parts: list[PartitionQueue], now: float) -> float | None:
        conn = self.cluster.open_connection(node)
        if conn is None:
            retry_at = self._node_retry_at.get(node, 0.0)
            if retry_at > now:
                return retry_at - now
            if node not in self._connecting:
                self._connecting[node] = asyncio.ensure_future(self._connect(node))
            return None
        if conn.paused:  # the transport's buffer is full: wait until it drains
            self._wait_writable(node, conn)
            return None
        inflight = self._node_inflight.get(node, 0)
        start = 0
        while inflight < self.max_in_flight and parts:
            group: list[ProducerBatch] = []
            total = 0
            n = len(parts)
            full = False
            for i in range(n):
                st = parts[(start + i) % n]
                b = self._sendable(st, now)
                if b is None:
                    continue
                data = b.encode(self.compression)
                if group and total + len(data) > self.max_request_size:
                    start = (start + i) % n  # the next request begins here
                    full = True
                    break
                st.queue.popleft()
                st.inflight += 1
                group.append(b)
                total += len(data)
            if not group:
                break
            if not full:
                start = 0
            inflight += 1
            self._node_inflight[node] = inflight
            self._send_request(node, conn, group)
            inflight = self._node_inflight.get(node, 0)
            if conn.closed:
                break
            if conn.paused:
                self._wait_writable(node, conn)
                break
        return None

    def _sendable(self, st: PartitionQueue, now: float) -> ProducerBatch | None:
        """The head of ``st``'s queue if it may be sent now (numbering it), else None."""
        if st.stalled:
            if st.inflight or st.retry_at > now:
                return None
            if st.reset and not self._reset(st):
                return None
            st.stalled = False
        if not st.queue:
            return None
        b = st.queue[0]
        if self.idempotent and b.sequence < 0:
            # at most max_in_flight (<= 5) batches numbered from the oldest
            # unacknowledged one on: so however many of them the broker wrote,
            # a retry of that one is among the five it remembers
            if st.unacked and st.numbered - st.unacked[0].ordinal >= self.max_in_flight:
                return None
            if st.producer_id != self.producer_id or st.producer_epoch != self.producer_epoch:
                if st.unacked:
                    return None  # the old epoch's batches finish first
                st.producer_id, st.producer_epoch, st.next_seq = self.producer_id, self.producer_epoch, 0
            st.number(b)
        return b

    def _send_request(self, node: int, conn, group: list[ProducerBatch]) -> None:
        request = ProduceRequest(
            acks=self.acks, timeout_ms=self.request_timeout_ms,
            partitions=tuple(ProducePartition(b.topic, b.partition, b.data) for b in group),
        )
        try:
            fut = conn.send_nowait(request)
        except Exception as exc:
            self._node_inflight[node] -= 1
            self.cluster.request_update()
            for b in group:
                self._parts[(b.topic, b.partition)].inflight -= 1
                self._attempt_failed(b, exc, None)
            return
        if fut is None:  # acks=0: written is all we will know
            self._node_inflight[node] -= 1
            for b in group:
                self._parts[(b.topic, b.partition)].inflight -= 1
                self.acc.completed(b)
            return
        fut.add_done_callback(lambda f: self._on_response(node, group, f))

    async def _connect(self, node: int) -> None:
        try:
            await self.cluster.connection(node)
            self._node_error.pop(node, None)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.debug("cannot connect to broker %d: %s", node, exc)
            self._node_error[node] = exc
            self._node_retry_at[node] = time.monotonic() + self.retry_backoff
            self.cluster.request_update()
        finally:
            self._connecting.pop(node, None)
            self.wake()

    def _wait_writable(self, node: int, conn) -> None:
        if node not in self._draining:
            self._draining[node] = asyncio.ensure_future(self._drain(node, conn))

    async def _drain(self, node: int, conn) -> None:
        """Wait until ``conn``'s transport takes writes again, then run a pass."""
        try:
            await conn.drained()
        except asyncio.CancelledError:
            raise
        except Exception:  # closed: the answers' failures wake the sender
            pass
        finally:
            self._draining.pop(node, None)
            self.wake()

    # ------------------------------------------------------------ answers

    def _on_response(self, node: int, group: list[ProducerBatch], fut: asyncio.Future) -> None:
        self._node_inflight[node] -= 1
        self.wake()
        parts = self._parts
        for b in group:
            parts[(b.topic, b.partition)].inflight -= 1
        if self._stopped:
            return
        if fut.cancelled():
            exc = NetworkError("produce request cancelled")
            for b in group:
                self._attempt_failed(b, exc, None)
            return
        exc = fut.exception()
        if exc is not None:
            if isinstance(exc, ApiError) and exc.code in _STALE_METADATA:
                self.cluster.request_update()
            elif isinstance(exc, NetworkError):
                self.cluster.request_update()
            for b in group:
                self._attempt_failed(b, exc, None)
            return
        by_tp = {(b.topic, b.partition): b for b in group}
        for p in fut.result().partitions:
            b = by_tp.pop((p.topic, p.partition), None)
            if b is None:
                continue
            code = p.error_code
            if code == 0 or code == ErrorCode.DUPLICATE_SEQUENCE_NUMBER:
                self._succeeded(b, p.base_offset, p.log_append_time)
                continue
            cls = ApiError.for_code(code)
            err = cls(f"{p.topic}/{p.partition}: {p.error_message or cls.description}")
            if code in _STALE_METADATA:
                self.cluster.request_update()
            self._attempt_failed(b, err, code)
        for b in by_tp.values():  # the broker did not answer for it
            self._attempt_failed(b, NetworkError(f"{b.topic}/{b.partition}: missing from the produce response"), None)

    # ------------------------------------------------------------ producer ids and epochs

    def _reset(self, st: PartitionQueue) -> bool:
        """Renumber ``st`` under a newer epoch (nothing of it in flight). False: not yet."""
        numbered = [b for b in st.queue if b.sequence >= 0]
        doubtful = [b for b in numbered if b.maybe_written]
        if doubtful and not st.epoch_refused:
            # first ask the broker, with the same bytes, whether it has them
            return True
        for b in doubtful:
            st.queue.remove(b)
            self._fail_numbered(b, b.last_error or OutOfOrderSequenceNumberError(
                f"{b.topic}/{b.partition}: the batch may have been written under an old epoch"))
        if (st.producer_id, st.producer_epoch) == (self.producer_id, self.producer_epoch):
            self._bump_epoch()
            return False
        st.renumber(self.producer_id, self.producer_epoch)
        return True

    def _fail_numbered(self, b: ProducerBatch, exc: BaseException) -> None:
        self._release_numbered(b)
        self.acc.completed(b, error=exc)

    def _bump_epoch(self) -> None:
        if self._id_task is None or self._id_task.done():
            self._init_producer_id(self.producer_id, self.producer_epoch)

    def _init_producer_id(self, producer_id: int = -1, epoch: int = -1) -> None:
        self._id_task = asyncio.ensure_future(self._get_producer_id(producer_id, epoch))

    async def _get_producer_id(self, producer_id: int, epoch: int) -> None:
        """Get a new producer id, or a new epoch of ``producer_id``, and send under it."""
        try:
            ids = await init_producer_id(
                self.cluster, producer_id, epoch, timeout=self.request_timeout_ms / 1000,
                retry_backoff=self.retry_backoff, stopped=lambda: self._stopped,
                retrying=self._producer_id_retrying)
        except asyncio.CancelledError:
            raise
        except UnsupportedVersionError as exc:
            if self.idempotence_required:
                self._set_fatal(UnsupportedVersionError(
                    "the broker does not support idempotent producers (InitProducerId): "
                    "pass enable_idempotence=False"))
            else:
                log.warning("the broker does not support idempotent producers (%s): "
                            "sending without idempotence", exc)
                self.idempotent = False
                self.wake()
            return
        except Exception as exc:  # one that asking again would not cure
            self._set_fatal(type(exc)(f"InitProducerId failed: {exc}")
                            if isinstance(exc, ApiError) else exc)
            return
        if ids is None:  # stopped
            return
        self._node_error.pop(-1, None)
        self.producer_id, self.producer_epoch = ids
        log.debug("producer id %d epoch %d", self.producer_id, self.producer_epoch)
        self.wake()

    def _producer_id_retrying(self, exc: BaseException) -> None:
        self._node_error[-1] = exc  # batches that expire meanwhile name it as the cause
