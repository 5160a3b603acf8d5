"""The client's exceptions.

Errors the broker answers with an error code are the protocol's own classes
(``protocol.errors``, looked up with ``ApiError.for_code``); they are
re-exported here so ``from client.errors import MessageTooLargeError`` works.
This module adds what only the client can detect::

    FerryError
    └── ClientError
        ├── FerryTimeoutError     a bounded wait ran out (also a TimeoutError)
        ├── NoBrokersAvailable    no bootstrap or leader address could be reached
        ├── IllegalStateError     the call does not fit the object's state (closed, unassigned)
        ├── NoOffsetForPartitionError  auto_offset_reset="none" and no position
        └── CommitFailedError     the group rebalanced: this member may no longer own the partitions
"""

from __future__ import annotations

from protocol.errors import *  # noqa: F401,F403  (re-export the broker error classes)
from protocol.errors import FerryError


class ClientError(FerryError):
    """Base of the errors the client raises on its own."""


class FerryTimeoutError(ClientError, TimeoutError):
    """A bounded wait ran out: metadata, buffer memory, a flush or a delivery."""


KafkaTimeoutError = FerryTimeoutError


class NoBrokersAvailable(ClientError):
    """None of the addresses could be connected to within the timeout."""


class IllegalStateError(ClientError):
    """The call is not valid now, e.g. sending on a closed producer."""


class NoOffsetForPartitionError(ClientError):
    """The consumer has no position for a partition and auto_offset_reset is "none"."""


class CommitFailedError(ClientError):
    """A commit was refused because this member is not in the group's current
    generation: it was evicted (session or poll interval expired) or the
    partitions moved in a rebalance. Whatever it processed since its last
    commit will be processed again by the partitions' new owner."""
