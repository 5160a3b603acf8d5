"""The producer's record accumulator: per-partition batches and the memory bound.

Theory of operation
-------------------
``append`` is the whole per-record cost of sending: it appends the record's
value (and key, timestamp, headers when given) to an open ``ProducerBatch`` of
its partition, counts its estimated size, and returns a ``RecordFuture``: two
slots (batch, index), and nothing else. There is no future, no encoding and no
I/O per record. The columns are lists; a column whose records all take the
default (no key, the batch's timestamp, no headers) stays ``None`` and is
backfilled only when a record first needs it.

A batch is *sealed* when adding a record would take it past ``batch_size``
bytes (estimated: key + value + headers + RECORD_OVERHEAD per record), when
another record of the same size would, or ``linger_ms`` after its first record (the sender calls
``drain``, which seals lingered batches). Sealed batches wait in a queue, in
seal order, for the sender, which encodes each with ``protocol.batch
.build_batch`` (one msgpack call per batch) and, when the broker answers,
completes the batch: its one shared result serves every record's future.

Threads and the lock. Each thread fills batches of its own: an open batch
belongs to the thread that opened it (``_open`` is keyed by topic, partition
and thread), so only that thread ever appends to it. A batch also holds a
*reservation*: bytes of ``buffer_memory`` taken for it in advance, up to
RESERVE_CHUNK at a time. The commonest record (``fast_send``: bytes value, no
key, partition, timestamp or headers) goes to its thread's last plain batch
(remembered per thread) with no lock at all while the reservation covers it;
the lock is taken once per RESERVE_CHUNK bytes (about 150 records of 100
bytes) to reserve more, or to seal a full batch. Everything else (the first
record of a batch, records with keys or headers, a full buffer) takes the lock.

What the lock no longer covers is the race between a thread appending to its
batch and another thread sealing it (the sender on linger, ``flush``,
``close``). Two flags settle it, Dekker style: the appending thread sets
``batch.busy``, then reads ``batch.sealed``; a sealer sets ``sealed``, then
reads ``busy``. Under the GIL these plain attribute reads and writes happen in
program order, so at least one of them sees the other's flag: the appender
backs off to the locked path, or the sealer leaves the batch in ``_sealing``
and the appender, which reads ``sealed`` again when it clears ``busy``, hands
it on (``_settle``) before its ``send`` returns. A sealed batch reaches the
sender only once no thread is appending to it, and a thread's batches of a
partition reach it in the order they were opened.

``buffer_memory`` bounds the estimated bytes of records not yet completed plus
the unused reservations of open batches (returned when a batch is sealed):
taking room blocks the calling thread until completions free it, for at most
``max_block`` seconds, then raises FerryTimeoutError. That is the producer's
backpressure. ``wakeup`` is how the accumulator tells the sender there is work
(a new batch to linger on, or a sealed one); it is called at most once until
the sender drains again, so a busy producer does not pay a cross-thread call
per batch.

The accumulator is thread-safe; completion runs in the sender's thread.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from threading import get_ident
from typing import Callable

from protocol.errors import MessageTooLargeError

from .errors import FerryTimeoutError, IllegalStateError
from .producer_batch import BATCH_OVERHEAD, RECORD_OVERHEAD, ProducerBatch, RecordFuture

__all__ = ["BATCH_OVERHEAD", "DEFAULT_BATCH_SIZE", "RECORD_OVERHEAD", "ProducerBatch", "RecordAccumulator", "RecordFuture"]

_CLOSED = 1 << 62
# Stands for "no batch" in the fast path's cache: no topic, no reservation.
_NO_BATCH = ProducerBatch("", -1, 0.0, 0)
_NO_BATCH.sealed = True
_NO_BATCH.room = _NO_BATCH.reserved = -1
# buffer_memory taken for an open batch at a time: Kafka sets aside a whole
# batch.size (16 KiB by default) for each batch it opens
RESERVE_CHUNK = 16384


class _ThreadBatch(threading.local):
    """The plain batch a thread's last fast record went to (per thread)."""

    batch = _NO_BATCH

# Kafka's 16 KiB is tuned for the JVM. Here every batch costs the sender and
# the broker a fixed amount of Python (request, response, completion, one
# append), so larger batches amortise it: 256 KiB (about 2,400 records of
# 100 bytes) took client and broker CPU per record to 0.75x and 0.6x of 64 KiB,
# while staying well inside max_request_size and the broker's
# max_message_bytes (1 MiB each). A batch is only as big as what arrived
# within linger_ms, so a slow producer's batches stay small.
DEFAULT_BATCH_SIZE = 262144


