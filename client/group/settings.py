"""A consumer group member's settings, and the states it goes through."""

from __future__ import annotations

import dataclasses
import enum


@dataclasses.dataclass(frozen=True)
class GroupSettings:
    """A consumer's group settings (kafka-python's names; see ``AsyncConsumer``)."""

    group_id: str
    group_instance_id: str | None = None
    session_timeout_ms: int = 45000
    heartbeat_interval_ms: int = 3000
    max_poll_interval_ms: int = 300000
    rebalance_timeout_ms: int | None = None  # None: max_poll_interval_ms
    enable_auto_commit: bool = True
    auto_commit_interval_ms: int = 5000

    def __post_init__(self) -> None:
        if not self.group_id:
            raise ValueError("group_id must be a non-empty string")
        for name in ("session_timeout_ms", "heartbeat_interval_ms", "max_poll_interval_ms",
                     "auto_commit_interval_ms"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.heartbeat_interval_ms >= self.session_timeout_ms:
            raise ValueError("heartbeat_interval_ms must be lower than session_timeout_ms")
        if self.rebalance_timeout_ms is not None and self.rebalance_timeout_ms <= 0:
            raise ValueError("rebalance_timeout_ms must be positive")

    @property
    def rebalance_ms(self) -> int:
        return self.rebalance_timeout_ms or self.max_poll_interval_ms


class MemberState(enum.Enum):
    UNJOINED = "unjoined"  # no generation: before the first join, or evicted
    JOINING = "joining"  # a JoinGroup or SyncGroup is in flight
    STABLE = "stable"  # in a generation, with its assignment
