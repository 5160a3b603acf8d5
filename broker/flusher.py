"""Group commit: one fsync round answers every acks=all request waiting for it.

Theory of operation
-------------------
A produce with acks=all appends to the logs (page cache), then calls
``await flusher.sync(logs)``. The flusher keeps the set of logs dirtied since
the last round and the futures waiting on them. If no round is running, one
starts at once in a worker thread and fsyncs every dirty log; requests that
arrive meanwhile join the *next* round, which starts as soon as the current
one ends and covers all of them. So N concurrent producers cost about two
fsyncs, not N, and a lone producer pays exactly one.

The worker thread only calls ``log.flush()``; the storage engine makes that
safe alongside appends on the event loop thread.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable, Protocol

log = logging.getLogger("ferry.broker.flusher")


class Flushable(Protocol):
    def flush(self) -> None: ...


class GroupCommitFlusher:
    def __init__(self, executor: ThreadPoolExecutor | None = None) -> None:
        self._executor = executor or ThreadPoolExecutor(max_workers=2, thread_name_prefix="ferry-fsync")
        self._dirty: dict[int, Flushable] = {}
        self._waiting: list[asyncio.Future] = []
        self._running = False
        self.rounds = 0  # fsync rounds done, for tests and metrics

    async def sync(self, logs: Iterable[Flushable]) -> None:
        """Return once every log in ``logs`` was fsynced after this call began.

        Raises the storage error of a failed fsync.
        """
        for lg in logs:
            self._dirty[id(lg)] = lg
        fut = asyncio.get_running_loop().create_future()
        self._waiting.append(fut)
        if not self._running:
            self._running = True
            asyncio.get_running_loop().create_task(self._run())
        await fut

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._waiting:
                logs = list(self._dirty.values())
                waiting = self._waiting
                self._dirty = {}
                self._waiting = []
                try:
                    await loop.run_in_executor(self._executor, _flush_all, logs)
                except Exception as exc:  # fail this round's waiters, keep serving
                    log.error("fsync failed: %s", exc)
                    for fut in waiting:
                        if not fut.done():
                            fut.set_exception(exc)
                    continue
                self.rounds += 1
                for fut in waiting:
                    if not fut.done():
                        fut.set_result(None)
        finally:
            self._running = False

    def close(self) -> None:
        self._executor.shutdown(wait=True)


def _flush_all(logs: list[Flushable]) -> None:
    for lg in logs:
        lg.flush()
