"""Consumer groups, the client side: how partitions are split among members.

``assignors`` and ``sticky`` split partitions among members, in the byte
formats of ``codec``.
"""

from .assignors import AbstractPartitionAssignor, RangePartitionAssignor, RoundRobinPartitionAssignor
from .codec import Assignment, Subscription
from .sticky import CooperativeStickyAssignor, StickyPartitionAssignor

__all__ = [
    "AbstractPartitionAssignor",
    "Assignment",
    "CooperativeStickyAssignor",
    "RangePartitionAssignor",
    "RoundRobinPartitionAssignor",
    "StickyPartitionAssignor",
    "Subscription",
]
