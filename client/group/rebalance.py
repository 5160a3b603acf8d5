"""A group member's rebalance: prepare, JoinGroup, the leader's assignment, SyncGroup, complete.

The rebalance half of ``ConsumerCoordinator``; see ``coordinator`` for the
theory of operation. ``_membership`` is the task that runs a rebalance
whenever ``_rejoin_reason`` is set, retrying failures with a backoff.
"""

from __future__ import annotations

import asyncio
import logging
import time

from protocol.errors import ApiError, ErrorCode, NetworkError, RetriableError
from protocol.group_messages import (
    DescribeGroupsRequest,
    JoinGroupProtocol,
    JoinGroupRequest,
    SyncGroupAssignment,
    SyncGroupRequest,
)

from ..errors import FerryTimeoutError, NoBrokersAvailable
from ..structs import TopicPartition
from .assignors import COOPERATIVE
from .codec import Assignment, GroupFormatError, Subscription, decode_assignment, decode_subscription, \
    encode_assignment, encode_subscription
from .link import COORDINATOR_ERRORS
from .listener import Step
from .settings import MemberState

log = logging.getLogger("client.group")

FATAL_ERRORS = frozenset({
    ErrorCode.FENCED_INSTANCE_ID, ErrorCode.INCONSISTENT_GROUP_PROTOCOL, ErrorCode.INVALID_GROUP_ID,
    ErrorCode.INVALID_SESSION_TIMEOUT, ErrorCode.GROUP_MAX_SIZE_REACHED,
})
JOIN_GRACE = 5.0  # seconds a JoinGroup/SyncGroup may wait beyond the rebalance timeout


class _Rejoin(Exception):
    """Join again (after retry_backoff_ms): the coordinator asked for it."""