class RecordAccumulator:
    """Open and sealed batches of one producer, and its memory bound (see module doc)."""

    def __init__(
        self,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        linger_ms: float = 5,
        buffer_memory: int = 33554432,
        max_request_size: int = 1048576,
        clock: Callable[[], float] = time.monotonic,
        on_seal: Callable[[str, int], None] | None = None,
    ) -> None:
        self.batch_size = min(batch_size, max_request_size)
        self.linger = linger_ms / 1000
        self.buffer_memory = buffer_memory
        self.max_request_size = max_request_size
        self.clock = clock
        self.on_seal = on_seal
        # records above this size are checked against the hard limits in append
        self._size_limit = min(max_request_size, buffer_memory) - BATCH_OVERHEAD
        self.wakeup: Callable[[], None] = lambda: None
        self.block_in_thread: Callable[[], bool] = lambda: True
        self._lock = threading.Lock()
        self._acquire = self._lock.acquire
        self._release = self._lock.release
        self._room = threading.Condition(self._lock)
        # (topic, partition, thread ident) -> the batch that thread is filling
        self._open: dict[tuple[str, int, int], ProducerBatch] = {}
        self._sealed: collections.deque[ProducerBatch] = collections.deque()
        self._sealing: list[ProducerBatch] = []  # sealed while their thread was appending
        self._incomplete: set[ProducerBatch] = set()
        self._async_room_waiters: list[asyncio.Future] = []
        # buffer_memory minus the bytes of incomplete records and reservations;
        # pushed far below zero by close()
        self._free = buffer_memory
        self._signalled = False
        self.closed = False
        self._local = _ThreadBatch()

    # ------------------------------------------------------------ appending

    def record_size(self, key, value, headers) -> int:
        """Estimated bytes of one record. Raises TypeError for malformed headers,
        which would otherwise make the whole batch unreadable to consumers."""
        size = RECORD_OVERHEAD
        if value is not None:
            size += len(value)
        if key is not None:
            size += len(key)
        if headers:
            for pair in headers:
                try:
                    name, hv = pair
                except (TypeError, ValueError):
                    raise TypeError(f"a header must be a (str, bytes) pair, not {pair!r}") from None
                if type(name) is not str or not (hv is None or type(hv) is bytes):
                    raise TypeError(f"a header must be a (str, bytes or None) pair, not {pair!r}")
                size += len(name) + (len(hv) if hv is not None else 0) + 4
        return size

    def check_size(self, size: int) -> None:
        """Raise MessageTooLargeError if one record of ``size`` can never be sent."""
        if size + BATCH_OVERHEAD > self.max_request_size:
            raise MessageTooLargeError(
                f"the record is {size + BATCH_OVERHEAD} bytes as a batch, over "
                f"max_request_size={self.max_request_size}"
            )
        if size + BATCH_OVERHEAD > self.buffer_memory:
            raise MessageTooLargeError(
                f"the record is {size + BATCH_OVERHEAD} bytes, over buffer_memory={self.buffer_memory}"
            )

    @property
    def _used(self) -> int:
        return self.buffer_memory - (self._free + _CLOSED if self.closed else self._free)

    def has_room(self, size: int) -> bool:
        return size <= self._free or self._used == 0

    def append(self, topic: str, partition: int, key, value, timestamp_ms, headers,
               max_block: float = 0.0) -> RecordFuture:
        """Add one record; returns its RecordFuture. Thread-safe.

        Blocks up to ``max_block`` seconds while buffer_memory is full, then
        raises FerryTimeoutError. Raises MessageTooLargeError for a record that
        can never fit, IllegalStateError once closed.
        """
        size = RECORD_OVERHEAD if value is None else RECORD_OVERHEAD + len(value)
        if key is not None:
            size += len(key)
        if headers:
            size = self.record_size(key, value, headers)
        if size > self._size_limit:
            self.check_size(size)
        me = get_ident()
        self._acquire()
        try:
            if self.closed:
                raise IllegalStateError("the producer is closed")
            if self._sealing:
                self._settle_locked()
            key3 = (topic, partition, me)
            deadline = None
            while True:
                b = self._open.get(key3)
                full = b is not None and size > b.room and b.values
                need = size if b is None or full else size - b.reserved
                if need <= 0:
                    break
                if need <= self._free or not self._used:
                    if b is None or full:
                        b = self._new_batch(key3, b)
                    self._reserve(b, need)
                    break
                if deadline is None:
                    deadline = time.monotonic() + max_block
                # releases the lock while it waits: look at the batch again after
                self._wait_for_room(need, deadline, max_block)
            values = b.values
            index = len(values)
            values.append(value)
            plain = key is None and timestamp_ms is None and not headers and b.plain
            if not plain:
                b.add_extras(index, key, timestamp_ms, headers)
            room = b.room = b.room - size
            b.reserved -= size
            # Seal when the next record like this one would not fit: then a
            # full batch moves the sticky partition on without leaving a
            # straggler behind in a fresh batch of the old partition.
            if room < size:
                self._seal(key3, b)
                self._signal()
                plain = False
            self._local.batch = b if plain else _NO_BATCH
        finally:
            self._release()
        fut = RecordFuture()
        fut.batch = b
        fut.index = index
        return fut

    def fast_send(self, slow_send: Callable) -> Callable:
        """A blocking producer's ``send``, with the commonest record inlined.

        A keyless bytes value with no partition, timestamp or headers goes to
        the plain batch this thread's last such record went to, while that
        batch is open and its reservation covers the record: a list append and
        a RecordFuture, no lock (see the module doc). Anything else, including
        a first record, a sealed batch and a closed accumulator, goes to
        ``slow_send``, which has the same signature and picks the partition.
        Same returns and raises as ``append``.
        """
        local = self._local
        settle = self._settle
        top_up = self._top_up
        new = RecordFuture

        def send(topic, value=None, key=None, partition=None, timestamp_ms=None, headers=None):
            if (value.__class__ is bytes and key is None and partition is None
                    and timestamp_ms is None and headers is None):
                b = local.batch
                size = RECORD_OVERHEAD + len(value)
                if b.topic is topic and size <= b.reserved:
                    b.busy = True
                    if not b.sealed:
                        try:  # an exception raised in here (a signal) must not leave it busy
                            values = b.values
                            index = len(values)
                            values.append(value)
                            b.room -= size
                            left = b.reserved = b.reserved - size
                        finally:
                            b.busy = False
                        if b.sealed:  # a sealer found us appending: hand the batch on
                            settle()
                        elif left < size:
                            top_up(b, size)
                        fut = new()
                        fut.batch = b
                        fut.index = index
                        return fut
                    b.busy = False
            return slow_send(topic, value, key, partition, timestamp_ms, headers)

        return send

    def _top_up(self, b: ProducerBatch, size: int) -> None:
        """``b``'s reservation ran low: reserve more, or seal it if full (its thread)."""
        with self._lock:
            if b.sealed:
                return
            if b.room < size:
                self._seal((b.topic, b.partition, get_ident()), b)
                self._signal()
                return
            self._reserve(b, 0)  # what is free: the next record waits for room in append

    def _reserve(self, b: ProducerBatch, need: int) -> None:
        # called with the lock held, by b's thread: at least ``need`` more
        # bytes, a chunk's worth if buffer_memory has it free
        grant = max(need, min(min(b.room, RESERVE_CHUNK) - b.reserved, self._free))
        if grant > 0:
            b.reserved += grant
            self._free -= grant

    def _new_batch(self, key3: tuple[str, int, int], full: "ProducerBatch | None") -> "ProducerBatch":
        # called with the lock held
        if full is not None:
            self._seal(key3, full)
        b = self._open[key3] = ProducerBatch(key3[0], key3[1], self.clock(), self.batch_size)
        self._incomplete.add(b)
        self._signal()
        return b

    def _signal(self) -> None:
        # at most one wakeup per drain: a busy producer makes no cross-thread call per batch
        if not self._signalled:
            self._signalled = True
            self.wakeup()

    def _wait_for_room(self, size: int, deadline: float, max_block: float) -> None:
        # called with the lock held; the Condition releases it while waiting
        if not self.block_in_thread():
            raise FerryTimeoutError(
                "buffer_memory is full and send() was called from the producer's own "
                "I/O thread, which cannot block"
            )
        while self._used + size > self.buffer_memory and self._used and not self.closed:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._room.wait(remaining):
                if self._used + size > self.buffer_memory and self._used:
                    raise FerryTimeoutError(
                        f"buffer_memory ({self.buffer_memory} bytes) stayed full for "
                        f"{max_block * 1000:.0f} ms (max_block_ms)"
                    )
        if self.closed:
            raise IllegalStateError("the producer is closed")

    async def wait_for_room(self, size: int, timeout: float) -> None:
        """For the asyncio producer: wait (in the loop) until ``size`` fits.

        Raises FerryTimeoutError after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        loop = asyncio.get_running_loop()
        while not self.has_room(size) and not self.closed:
            fut = loop.create_future()
            self._async_room_waiters.append(fut)
            try:
                async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                    await fut
            except TimeoutError:
                if not self.has_room(size):
                    raise FerryTimeoutError(
                        f"buffer_memory ({self.buffer_memory} bytes) stayed full for "
                        f"{timeout * 1000:.0f} ms (max_block_ms)"
                    ) from None

    def _seal(self, key3: tuple[str, int, int], b: ProducerBatch) -> None:
        # called with the lock held, from any thread (see the module doc)
        del self._open[key3]
        b.sealed = True
        if b.busy:  # its thread is appending: it hands the batch on (_settle)
            self._sealing.append(b)
        else:
            self._finalize(b)
        if self.on_seal is not None:
            self.on_seal(b.topic, b.partition)

    def _finalize(self, b: ProducerBatch) -> None:
        # called with the lock held; nobody appends to ``b`` any more
        if b.reserved:
            self._free += b.reserved
            b.reserved = 0
            self._room.notify_all()
        self._sealed.append(b)

    def _settle(self) -> None:
        """Hand on the batches sealed while their thread was appending."""
        with self._lock:
            self._settle_locked()
            self._signal()

    def _settle_locked(self) -> None:
        busy = []
        for b in self._sealing:
            if b.busy:
                busy.append(b)
            else:
                self._finalize(b)
        self._sealing = busy

    # ------------------------------------------------------------ the sender's side

    def drain(self, now: float | None = None,
              hold: Callable[[tuple[str, int]], bool] | None = None) -> tuple[list[ProducerBatch], float | None]:
        """Seal batches that lingered long enough; take every sealed batch.

        ``hold(tp)`` true means the sender cannot take another batch of that
        partition yet (its in-flight window is full): its lingered batch stays
        open and keeps growing, as Kafka's does, rather than queueing up
        one-record batches behind the window. The sender drains again when an
        answer frees the window.

        Returns (batches in seal order, seconds until the next open batch's
        linger ends, or None if no batch is open).
        """
        if now is None:
            now = self.clock()
        with self._lock:
            self._signalled = False
            if self._sealing:
                self._settle_locked()
            next_due = None
            if self._open:
                linger = self.linger
                for key3, b in list(self._open.items()):
                    due = b.created + linger - now
                    if due <= 0:
                        if hold is None or not hold((b.topic, b.partition)):
                            self._seal(key3, b)
                    elif next_due is None or due < next_due:
                        next_due = due
            out = list(self._sealed)
            self._sealed.clear()
        return out, next_due

    def seal_all(self) -> None:
        """Seal every open batch now (flush, close)."""
        with self._lock:
            for key3, b in list(self._open.items()):
                self._seal(key3, b)
            self._signalled = True
        self.wakeup()

    def reenqueue(self, batches: list[ProducerBatch]) -> None:
        """Put batches back at the front, keeping their order (a retry)."""
        with self._lock:
            self._sealed.extendleft(reversed(batches))
            self._signalled = True
        self.wakeup()

    def completed(self, b: ProducerBatch, base_offset: int = -1, log_append_time: int = -1,
                  error: BaseException | None = None) -> None:
        """Complete ``b`` and free its memory (in the sender's thread)."""
        with self._lock:
            if b in self._incomplete:
                self._incomplete.discard(b)
                # an open batch (failed by fail_all) still holds its reservation
                self._free += b.capacity - b.room + b.reserved
                b.reserved = 0
                self._room.notify_all()
        b.complete(base_offset, log_append_time, error)
        waiters, self._async_room_waiters = self._async_room_waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    def incomplete(self) -> list[ProducerBatch]:
        with self._lock:
            return list(self._incomplete)

    def close(self) -> None:
        """Refuse new records and wake blocked senders.

        Open batches are sealed, so no thread appends to them any more.
        """
        with self._lock:
            if not self.closed:
                self.closed = True
                self._free -= _CLOSED
                for key3, b in list(self._open.items()):
                    self._seal(key3, b)
                self._signal()
            self._room.notify_all()
        for fut in self._async_room_waiters:
            if not fut.done():
                fut.set_result(None)

    def fail_all(self, error: BaseException) -> None:
        """Fail every incomplete batch, sealed or open (forced close)."""
        with self._lock:
            for b in self._open.values():
                b.sealed = True
            self._open.clear()
            self._sealed.clear()
            self._sealing.clear()
        for b in self.incomplete():
            self.completed(b, error=error)

    @property
    def buffered_bytes(self) -> int:
        return self._used

    def has_unsent(self) -> bool:
        return bool(self._sealed or self._open or self._sealing)
