"""Fetching: requests ahead of the consumer, decoding, offset lookups.

Theory of operation
-------------------
One task per consumer. It fetches from each broker every assigned partition
the broker leads that is *fetchable*: its position is known, no fetch of it is
in flight, fewer than ``FETCH_AHEAD`` (two) fetched chunks of it wait in the
buffer, and it is not paused. (A seek makes a partition fetchable at once,
even while a fetch of its old position is still parked at the broker.) A broker gets no new fetch while one
of its partitions has two chunks waiting: the next fetch (of all its
partitions) leaves the moment the consumer takes one. So while the user
iterates one chunk the next is already here or on the wire, and when the
consumer keeps up, a fetch is always parked at the broker: a record produced
is sent on at once, with no round trip of the consumer's in between. Memory
stays bounded to about two chunks per partition, and an idle partition's long
poll never holds back a busy one. A fetch's answer is handled in a callback of
its response future, which sends the next fetch before the loop runs anything
else (no task wakes in between), so a fetch is parked again soon after one
returns.

Each partition's records become one ``PartitionRecords`` chunk, built by
``decode_columns``: every complete batch is CRC-checked and decoded with one
msgpack call, records below the requested offset are cut off (a batch may
start before it), a cut last batch is left for the next fetch, and the
records stay in those columns (see ``record_columns``) until the user reaches
them. OFFSET_OUT_OF_RANGE applies auto_offset_reset through
ListOffsets (or surfaces as OffsetOutOfRangeError with "none").
"""

from __future__ import annotations

import asyncio
import bisect
import functools
import logging
import threading
import time
from collections import defaultdict
from typing import Callable

from protocol.batch import decode, iter_complete
from protocol.errors import (
    ApiError,
    ErrorCode,
    NetworkError,
    OffsetOutOfRangeError,
    RetriableError,
)
from protocol.messages import FetchPartition, FetchRequest

from .cluster import Cluster
from .errors import FerryTimeoutError, NoBrokersAvailable
from .offsets import list_offsets
from .record_buffer import PartitionRecords, RecordBuffer
from .record_columns import RecordColumns
from .structs import TopicPartition
from .subscription import SubscriptionState

log = logging.getLogger(__name__)


_STALE_METADATA = {
    ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
    ErrorCode.NOT_LEADER_OR_FOLLOWER,
    ErrorCode.LEADER_NOT_AVAILABLE,
}


def _deserialize_column(fn: Callable, column) -> list:
    return [None if x is None else fn(x) for x in column]


def decode_columns(
    topic: str,
    partition: int,
    data,
    fetch_offset: int,
    *,
    key_deserializer: Callable | None = None,
    value_deserializer: Callable | None = None,
    check_crcs: bool = True,
) -> tuple[RecordColumns, int, bool]:
    """The records at or after ``fetch_offset`` in a partition's fetched bytes.

    Returns (their columns, next fetch offset, whether any complete batch was
    there). Raises CorruptMessageError for a bad batch. Control batches are skipped.
    """
    out = RecordColumns(topic, partition)
    next_offset = fetch_offset
    complete = False
    for pos, _size in iter_complete(data):
        complete = True
        b = decode(data, pos, check_crc=check_crcs)
        h = b.header
        if h.next_offset <= fetch_offset:
            continue
        next_offset = h.next_offset
        if h.is_control or not b.values:
            continue
        offsets, timestamps, keys, values, headers = b.offsets, b.timestamps, b.keys, b.values, b.headers
        if offsets[0] < fetch_offset:
            if type(offsets) is range:
                start = fetch_offset - offsets[0]
            else:
                start = bisect.bisect_left(offsets, fetch_offset)
            offsets, timestamps, keys, values, headers = (
                offsets[start:], timestamps[start:], keys[start:], values[start:], headers[start:]
            )
        if key_deserializer is not None:
            keys = _deserialize_column(key_deserializer, keys)
        if value_deserializer is not None:
            values = _deserialize_column(value_deserializer, values)
        out.extend(offsets, timestamps, keys, values, headers)
    return out, next_offset, complete


