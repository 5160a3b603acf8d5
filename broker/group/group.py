"""One consumer group's membership state machine (Kafka's classic rebalance protocol).

Theory of operation
-------------------
A group moves between four states (plus Dead, reported for groups that do
not exist)::

    Empty --first join--> PreparingRebalance --all joined / timeout--> CompletingRebalance
      ^                     ^        |                                   |
      |                     |        +--no member left--> Empty           | leader's SyncGroup
      |                     +---- join, leave, expiry, new protocols ----+ v
      +-------------------------------------------------------------- Stable

* **PreparingRebalance.** Every member must send JoinGroup again. A JoinGroup
  is not answered yet: it waits (a ``Deferred``) and keeps its member alive.
  The phase ends when every known member waits and no member id handed out by
  MEMBER_ID_REQUIRED is still outstanding, or when the rebalance deadline (the
  largest ``rebalance_timeout_ms`` of the members) passes. Then dynamic members
  that did not rejoin are removed; static members are kept (their session
  timeout decides), as in Kafka.
* The first rebalance of an Empty group is *delayed*: it lasts
  ``initial_rebalance_delay_ms`` after the latest new member joined (bounded
  by the rebalance timeout), so consumers started together form one
  generation instead of a storm of them.
* **CompletingRebalance.** The generation id is incremented, a protocol
  (assignor) supported by every member is chosen by vote, and every waiting
  JoinGroup is answered; only the leader's answer lists the members. The
  leader's SyncGroup carries the assignments; followers' SyncGroups wait for
  it, and all are answered together as the group turns **Stable**.
* Liveness: each member's session expires ``session_timeout_ms`` after its
  last heartbeat (or SyncGroup, commit, or answered JoinGroup) unless a
  JoinGroup or SyncGroup of its own is waiting. An expired member is removed,
  which starts a rebalance.
* Static members (``group_instance_id``) keep their slot across restarts: a
  JoinGroup with an empty member id and a known instance id takes the slot
  over under a new member id (the old id is then FENCED_INSTANCE_ID); in a
  Stable group with unchanged protocol metadata this causes no rebalance, and
  the member gets its old assignment back from SyncGroup.

Every method takes ``now`` in milliseconds; timers advance only through
``tick(now)``. Nothing here does I/O. Responses are the protocol's response
messages with correlation id 0; the caller sets the real one.
"""

from __future__ import annotations

import collections
import logging
from typing import Callable

from protocol import group_messages as m
from protocol.errors import ErrorCode

from .member import Deferred, GroupState, Member

EMPTY = GroupState.EMPTY
PREPARING = GroupState.PREPARING_REBALANCE
COMPLETING = GroupState.COMPLETING_REBALANCE
STABLE = GroupState.STABLE

log = logging.getLogger("ferry.broker.group")


def _join_error(code: ErrorCode, member_id: str = "") -> m.JoinGroupResponse:
    return m.JoinGroupResponse(error_code=int(code), member_id=member_id)


def _sync_error(code: ErrorCode) -> m.SyncGroupResponse:
    return m.SyncGroupResponse(error_code=int(code))


