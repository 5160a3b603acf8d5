"""Idempotent delivery: each partition's sequence numbers, and producer ids.

Theory of operation
-------------------
Idempotence (``idempotent=True``). At start the sender asks a broker for a
producer id and epoch (InitProducerId). A batch is given its partition's next
sequence number when it is first sent (``build_batch(producer_id=,
producer_epoch=, base_sequence=)``; sequences wrap at 2^31), and a retry
re-sends exactly the same bytes. A partition numbers at most ``max_in_flight``
batches (at most five) from its oldest unacknowledged one on (``unacked``), so
the broker, which remembers the last five batches of each producer and
partition, recognises any retry of one that was already written and answers
it with the original offsets and no error. The broker refuses a batch whose
sequence does not follow the last one it wrote (OUT_OF_ORDER_SEQUENCE_NUMBER);
so when one batch fails, the later batches of its partition that were in
flight are refused too, and with them retried from the front, in sequence
order, after the earlier one, nothing is ever reordered or written twice.
That refusal (or UNKNOWN_PRODUCER_ID) is retriable while an earlier batch of
the partition is unacknowledged.

When the sequence chain of a partition breaks (a numbered batch failed for
good: retries or delivery_timeout_ms ran out, or a non-retriable error; or the
broker refuses the *first* unacknowledged batch as out of order or from an
unknown producer, i.e. it lost data or state it had acknowledged), the
partition is *reset* before it sends again: once none of its attempts is on
the wire, batches that may already have been written (an attempt ended
without an answer) are first re-sent as they are until the broker says
whether it has them (DUPLICATE: delivered; out of order: not written); then
the producer moves to a new epoch (InitProducerId with its current id and
epoch, once for all the partitions that need it; if the broker refuses the
bump, e.g. because the answer to an earlier try was lost, a new producer id
at epoch 0 does as well, and so does one once the epoch reaches MAX_EPOCH)
and the partition's remaining batches, none of them in the log, are
renumbered from sequence 0 under it. A batch that may have been written and
cannot be asked about any more (its partition refuses the old epoch) fails
rather than risk a duplicate. Other partitions keep their epoch until they
have no unacknowledged batch, then start at sequence 0 under the new one (the
broker fences epochs per partition, as Kafka does).

INVALID_PRODUCER_EPOCH for the current epoch, or PRODUCER_FENCED, means
another producer took over the id: that is fatal. Every batch still
incomplete, and every later one, fails with the error; close the producer.

This module holds the state and the InitProducerId exchange: a
``PartitionQueue`` per partition, and ``init_producer_id``. The ``Sender``
(sender.py) decides when a batch is numbered, when a partition is reset and
when the epoch is bumped, and owns the producer's current id and epoch.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Callable

from protocol.errors import ApiError, ErrorCode, NetworkError, UnsupportedVersionError
from protocol.messages import InitProducerIdRequest

from .cluster import Cluster
from .errors import NoBrokersAvailable
from .producer_batch import ProducerBatch

log = logging.getLogger(__name__)

SEQUENCE_MOD = 1 << 31
MAX_EPOCH = (1 << 15) - 1
NEVER = float("inf")


class PartitionQueue:
    """One partition's batches on their way: queued, on the wire, unacknowledged."""

    __slots__ = ("tp", "queue", "inflight", "unacked", "stalled", "retry_at", "reset",
                 "resolved_by", "epoch_refused", "producer_id", "producer_epoch", "next_seq",
                 "numbered")

    def __init__(self, tp: tuple[str, int]) -> None:
        self.tp = tp
        self.queue: deque[ProducerBatch] = deque()  # not on the wire; numbered ones first, in order
        self.inflight = 0  # attempts on the wire
        self.unacked: deque[ProducerBatch] = deque()  # numbered, not completed, in sequence order
        self.stalled = False  # an attempt failed: resend from the front once nothing is in flight
        self.retry_at = 0.0
        self.reset = False  # the sequence chain broke: renumber under a new epoch first
        # a batch numbered after this ordinal being acknowledged shows the chain
        # is whole after all (the batch that failed had been written)
        self.resolved_by = NEVER
        self.epoch_refused = False  # the broker refused this partition's epoch as stale
        self.producer_id = -1  # identity of the numbered batches
        self.producer_epoch = -1
        self.next_seq = 0
        self.numbered = 0  # batches numbered so far: the next one's ordinal

    def number(self, b: ProducerBatch) -> None:
        """Give ``b`` the next sequence under the partition's producer id and epoch."""
        seq = self.next_seq
        b.set_sequence(self.producer_id, self.producer_epoch, seq)
        b.ordinal = self.numbered
        self.numbered += 1
        self.next_seq = (seq + len(b.values)) % SEQUENCE_MOD
        self.unacked.append(b)

    def broken(self, resolved_by: float) -> None:
        """The chain broke; an ack of a batch numbered after ``resolved_by`` mends it."""
        if not self.reset:
            self.reset = True
            self.resolved_by = resolved_by
        else:
            self.resolved_by = max(self.resolved_by, resolved_by)

    def renumber(self, producer_id: int, producer_epoch: int) -> None:
        """Number the queued batches again from sequence 0 under a new id or epoch.

        Only once nothing of the partition is on the wire and no queued batch
        may be in the log: the broker then has none of them under any sequence.
        """
        self.producer_id, self.producer_epoch, self.next_seq = producer_id, producer_epoch, 0
        self.unacked.clear()
        for b in self.queue:
            if b.sequence < 0:
                break
            b.maybe_written = False
            self.number(b)
        self.reset = False
        self.resolved_by = NEVER
        self.epoch_refused = False
        log.info("%s/%d: sequences restart at 0 under producer %d epoch %d",
                 self.tp[0], self.tp[1], producer_id, producer_epoch)


