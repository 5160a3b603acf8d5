"""Rebalance listeners, and the steps of a rebalance that run on the application's side.

A rebalance is driven from the consumer's event loop, but what it does to
the application happens where the application consumes: inside ``poll()``,
``getmany()`` or iteration (and ``close()``), as in Kafka. The coordinator
posts a ``Step`` to the ``StepQueue`` and, when it must, awaits it:

* ``revoke``: commit the positions of the partitions (commit-on-revoke, when
  auto-commit is on), call ``on_partitions_revoked``, then drop them. Run
  between two polls, so a record the application got before was processed
  and, if it commits after processing, committed; no record of these
  partitions is handed out after it.
* ``assign``: call ``on_partitions_assigned`` (the partitions are already
  assigned and being fetched; records are handed out only after the step).
* ``lost``: the member was evicted (or its poll interval ran out), so the
  partitions may already belong to another member: they were dropped at
  once, and ``on_partitions_lost`` is told. No commit is possible.
* ``callback``: a ``commit_async`` callback of the blocking consumer.

The blocking consumer runs steps in the application's thread, so a listener
may call ``consumer.commit()`` or ``consumer.seek()``; the asyncio consumer
runs them in the loop and awaits listener methods that are coroutines.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import threading
from typing import Any, Callable

from ..structs import TopicPartition

log = logging.getLogger("client.group")


class ConsumerRebalanceListener:
    """Called when the group gives or takes partitions (kafka-python's shape).

    Subclass it and pass it to ``subscribe(topics, listener=...)``. With the
    asyncio consumer the methods may be coroutines.
    """

    def on_partitions_revoked(self, revoked: set[TopicPartition]) -> Any:
        """The partitions are about to go: commit what was processed, flush state.

        With an eager assignor every partition is revoked before each
        rebalance; with cooperative-sticky only those moving to another member.
        """

    def on_partitions_assigned(self, assigned: set[TopicPartition]) -> Any:
        """The partitions were added to the assignment (an empty set after a
        rebalance that added nothing). A seek here sets where reading starts."""

    def on_partitions_lost(self, lost: set[TopicPartition]) -> Any:
        """The partitions were taken without a chance to commit (this member was
        evicted): another member may own them already. Default: on_partitions_revoked."""
        return self.on_partitions_revoked(lost)


@dataclasses.dataclass(eq=False)
class Step:
    kind: str  # "revoke", "assign", "lost" or "callback"
    partitions: frozenset[TopicPartition] = frozenset()
    generation: int = -1
    commit: bool = False  # revoke: commit the positions first
    callback: Callable[[], None] | None = None
    future: asyncio.Future | None = None
    loop: asyncio.AbstractEventLoop | None = None

    def finish(self, exc: BaseException | None = None) -> None:
        """Resolve the step's future (from any thread)."""
        fut, loop = self.future, self.loop
        if fut is None or loop is None:
            return

        def resolve() -> None:
            if not fut.done():
                if exc is None:
                    fut.set_result(None)
                else:
                    fut.set_exception(exc)

        if _in_loop(loop):
            resolve()
        elif not loop.is_closed():
            loop.call_soon_threadsafe(resolve)


def _in_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


class StepQueue:
    """Steps posted in the loop, taken by the consuming side (any thread)."""

    def __init__(self, wake: Callable[[], None]) -> None:
        self._steps: collections.deque[Step] = collections.deque()
        self._wake = wake
        self._lock = threading.Lock()  # one consumer at a time, whichever thread it is in

    def post(self, step: Step) -> asyncio.Future:
        """Queue ``step``; returns the future resolved once it has run. Call in the loop."""
        step.loop = asyncio.get_running_loop()
        step.future = step.loop.create_future()
        self._steps.append(step)
        self._wake()
        return step.future

    def __bool__(self) -> bool:
        return bool(self._steps)

    def pop(self) -> Step | None:
        try:
            return self._steps.popleft()
        except IndexError:
            return None

    @property
    def lock(self) -> threading.Lock:
        return self._lock

    def cancel_all(self) -> None:
        """Drop every queued step, cancelling its future (the consumer is closing)."""
        while (step := self.pop()) is not None:
            fut, loop = step.future, step.loop
            if fut is not None and loop is not None and not loop.is_closed():
                if _in_loop(loop):
                    fut.cancel()
                else:
                    loop.call_soon_threadsafe(fut.cancel)
