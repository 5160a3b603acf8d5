"""Fetched records on their way to the user: chunks, and the queue between threads.

Theory of operation
-------------------
The fetcher turns each partition's part of a fetch response into one
``PartitionRecords`` chunk (its records' columns, see ``record_columns``) and
``put``s it in the ``RecordBuffer``, in the event loop's thread. The
consuming side (the loop thread for AsyncConsumer, the caller's thread for
Consumer) makes the oldest chunk *current*, which counts it as taken. The
fetcher keeps up to ``FETCH_AHEAD`` chunks of each partition fetched ahead of
the consumer, and is woken by a take only when it frees a full partition.

Iteration is C-level: the consumer hands out records straight from the
chunk's record-making iterator (the blocking one through
``itertools.chain``). Where the user stopped inside a chunk is read back from
its offsets column's list iterator (``__length_hint__``), and a seek ends the
iteration by moving that iterator to the end (``__setstate__``); nothing is
done per record in Python.
"""

from __future__ import annotations

import asyncio
import collections
import threading
from typing import Callable

from .record_columns import RecordColumns
from .subscription import SubscriptionState
from .structs import TopicPartition


class PartitionRecords:
    """One partition's records from one fetch; ``pos`` is the next to hand out."""

    __slots__ = ("tp", "epoch", "columns", "count", "pos", "next_offset", "error", "cursor",
                 "iterator")

    def __init__(self, tp: TopicPartition, epoch: int, columns: RecordColumns | None,
                 next_offset: int, error: BaseException | None = None) -> None:
        self.tp = tp
        self.epoch = epoch
        self.columns = columns
        self.count = 0 if columns is None else len(columns)
        self.pos = 0
        self.next_offset = next_offset
        self.error = error
        self.iterator = None  # the records iterator while a generator yields from it
        self.cursor = None  # and its offsets column's list iterator

    def sync(self) -> None:
        """Bring ``pos`` up to date with a live iteration."""
        cursor = self.cursor
        if cursor is not None:
            self.pos = self.count - cursor.__length_hint__()

    def iterate(self):
        """An iterator making the remaining ConsumerRecords; it keeps ``pos`` (see ``sync``)."""
        self.cursor, self.iterator = self.columns.iterate(self.pos)
        return self.iterator

    def iteration_ended(self, it) -> None:
        """``it`` (from ``iterate``) ran to its end: every record was handed out."""
        if self.iterator is it:
            self.iterator = self.cursor = None
            self.pos = self.count

    def stop_iteration(self) -> None:
        """Detach the live iterator (making it end at once); ``pos`` stays where it was."""
        cursor = self.cursor
        if cursor is not None:
            self.sync()
            self.iterator = self.cursor = None
            cursor.__setstate__(self.count)

    @property
    def exhausted(self) -> bool:
        self.sync()
        return self.pos >= self.count

    def position(self) -> int:
        """Offset of the next record the user will get from this partition."""
        self.sync()
        if self.pos < self.count:
            return self.columns.offsets[self.pos]
        return self.next_offset

    def take(self, n: int | None) -> list:
        self.sync()
        pos = self.pos
        end = self.count if n is None else min(self.count, pos + n)
        self.pos = end
        return self.columns.slice(pos, end) if end > pos else []


class Doorbell:
    """Wakes the one thread waiting on it, with less work than a threading.Event.

    A raw lock, held while nobody rang. The waiter ``arm``s it, looks for
    work, then ``wait``s; ``ring`` (from any thread) releases the lock only if
    it is armed, so an idle doorbell costs the ringer a test. A ring that
    comes between ``arm`` and the look is taken by the next ``wait``, which
    then returns at once: waiters look again after every wake.
    """

    __slots__ = ("armed", "_lock")

    def __init__(self) -> None:
        self.armed = False
        self._lock = threading.Lock()
        self._lock.acquire()

    def arm(self) -> None:
        self.armed = True

    def ring(self) -> None:
        if self.armed:
            self.armed = False
            try:
                self._lock.release()
            except RuntimeError:  # rung already and not yet taken
                pass

    def wait(self, timeout: float | None) -> bool:
        """Block until rung (True) or ``timeout`` seconds pass (False)."""
        rung = self._lock.acquire(timeout=-1 if timeout is None else max(timeout, 0))
        self.armed = False
        return rung


