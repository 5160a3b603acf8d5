"""Background work on the logs: retention, compaction, and time-based flushing.

Theory of operation
-------------------
Three asyncio tasks on the broker's event loop, each waking on its own
interval:

* retention, every ``retention_check_interval_ms``: decides and renames on
  the loop thread (``TopicStore.mark_expired_segments``; renames are quick),
  then unlinks the ``.deleted`` files in a worker thread, since unlinking a
  large file can take a while;
* the cleaner, every ``log_cleaner_interval_ms``: for each compacted log with
  closed segments not yet cleaned, ``LogCleaner.prepare`` reads and writes in
  a worker thread (one log at a time, paced by
  ``log_cleaner_io_max_bytes_per_second``), then ``commit`` swaps the
  segments in on the loop thread, where every other change to a segment list
  happens, and the old files are unlinked in a worker thread again;
* flush.ms: logs whose oldest unflushed append is older than their topic's
  ``flush_interval_ms`` get an fsync through the group-commit flusher. The
  task looks every ``min(1 s, smallest flush_interval_ms in use)``, at least
  every 10 ms, so data is flushed within flush.ms plus that tick.

(flush.messages is enforced on the produce path; see ``Handlers.produce``.)

A failing pass is logged and tried again at the next interval; the broker
keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from .config import BrokerConfig
from .flusher import GroupCommitFlusher
from .storage import TopicStore, fsio
from .storage.cleaner import CleaningStopped, LogCleaner

log = logging.getLogger("ferry.broker.maintenance")

FLUSH_TICK_MAX_MS = 1000
FLUSH_TICK_MIN_MS = 10


class Maintenance:
    def __init__(
        self,
        config: BrokerConfig,
        store: TopicStore,
        flusher: GroupCommitFlusher,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.store = store
        self.flusher = flusher
        self.clock = clock
        self._stopping = threading.Event()
        rate = config.log_cleaner_io_max_bytes_per_second
        self.cleaner = LogCleaner(
            dedupe_buffer_size=config.log_cleaner_dedupe_buffer_size,
            io_max_bytes_per_second=rate if rate > 0 else None,
            sleep=self._interruptible_sleep,
            should_stop=self._stopping.is_set,
        )
        # Two threads: unlinking retention's files need not wait behind a long cleaning.
        self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="ferry-maintenance")
        self._tasks: list[asyncio.Task] = []

    def _interruptible_sleep(self, seconds: float) -> None:
        self._stopping.wait(seconds)

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start the three tasks on the running loop."""
        self._tasks = [
            asyncio.ensure_future(self._every(self.config.retention_check_interval_ms, self.run_retention)),
            asyncio.ensure_future(self._every(self.config.log_cleaner_interval_ms, self.run_cleaner)),
            asyncio.ensure_future(self._flush_loop()),
        ]

    async def stop(self) -> None:
        """Stop the tasks; a cleaning in progress is abandoned (its files go at the next open)."""
        self._stopping.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        self._tasks = []
        await asyncio.get_running_loop().run_in_executor(None, self._executor.shutdown, True)

    async def _every(self, interval_ms: int, job) -> None:
        while True:
            await asyncio.sleep(interval_ms / 1000)
            try:
                await job()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s failed; trying again in %d ms", job.__name__, interval_ms)

    async def _in_thread(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    # ------------------------------------------------------------ the jobs

    async def run_retention(self) -> int:
        """One retention pass over every log; returns the segments deleted."""
        count, files = self.store.mark_expired_segments(self._now_ms())
        if files:
            await self._in_thread(fsio.remove_files, files)
        return count

    async def run_cleaner(self) -> int:
        """One cleaning pass over every compacted log that needs it; returns the logs cleaned."""
        cleaned = 0
        for plog in self.store.logs():
            if self._stopping.is_set():
                break
            if not self.cleaner.needs_cleaning(plog):
                continue
            try:
                plan = await self._in_thread(self.cleaner.prepare, plog, self._now_ms())
            except CleaningStopped:
                break
            except Exception as exc:
                log.error("%s: cleaning failed: %s", plog.directory, exc)
                continue
            if plan is None:
                continue
            try:
                files = self.cleaner.commit(plan)  # on the loop thread, like every segment change
            except Exception as exc:
                log.error("%s: swapping in the cleaned segments failed: %s", plog.directory, exc)
                continue
            if files:
                await self._in_thread(fsio.remove_files, files)
            cleaned += 1
        return cleaned

    def due_for_flush(self) -> list:
        """Logs with flush.ms set whose oldest unflushed append is at least that old."""
        now = self._now_ms()
        due = []
        for plog in self.store.logs():
            limit = plog.config.flush_interval_ms
            if limit < 0:
                continue
            oldest = plog.oldest_unflushed_ms
            if oldest is not None and now - oldest >= limit:
                due.append(plog)
        return due

    async def run_flush(self) -> int:
        """fsync the logs due under flush.ms; returns how many."""
        due = self.due_for_flush()
        if due:
            await self.flusher.sync(due)
        return len(due)

    def flush_tick_ms(self) -> int:
        intervals = [
            plog.config.flush_interval_ms for plog in self.store.logs() if plog.config.flush_interval_ms >= 0
        ]
        if not intervals:
            return FLUSH_TICK_MAX_MS
        return max(FLUSH_TICK_MIN_MS, min(FLUSH_TICK_MAX_MS, min(intervals)))

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.flush_tick_ms() / 1000)
            try:
                await self.run_flush()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.error("flush.ms flush failed: %s", exc)
