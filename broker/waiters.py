"""Long-poll support: fetches wait for "the log end offset advanced" on partitions.

A fetch that found fewer than ``min_bytes`` *first* registers a watch on every
partition it reads and only then reads again, so an append that lands between
the read and the wait can never be missed. ``notify`` (called after every
append) wakes every watch of that partition. Watches are removed when the
fetch ends, so an idle broker holds nothing.

A parked fetch is a ``LongPoll``. Responses on a connection go out in request
order, so anything the client sends after a parked fetch would wait for it;
the server therefore cuts the parked fetch short (``cut_short``) when the next
request arrives on its connection: it answers at once with what there is.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable, Coroutine, Hashable, Iterable


class Watch:
    """A registration on some partitions; ``future`` completes on the first append."""

    __slots__ = ("keys", "future", "_owner")

    def __init__(self, owner: "LogWaiters", keys: list, future: asyncio.Future) -> None:
        self._owner = owner
        self.keys = keys
        self.future = future

    async def wait(self, timeout: float) -> bool:
        """True if an append woke it, False after ``timeout`` seconds."""
        future = self.future
        if future.done():
            return not future.cancelled() and future.result()
        # The future itself, with a timer resolving it False: waking the
        # fetch is then one step of the loop (wait_for over a shield took
        # three, each a pass of the event loop between an append and the
        # answer to a parked fetch).
        timer = future.get_loop().call_later(timeout, _expire, future)
        try:
            return await future
        finally:
            timer.cancel()

    def close(self) -> None:
        self._owner._remove(self)


def _expire(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(False)


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
                    w.future.set_result(True)

    def notify_all(self) -> None:
        for key in list(self._watches):
            self.notify(key)

    def __len__(self) -> int:
        return sum(len(s) for s in self._watches.values())


class LongPoll:
    """An awaitable fetch parked until data arrives; ``cut_short()`` makes it answer now.

    ``run(poll)`` is the coroutine function doing the waiting: it keeps the
    watch it currently waits on in ``poll.watch`` and stops when ``poll.cut``.
    """

    __slots__ = ("watch", "cut", "_coro")

    def __init__(self, watch: Watch, run: Callable[["LongPoll"], Coroutine[Any, Any, Any]]) -> None:
        self.watch = watch
        self.cut = False
        self._coro = run(self)

    def __await__(self):
        return self._coro.__await__()

    def cut_short(self) -> None:
        self.cut = True
        future = self.watch.future
        if not future.done():
            future.set_result(True)