async def init_producer_id(
    cluster: Cluster, producer_id: int, epoch: int, *, timeout: float, retry_backoff: float,
    stopped: Callable[[], bool], retrying: Callable[[BaseException], None],
) -> tuple[int, int] | None:
    """InitProducerId until a broker answers: the (producer id, epoch) it gives.

    ``producer_id`` and ``epoch`` -1 ask for a new id; the current ones ask for
    a bump of the epoch. ``retrying(exc)`` hears of every failure that is tried
    again after ``retry_backoff`` seconds. None if ``stopped()`` before an
    answer. Raises UnsupportedVersionError if the broker has no idempotent
    producers, and any other error that trying again would not cure.
    """
    if epoch >= MAX_EPOCH:
        producer_id = epoch = -1
    while not stopped():
        req = InitProducerIdRequest(producer_id=producer_id, producer_epoch=epoch)
        try:
            resp = await cluster.send(None, req, timeout)
            if resp.error_code:
                raise ApiError.from_code(resp.error_code)
        except (asyncio.CancelledError, UnsupportedVersionError):
            raise
        except Exception as exc:
            code = exc.code if isinstance(exc, ApiError) else None
            if producer_id >= 0 and code in (ErrorCode.INVALID_PRODUCER_ID_MAPPING,
                                             ErrorCode.PRODUCER_FENCED,
                                             ErrorCode.INVALID_PRODUCER_EPOCH):
                # The broker forgot the id, or an earlier try of this bump was
                # answered and the answer lost (so this epoch is now stale).
                # Without a transactional id nobody else holds the id: a new
                # one is as good, and partitions move to it at sequence 0.
                log.info("bumping producer %d epoch %d failed (%s): asking for a new id",
                         producer_id, epoch, exc)
                producer_id = epoch = -1
                continue
            if not (isinstance(exc, (NoBrokersAvailable, NetworkError))
                    or getattr(exc, "retriable", False)):
                raise
            retrying(exc)
            log.debug("InitProducerId failed, retrying: %s", exc)
            await asyncio.sleep(retry_backoff)
            continue
        return resp.producer_id, resp.producer_epoch
    return None
