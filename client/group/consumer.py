"""The group half of ``AsyncConsumer``: commits, committed offsets, rebalance steps.

``AsyncConsumer`` mixes ``AsyncGroupMixin`` in; the blocking ``Consumer``
reuses its helpers but runs the rebalance steps in the application's thread
(see ``listener``).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import Callable, Mapping

from ..errors import IllegalStateError
from ..structs import OffsetAndMetadata, TopicPartition
from .coordinator import ConsumerCoordinator
from .listener import ConsumerRebalanceListener, Step

log = logging.getLogger("client.group")


def offsets_arg(offsets: Mapping) -> dict[TopicPartition, OffsetAndMetadata]:
    """``{tp: offset | OffsetAndMetadata | (offset, metadata)}`` as OffsetAndMetadata values.

    Raises ValueError for a negative or non-integer offset.
    """
    out = {}
    for tp, value in offsets.items():
        if isinstance(value, int) and not isinstance(value, bool):
            om = OffsetAndMetadata(value, "")
        else:
            offset, metadata = value[0], (value[1] if len(value) > 1 else "")
            om = OffsetAndMetadata(offset, metadata or "")
        if not isinstance(om.offset, int) or isinstance(om.offset, bool) or om.offset < 0:
            raise ValueError(f"offset for {tp} must be a non-negative int, not {om.offset!r}")
        out[TopicPartition(*tp)] = om
    return out


def check_listener(listener) -> None:
    if listener is None:
        return
    if not any(callable(getattr(listener, name, None))
               for name in ("on_partitions_revoked", "on_partitions_assigned")):
        raise TypeError("listener must have on_partitions_revoked and on_partitions_assigned "
                        "(subclass ConsumerRebalanceListener)")


def listener_method(listener, name: str) -> Callable | None:
    if listener is None:
        return None
    fn = getattr(listener, name, None)
    if fn is None and name == "on_partitions_lost":
        fn = getattr(listener, "on_partitions_revoked", None)
    return fn


class AsyncGroupMixin:
    """Group methods of AsyncConsumer (needs ``_coordinator``, ``_steps``, ``_listener``)."""

    _coordinator: ConsumerCoordinator | None
    _listener: ConsumerRebalanceListener | None
    group_id: str | None

    def _require_group(self) -> ConsumerCoordinator:
        if self.group_id is None:
            raise IllegalStateError("committing needs a group_id: this consumer has none")
        if self._coordinator is None:
            raise IllegalStateError("call await start() first")
        if self._closed:
            raise IllegalStateError("the consumer is closed")
        return self._coordinator

    async def commit(self, offsets: Mapping | None = None) -> None:
        """Commit ``offsets`` ({tp: offset or OffsetAndMetadata}), by default the
        position of every assigned partition, and wait for the broker's answer.

        Raises CommitFailedError if the group rebalanced and this member is no
        longer in its generation; IllegalStateError without a group_id.
        """
        coord = self._require_group()
        await coord.commit(coord.positions() if offsets is None else offsets_arg(offsets))

    def commit_async(self, offsets: Mapping | None = None,
                     callback: Callable[[dict, BaseException | None], None] | None = None) -> asyncio.Future:
        """Start a commit (see ``commit``) and return its future at once.

        ``callback(offsets, exception_or_None)`` is called when it completes.
        """
        coord = self._require_group()
        offsets = coord.positions() if offsets is None else offsets_arg(offsets)
        task = asyncio.ensure_future(coord.commit(offsets))

        def done(t: asyncio.Future) -> None:
            exc = None if t.cancelled() else t.exception()
            if callback is not None:
                try:
                    callback(offsets, exc)
                except Exception:
                    log.exception("commit_async callback failed")
            elif exc is not None:
                log.warning("group %s: commit_async failed: %s", self.group_id, exc)

        task.add_done_callback(done)
        return task

    async def committed(self, partition: TopicPartition, metadata: bool = False):
        """The group's committed offset of ``partition`` (int), or None if there is none.

        ``metadata=True`` returns the OffsetAndMetadata instead.
        """
        found = await self._require_group().fetch_committed([TopicPartition(*partition)])
        om = found.get(TopicPartition(*partition))
        if om is None or metadata:
            return om
        return om.offset

    # ------------------------------------------------------------ rebalance steps

    def _activity(self) -> object:
        """Changes while the application works through the current chunk (see max_poll_interval_ms)."""
        cur = self._buffer.current
        if cur is None:
            return None
        it = cur.iterator
        return id(cur), (it.__length_hint__() if it is not None else cur.pos)

    def _polled(self) -> None:
        coord = self._coordinator
        if coord is not None:
            coord.polled()
            if coord.fatal is not None:
                raise coord.fatal

    def _waiting(self, waiting: bool) -> None:
        """The application blocks in a poll, waiting for records: that counts as polling."""
        if self._coordinator is not None:
            self._coordinator.app_waiting = waiting
            if not waiting:
                self._coordinator.polled()

    async def _run_steps(self) -> None:
        """Run the rebalance steps waiting for this poll (in the loop)."""
        while (step := self._steps.pop()) is not None:
            try:
                await self._run_step(step)
            finally:
                step.finish()

    async def _run_step(self, step: Step) -> None:
        coord = self._coordinator
        if step.kind == "callback":
            step.callback()
            return
        parts = set(step.partitions)
        if step.kind == "revoke":
            lost = step.generation != coord.generation
            if step.commit and not lost:
                await coord.auto_commit(step.partitions)
            await self._call_listener("on_partitions_lost" if lost else "on_partitions_revoked", parts)
            coord.drop(step.partitions)
        elif step.kind == "assign":
            await self._call_listener("on_partitions_assigned", parts)
        elif step.kind == "lost":
            await self._call_listener("on_partitions_lost", parts)

    async def _call_listener(self, name: str, partitions: set[TopicPartition]) -> None:
        fn = listener_method(self._listener, name)
        if fn is None:
            return
        try:
            result = fn(partitions)
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("rebalance listener %s failed", name)

    async def _release_group(self) -> None:
        """At close: pending steps, then commit (auto-commit) and revoke what is assigned."""
        coord = self._coordinator
        if self._group_released:
            return
        self._group_released = True
        await coord.stop_tasks()
        await self._run_steps()
        if coord.managed and coord.generation >= 0:
            held = frozenset(self._subs.assignment)
            if coord.settings.enable_auto_commit:
                await coord.auto_commit()
            if held:
                await self._call_listener("on_partitions_revoked", set(held))
        elif not coord.managed and coord.settings.enable_auto_commit and self._subs.assignment:
            await coord.auto_commit()

    # ------------------------------------------------------------ hand-assigned partitions

    def _assigned_by_hand(self, new: set[TopicPartition]) -> None:
        """With a group id, hand-assigned partitions start at the group's committed offsets."""
        if self._group_settings is None or not new:
            return
        for tp in new:
            st = self._subs.assignment[tp]
            st.reset = None  # neither fetchable nor reset until the committed offset is known
        self._awaiting_committed |= new
        if self._coordinator is not None:
            self._look_up_committed(new)

    def _look_up_committed(self, tps: set[TopicPartition]) -> None:
        """Start the task that positions ``tps`` at their committed offsets."""
        task = asyncio.ensure_future(self._start_from_committed(tps))
        for tp in tps:
            self._committed_lookups[tp] = task

    async def _committed_known(self, tp: TopicPartition) -> None:
        """Wait for the lookup of ``tp``'s committed offset, if one is under way."""
        task = self._committed_lookups.get(tp)
        if task is not None and not task.done():
            await asyncio.shield(task)

    async def _start_from_committed(self, tps: set[TopicPartition]) -> None:
        try:
            found = await self._coordinator.fetch_committed(tps)
        except Exception as exc:
            log.warning("group %s: no committed offsets (%s): using auto_offset_reset", self.group_id, exc)
            found = {}
        for tp in tps:
            self._awaiting_committed.discard(tp)
            if self._committed_lookups.get(tp) is asyncio.current_task():
                del self._committed_lookups[tp]
            st = self._subs.assignment.get(tp)
            if st is None or st.position is not None or st.reset is not None:
                continue  # unassigned or sought meanwhile
            om = found.get(tp)
            if om is not None:
                st.seek(om.offset)
            elif self._subs.default_reset is not None:
                st.request_reset(self._subs.default_reset)
        self._changed()
