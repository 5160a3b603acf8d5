"""A group member's committed offsets: commits, auto-commits and OffsetFetch.

The offsets half of ``ConsumerCoordinator``; see ``coordinator`` for when a
commit is accepted and what CommitFailedError means.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Iterable, Mapping

from protocol.errors import ApiError, ErrorCode, NetworkError, RetriableError
from protocol.group_messages import OffsetCommitPartition, OffsetCommitRequest, OffsetFetchPartition, OffsetFetchRequest

from ..errors import CommitFailedError, FerryTimeoutError, NoBrokersAvailable
from ..structs import OffsetAndMetadata, TopicPartition
from .link import COORDINATOR_ERRORS
from .settings import MemberState

log = logging.getLogger("client.group")

GENERATION_ERRORS = frozenset({
    ErrorCode.ILLEGAL_GENERATION, ErrorCode.UNKNOWN_MEMBER_ID, ErrorCode.REBALANCE_IN_PROGRESS,
})


class Committing:
    """Offsets of ConsumerCoordinator (a mixin: the state lives there)."""

    async def _auto_commits(self) -> None:
        interval = self.settings.auto_commit_interval_ms / 1000
        while True:
            await asyncio.sleep(interval)
            await self.auto_commit()

    async def auto_commit(self, tps: Iterable[TopicPartition] | None = None) -> None:
        """Commit changed positions of ``tps`` (default: all assigned); failures are logged."""
        if self.managed and self.state is not MemberState.STABLE:
            return
        offsets = {tp: om for tp, om in self.positions(tps).items() if self._committed.get(tp) != om.offset}
        if not offsets:
            return
        try:
            await self.commit(offsets)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("group %s: auto-commit failed: %s", self.group_id, exc)

    async def commit(self, offsets: Mapping[TopicPartition, OffsetAndMetadata]) -> None:
        """Commit ``offsets``, as a member of the current generation if the group assigns partitions.

        Raises CommitFailedError if this member is not in the group's current
        generation (evicted, or never joined): the partitions may be another
        member's now. Raises the ApiError of other refusals (e.g.
        NonEmptyGroupError for a commit outside the group while it has members,
        OffsetMetadataTooLargeError), FerryTimeoutError after request_timeout_ms.
        """
        pending = dict(offsets)
        deadline = time.monotonic() + self._request_timeout
        last: BaseException | None = None
        while pending:
            if self.fatal is not None:
                raise self.fatal
            managed = self.managed
            generation, member_id = -1, ""
            if managed:
                await self._wait_stable(deadline)
                if self.state is not MemberState.STABLE or self.generation < 0:
                    raise CommitFailedError(
                        f"cannot commit: this consumer is not a member of group {self.group_id!r} right "
                        f"now (it was evicted or is rejoining); its partitions may have moved to another member"
                    )
                generation, member_id = self.generation, self.member_id
            request = OffsetCommitRequest(
                group_id=self.group_id, generation_id=generation, member_id=member_id,
                group_instance_id=self.instance_id if managed else None,
                partitions=tuple(OffsetCommitPartition(tp.topic, tp.partition, om.offset, om.metadata or "")
                                 for tp, om in sorted(pending.items())),
            )
            try:
                resp = await self.link.send(request)
            except (NetworkError, RetriableError, NoBrokersAvailable) as exc:
                last = exc
                resp = None
            errors: dict[TopicPartition, int] = {}
            for p in resp.partitions if resp is not None else ():
                tp = TopicPartition(p.topic, p.partition)
                if p.error_code:
                    errors[tp] = p.error_code
                elif tp in pending:
                    self._committed[tp] = pending.pop(tp).offset
            if not pending:
                return
            codes = set(errors.values())
            if ErrorCode.FENCED_INSTANCE_ID in codes:
                self._fail(ApiError.from_code(ErrorCode.FENCED_INSTANCE_ID,
                                              f"another consumer took group_instance_id {self.instance_id!r}"))
                raise self.fatal
            if codes & GENERATION_ERRORS and managed:
                if self.generation == generation and self.state is MemberState.STABLE:
                    if codes & {ErrorCode.ILLEGAL_GENERATION, ErrorCode.UNKNOWN_MEMBER_ID}:
                        self._lose("a commit was refused: its generation is over",
                                   reset_member=ErrorCode.UNKNOWN_MEMBER_ID in codes)
                        raise CommitFailedError(
                            f"commit failed: group {self.group_id!r} has rebalanced and this member is no "
                            f"longer in its generation; the partitions may have moved to another member"
                        )
                # a rebalance this member takes part in: wait for it, keep what it still holds
                await self._wait_stable(deadline)
                gone = [tp for tp in pending if tp not in self.subs.assignment]
                if gone:
                    raise CommitFailedError(
                        f"commit failed: {', '.join(f'{t}/{p}' for t, p in sorted(gone))} moved to "
                        f"another member in a rebalance"
                    )
            elif codes - set(COORDINATOR_ERRORS) - {ErrorCode.REBALANCE_IN_PROGRESS}:
                tp, code = next((tp, c) for tp, c in sorted(errors.items()) if c not in COORDINATOR_ERRORS)
                cls = ApiError.for_code(code)
                raise cls(f"commit of {tp.topic}/{tp.partition} for group {self.group_id!r}: {cls.description}")
            elif codes & COORDINATOR_ERRORS:
                self.link.mark_unknown("OffsetCommit: the coordinator moved")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise FerryTimeoutError(f"commit for group {self.group_id!r} did not succeed within "
                                        f"{self._request_timeout * 1000:.0f} ms: {last}")
            if resp is None or codes & COORDINATOR_ERRORS:
                await asyncio.sleep(min(self._backoff, remaining))

    async def _wait_stable(self, deadline: float) -> None:
        if self.state is not MemberState.JOINING:
            return
        try:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                await self._stable.wait()
        except TimeoutError:
            raise CommitFailedError(f"commit failed: group {self.group_id!r} is still rebalancing") from None

    async def fetch_committed(self, tps: Iterable[TopicPartition]) -> dict[TopicPartition, OffsetAndMetadata | None]:
        """{tp: committed OffsetAndMetadata, or None} from the coordinator.

        Retries coordinator errors until request_timeout_ms (FerryTimeoutError).
        """
        tps = sorted(set(tps))
        deadline = time.monotonic() + self._request_timeout
        while True:
            try:
                resp = await self.link.send(OffsetFetchRequest(
                    group_id=self.group_id,
                    partitions=tuple(OffsetFetchPartition(tp.topic, tp.partition) for tp in tps)))
                if resp.error_code:
                    raise ApiError.from_code(resp.error_code)
                out: dict[TopicPartition, OffsetAndMetadata | None] = {tp: None for tp in tps}
                for p in resp.partitions:
                    if p.error_code:
                        raise ApiError.from_code(p.error_code, f"OffsetFetch of {p.topic}/{p.partition}")
                    if p.offset >= 0:
                        out[TopicPartition(p.topic, p.partition)] = OffsetAndMetadata(p.offset, p.metadata)
                return out
            except (NetworkError, RetriableError, NoBrokersAvailable) as exc:
                if isinstance(exc, ApiError) and exc.code in COORDINATOR_ERRORS:
                    self.link.mark_unknown(f"OffsetFetch: {exc.code.name}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise FerryTimeoutError(f"could not fetch committed offsets of group "
                                            f"{self.group_id!r}: {exc}") from None
                await asyncio.sleep(min(self._backoff, remaining))
