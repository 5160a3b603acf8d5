"""Consumer groups, the client side: membership, assignors, committed offsets.

``coordinator`` runs a consumer's membership of its group (join, sync,
heartbeats, commits) over ``link``'s connections to the group coordinator;
``assignors`` and ``sticky`` split partitions among members, in the byte
formats of ``codec``; ``listener`` holds the rebalance listener and the steps
a rebalance runs on the application's side; ``consumer`` is the group half of
AsyncConsumer, and ``admin`` the group half of the admin clients.
"""

from .assignors import AbstractPartitionAssignor, RangePartitionAssignor, RoundRobinPartitionAssignor
from .codec import Assignment, Subscription
from .listener import ConsumerRebalanceListener
from .sticky import CooperativeStickyAssignor, StickyPartitionAssignor

__all__ = [
    "AbstractPartitionAssignor",
    "Assignment",
    "ConsumerRebalanceListener",
    "CooperativeStickyAssignor",
    "RangePartitionAssignor",
    "RoundRobinPartitionAssignor",
    "StickyPartitionAssignor",
    "Subscription",
]
