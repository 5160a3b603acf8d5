"""What becomes of a batch when an attempt to send it ends.

Theory of operation
-------------------
An attempt ends with an answer for the batch, an error code, or no answer at
all (the connection was lost, the request timed out). An acknowledged batch
(no error, or DUPLICATE_SEQUENCE_NUMBER for an idempotent retry the broker
already wrote) is completed with its offsets. A retriable failure puts the
batch back in its partition's queue, in its original order, and stalls the
partition for ``retry_backoff_ms`` (sender.py, "Retries"). Any other failure,
or running out of ``retries`` or ``delivery_timeout_ms``, completes the batch
with the error; a numbered batch failing for good breaks its partition's
sequence chain, which the sender then resets (sequences.py). For a numbered
batch the error code also says whether it may be in the log all the same,
whether the broker refused its sequence or epoch, and whether another
producer took over the id, which is fatal.

``Sender`` (sender.py) inherits these methods from ``BatchOutcomes``: they
are the sender's, kept apart so that each module stays small, and they work
on the sender's state (declared below, set by ``Sender.__init__``).
"""

from __future__ import annotations

import logging
import time
from typing import Callable

from protocol.errors import ErrorCode, ProducerFencedError

from .accumulator import ProducerBatch, RecordAccumulator
from .cluster import Cluster
from .errors import FerryTimeoutError, NoBrokersAvailable
from .sequences import NEVER, PartitionQueue

log = logging.getLogger(__name__)

# answers after which the batch may be in the log all the same
_IN_DOUBT = {
    ErrorCode.UNKNOWN_SERVER_ERROR,
    ErrorCode.REQUEST_TIMED_OUT,
    ErrorCode.NETWORK_EXCEPTION,
    ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
    ErrorCode.STORAGE_ERROR,
}
# the broker checked the sequence and did not write the batch
_SEQUENCE_REFUSED = {ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER, ErrorCode.UNKNOWN_PRODUCER_ID}


