"""Long polls: fetches parked until their partitions' logs grow.

A fetch that found fewer than ``min_bytes`` becomes a ``LongPoll``,
registered on every partition it reads before the handler returns (the loop
runs nothing in between, so no append can slip past it). ``notify`` (called
after every append) marks the polls of that partition woken, and
``run_woken`` then lets each read again: one that now has enough answers at
once, with no task or future between the append and the write of its
answer. The server ``hold``s the waiters while it handles a read and its
``release`` runs the woken polls, before that read's own answers go out (a
consumer's answer is the latency that counts end to end); a callback of the
loop does it for appends made anywhere else. A poll also answers when its ``max_wait_ms`` is up, when the
broker shuts down, and when cut short.

Responses on a connection go out in request order, so anything the client
sends after a parked fetch would wait for it; the server therefore cuts the
parked fetch short (``cut_short``) when the next request arrives on its
connection: it answers at once with what there is.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable, Hashable, Iterable

# read(final) -> the response, or None to keep waiting (never None when final)
Reader = Callable[[bool], Any]


class LongPoll:
    """A parked fetch. Future-like for the server: ``done``, ``result``, ``exception``.

    ``on_done`` (set by the server) is called, synchronously, when the answer
    is ready; the answer is whatever ``read`` returned.
    """

    __slots__ = ("keys", "on_done", "woken", "_owner", "_read", "_timer", "_done",
                 "_result", "_exception", "_cancelled")

    def __init__(self, owner: "LogWaiters", keys: list, read: Reader, timeout: float) -> None:
        self._owner = owner
        self.keys = keys
        self._read = read
        self.on_done: Callable[["LongPoll"], None] | None = None
        self.woken = False
        self._done = self._cancelled = False
        self._result = self._exception = None
        self._timer = asyncio.get_running_loop().call_later(timeout, self._answer, True)

    # ------------------------------------------------------------ future-like

    def done(self) -> bool:
        return self._done

    def cancelled(self) -> bool:
        return self._cancelled

    def result(self) -> Any:
        if self._exception is not None:
            raise self._exception
        return self._result

    def exception(self) -> BaseException | None:
        return self._exception

    def cancel(self) -> None:
        """The connection is gone: stop waiting, answer nothing."""
        if not self._done:
            self._cancelled = True
            self._end()

    # ------------------------------------------------------------ waking

    def cut_short(self) -> None:
        """Answer now with what there is."""
        self._answer(True)

    def _wake(self) -> None:
        """The log grew: answer if there is enough now, else keep waiting."""
        self.woken = False
        self._answer(False)

    def _answer(self, final: bool) -> None:
        """Read again; answer unless the read says to keep waiting (never when ``final``)."""
        if self._done:
            return
        try:
            response = self._read(final)
        except Exception as exc:
            self._exception = exc
        else:
            if response is None:
                return
            self._result = response
        self._end()

    def _end(self) -> None:
        self._done = True
        self._timer.cancel()
        self._owner._remove(self)
        if self.on_done is not None and not self._cancelled:
            self.on_done(self)


class LogWaiters:
    """The parked fetches by partition key, and the ones an append woke."""

    def __init__(self) -> None:
        self._polls: dict[Hashable, set[LongPoll]] = {}
        self._woken: list[LongPoll] = []
        self._holds = 0  # reads being handled: the last ``release`` runs the woken polls

    def park(self, keys: Iterable[Hashable], read: Reader, timeout: float) -> LongPoll:
        """A poll on ``keys``, registered now; it answers within ``timeout`` seconds."""
        poll = LongPoll(self, list(keys), read, timeout)
        for key in poll.keys:
            self._polls.setdefault(key, set()).add(poll)
        return poll

    def _remove(self, poll: LongPoll) -> None:
        for key in poll.keys:
            s = self._polls.get(key)
            if s is not None:
                s.discard(poll)
                if not s:
                    del self._polls[key]

    def notify(self, key: Hashable) -> None:
        """Wake every poll on ``key``: each reads again in the loop's next pass. Never blocks."""
        polls = self._polls.get(key)
        if polls:
            woken = self._woken
            if not woken and not self._holds:
                asyncio.get_running_loop().call_soon(self.run_woken)
            for poll in polls:
                if not poll.woken:
                    poll.woken = True
                    woken.append(poll)

    def hold(self) -> None:
        """Keep the polls woken from now on until ``release`` (a read is being handled)."""
        self._holds += 1

    def release(self) -> None:
        """End a ``hold``; the last one lets the woken polls read again now."""
        self._holds -= 1
        if not self._holds and self._woken:
            self.run_woken()

    def run_woken(self) -> None:
        """Let the polls an append woke read again."""
        woken, self._woken = self._woken, []
        for poll in woken:
            poll._wake()

    def notify_all(self) -> None:
        for key in list(self._polls):
            self.notify(key)

    def __len__(self) -> int:
        return sum(len(s) for s in self._polls.values())
