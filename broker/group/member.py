"""The pieces a group is made of: its states, its members, and answers given later.

Nothing here does I/O or knows about asyncio: a ``Deferred`` is how the state
machine hands a response back *later* (a JoinGroup answered when the
rebalance completes), and the asyncio shell turns it into a future.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, Callable

from protocol import group_messages as m


class GroupState(enum.Enum):
    """Kafka's group states; the value is the name DescribeGroups and ListGroups report."""

    EMPTY = "Empty"  # no members (offsets may still be committed)
    PREPARING_REBALANCE = "PreparingRebalance"  # waiting for the members to (re)join
    COMPLETING_REBALANCE = "CompletingRebalance"  # joined; waiting for the leader's assignment
    STABLE = "Stable"  # every member has its assignment
    DEAD = "Dead"  # no such group (reported for unknown or deleted groups)


class Deferred:
    """A response that the coordinator gives later, exactly once.

    ``done`` and ``result`` can be read at any time; ``on_done(fn)`` calls
    ``fn(result)`` at resolution (at once if already resolved). Callbacks run
    synchronously inside ``resolve`` and must not raise.
    """

    __slots__ = ("done", "result", "_callbacks")

    def __init__(self) -> None:
        self.done = False
        self.result: Any = None
        self._callbacks: list[Callable[[Any], None]] = []

    @classmethod
    def resolved(cls, result: Any) -> "Deferred":
        d = cls()
        d.resolve(result)
        return d

    def on_done(self, fn: Callable[[Any], None]) -> None:
        if self.done:
            fn(self.result)
        else:
            self._callbacks.append(fn)

    def resolve(self, result: Any) -> None:
        """Set the result and run the callbacks; a second call is ignored."""
        if self.done:
            return
        self.done = True
        self.result = result
        callbacks, self._callbacks = self._callbacks, []
        for fn in callbacks:
            fn(result)

    def __repr__(self) -> str:
        return f"<Deferred {'done: ' + repr(self.result) if self.done else 'pending'}>"


Protocols = tuple[m.JoinGroupProtocol, ...]


@dataclasses.dataclass(eq=False, slots=True)
class Member:
    """One member of a group, as the coordinator knows it.

    ``deadline`` (ms) is when the session expires without a heartbeat. A member
    with a JoinGroup or SyncGroup waiting (``join`` / ``sync``) is kept alive
    by that request and does not expire, as in Kafka.
    """

    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    session_timeout_ms: int
    rebalance_timeout_ms: int
    protocols: Protocols
    deadline: int
    assignment: bytes = b""
    join: Deferred | None = None
    sync: Deferred | None = None

    @property
    def kept_alive(self) -> bool:
        return self.join is not None or self.sync is not None

    def metadata_for(self, protocol: str | None) -> bytes:
        """The member's metadata for ``protocol`` (its first protocol's when None)."""
        for p in self.protocols:
            if protocol is None or p.name == protocol:
                return p.metadata
        return b""

    def touch(self, now: int) -> None:
        """A heartbeat (or any request proving liveness): restart the session."""
        self.deadline = now + self.session_timeout_ms