class BatchOutcomes:
    """Completes, requeues, fails and expires the sender's batches (see the module doc)."""

    cluster: Cluster
    acc: RecordAccumulator
    retries: int
    retry_backoff: float
    delivery_timeout: float
    idempotent: bool
    producer_id: int
    producer_epoch: int
    fatal: BaseException | None
    has_producer_id: bool
    _parts: dict[tuple[str, int], PartitionQueue]
    _active: dict[tuple[str, int], PartitionQueue]
    _node_error: dict[int, BaseException]
    wake: Callable[[], None]

    def _release_numbered(self, b: ProducerBatch):
        """Take the numbered batch ``b`` out of its partition's unacked ones; its state."""
        st = self._parts[(b.topic, b.partition)]
        try:
            st.unacked.remove(b)
        except ValueError:
            pass
        return st

    def _succeeded(self, b: ProducerBatch, base_offset: int, log_append_time: int) -> None:
        if b.sequence >= 0:
            st = self._release_numbered(b)
            if st.reset and b.ordinal > st.resolved_by:
                st.reset = False  # the broker took a later batch: the chain is whole
                st.resolved_by = NEVER
        self.acc.completed(b, base_offset, log_append_time)

    def _attempt_failed(self, b: ProducerBatch, exc: BaseException, code: int | None) -> None:
        """One attempt of ``b`` failed: retry it in order, or fail it (``code`` None: no answer)."""
        if b.done:
            return
        b.last_error = exc
        st = self._parts[(b.topic, b.partition)]
        retriable = isinstance(exc, NoBrokersAvailable) or getattr(exc, "retriable", False)
        if b.sequence >= 0:
            if code is None or code in _IN_DOUBT:
                b.maybe_written = True
            elif code in _SEQUENCE_REFUSED:
                # not in the log: were it, the broker would have answered it as a duplicate
                b.maybe_written = False
                if st.unacked and st.unacked[0] is b:
                    if not st.reset:
                        log.warning(
                            "%s/%d: the broker refused the first unacknowledged batch (sequence %d): %s; "
                            "renumbering the partition under a new epoch", b.topic, b.partition, b.sequence, exc)
                    st.broken(NEVER)
                retriable = True
            elif code == ErrorCode.INVALID_PRODUCER_EPOCH:
                if (b.producer_id, b.producer_epoch) == (self.producer_id, self.producer_epoch):
                    self._set_fatal(ProducerFencedError(f"{exc} (the producer's current epoch was fenced)"))
                    self.acc.completed(b, error=self.fatal)
                    return
                st.epoch_refused = True
                st.broken(NEVER)
                retriable = True
            elif code == ErrorCode.PRODUCER_FENCED:
                self._set_fatal(exc)
                self.acc.completed(b, error=exc)
                return
        now = time.monotonic()
        if not retriable or b.attempts >= self.retries:
            self._fail(b, exc)
        elif now - b.created > self.delivery_timeout:
            self._expire(b, exc)
        else:
            b.attempts += 1
            self._requeue(st, b)
            st.stalled = True
            st.retry_at = now + self.retry_backoff
            self._active[st.tp] = st
            self.wake()
            log.debug("retrying %s/%d after %s", b.topic, b.partition, exc)

    def _requeue(self, st: PartitionQueue, b: ProducerBatch) -> None:
        """Put ``b`` back in ``st.queue`` before every batch sent after it."""
        q = st.queue
        if b.sequence < 0 or not st.unacked:
            # unnumbered: retries fail in the order they were sent, so each goes
            # behind the retries before it and ahead of everything newer
            i = 0
            while i < len(q) and q[i].attempts > 0 and q[i] is not b:
                i += 1
            q.insert(i, b)
            return
        order = {id(x): i for i, x in enumerate(st.unacked)}
        i = 0
        pos = order.get(id(b), -1)
        while i < len(q) and q[i].sequence >= 0 and order.get(id(q[i]), -1) < pos:
            i += 1
        q.insert(i, b)

    def _fail(self, b: ProducerBatch, exc: BaseException) -> None:
        """Complete ``b`` with ``exc``; a numbered batch breaks its partition's chain."""
        if b.sequence >= 0:
            st = self._release_numbered(b)
            if not b.done:
                st.broken(b.ordinal)
                st.stalled = True  # let later attempts in flight answer before renumbering
                self._active[st.tp] = st
        self.acc.completed(b, error=exc)

    def _expire(self, b: ProducerBatch, cause: BaseException | None = None) -> None:
        why = f" (last error: {cause})" if cause else ""
        self._fail(b, FerryTimeoutError(
            f"{len(b)} record(s) for {b.topic}/{b.partition} expired: not delivered within "
            f"delivery_timeout_ms={self.delivery_timeout * 1000:.0f}{why}"
        ))

    def _expire_queued(self, now: float, st: PartitionQueue) -> float | None:
        """Fail ``st``'s queued batches past delivery_timeout_ms (oldest first);
        seconds until the next one would be, None if none is queued."""
        q = st.queue
        limit = self.delivery_timeout
        while q:
            b = q[0]
            age = now - b.created
            if age <= limit:
                return limit - age
            q.popleft()
            cause = b.last_error
            if cause is None and self.idempotent and not self.has_producer_id:
                cause = self._node_error.get(-1)  # the InitProducerId error
            if cause is None:
                leader = self.cluster.metadata.leader_for(b.topic, b.partition)
                cause = self._node_error.get(leader) if leader is not None else None
            self._expire(b, cause)
        return None

    def _fail_queued(self, exc: BaseException) -> None:
        for st in list(self._active.values()):
            while st.queue:
                b = st.queue.popleft()
                if b.sequence >= 0:
                    self._release_numbered(b)
                self.acc.completed(b, error=exc)
        self._active.clear()

    def _set_fatal(self, exc: BaseException) -> None:
        if self.fatal is None:
            log.error("the idempotent producer cannot send any more: %s", exc)
            self.fatal = exc
        self.wake()
