"""Consumer groups: the group coordinator and committed offsets.

``group`` is one group's membership state machine, ``coordinator`` all groups
and the offset table (both synchronous, driven by an injected clock),
``offsets`` and ``offsets_topic`` the ``__consumer_offsets`` records and log,
and ``handlers`` the asyncio shell the broker plugs into its request table.
"""

from .coordinator import GroupConfig, GroupCoordinator
from .group import Group
from .member import Deferred, GroupState, Member
from .offsets import CommittedOffset, OffsetCache

__all__ = [
    "GroupConfig",
    "GroupCoordinator",
    "Group",
    "GroupState",
    "Deferred",
    "Member",
    "CommittedOffset",
    "OffsetCache",
]
