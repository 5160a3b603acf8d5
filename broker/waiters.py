"""Long-poll support: fetches wait for "the log end offset advanced" on partitions.

A fetch that found fewer than ``min_bytes`` *first* registers a watch on every
partition it reads and only then reads again, so an append that lands between
the read and the wait can never be missed. ``notify`` (called after every
append) wakes every watch of that partition. Watches are removed when the
fetch ends, so an idle broker holds nothing.
"""

from __future__ import annotations

import asyncio
from typing import Hashable, Iterable


class Watch:
    """A registration on some partitions; ``future`` completes on the first append."""

    __slots__ = ("keys", "future", "_owner")

    def __init__(self, owner: "LogWaiters", keys: list, future: asyncio.Future) -> None:
        self._owner = owner
        self.keys = keys
        self.future = future

    async def wait(self, timeout: float) -> bool:
        """True if an append woke it, False after ``timeout`` seconds."""
        if self.future.done():
            return True
        try:
            await asyncio.wait_for(asyncio.shield(self.future), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    def close(self) -> None:
        self._owner._remove(self)


class LogWaiters:
    def __init__(self) -> None:
        self._watches: dict[Hashable, set[Watch]] = {}

    def watch(self, keys: Iterable[Hashable]) -> Watch:
        """Register interest in ``keys`` now (synchronously). Close it when done."""
        w = Watch(self, list(keys), asyncio.get_running_loop().create_future())
        for key in w.keys:
            self._watches.setdefault(key, set()).add(w)
        return w

    def _remove(self, w: Watch) -> None:
        for key in w.keys:
            s = self._watches.get(key)
            if s is not None:
                s.discard(w)
                if not s:
                    del self._watches[key]

    def notify(self, key: Hashable) -> None:
        """Wake every fetch watching ``key``. Never blocks."""
        watches = self._watches.get(key)
        if watches:
            for w in watches:
                if not w.future.done():
                    w.future.set_result(None)

    def notify_all(self) -> None:
        for key in list(self._watches):
            self.notify(key)

    def __len__(self) -> int:
        return sum(len(s) for s in self._watches.values())
