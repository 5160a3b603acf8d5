"""A producer batch and the per-record future that points into it.

One ``ProducerBatch`` holds the columns of the records bound for one partition
and, once the broker answered, the one result they share (base offset, append
time or error). A ``RecordFuture`` is just (batch, index): reading its
RecordMetadata means ``base_offset + index``. Waiting uses a ``threading.Event``
(blocking callers) or an asyncio future (``await``), each made on demand;
callbacks are kept per batch and run when it completes.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time

from protocol import batch as batchcodec

from .errors import FerryTimeoutError
from .structs import RecordMetadata

log = logging.getLogger(__name__)

RECORD_OVERHEAD = 8  # msgpack headers of a record's entries, a little over
BATCH_OVERHEAD = batchcodec.HEADER_SIZE + 16  # header and the payload's array framing

_callback_lock = threading.Lock()


def _now_ms() -> int:
    return int(time.time() * 1000)


class ProducerBatch:
    """Records bound for one partition, and the one result they share."""

    __slots__ = (
        "topic", "partition", "values", "keys", "timestamps", "headers", "timestamp",
        "capacity", "room", "plain", "created", "sealed", "data", "attempts", "done",
        "base_offset", "log_append_time", "error", "event", "_afut", "_callbacks",
        "producer_id", "producer_epoch", "sequence", "ordinal", "maybe_written", "last_error",
        "reserved", "busy",
    )

    def __init__(self, topic: str, partition: int, now: float, batch_size: int = 1 << 30) -> None:
        self.topic = topic
        self.partition = partition
        self.values: list = []
        self.keys: list | None = None
        self.timestamps: list | None = None
        self.headers: list | None = None
        self.plain = True  # no keys, timestamps or headers so far
        self.timestamp = _now_ms()  # of records sent without timestamp_ms
        self.capacity = self.room = batch_size - BATCH_OVERHEAD  # record bytes
        # the accumulator's handoff with the thread that fills the batch (see
        # accumulator.py): bytes of buffer_memory it may still use without the
        # lock, and whether it is appending without the lock right now
        self.reserved = 0
        self.busy = False
        self.created = now
        self.sealed = False
        self.data: bytes | None = None
        self.attempts = 0
        self.done = False
        self.base_offset = -1
        self.log_append_time = -1
        self.error: BaseException | None = None
        self.event: threading.Event | None = None  # made by the first blocking get()
        self._afut: asyncio.Future | None = None
        self._callbacks: list | None = None
        # idempotence (set by the sender): the producer identity and base
        # sequence the batch is encoded with, whether an attempt may have been
        # written without the producer learning so, and the last attempt's error
        self.producer_id = -1
        self.producer_epoch = -1
        self.sequence = -1
        self.ordinal = -1  # the sender's count of numbered batches of the partition
        self.maybe_written = False
        self.last_error: BaseException | None = None

    @property
    def size(self) -> int:
        """Estimated bytes of the encoded batch."""
        return BATCH_OVERHEAD + self.capacity - self.room

    def add_extras(self, index: int, key, timestamp_ms, headers) -> None:
        """Record ``index``'s key, timestamp and headers, creating columns on first use."""
        self.plain = False
        if self.keys is None:
            if key is not None:
                self.keys = [None] * index
                self.keys.append(key)
        else:
            self.keys.append(key)
        if self.timestamps is None:
            if timestamp_ms is not None:
                self.timestamps = [self.timestamp] * index
                self.timestamps.append(timestamp_ms)
        else:
            self.timestamps.append(self.timestamp if timestamp_ms is None else timestamp_ms)
        if self.headers is None:
            if headers:
                self.headers = [None] * index
                self.headers.append(headers)
        else:
            self.headers.append(headers or None)

    def __len__(self) -> int:
        return len(self.values)

    def __repr__(self) -> str:
        return f"<ProducerBatch {self.topic}/{self.partition} records={len(self.values)} size={self.size}>"

    def encode(self, compression) -> bytes:
        """The wire bytes (built once; retries resend the same bytes).

        An idempotent batch carries its producer id, epoch and base sequence
        in the header; the sender sets them (and clears ``data``) before.
        """
        if self.data is None:
            self.data = batchcodec.build_batch(
                self.values, self.keys,
                self.timestamps if self.timestamps is not None else self.timestamp,
                self.headers, compression=compression, producer_id=self.producer_id,
                producer_epoch=self.producer_epoch, base_sequence=self.sequence,
            )
        return self.data

    def set_sequence(self, producer_id: int, producer_epoch: int, sequence: int) -> None:
        """Number the batch for an idempotent producer (drops bytes already built)."""
        self.producer_id = producer_id
        self.producer_epoch = producer_epoch
        self.sequence = sequence
        self.data = None

    # ------------------------------------------------------------ completion

    def complete(self, base_offset: int = -1, log_append_time: int = -1,
                 error: BaseException | None = None) -> None:
        """Resolve every record of the batch (in the sender's thread). Idempotent."""
        with _callback_lock:
            if self.done:
                return
            self.base_offset = base_offset
            self.log_append_time = log_append_time
            self.error = error
            self.done = True
            callbacks, self._callbacks = self._callbacks, None
            event = self.event
        if event is not None:
            event.set()
        afut = self._afut
        if afut is not None and not afut.done():
            afut.set_result(None)
        if callbacks:
            for index, fn, is_errback in callbacks:
                _run_callback(self, index, fn, is_errback)

    def metadata(self, index: int) -> RecordMetadata:
        offset = self.base_offset + index if self.base_offset >= 0 else -1
        if self.log_append_time >= 0:
            ts = self.log_append_time
        elif self.timestamps is not None:
            ts = self.timestamps[index]
        else:
            ts = self.timestamp
        return RecordMetadata(self.topic, self.partition, offset, ts)

    def add_callback(self, index: int, fn, is_errback: bool) -> None:
        with _callback_lock:
            if not self.done:
                if self._callbacks is None:
                    self._callbacks = []
                self._callbacks.append((index, fn, is_errback))
                return
        _run_callback(self, index, fn, is_errback)

    def blocking_waiter(self) -> threading.Event | None:
        """The event a blocking caller waits on; None if the batch is done already.

        Made on first use: most batches are never waited on one by one, and a
        threading.Event costs more to make than the rest of a small batch.
        """
        with _callback_lock:
            if self.done:
                return None
            if self.event is None:
                self.event = threading.Event()
            return self.event

    def async_done(self) -> asyncio.Future:
        """An asyncio future (of the running loop) resolved when the batch completes."""
        if self._afut is None:
            self._afut = asyncio.get_running_loop().create_future()
            if self.done:
                self._afut.set_result(None)
        return self._afut