class RecordBuffer:
    """Chunks in arrival order plus the one being consumed (``current``).

    ``put`` runs in the loop thread; everything else in the consuming thread.
    ``on_taken`` (thread-safe) tells the fetcher a full partition can be fetched again.
    """

    def __init__(self, subscriptions: SubscriptionState, on_taken: Callable[[], None]) -> None:
        self.subs = subscriptions
        self.on_taken = on_taken
        self.current: PartitionRecords | None = None
        self._chunks: collections.deque[PartitionRecords] = collections.deque()
        self._async_event = asyncio.Event()
        self._doorbell = Doorbell()
        self._holding = False  # loop side: ``put`` leaves the wake-up to ``release``
        self._held = False

    # ------------------------------------------------------------ loop side

    def put(self, chunk: PartitionRecords) -> None:
        self._chunks.append(chunk)
        if self._holding:
            self._held = True
        else:
            self.wake()

    def hold(self) -> None:
        """Queue chunks without waking the consumer until ``release``.

        The fetcher holds the wake-up while it sends its next fetches: a
        consuming thread woken first would only wait for the loop thread to
        let go of the GIL.
        """
        self._holding = True

    def release(self) -> None:
        self._holding = False
        if self._held:
            self._held = False
            self.wake()

    def wake(self) -> None:
        """Wake a waiting consumer (for new chunks, or an assignment change)."""
        self._async_event.set()
        self._doorbell.ring()

    # ------------------------------------------------------------ consumer side

    def _finish_current(self) -> None:
        cur = self.current
        self.current = None
        cur.iterator = cur.cursor = None
        st = self.subs.assignment.get(cur.tp)
        if st is not None and st.epoch == cur.epoch:
            st.position = cur.next_offset

    def next_chunk(self) -> PartitionRecords | None:
        """The current chunk if it still has records, else the next valid one.

        Chunks of paused partitions stay queued; those from before a seek are
        dropped. Raises the error a chunk carries (e.g. OffsetOutOfRangeError), once.
        """
        chunks = self._chunks
        cur = self.current
        if cur is not None:
            st = self.subs.assignment.get(cur.tp)
            if st is None or st.epoch != cur.epoch:
                cur.stop_iteration()
                self.current = None
            elif cur.exhausted:
                self._finish_current()
            elif st.paused:
                cur.stop_iteration()
                self.current = None
                chunks.appendleft(cur)
            else:
                return cur
        unblocked = False
        kept = []
        try:
            while chunks:
                chunk = chunks.popleft()
                st = self.subs.assignment.get(chunk.tp)
                if st is None or st.epoch != chunk.epoch:
                    continue
                if st.paused:
                    kept.append(chunk)
                    continue
                # the fetcher skips a full partition: it needs waking only
                # when taking this chunk lets it fetch that partition again
                unblocked = unblocked or st.full
                st.taken += 1
                if chunk.error is not None:
                    st.stalled = False
                    raise chunk.error
                if chunk.pos >= chunk.count:
                    st.position = chunk.next_offset
                    continue
                self.current = chunk
                return chunk
            return None
        finally:
            if kept:
                chunks.extendleft(reversed(kept))
            if unblocked:
                self.on_taken()

    def _valid(self, chunk: PartitionRecords) -> bool:
        st = self.subs.assignment.get(chunk.tp)
        return st is not None and st.epoch == chunk.epoch

    def take(self, max_records: int | None = None,
             partitions: "set[TopicPartition] | None" = None) -> dict[TopicPartition, list]:
        """Up to ``max_records`` records (None: all buffered), by partition. Never blocks."""
        out: dict[TopicPartition, list] = {}
        n = 0
        skipped = []
        while max_records is None or n < max_records:
            chunk = self.next_chunk()
            if chunk is None:
                break
            if partitions is not None and chunk.tp not in partitions:
                # leave it for later, keep looking
                chunk.stop_iteration()
                self.current = None
                skipped.append(chunk)
                continue
            chunk.stop_iteration()
            recs = chunk.take(None if max_records is None else max_records - n)
            n += len(recs)
            prev = out.get(chunk.tp)
            # a new list when joining: ``recs`` may be the chunk's own list
            out[chunk.tp] = recs if prev is None else prev + recs
            st = self.subs.assignment.get(chunk.tp)
            if st is not None:
                st.position = chunk.position()
        if skipped:
            self._chunks.extendleft(reversed(skipped))
        return out

    def position(self, tp: TopicPartition) -> int | None:
        """The position from the chunk being consumed, if it is ``tp``'s."""
        cur = self.current
        if cur is not None and cur.tp == tp and self._valid(cur):
            return cur.position()
        return None

    def discard(self, tp: TopicPartition | None = None) -> None:
        """Stop consuming the current chunk (of ``tp``, or any): a seek or reassignment."""
        cur = self.current
        if cur is not None and (tp is None or cur.tp == tp):
            cur.stop_iteration()
            self.current = None

    def has_records(self) -> bool:
        cur = self.current
        if cur is not None and not cur.exhausted:
            return True
        return bool(self._chunks)

    def arm(self) -> None:
        """Reset the wake-up events: call before looking for records, then wait."""
        self._async_event.clear()
        self._doorbell.arm()

    def wait_blocking(self, timeout: float | None) -> bool:
        """Block (the consumer's thread) until a chunk arrives after ``arm``; False on timeout.

        May return True early (a ring meant for an earlier wait): look again.
        """
        return self._doorbell.wait(timeout)

    async def wait(self, timeout: float | None) -> bool:
        """Await (in the loop) a chunk arriving after ``arm``; False on timeout."""
        if timeout is None:  # ``async for``: no timer to set up and cancel each time
            await self._async_event.wait()
            return True
        try:
            async with asyncio.timeout(timeout):
                await self._async_event.wait()
            return True
        except TimeoutError:
            return False
