"""Consumer group membership: joining, assignment, heartbeats, committed offsets.

Theory of operation
-------------------
``ConsumerCoordinator`` lives in the consumer's event loop and runs three
tasks: *membership* (join whenever a rejoin is needed), *heartbeat* (every
``heartbeat_interval_ms`` while the member is in a generation; also watches
the poll interval) and *auto-commit* (every ``auto_commit_interval_ms``).
Group requests go to the coordinator broker over connections of their own
(``link``). The rebalance itself is ``rebalance.Rebalancing`` and the offsets
``commits.Committing``, two halves of this class kept in their own modules.

A rebalance, in order:

1. **Prepare.** An eager member (any assignor in its list is eager) revokes
   every partition before it rejoins; a cooperative one only the partitions of
   topics it no longer subscribes to. Revocation is a ``revoke`` step (see
   ``listener``): it waits for the application's next poll, as in Kafka.
2. **JoinGroup** with one protocol per assignor, each carrying the member's
   ``Subscription`` (topics, the partitions it holds and the generation it
   holds them in). A first join is answered MEMBER_ID_REQUIRED with a member
   id to join again with (KIP-394); a static member (``group_instance_id``)
   joins at once. The coordinator answers when every member has joined.
3. The **leader** (the member the response names) decodes every member's
   subscription, looks up the partition counts and runs the chosen assignor.
4. **SyncGroup**: the leader sends the assignments; everyone gets their own.
5. **Complete.** The member is Stable in the new generation. Added
   partitions start at their committed offsets (OffsetFetch; without one,
   ``auto_offset_reset``) and an ``assign`` step tells the listener. Partitions
   it held but was not given (cooperative) are revoked, and it rejoins at once
   so the next rebalance hands them out.

Errors: REBALANCE_IN_PROGRESS from a heartbeat means rejoin;
ILLEGAL_GENERATION (reset the generation) and UNKNOWN_MEMBER_ID (also the
member id) mean this member was evicted: its partitions are *lost* (dropped
at once, no commit) and it rejoins; FENCED_INSTANCE_ID (another process took
this static member's place), INCONSISTENT_GROUP_PROTOCOL and the like are
fatal and raised from the next poll. Coordinator errors and lost connections
look the coordinator up again and retry.

If the application does not poll for ``max_poll_interval_ms``, the member
leaves the group (LeaveGroup; a static member just forgets its generation),
its partitions are lost, and it rejoins at the next poll. A consumer that
iterates records counts as polling as long as it makes progress through them.

Commits carry the member id and generation, so a member that was evicted
cannot overwrite the offsets of the partitions' new owner: it gets
CommitFailedError instead. A commit that races a rebalance this member takes
part in waits for it and is retried for the partitions the member still holds.
Without group membership (partitions assigned by hand) commits carry
generation -1, which the broker accepts only while the group has no members.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable, Iterable, Mapping

from protocol.errors import ApiError, ErrorCode, NetworkError, RetriableError
from protocol.group_messages import HeartbeatRequest, LeaveGroupMember, LeaveGroupRequest

from ..cluster import Cluster
from ..errors import FerryTimeoutError, NoBrokersAvailable
from ..record_buffer import RecordBuffer
from ..structs import OffsetAndMetadata, TopicPartition
from ..subscription import PartitionState, SubscriptionState
from .assignors import AbstractPartitionAssignor, rebalance_protocol
from .commits import Committing
from .link import COORDINATOR_ERRORS, CoordinatorLink
from .listener import Step, StepQueue
from .rebalance import Rebalancing
from .settings import GroupSettings, MemberState

log = logging.getLogger("client.group")

__all__ = ["ConsumerCoordinator", "GroupSettings", "MemberState"]


class ConsumerCoordinator(Rebalancing, Committing):
    """One consumer's membership of its group. Lives in the consumer's loop; see the module doc.

    ``subs`` and ``buffer`` are the consumer's; ``steps`` is where steps for
    the application side go; ``activity`` returns a token that changes while
    the application makes progress through fetched records.
    """

    def __init__(self, cluster: Cluster, subs: SubscriptionState, buffer: RecordBuffer,
                 settings: GroupSettings, assignors: list[AbstractPartitionAssignor], steps: StepQueue,
                 *, changed: Callable[[], None], activity: Callable[[], object] = lambda: None) -> None:
        self.cluster = cluster
        self.subs = subs
        self.buffer = buffer
        self.settings = settings
        self.group_id = settings.group_id
        self.instance_id = settings.group_instance_id
        self.assignors = assignors
        self.protocol = rebalance_protocol(assignors)
        self.steps = steps
        self._changed = changed
        self._activity = activity
        self.link = CoordinatorLink(cluster, self.group_id)
        self.member_id = ""
        self.generation = -1
        self.protocol_name: str | None = None
        self.leader_id = ""
        self.state = MemberState.UNJOINED
        self.rebalances = 0  # completed rebalances, for tests and logs
        self.fatal: BaseException | None = None
        self._request_timeout = cluster.request_timeout
        self._backoff = cluster.retry_backoff
        self._rejoin_reason: str | None = "the consumer subscribed"
        self._wakeup = asyncio.Event()
        self._stable = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._last_poll = time.monotonic()
        self._last_activity: object = None
        self.app_waiting = False  # the application is blocked in poll(), waiting for records
        self._poll_expired = False
        # what it held in its generation, offered as ``owned`` when it holds nothing
        # now (an eager member revoked it all; a static member just restarted)
        self._held: frozenset[TopicPartition] = frozenset()
        self._held_generation = -1
        self._claimed: frozenset[TopicPartition] = frozenset()  # owned, as sent in the last JoinGroup
        self._joined_topics: tuple[str, ...] = ()
        self._counts: dict[str, int | None] = {}  # partition counts the leader assigned from
        self._committed: dict[TopicPartition, int] = {}  # last offsets this member committed
        self._adopt = self.instance_id is not None  # a static member's first join: see _adopt_previous
        self._tasks: list[asyncio.Task] = []
        self._closing = False

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        if self._tasks:
            return
        self._tasks = [
            asyncio.create_task(self._membership(), name="ferry-group-membership"),
            asyncio.create_task(self._heartbeats(), name="ferry-group-heartbeat"),
        ]
        if self.settings.enable_auto_commit:
            self._tasks.append(asyncio.create_task(self._auto_commits(), name="ferry-group-autocommit"))

    async def stop_tasks(self) -> None:
        """Stop the background work (first step of closing); membership stays."""
        self._closing = True
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass

    async def close(self) -> None:
        """Leave the group (dynamic members only, as in Kafka) and close the connections."""
        await self.stop_tasks()
        await self._leave("the consumer is closing")
        self.link.close()

    @property
    def managed(self) -> bool:
        """Is the assignment the group's (subscribe), rather than the application's (assign)?"""
        return self.subs.group_managed and self.subs.subscribed

    def subscribed_topics(self) -> tuple[str, ...]:
        if self.subs.pattern is not None:
            meta = self.cluster.metadata
            return tuple(sorted(t for t in meta.leaders if self.subs.pattern.fullmatch(t)))
        return tuple(sorted(self.subs.topics))

    def request_rejoin(self, reason: str) -> None:
        """Join again soon (call in the loop)."""
        if self._rejoin_reason is None:
            log.info("group %s: member %s rejoins: %s", self.group_id, self.member_id or "-", reason)
            self._rejoin_reason = reason
        self._wakeup.set()

    def polled(self) -> None:
        """The application polled (any thread; cheap)."""
        self._last_poll = time.monotonic()
        if self._poll_expired:
            self._poll_expired = False
            self._loop.call_soon_threadsafe(self._wakeup.set)

    def metadata_updated(self) -> None:
        """Rejoin if the subscribed topics (pattern) or, on the leader, partition counts changed."""
        if self.state is not MemberState.STABLE or not self.managed:
            return
        if self.subs.pattern is not None and self.subscribed_topics() != self._joined_topics:
            self.request_rejoin("the topics matching the subscribed pattern changed")
            return
        counts = self.cluster.metadata.partition_counts
        for topic, count in self._counts.items():
            if counts.get(topic) != count:
                self.request_rejoin(f"the partitions of topic {topic!r} changed")
                return

    def subscription_changed(self) -> None:
        """subscribe() with other topics: join again with them."""
        if self.managed:
            self.request_rejoin("the subscription changed")

    # ------------------------------------------------------------ partitions

    def positions(self, tps: Iterable[TopicPartition] | None = None) -> dict[TopicPartition, OffsetAndMetadata]:
        """Positions (the next offset to hand out) of assigned partitions that have one."""
        assignment = self.subs.assignment
        out = {}
        for tp in (assignment if tps is None else tps):
            pos = self.buffer.position(tp)
            if pos is None:
                st = assignment.get(tp)
                pos = st.position if st is not None else None
            if pos is not None:
                out[tp] = OffsetAndMetadata(pos, "")
        return out

    def drop(self, tps: Iterable[TopicPartition]) -> None:
        """Remove partitions from the assignment (call in the loop)."""
        gone = set(tps)
        if not gone:
            return
        for tp in gone:
            self.buffer.discard(tp)
            self._committed.pop(tp, None)
        self.subs.assignment = {tp: st for tp, st in self.subs.assignment.items() if tp not in gone}
        self._changed()

    def _add(self, committed: Mapping[TopicPartition, OffsetAndMetadata | None]) -> None:
        added = {}
        for tp, om in sorted(committed.items()):
            st = PartitionState(self.subs.default_reset)
            if om is not None:
                st.seek(om.offset)
                self._committed[tp] = om.offset
            added[tp] = st
        self.subs.assignment = {**self.subs.assignment, **added}
        self._changed()

    def _lose(self, reason: str, *, reset_member: bool) -> None:
        """This member is out of its generation: its partitions may be someone else's."""
        log.warning("group %s: member %s lost its partitions: %s", self.group_id, self.member_id or "-", reason)
        self.generation = -1
        if reset_member:
            self.member_id = ""
        self.state = MemberState.UNJOINED
        self._stable.clear()
        self._held, self._held_generation = frozenset(), -1
        lost = frozenset(self.subs.assignment) if self.managed else frozenset()
        if lost:
            self.drop(lost)
            self.steps.post(Step("lost", lost, -1))
        self.request_rejoin(reason)

    async def _revoke(self, tps: frozenset[TopicPartition]) -> None:
        """Revoke on the application's side (commit-on-revoke, listener, drop) and wait for it."""
        await self.steps.post(Step("revoke", tps, self.generation, commit=self.settings.enable_auto_commit))

    # ------------------------------------------------------------ heartbeats

    async def _heartbeats(self) -> None:
        interval = self.settings.heartbeat_interval_ms / 1000
        next_beat = time.monotonic()
        while True:
            now = time.monotonic()
            await asyncio.sleep(max(0.0, min(next_beat - now, interval)))
            now = time.monotonic()
            await self._check_poll_interval(now)
            if now < next_beat:
                continue
            next_beat = now + interval
            if self.state is not MemberState.STABLE or self.generation < 0 or not self.managed:
                continue
            if not await self._heartbeat():
                next_beat = time.monotonic() + self._backoff

    async def _heartbeat(self) -> bool:
        """Send one heartbeat; False if it should be retried soon."""
        generation, member_id = self.generation, self.member_id
        try:
            resp = await self.link.send(HeartbeatRequest(
                group_id=self.group_id, generation_id=generation, member_id=member_id,
                group_instance_id=self.instance_id,
            ))
        except (NetworkError, RetriableError, NoBrokersAvailable, FerryTimeoutError) as exc:
            log.debug("group %s: heartbeat failed: %s", self.group_id, exc)
            return False
        if self.state is not MemberState.STABLE or self.generation != generation:
            return True  # a rebalance moved on meanwhile
        code = resp.error_code
        if code == 0:
            return True
        if code == ErrorCode.REBALANCE_IN_PROGRESS:
            self.request_rejoin("the group is rebalancing")
        elif code == ErrorCode.ILLEGAL_GENERATION:
            self._lose("its generation is over (heartbeat: illegal generation)", reset_member=False)
        elif code == ErrorCode.UNKNOWN_MEMBER_ID:
            self._lose("the coordinator no longer knows this member (session timed out?)", reset_member=True)
        elif code == ErrorCode.FENCED_INSTANCE_ID:
            self._fail(ApiError.from_code(code, f"another consumer with group_instance_id "
                                                f"{self.instance_id!r} took this member's place"))
        elif code in COORDINATOR_ERRORS:
            self.link.mark_unknown(f"heartbeat: {ErrorCode(code).name}")
            return False
        else:
            log.warning("group %s: heartbeat answered %s", self.group_id, ApiError.for_code(code).__name__)
            return False
        return True

    async def _check_poll_interval(self, now: float) -> None:
        token = self._activity()
        if self.app_waiting or (token is not None and token != self._last_activity):
            self._last_activity = token
            self._last_poll = now
        if self._poll_expired or self.state is not MemberState.STABLE or not self.managed:
            return
        if now - self._last_poll <= self.settings.max_poll_interval_ms / 1000:
            return
        log.warning("group %s: no poll for over max_poll_interval_ms (%d ms): member %s leaves the group "
                    "and rejoins at the next poll; process records faster or raise max_poll_interval_ms",
                    self.group_id, self.settings.max_poll_interval_ms, self.member_id)
        self._poll_expired = True
        await self._leave("the consumer's poll interval expired")
        self._lose("the poll interval expired", reset_member=self.instance_id is None)

    async def _leave(self, reason: str) -> None:
        """Forget the membership; a dynamic member also tells the coordinator (LeaveGroup)."""
        member_id = self.member_id
        self.member_id = ""
        self.generation = -1
        self.state = MemberState.UNJOINED
        self._stable.clear()
        if not member_id or self.instance_id is not None or not self.link.known:
            return  # static members keep their slot; without a coordinator the session expires
        try:
            await self.link.send(LeaveGroupRequest(group_id=self.group_id, members=(
                LeaveGroupMember(member_id=member_id, reason=reason),)))
            log.info("group %s: member %s left the group: %s", self.group_id, member_id, reason)
        except (NetworkError, RetriableError, NoBrokersAvailable, FerryTimeoutError) as exc:
            log.debug("group %s: LeaveGroup failed: %s", self.group_id, exc)

    def unsubscribed(self) -> None:
        """unsubscribe(): leave the group; a later subscribe() joins it afresh."""
        if self.generation >= 0 or self.member_id:
            asyncio.ensure_future(self._leave("the consumer unsubscribed"))
        self._held, self._held_generation = frozenset(), -1
        self._rejoin_reason = "the consumer subscribed again"