class Group:
    """The members, generation and state of one group. See the module docstring."""

    def __init__(self, group_id: str, now: int, *, initial_rebalance_delay_ms: int = 0) -> None:
        self.group_id = group_id
        self.initial_rebalance_delay_ms = initial_rebalance_delay_ms
        self.state = EMPTY
        self.state_since = now  # ms; for an Empty group, when it became empty
        self.generation_id = 0
        self.protocol_type: str | None = None
        self.protocol_name: str | None = None
        self.leader_id: str | None = None
        self.members: dict[str, Member] = {}  # in join order
        self.static: dict[str, str] = {}  # group_instance_id -> member_id
        self.pending: dict[str, int] = {}  # member ids given with MEMBER_ID_REQUIRED -> expiry
        self.rebalance_deadline: int | None = None
        self._initial_limit: int | None = None  # set while the initial delayed join runs

    # ------------------------------------------------------------ queries

    @property
    def is_empty(self) -> bool:
        return not self.members

    def describe(self) -> m.DescribedGroup:
        members = tuple(
            m.DescribedGroupMember(
                member_id=mb.member_id, group_instance_id=mb.group_instance_id,
                client_id=mb.client_id, client_host=mb.client_host,
                metadata=mb.metadata_for(self.protocol_name), assignment=mb.assignment,
            )
            for mb in self.members.values()
        )
        return m.DescribedGroup(
            group_id=self.group_id, state=self.state.value, protocol_type=self.protocol_type or "",
            protocol=self.protocol_name or "", generation_id=self.generation_id,
            leader=self.leader_id or "", members=members,
        )

    def _check_member(self, member_id: str, instance_id: str | None, generation: int) -> ErrorCode:
        if instance_id is not None and self.static.get(instance_id, member_id) != member_id:
            return ErrorCode.FENCED_INSTANCE_ID
        if member_id not in self.members:
            return ErrorCode.UNKNOWN_MEMBER_ID
        if generation != self.generation_id:
            return ErrorCode.ILLEGAL_GENERATION
        return ErrorCode.NONE

    def _supports(self, protocol_type: str, protocols, exclude: str | None = None) -> bool:
        """Can a member with these protocols be in the group (Kafka's supportsProtocols)?"""
        if not protocol_type or not protocols:
            return False
        others = [mb for mid, mb in self.members.items() if mid != exclude]
        if not others:
            return True
        if protocol_type != self.protocol_type:
            return False
        names = {p.name for p in protocols}
        for mb in others:
            names &= {p.name for p in mb.protocols}
        return bool(names)

    # ------------------------------------------------------------ JoinGroup

    def join(self, now: int, req: m.JoinGroupRequest, client_id: str, client_host: str,
             new_member_id: Callable[[], str]) -> Deferred:
        """Handle a JoinGroup whose arguments the coordinator validated.

        Returns a Deferred resolved with the JoinGroupResponse: at once for
        errors, MEMBER_ID_REQUIRED and joins that change nothing, otherwise when
        the rebalance reaches CompletingRebalance. Never raises for bad input.
        """
        existing = req.member_id or (self.static.get(req.group_instance_id) if req.group_instance_id else None)
        if not self._supports(req.protocol_type, req.protocols, exclude=existing):
            return Deferred.resolved(_join_error(ErrorCode.INCONSISTENT_GROUP_PROTOCOL, req.member_id))
        if not req.member_id:
            if req.group_instance_id is not None:
                if req.group_instance_id in self.static:
                    return self._replace_static(now, req, client_id, client_host, new_member_id())
                return self._add(now, req, client_id, client_host, new_member_id())
            # KIP-394: hand out an id first, so a client that retries a lost
            # response cannot leave an orphan member behind.
            member_id = new_member_id()
            self.pending[member_id] = now + req.session_timeout_ms
            return Deferred.resolved(_join_error(ErrorCode.MEMBER_ID_REQUIRED, member_id))
        if req.member_id in self.pending:
            del self.pending[req.member_id]
            return self._add(now, req, client_id, client_host, req.member_id)
        code = self._check_member(req.member_id, req.group_instance_id, self.generation_id)
        if code:
            return Deferred.resolved(_join_error(code, req.member_id))
        member = self.members[req.member_id]
        changed = member.protocols != req.protocols
        self._update(member, req, client_id, client_host)
        if self.state is STABLE and not changed and member.member_id != self.leader_id:
            member.touch(now)
            return Deferred.resolved(self._join_response(member))
        if self.state is COMPLETING and not changed:
            member.touch(now)
            return Deferred.resolved(self._join_response(member))
        return self._await_join(now, member)

    def _update(self, member: Member, req: m.JoinGroupRequest, client_id: str, client_host: str) -> None:
        member.protocols = req.protocols
        member.session_timeout_ms = req.session_timeout_ms
        member.rebalance_timeout_ms = req.rebalance_timeout_ms
        member.client_id = client_id
        member.client_host = client_host

    def _add(self, now: int, req: m.JoinGroupRequest, client_id: str, client_host: str,
             member_id: str) -> Deferred:
        member = Member(
            member_id=member_id, group_instance_id=req.group_instance_id, client_id=client_id,
            client_host=client_host, session_timeout_ms=req.session_timeout_ms,
            rebalance_timeout_ms=req.rebalance_timeout_ms, protocols=req.protocols,
            deadline=now + req.session_timeout_ms,
        )
        self.members[member_id] = member
        if req.group_instance_id is not None:
            self.static[req.group_instance_id] = member_id
        if self.protocol_type is None or len(self.members) == 1:
            self.protocol_type = req.protocol_type
        if self.state is PREPARING and self._initial_limit is not None:
            self.rebalance_deadline = min(now + self.initial_rebalance_delay_ms, self._initial_limit)
        return self._await_join(now, member)

    def _replace_static(self, now: int, req: m.JoinGroupRequest, client_id: str, client_host: str,
                        member_id: str) -> Deferred:
        """A static member restarted: give its slot a new member id, fencing the old one."""
        old_id = self.static[req.group_instance_id]
        member = self.members.pop(old_id)
        if member.join is not None:
            member.join.resolve(_join_error(ErrorCode.FENCED_INSTANCE_ID, old_id))
        if member.sync is not None:
            member.sync.resolve(_sync_error(ErrorCode.FENCED_INSTANCE_ID))
        member.join = member.sync = None
        member.member_id = member_id
        self.members[member_id] = member
        self.static[req.group_instance_id] = member_id
        if self.leader_id == old_id:
            self.leader_id = member_id
        changed = member.protocols != req.protocols
        self._update(member, req, client_id, client_host)
        member.touch(now)
        if self.state is STABLE and not changed:
            return Deferred.resolved(self._join_response(member, skip_assignment=True))
        return self._await_join(now, member)

    def _await_join(self, now: int, member: Member) -> Deferred:
        if member.join is not None:  # a retried JoinGroup replaces the one waiting
            member.join.resolve(_join_error(ErrorCode.REBALANCE_IN_PROGRESS, member.member_id))
        member.join = Deferred()
        waiting = member.join
        if self.state is not PREPARING:
            self._prepare_rebalance(now)
        self._maybe_complete_join(now)
        return waiting

    def _join_response(self, member: Member, *, skip_assignment: bool = False) -> m.JoinGroupResponse:
        is_leader = member.member_id == self.leader_id
        members = ()
        if is_leader:
            members = tuple(
                m.JoinGroupMember(mb.member_id, mb.group_instance_id, mb.metadata_for(self.protocol_name))
                for mb in self.members.values()
            )
        return m.JoinGroupResponse(
            generation_id=self.generation_id, protocol_type=self.protocol_type,
            protocol_name=self.protocol_name, leader=self.leader_id or "",
            skip_assignment=skip_assignment and is_leader, member_id=member.member_id, members=members,
        )

    # ------------------------------------------------------------ rebalance

    def _set_state(self, state: GroupState, now: int) -> None:
        self.state = state
        self.state_since = now

    def _prepare_rebalance(self, now: int) -> None:
        if self.state is COMPLETING:
            self._fail_syncs(ErrorCode.REBALANCE_IN_PROGRESS, now)
        longest = max((mb.rebalance_timeout_ms for mb in self.members.values()), default=0)
        if self.state is EMPTY and self.initial_rebalance_delay_ms > 0:
            self._initial_limit = now + longest
            self.rebalance_deadline = min(now + self.initial_rebalance_delay_ms, self._initial_limit)
        else:
            self._initial_limit = None
            self.rebalance_deadline = now + longest
        self._set_state(PREPARING, now)

    def _fail_syncs(self, code: ErrorCode, now: int) -> None:
        for mb in self.members.values():
            mb.assignment = b""
            if mb.sync is not None:
                sync, mb.sync = mb.sync, None
                mb.touch(now)  # its session restarts when its answer leaves, as in Kafka
                sync.resolve(_sync_error(code))

    def _maybe_complete_join(self, now: int) -> None:
        if self.state is not PREPARING or self._initial_limit is not None:
            return  # the initial delayed join ends only by its timer
        if not self.pending and all(mb.join is not None for mb in self.members.values()):
            self._complete_join(now)

    def _complete_join(self, now: int) -> None:
        for mb in list(self.members.values()):
            if mb.join is None and mb.group_instance_id is None:
                self._remove(mb, "did not rejoin within the rebalance timeout")
        self._initial_limit = None
        self.rebalance_deadline = None
        joined = [mb for mb in self.members.values() if mb.join is not None]
        if self.members and not joined:
            # Only static members that have not rejoined: wait for them (or
            # for their sessions to expire) for another rebalance timeout.
            longest = max(mb.rebalance_timeout_ms for mb in self.members.values())
            self.rebalance_deadline = now + longest
            return
        self.generation_id += 1
        if not self.members:
            self.protocol_name = None
            self.leader_id = None
            self._set_state(EMPTY, now)
            return
        self.protocol_name = self._select_protocol()
        if self.leader_id not in self.members or self.members[self.leader_id].join is None:
            self.leader_id = joined[0].member_id
        self._set_state(COMPLETING, now)
        log.info("group %s: generation %d with %d member(s), protocol %s, leader %s",
                 self.group_id, self.generation_id, len(self.members), self.protocol_name, self.leader_id)
        for mb in joined:
            join, mb.join = mb.join, None
            mb.touch(now)
            join.resolve(self._join_response(mb))

    def _select_protocol(self) -> str:
        """The protocol every member supports that most members prefer (Kafka's vote)."""
        members = list(self.members.values())
        candidates = {p.name for p in members[0].protocols}
        for mb in members[1:]:
            candidates &= {p.name for p in mb.protocols}
        votes = collections.Counter(
            next(p.name for p in mb.protocols if p.name in candidates) for mb in members
        )
        return votes.most_common(1)[0][0]

    # ------------------------------------------------------------ SyncGroup

    def sync(self, now: int, req: m.SyncGroupRequest) -> Deferred:
        """Handle a SyncGroup. Returns a Deferred resolved with the SyncGroupResponse.

        A follower's waits for the leader's while the group is
        CompletingRebalance; everything else is answered at once.
        """
        code = self._check_member(req.member_id, req.group_instance_id, req.generation_id)
        if not code and (
            (req.protocol_type is not None and req.protocol_type != self.protocol_type)
            or (req.protocol_name is not None and req.protocol_name != self.protocol_name)
        ):
            code = ErrorCode.INCONSISTENT_GROUP_PROTOCOL
        if not code and self.state is PREPARING:
            code = ErrorCode.REBALANCE_IN_PROGRESS
        if code:
            return Deferred.resolved(_sync_error(code))
        member = self.members[req.member_id]
        member.touch(now)
        if self.state is STABLE:
            return Deferred.resolved(self._sync_response(member))
        if member.sync is not None:  # a retried SyncGroup replaces the one waiting
            member.sync.resolve(_sync_error(ErrorCode.REBALANCE_IN_PROGRESS))
        member.sync = waiting = Deferred()
        if member.member_id == self.leader_id:
            given = {a.member_id: a.assignment for a in req.assignments}
            for mb in self.members.values():
                mb.assignment = given.get(mb.member_id, b"")
            self._set_state(STABLE, now)
            for mb in self.members.values():
                if mb.sync is not None:
                    sync, mb.sync = mb.sync, None
                    mb.touch(now)
                    sync.resolve(self._sync_response(mb))
        return waiting

    def _sync_response(self, member: Member) -> m.SyncGroupResponse:
        return m.SyncGroupResponse(protocol_type=self.protocol_type, protocol_name=self.protocol_name,
                                   assignment=member.assignment)

    # ------------------------------------------------------------ heartbeat, commit, leave

    def heartbeat(self, now: int, req: m.HeartbeatRequest) -> ErrorCode:
        """Restart the member's session. REBALANCE_IN_PROGRESS asks it to rejoin."""
        code = self._check_member(req.member_id, req.group_instance_id, req.generation_id)
        if code:
            return code
        self.members[req.member_id].touch(now)
        return ErrorCode.REBALANCE_IN_PROGRESS if self.state is PREPARING else ErrorCode.NONE

    def check_commit(self, now: int, member_id: str, instance_id: str | None, generation: int) -> ErrorCode:
        """May this member commit offsets now? A member of the current generation
        may while Stable or PreparingRebalance (to commit before it rejoins)."""
        code = self._check_member(member_id, instance_id, generation)
        if code:
            return code
        if self.state is COMPLETING:
            return ErrorCode.REBALANCE_IN_PROGRESS
        self.members[member_id].touch(now)
        return ErrorCode.NONE

    def leave(self, now: int, member_id: str, instance_id: str | None) -> ErrorCode:
        """Remove one member at once (LeaveGroup); a rebalance follows."""
        if instance_id is not None:
            current = self.static.get(instance_id)
            if current is None:
                return ErrorCode.UNKNOWN_MEMBER_ID
            if member_id and member_id != current:
                return ErrorCode.FENCED_INSTANCE_ID
            member_id = current
        elif member_id in self.pending:
            del self.pending[member_id]
            self._maybe_complete_join(now)
            return ErrorCode.NONE
        member = self.members.get(member_id)
        if member is None:
            return ErrorCode.UNKNOWN_MEMBER_ID
        self._remove(member, "left the group")
        self._member_gone(now)
        return ErrorCode.NONE

    def _remove(self, member: Member, reason: str) -> None:
        log.info("group %s: removing member %s: %s", self.group_id, member.member_id, reason)
        del self.members[member.member_id]
        iid = member.group_instance_id
        if iid is not None and self.static.get(iid) == member.member_id:
            del self.static[iid]
        if self.leader_id == member.member_id:
            self.leader_id = None
        if member.join is not None:
            member.join.resolve(_join_error(ErrorCode.UNKNOWN_MEMBER_ID, member.member_id))
        if member.sync is not None:
            member.sync.resolve(_sync_error(ErrorCode.UNKNOWN_MEMBER_ID))
        member.join = member.sync = None

    def _member_gone(self, now: int) -> None:
        if self.state in (STABLE, COMPLETING):
            self._prepare_rebalance(now)
        self._maybe_complete_join(now)

    # ------------------------------------------------------------ timers

    def tick(self, now: int) -> None:
        """Expire sessions and outstanding member ids, and end a rebalance whose time is up."""
        for member_id, expiry in list(self.pending.items()):
            if expiry <= now:
                del self.pending[member_id]
                self._maybe_complete_join(now)
        for member in list(self.members.values()):
            if member.member_id in self.members and not member.kept_alive and member.deadline <= now:
                self._remove(member, "session timed out")
                self._member_gone(now)
        if self.state is PREPARING and self.rebalance_deadline is not None and now >= self.rebalance_deadline:
            self._complete_join(now)

    def shutdown(self) -> None:
        """Answer every waiting request with COORDINATOR_NOT_AVAILABLE (the broker is stopping)."""
        for mb in self.members.values():
            if mb.join is not None:
                join, mb.join = mb.join, None
                join.resolve(_join_error(ErrorCode.COORDINATOR_NOT_AVAILABLE, mb.member_id))
            if mb.sync is not None:
                sync, mb.sync = mb.sync, None
                sync.resolve(_sync_error(ErrorCode.COORDINATOR_NOT_AVAILABLE))
