"""The sticky assignors: balanced assignments that move as few partitions as possible.

Theory of operation
-------------------
Each member's subscription lists the partitions it held (``owned``) in the
generation it names. A claim counts if the partition still exists and its
topic is still in the claimant's subscription; when two members claim one
partition (a member that was kicked out and did not notice), the higher
generation wins, then the lower sort key.

*All members subscribe to the same topics* (the usual case). With N
partitions and M members, r = N mod M members get ceil(N/M) partitions and
the rest floor(N/M). Each member keeps as many of its claims as its quota
allows; the r larger quotas go to members holding that many, so the number
of partitions taken from their owner is sum(max(0, owned_i - quota_i)), the
least any balanced assignment can move. The partitions left over (unclaimed,
or over a quota) fill the members below their quota.

*Subscriptions differ.* Every valid claim is kept; each unclaimed partition,
those with the fewest candidates first, goes to the candidate holding the
fewest; then, while some partition can move to a candidate holding at least
two fewer than its current member, it moves (partitions the member did not
own before go first). Each move lowers the sum of squared counts, so this
ends, with no such move left.

``cooperative-sticky`` (KIP-429) computes the same target, then withholds
from each member the partitions another member still claims: that member
revokes them (they are not in its assignment), rejoins at once, and the next
rebalance hands them out. So partitions that stay put are never revoked, and
no partition is ever consumed by two members at once.
"""

from __future__ import annotations

from typing import Mapping

from ..structs import TopicPartition
from .assignors import COOPERATIVE, AbstractPartitionAssignor, _result, sorted_members, topic_partitions
from .codec import Subscription


def current_owners(partitions: set[TopicPartition], subscriptions: Mapping[str, Subscription],
                   rank: Mapping[str, int]) -> dict[TopicPartition, str]:
    """The valid owner of each claimed partition (see the module doc)."""
    best: dict[TopicPartition, tuple[int, int, str]] = {}
    for mid, sub in subscriptions.items():
        topics = set(sub.topics)
        for tp in sub.owned:
            if tp not in partitions or tp.topic not in topics:
                continue
            key = (-sub.generation, rank[mid], mid)
            if tp not in best or key < best[tp]:
                best[tp] = key
    return {tp: key[2] for tp, key in best.items()}


def sticky_assign(partitions_per_topic: Mapping[str, int],
                  subscriptions: Mapping[str, Subscription]) -> dict[str, list[TopicPartition]]:
    """{member_id: sorted partitions}: balanced, keeping as many valid claims as it can."""
    members = sorted_members(subscriptions)
    if not members:
        return {}
    rank = {mid: i for i, mid in enumerate(members)}
    all_tps = topic_partitions(partitions_per_topic, subscriptions)
    owners = current_owners(set(all_tps), subscriptions, rank)
    first = set(subscriptions[members[0]].topics)
    if all(set(subscriptions[mid].topics) == first for mid in members):
        assigned = _constrained(members, all_tps, owners)
    else:
        assigned = _general(members, rank, all_tps, owners, subscriptions)
    return {mid: sorted(assigned[mid]) for mid in members}


def _constrained(members: list[str], all_tps: list[TopicPartition],
                 owners: Mapping[TopicPartition, str]) -> dict[str, list[TopicPartition]]:
    minq, extra = divmod(len(all_tps), len(members))
    maxq = minq + (1 if extra else 0)
    owned: dict[str, list[TopicPartition]] = {mid: [] for mid in members}
    for tp in all_tps:
        if tp in owners:
            owned[owners[tp]].append(tp)
    slots = extra  # members that may still hold maxq
    assigned: dict[str, list[TopicPartition]] = {}
    at_max: set[str] = set()
    for mid in sorted(members, key=lambda m: -len(owned[m])):  # stable: ties keep member order
        if extra and slots and len(owned[mid]) >= maxq:
            assigned[mid] = owned[mid][:maxq]
            at_max.add(mid)
            slots -= 1
        else:
            assigned[mid] = owned[mid][:minq]
    kept = {tp for tps in assigned.values() for tp in tps}
    free = iter([tp for tp in all_tps if tp not in kept])
    for mid in members:
        while len(assigned[mid]) < minq:
            assigned[mid].append(next(free))
    for mid in members:
        if not slots:
            break
        if mid not in at_max:
            assigned[mid].append(next(free))
            slots -= 1
    return assigned


def _general(members: list[str], rank: Mapping[str, int], all_tps: list[TopicPartition],
             owners: Mapping[TopicPartition, str],
             subscriptions: Mapping[str, Subscription]) -> dict[str, set[TopicPartition]]:
    topics_of = {mid: set(subscriptions[mid].topics) for mid in members}
    candidates = {tp: [mid for mid in members if tp.topic in topics_of[mid]] for tp in all_tps}
    assigned: dict[str, set[TopicPartition]] = {mid: set() for mid in members}
    for tp, mid in owners.items():
        assigned[mid].add(tp)
    for tp in sorted((tp for tp in all_tps if tp not in owners), key=lambda tp: (len(candidates[tp]), tp)):
        mid = min(candidates[tp], key=lambda m: (len(assigned[m]), rank[m]))
        assigned[mid].add(tp)
    while True:
        move = _improving_move(members, rank, assigned, candidates, owners)
        if move is None:
            return assigned
        tp, src, dst = move
        assigned[src].remove(tp)
        assigned[dst].add(tp)


def _improving_move(members, rank, assigned, candidates, owners):
    """(partition, from, to) with len(to) + 1 < len(from), or None if there is none."""
    for src in sorted(members, key=lambda m: (-len(assigned[m]), rank[m])):
        count = len(assigned[src])
        if count < 2:
            return None
        for tp in sorted(assigned[src], key=lambda tp: (owners.get(tp) == src, tp)):
            for dst in sorted(candidates[tp], key=lambda m: (len(assigned[m]), rank[m])):
                if len(assigned[dst]) + 1 < count:
                    return tp, src, dst
                break  # candidates are sorted by count: the first is the best
    return None


class StickyPartitionAssignor(AbstractPartitionAssignor):
    """Eager sticky: members revoke everything before rejoining, but get most of it back."""

    name = "sticky"

    def assign(self, partitions_per_topic, subscriptions):
        return _result(subscriptions, sticky_assign(partitions_per_topic, subscriptions))


class CooperativeStickyAssignor(AbstractPartitionAssignor):
    """Incremental cooperative rebalancing: only partitions that move are revoked."""

    name = "cooperative-sticky"
    rebalance_protocol = COOPERATIVE

    def assign(self, partitions_per_topic, subscriptions):
        target = sticky_assign(partitions_per_topic, subscriptions)
        claims: dict[TopicPartition, set[str]] = {}
        for mid, sub in subscriptions.items():
            for tp in sub.owned:
                claims.setdefault(tp, set()).add(mid)
        # keep a partition only if nobody else still holds it
        withheld = {mid: [tp for tp in tps if mid in claims.get(tp, {mid})] for mid, tps in target.items()}
        return _result(subscriptions, withheld)