class Rebalancing:
    """Rebalances of ConsumerCoordinator (a mixin: the state lives there)."""

    async def _membership(self) -> None:
        backoff = self._backoff
        while True:
            if not self._should_join():
                self._wakeup.clear()
                if not self._should_join():
                    await self._wakeup.wait()
                continue
            try:
                await self._rebalance()
                backoff = self._backoff
                continue
            except asyncio.CancelledError:
                raise
            except _Rejoin as exc:
                log.debug("group %s: joining again: %s", self.group_id, exc)
            except ApiError as exc:
                if exc.code in FATAL_ERRORS:
                    self._fail(exc)
                    return
                log.warning("group %s: rebalance failed, retrying: %s", self.group_id, exc)
            except (FerryTimeoutError, NoBrokersAvailable) as exc:
                log.warning("group %s: rebalance failed, retrying: %s", self.group_id, exc)
            except Exception:
                log.exception("group %s: rebalance failed, retrying", self.group_id)
            if self.state is MemberState.JOINING:
                self.state = MemberState.UNJOINED if self.generation < 0 else MemberState.STABLE
                if self.state is MemberState.STABLE:
                    self._stable.set()
            if self._rejoin_reason is None:
                self._rejoin_reason = "the last attempt failed"
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, max(1.0, self._backoff))

    def _should_join(self) -> bool:
        return (self._rejoin_reason is not None and self.managed and not self._poll_expired
                and not self._closing and self.fatal is None)

    def _fail(self, exc: BaseException) -> None:
        log.error("group %s: %s", self.group_id, exc)
        self.fatal = exc
        self.state = MemberState.UNJOINED
        self.generation = -1
        self._stable.set()  # release waiting commits: they see ``fatal``
        self.buffer.wake()

    async def _rebalance(self) -> None:
        await self.link.find(self._request_timeout)
        await self._prepare()
        if not self._should_join():
            return
        reason, self._rejoin_reason = self._rejoin_reason, None
        self.state = MemberState.JOINING
        self._stable.clear()
        try:
            joined = await self._join(reason)
            assignments = ()
            if joined.leader == self.member_id and not joined.skip_assignment:
                assignments = await self._assign(joined)
            assignment = await self._sync(joined, assignments)
        except BaseException:
            if self._rejoin_reason is None:
                self._rejoin_reason = reason
            raise
        await self._complete(joined, assignment)

    async def _prepare(self) -> None:
        held = frozenset(self.subs.assignment)
        if self.protocol == COOPERATIVE:
            topics = set(self.subscribed_topics())
            gone = frozenset(tp for tp in held if tp.topic not in topics)
            if gone:
                await self._revoke(gone)
        elif held:
            self._held, self._held_generation = held, self.generation
            await self._revoke(held)
        if self._adopt and not self.member_id:
            await self._adopt_previous()
        self._adopt = False

    async def _adopt_previous(self) -> None:
        """A static member starting: offer the subscription its previous process left.

        The coordinator gives a restarted static member its old assignment
        without a rebalance only if its metadata is unchanged; the previous
        process's metadata names the partitions it held, which this new
        process cannot know. DescribeGroups tells; the claim is honest, as the
        coordinator hands those partitions back, and if a rebalance happens
        anyway the member rejoins whenever it was not given all it claimed.
        """
        try:
            resp = await self.link.send(DescribeGroupsRequest(groups=(self.group_id,)))
        except (NetworkError, RetriableError, NoBrokersAvailable, FerryTimeoutError) as exc:
            log.debug("group %s: cannot describe the group before a static join: %s", self.group_id, exc)
            return
        for group in resp.groups:
            for mb in group.members if group.error_code == 0 else ():
                if mb.group_instance_id != self.instance_id:
                    continue
                try:
                    sub = decode_subscription(mb.metadata)
                except GroupFormatError:
                    return
                if sub.topics == self.subscribed_topics():
                    self._held, self._held_generation = sub.owned, sub.generation
                return

    def _protocols(self) -> tuple[JoinGroupProtocol, ...]:
        topics = self.subscribed_topics()
        if self.protocol == COOPERATIVE and self.subs.assignment:
            owned, generation = frozenset(self.subs.assignment), self.generation
        else:
            owned, generation = self._held, self._held_generation
        self._claimed = owned
        self._joined_topics = topics
        return tuple(
            JoinGroupProtocol(a.name, encode_subscription(a.metadata(topics, owned, generation)))
            for a in self.assignors
        )

    def _join_timeout(self) -> float:
        return max(self._request_timeout, self.settings.rebalance_ms / 1000 + JOIN_GRACE)

    async def _join(self, reason: str):
        for _ in range(3):  # MEMBER_ID_REQUIRED asks for a second JoinGroup at once
            request = JoinGroupRequest(
                group_id=self.group_id, session_timeout_ms=self.settings.session_timeout_ms,
                rebalance_timeout_ms=self.settings.rebalance_ms, member_id=self.member_id,
                group_instance_id=self.instance_id, protocol_type="consumer", protocols=self._protocols(),
                reason=reason,
            )
            resp = await self.link.send(request, channel="join", timeout=self._join_timeout())
            code = resp.error_code
            if code == 0:
                self.member_id = resp.member_id
                return resp
            if code == ErrorCode.MEMBER_ID_REQUIRED:
                self.member_id = resp.member_id
                continue
            self._join_error(code, resp.error_message, "JoinGroup")
        raise _Rejoin("the coordinator kept asking for a member id")

    def _join_error(self, code: int, message: str | None, api: str):
        """Handle an error answered to JoinGroup or SyncGroup; always raises."""
        if code == ErrorCode.UNKNOWN_MEMBER_ID:
            self._reset_generation(reset_member=True)
            raise _Rejoin(f"{api}: unknown member id")
        if code == ErrorCode.ILLEGAL_GENERATION:
            self._reset_generation(reset_member=False)
            raise _Rejoin(f"{api}: illegal generation")
        if code == ErrorCode.REBALANCE_IN_PROGRESS:
            raise _Rejoin(f"{api}: a new rebalance started")
        if code in COORDINATOR_ERRORS:
            self.link.mark_unknown(f"{api}: {ErrorCode(code).name}")
        raise ApiError.from_code(code, f"{api} for group {self.group_id!r}: {message or ApiError.for_code(code).description}")

    def _reset_generation(self, *, reset_member: bool) -> None:
        """Out of the generation while rejoining: what it still holds is lost."""
        if self.subs.assignment and self.managed:
            self._lose(f"{'unknown member id' if reset_member else 'illegal generation'} while rejoining",
                       reset_member=reset_member)
            self.state = MemberState.JOINING
        else:
            self.generation = -1
            if reset_member:
                self.member_id = ""
        self._held, self._held_generation = frozenset(), -1

    async def _assign(self, joined) -> tuple[SyncGroupAssignment, ...]:
        """The leader's part: run the chosen assignor over every member's subscription."""
        assignor = next((a for a in self.assignors if a.name == joined.protocol_name), None)
        if assignor is None:
            raise ApiError.from_code(ErrorCode.INCONSISTENT_GROUP_PROTOCOL,
                                     f"the coordinator chose assignor {joined.protocol_name!r}, "
                                     f"which this consumer does not have")
        subscriptions: dict[str, Subscription] = {}
        for mb in joined.members:
            try:
                subscriptions[mb.member_id] = decode_subscription(mb.metadata, mb.member_id, mb.group_instance_id)
            except GroupFormatError as exc:
                log.error("group %s: member %s sent an unreadable subscription (%s): it gets nothing",
                          self.group_id, mb.member_id, exc)
                subscriptions[mb.member_id] = Subscription(member_id=mb.member_id,
                                                           group_instance_id=mb.group_instance_id)
        topics = {t for s in subscriptions.values() for t in s.topics}
        self.cluster.tracked |= topics
        await self.cluster.refresh(None if self.cluster.track_all else sorted(self.cluster.tracked))
        known = self.cluster.metadata.partition_counts
        counts = {t: known[t] for t in topics if known.get(t)}
        self._counts = {t: known.get(t) for t in topics}
        result = assignor.assign(counts, subscriptions)
        log.info("group %s: generation %d: leader %s assigned %d partition(s) to %d member(s) with %s",
                 self.group_id, joined.generation_id, self.member_id,
                 sum(len(a.partitions) for a in result.values()), len(subscriptions), assignor.name)
        return tuple(SyncGroupAssignment(mid, encode_assignment(result.get(mid, Assignment())))
                     for mid in subscriptions)

    async def _sync(self, joined, assignments) -> Assignment:
        request = SyncGroupRequest(
            group_id=self.group_id, generation_id=joined.generation_id, member_id=self.member_id,
            group_instance_id=self.instance_id, protocol_type="consumer",
            protocol_name=joined.protocol_name, assignments=assignments,
        )
        resp = await self.link.send(request, channel="join", timeout=self._join_timeout())
        if resp.error_code:
            self._join_error(resp.error_code, resp.error_message, "SyncGroup")
        try:
            return decode_assignment(resp.assignment)
        except GroupFormatError as exc:
            raise _Rejoin(f"unreadable assignment from the leader: {exc}") from None

    async def _complete(self, joined, assignment: Assignment) -> None:
        if joined.leader != self.member_id:
            self._counts = {}
        self.generation = joined.generation_id
        self.protocol_name = joined.protocol_name
        self.leader_id = joined.leader
        self.state = MemberState.STABLE
        self.rebalances += 1
        self._stable.set()
        self._last_poll = max(self._last_poll, time.monotonic() - self.settings.max_poll_interval_ms / 2000)
        new = frozenset(assignment.partitions)
        self._held, self._held_generation = new, self.generation
        held = frozenset(self.subs.assignment)
        added, revoked = new - held, held - new
        log.info("group %s: member %s joined generation %d (%s): %d partition(s), %d added, %d revoked",
                 self.group_id, self.member_id, self.generation, self.protocol_name, len(new),
                 len(added), len(revoked))
        if added:
            committed = await self._committed_for_new(added)
            if committed is None:
                return  # out of the generation meanwhile: it rejoins
            self._add(committed)
        assignor = next((a for a in self.assignors if a.name == self.protocol_name), None)
        if assignor is not None:
            try:
                assignor.on_assignment(assignment, self.generation)
            except Exception:
                log.exception("group %s: %r on_assignment failed", self.group_id, assignor)
        revoking = self.steps.post(Step("revoke", revoked, self.generation,
                                        commit=self.settings.enable_auto_commit)) if revoked else None
        self.steps.post(Step("assign", added, self.generation))
        if self._claimed - new:
            self.request_rejoin("partitions it held go to other members once it has revoked them")
        if revoking is not None:
            await revoking

    async def _committed_for_new(self, tps: frozenset[TopicPartition]):
        """Committed offsets of newly assigned partitions, retrying until it
        gets them; None if the member left its generation meanwhile."""
        generation = self.generation
        while True:
            try:
                return await self.fetch_committed(tps)
            except (NetworkError, RetriableError, NoBrokersAvailable, FerryTimeoutError) as exc:
                log.debug("group %s: fetching committed offsets failed: %s", self.group_id, exc)
            if self.generation != generation or self._closing:
                return None
            await asyncio.sleep(self._backoff)