def _run_callback(batch: ProducerBatch, index: int, fn, is_errback: bool) -> None:
    try:
        if batch.error is None:
            if not is_errback:
                fn(batch.metadata(index))
        elif is_errback:
            fn(batch.error)
    except Exception:
        log.exception("producer callback %r raised", fn)


class RecordFuture:
    """The result of one ``send``: its batch and index in it. Future-like and awaitable.

    kafka-python style: ``get(timeout)``, ``add_callback``, ``add_errback``,
    ``is_done``, ``succeeded()``, ``failed()``, ``exception``, ``value``.
    asyncio style: ``await fut``, ``done()``, ``result()``. Callbacks run in the
    producer's I/O thread (or at once, in the caller's, if already done).
    """

    __slots__ = ("batch", "index")

    def get(self, timeout: float | None = None) -> RecordMetadata:
        """Block until delivered; the RecordMetadata, or raise the delivery error.

        Raises FerryTimeoutError if not done within ``timeout`` seconds.
        """
        b = self.batch
        if not b.done:
            event = b.blocking_waiter()
            if event is not None and not event.wait(timeout):
                raise FerryTimeoutError(f"record not delivered within {timeout} s")
        if b.error is not None:
            raise b.error
        return b.metadata(self.index)

    @property
    def is_done(self) -> bool:
        return self.batch.done

    def done(self) -> bool:
        return self.batch.done

    def succeeded(self) -> bool:
        b = self.batch
        return b.done and b.error is None

    def failed(self) -> bool:
        b = self.batch
        return b.done and b.error is not None

    @property
    def exception(self) -> BaseException | None:
        return self.batch.error

    @property
    def value(self) -> RecordMetadata | None:
        b = self.batch
        return b.metadata(self.index) if b.done and b.error is None else None

    def result(self) -> RecordMetadata:
        """The RecordMetadata if done (raising the error if it failed)."""
        b = self.batch
        if not b.done:
            raise asyncio.InvalidStateError("record not delivered yet")
        return self.get(0)

    def add_callback(self, fn, *args, **kwargs) -> "RecordFuture":
        """Call ``fn(*args, metadata, **kwargs)`` on success. Returns self."""
        if args or kwargs:
            fn = _bind(fn, args, kwargs)
        self.batch.add_callback(self.index, fn, False)
        return self

    def add_errback(self, fn, *args, **kwargs) -> "RecordFuture":
        """Call ``fn(*args, exception, **kwargs)`` on failure. Returns self."""
        if args or kwargs:
            fn = _bind(fn, args, kwargs)
        self.batch.add_callback(self.index, fn, True)
        return self

    def add_both(self, fn, *args, **kwargs) -> "RecordFuture":
        self.add_callback(fn, *args, **kwargs)
        return self.add_errback(fn, *args, **kwargs)

    def add_done_callback(self, fn) -> None:
        """asyncio style: ``fn(self)`` once done, either way."""
        self.batch.add_callback(self.index, lambda _: fn(self), False)
        self.batch.add_callback(self.index, lambda _: fn(self), True)

    def cancelled(self) -> bool:
        return False

    def __await__(self):
        b = self.batch
        if not b.done:
            yield from b.async_done().__await__()
        return self.get(0)

    def __repr__(self) -> str:
        b = self.batch
        state = "pending" if not b.done else ("failed" if b.error else "done")
        return f"<RecordFuture {b.topic}/{b.partition} #{self.index} {state}>"


def _bind(fn, args, kwargs):
    def bound(value):
        return fn(*args, value, **kwargs)
    return bound