def decode_records(topic: str, partition: int, data, fetch_offset: int, **kw) -> tuple[list, int, bool]:
    """``decode_columns``, with the records as a list of ConsumerRecords."""
    columns, next_offset, complete = decode_columns(topic, partition, data, fetch_offset, **kw)
    return columns.to_list(), next_offset, complete


class Fetcher:
    """The consumer's fetch task and offset lookups (see the module doc)."""

    def __init__(
        self,
        cluster: Cluster,
        subscriptions: SubscriptionState,
        *,
        key_deserializer: Callable | None = None,
        value_deserializer: Callable | None = None,
        fetch_max_wait_ms: int = 500,
        fetch_min_bytes: int = 1,
        fetch_max_bytes: int = 52428800,
        max_partition_fetch_bytes: int = 1048576,
        check_crcs: bool = True,
        isolation_level: int = 0,
        request_timeout_ms: int = 30000,
        retry_backoff_ms: int = 100,
    ) -> None:
        self.cluster = cluster
        self.subs = subscriptions
        self.key_deserializer = key_deserializer
        self.value_deserializer = value_deserializer
        self.max_wait_ms = fetch_max_wait_ms
        self.min_bytes = fetch_min_bytes
        self.max_bytes = fetch_max_bytes
        self.partition_max_bytes = max_partition_fetch_bytes
        self.check_crcs = check_crcs
        self.isolation_level = isolation_level
        self.request_timeout = request_timeout_ms / 1000
        self.retry_backoff = retry_backoff_ms / 1000
        self.wake = asyncio.Event()
        self.buffer = RecordBuffer(subscriptions, self.wake_threadsafe)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_ident: int | None = None
        self._backoff_until: dict[int, float] = {}
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_ident = threading.get_ident()
        self._task = asyncio.create_task(self._run(), name="ferry-fetcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    def wake_threadsafe(self) -> None:
        if self._loop is None:
            return
        if threading.get_ident() == self._loop_ident:
            self.wake.set()
        else:
            self._loop.call_soon_threadsafe(self.wake.set)

    # ------------------------------------------------------------ the fetch loop

    async def _run(self) -> None:
        while True:
            self.wake.clear()
            timeout = None
            try:
                if self._resets_pending():
                    if not await self._reset_positions():
                        timeout = self.retry_backoff
                if self._send_fetches():
                    timeout = self.retry_backoff
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("consumer fetch loop failed")
                timeout = self.retry_backoff
            if timeout is None:
                await self.wake.wait()
            else:
                try:
                    async with asyncio.timeout(timeout):
                        await self.wake.wait()
                except TimeoutError:
                    pass

    def _resets_pending(self) -> bool:
        return any(st.reset is not None for st in self.subs.assignment.values())

    def _send_fetches(self) -> bool:
        """Start a fetch for each broker with fetchable partitions; True if something
        must be retried later."""
        meta = self.cluster.metadata
        now = time.monotonic()
        by_node: dict[int, list[TopicPartition]] = defaultdict(list)
        blocked: set[int] = set()
        retry_later = False
        for tp, st in self.subs.assignment.items():
            leader = meta.leader_for(tp.topic, tp.partition)
            if leader is None:
                if st.reset is None and not st.paused:
                    retry_later = True
                    self.cluster.request_update()
                continue
            if st.full:
                blocked.add(leader)
            elif st.fetchable():
                by_node[leader].append(tp)
        for node, tps in by_node.items():
            if node in blocked:
                continue
            if self._backoff_until.get(node, 0) > now:
                retry_later = True
                continue
            # Marked now, not when the task first runs: a partition is in at
            # most one fetch of its epoch. (After a seek it may be in a new
            # fetch while an old one is still parked at the broker; that one's
            # records are dropped when it returns.)
            sent = {}
            for tp in tps:
                st = self.subs.assignment[tp]
                st.in_flight = st.epoch
                sent[tp] = (st, st.epoch, st.fetch_offset)
            self._start_fetch(node, sent)
        return retry_later

    def _start_fetch(self, node: int, sent: dict) -> None:
        """Send a fetch of ``sent``'s partitions to ``node``.

        On an open connection that is not paused the request is written now
        and its answer handled by a callback of its future: when a fetch
        answer arrives, the next fetch leaves before the loop runs anything
        else, so the broker is without a parked fetch as briefly as possible.
        Otherwise a task connects (or waits for the connection to drain) first.
        """
        parts = [FetchPartition(tp.topic, tp.partition, offset, st.max_bytes or self.partition_max_bytes)
                 for tp, (st, _, offset) in sent.items()]
        request = FetchRequest(
            max_wait_ms=self.max_wait_ms, min_bytes=self.min_bytes, max_bytes=self.max_bytes,
            isolation_level=self.isolation_level, partitions=tuple(parts),
        )
        timeout = self.request_timeout + self.max_wait_ms / 1000
        conn = self.cluster.open_connection(node)
        if conn is None or conn.paused:
            asyncio.create_task(self._fetch(node, sent, request, timeout))
            return
        try:
            fut = conn.send_nowait(request, timeout)
        except Exception as exc:
            self._fetched(node, sent, None, exc)
            return
        fut.add_done_callback(functools.partial(self._answered, node, sent))

    def _answered(self, node: int, sent: dict, fut: asyncio.Future) -> None:
        if fut.cancelled():
            self._fetched(node, sent, None, NetworkError("fetch cancelled"))
        elif fut.exception() is not None:
            self._fetched(node, sent, None, fut.exception())
        else:
            self._fetched(node, sent, fut.result(), None)

    async def _fetch(self, node: int, sent: dict, request: FetchRequest, timeout: float) -> None:
        try:
            resp = await self.cluster.send(node, request, timeout)
        except asyncio.CancelledError:
            self._fetched(node, sent, None, None)
            raise
        except Exception as exc:
            self._fetched(node, sent, None, exc)
            return
        self._fetched(node, sent, resp, None)

    def _fetched(self, node: int, sent: dict, resp, exc: BaseException | None) -> None:
        """A fetch's answer (``resp``) or failure (``exc``): queue its records, fetch on."""
        subs = self.subs
        for st, epoch, _ in sent.values():
            if st.in_flight == epoch:
                st.in_flight = -1
        if self._task is None or self._task.done():
            return  # stopped
        if exc is not None:
            if isinstance(exc, (NetworkError, NoBrokersAvailable, RetriableError)):
                log.debug("fetch from broker %s failed: %s", node, exc)
                self.cluster.request_update()
            elif isinstance(exc, ApiError):
                log.warning("fetch from broker %s failed: %s", node, exc)
            else:
                log.error("fetch from broker %s failed: %r", node, exc)
            self._backoff_until[node] = time.monotonic() + self.retry_backoff
            resp = None
        if resp is not None:
            buffer = self.buffer
            buffer.hold()
            try:
                for p in resp.partitions:
                    tp = TopicPartition(p.topic, p.partition)
                    entry = sent.get(tp)
                    if entry is None:
                        continue
                    st, epoch, offset = entry
                    if subs.assignment.get(tp) is not st or st.epoch != epoch:
                        continue  # reassigned or sought while in flight
                    self._handle_partition(tp, st, offset, p)
                try:
                    retry = self._send_fetches()
                except Exception:
                    log.exception("consumer fetch loop failed")
                    retry = True
            finally:
                buffer.release()
            # The next fetches are out: the fetch loop has nothing to do
            # unless something waits for a retry or an offset reset.
            if not retry and not self._resets_pending():
                return
        self.wake.set()

    def _handle_partition(self, tp: TopicPartition, st, offset: int, p) -> None:
        if p.high_watermark >= 0:
            st.highwater = p.high_watermark
        if p.log_start_offset >= 0:
            st.log_start = p.log_start_offset
        code = p.error_code
        if code == ErrorCode.OFFSET_OUT_OF_RANGE:
            if self.subs.default_reset is None:
                self._put_error(st, PartitionRecords(tp, st.epoch, None, offset, OffsetOutOfRangeError(
                    f"offset {offset} is out of range for {tp.topic}/{tp.partition} "
                    f"and auto_offset_reset is 'none'"
                )))
            else:
                log.info("offset %d out of range for %s/%d: resetting to %s", offset, tp.topic,
                         tp.partition, self.subs.auto_offset_reset)
                st.request_reset(self.subs.default_reset)
            return
        if code:
            if code in _STALE_METADATA:
                self.cluster.request_update()
            cls = ApiError.for_code(code)
            if not cls.retriable:
                self._put_error(st, PartitionRecords(tp, st.epoch, None, offset, cls(
                    f"fetching {tp.topic}/{tp.partition}: {cls.description}"
                )))
            return
        data = p.records
        if not len(data):
            return
        try:
            columns, next_offset, complete = decode_columns(
                tp.topic, tp.partition, data, offset,
                key_deserializer=self.key_deserializer,
                value_deserializer=self.value_deserializer, check_crcs=self.check_crcs,
            )
        except ApiError as exc:  # CorruptMessageError: the user must seek past it
            self._put_error(st, PartitionRecords(tp, st.epoch, None, offset, exc))
            return
        if not complete:
            # one batch is larger than the partition's byte limit: ask for more
            st.max_bytes = max(len(data), st.max_bytes or self.partition_max_bytes) * 2
            return
        st.max_bytes = None
        if next_offset > offset:
            st.fetch_offset = next_offset
            st.fetched += 1
            self.buffer.put(PartitionRecords(tp, st.epoch, columns, next_offset))

    def _put_error(self, st, chunk: PartitionRecords) -> None:
        """Queue an error for the consumer; the partition is not fetched until it is taken."""
        st.fetched += 1
        st.stalled = True
        self.buffer.put(chunk)

    # ------------------------------------------------------------ offsets

    async def _reset_positions(self) -> bool:
        """Look up positions for partitions awaiting a reset; False if some failed."""
        pending = {tp: (st, st.reset, st.epoch) for tp, st in self.subs.assignment.items()
                   if st.reset is not None}
        try:
            found = await self.list_offsets({tp: reset for tp, (_, reset, _) in pending.items()},
                                             timeout=self.request_timeout)
        except (FerryTimeoutError, NetworkError, NoBrokersAvailable, RetriableError) as exc:
            log.debug("offset reset failed: %s", exc)
            return False
        for tp, (st, reset, epoch) in pending.items():
            if self.subs.assignment.get(tp) is not st or st.epoch != epoch:
                continue
            offset, _ = found.get(tp, (-1, -1))
            if offset < 0:
                continue
            st.seek(offset)
        return True

    async def list_offsets(self, timestamps: dict[TopicPartition, int],
                           timeout: float | None = None) -> dict[TopicPartition, tuple[int, int]]:
        """See ``offsets.list_offsets``; the timeout defaults to request_timeout_ms."""
        return await list_offsets(
            self.cluster, timestamps, self.request_timeout if timeout is None else timeout,
            self.retry_backoff,
        )


async def refine_to_records(
    cluster: Cluster,
    found: dict[TopicPartition, tuple[int, int]],
    targets: dict[TopicPartition, int],
    timeout: float,
) -> dict[TopicPartition, tuple[int, int]]:
    """Narrow time lookups from the batch the broker names to the record.

    The broker answers a time lookup with the base offset and max timestamp of
    the first *batch* reaching the time; Kafka's consumers promise the first
    *record* at or after it. This fetches that one batch per partition and
    picks the record. Partitions it cannot refine keep the broker's answer.
    """
    out = dict(found)
    for tp, (offset, _) in found.items():
        target = targets.get(tp, -1)
        if offset < 0 or target < 0:
            continue
        leader = cluster.metadata.leader_for(tp.topic, tp.partition)
        if leader is None:
            continue
        # max_bytes=1: the broker still returns the first batch whole
        request = FetchRequest(max_wait_ms=0, min_bytes=0, partitions=(
            FetchPartition(tp.topic, tp.partition, offset, max_bytes=1),))
        try:
            resp = await cluster.send(leader, request, timeout)
            (part,) = resp.partitions
            if part.error_code:
                continue
            records, _, _ = decode_records(tp.topic, tp.partition, part.records, offset)
        except (ApiError, NoBrokersAvailable, ValueError):
            continue
        for r in records:
            if r.timestamp >= target:
                out[tp] = (r.offset, r.timestamp)
                break
    return out
