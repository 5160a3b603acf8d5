"""Partition assignors: how the group leader splits partitions among members.

The leader's consumer runs the assignor the coordinator chose (the first one,
in the members' order of preference, that every member offers) over every
member's ``Subscription`` and the partition counts of the topics, and sends
each member its ``Assignment`` in SyncGroup.

An assignor is an object with ``name``, ``rebalance_protocol`` ("eager" or
"cooperative"), ``metadata(topics, owned, generation)`` returning the
``Subscription`` to offer, ``assign(partitions_per_topic, subscriptions)``
returning ``{member_id: Assignment}``, and ``on_assignment(assignment,
generation)`` (kafka-python's AbstractPartitionAssignor, reshaped). Every
assignor here is deterministic: the same input gives the same output, so any
member can be leader.

* ``range``: per topic, consecutive ranges of partitions to the members
  subscribed to it, sorted; the first members get one more when it does not
  divide evenly (balanced per topic, not across topics).
* ``roundrobin``: every partition of every topic, sorted, dealt in turn to
  the members subscribed to its topic.
* ``sticky`` and ``cooperative-sticky``: see ``sticky``.

Members sort by ``group_instance_id`` when they have one, so a restarted
static member lands in the same place, else by member id.
"""

from __future__ import annotations

import abc
from typing import ClassVar, Iterable, Mapping

from ..structs import TopicPartition
from .codec import Assignment, Subscription

EAGER = "eager"
COOPERATIVE = "cooperative"


class AbstractPartitionAssignor(abc.ABC):
    """Base of the assignors; subclass it and implement ``assign`` to write your own."""

    name: ClassVar[str] = ""
    rebalance_protocol: ClassVar[str] = EAGER

    def metadata(self, topics: Iterable[str], owned: Iterable[TopicPartition] = (),
                 generation: int = -1) -> Subscription:
        """The subscription this member offers for this assignor."""
        return Subscription(tuple(sorted(set(topics))), frozenset(owned), generation)

    @abc.abstractmethod
    def assign(self, partitions_per_topic: Mapping[str, int],
               subscriptions: Mapping[str, Subscription]) -> dict[str, Assignment]:
        """{member_id: Assignment} for every member in ``subscriptions``.

        ``partitions_per_topic`` has the partition count of every subscribed
        topic that exists; topics missing from it get no assignment.
        """

    def on_assignment(self, assignment: Assignment, generation: int) -> None:
        """Called on every member with its assignment once a rebalance completes."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


def sorted_members(subscriptions: Mapping[str, Subscription]) -> list[str]:
    return sorted(subscriptions, key=lambda mid: (subscriptions[mid].sort_key(), mid))


def topic_partitions(partitions_per_topic: Mapping[str, int],
                     subscriptions: Mapping[str, Subscription]) -> list[TopicPartition]:
    """Every partition of the topics some member subscribes to, sorted."""
    topics = {t for s in subscriptions.values() for t in s.topics if partitions_per_topic.get(t, 0) > 0}
    return [TopicPartition(t, p) for t in sorted(topics) for p in range(partitions_per_topic[t])]


def _result(members: Iterable[str], assigned: Mapping[str, Iterable[TopicPartition]]) -> dict[str, Assignment]:
    return {mid: Assignment(frozenset(assigned.get(mid, ()))) for mid in members}


class RangePartitionAssignor(AbstractPartitionAssignor):
    name = "range"

    def assign(self, partitions_per_topic, subscriptions):
        members = sorted_members(subscriptions)
        assigned: dict[str, list[TopicPartition]] = {mid: [] for mid in members}
        topics = sorted({t for s in subscriptions.values() for t in s.topics})
        for topic in topics:
            count = partitions_per_topic.get(topic, 0)
            subscribers = [mid for mid in members if topic in subscriptions[mid].topics]
            if not count or not subscribers:
                continue
            per, extra = divmod(count, len(subscribers))
            start = 0
            for i, mid in enumerate(subscribers):
                n = per + (1 if i < extra else 0)
                assigned[mid].extend(TopicPartition(topic, p) for p in range(start, start + n))
                start += n
        return _result(members, assigned)


class RoundRobinPartitionAssignor(AbstractPartitionAssignor):
    name = "roundrobin"

    def assign(self, partitions_per_topic, subscriptions):
        members = sorted_members(subscriptions)
        assigned: dict[str, list[TopicPartition]] = {mid: [] for mid in members}
        if not members:
            return {}
        i = 0
        for tp in topic_partitions(partitions_per_topic, subscriptions):
            for _ in range(len(members)):
                mid = members[i % len(members)]
                i += 1
                if tp.topic in subscriptions[mid].topics:
                    assigned[mid].append(tp)
                    break
        return _result(members, assigned)


def _registry() -> dict[str, type[AbstractPartitionAssignor]]:
    from .sticky import CooperativeStickyAssignor, StickyPartitionAssignor

    return {cls.name: cls for cls in (RangePartitionAssignor, RoundRobinPartitionAssignor,
                                      StickyPartitionAssignor, CooperativeStickyAssignor)}


def assignor_names() -> list[str]:
    return list(_registry())


def resolve_assignors(strategy) -> list[AbstractPartitionAssignor]:
    """Assignor objects for ``partition_assignment_strategy``: names, classes or
    instances, one or a list. Raises ValueError for an unknown name or a
    duplicate."""
    if isinstance(strategy, (str, type, AbstractPartitionAssignor)) or not isinstance(strategy, Iterable):
        strategy = [strategy]
    registry = _registry()
    out: list[AbstractPartitionAssignor] = []
    for item in strategy:
        if isinstance(item, str):
            cls = registry.get(item)
            if cls is None:
                raise ValueError(f"unknown partition assignor {item!r}; known: {', '.join(registry)}")
            item = cls()
        elif isinstance(item, type):
            item = item()
        if not getattr(item, "name", None) or not callable(getattr(item, "assign", None)):
            raise ValueError(f"{item!r} is not a partition assignor (needs a name and assign())")
        out.append(item)
    if not out:
        raise ValueError("partition_assignment_strategy is empty")
    names = [a.name for a in out]
    if len(set(names)) != len(names):
        raise ValueError(f"partition_assignment_strategy names an assignor twice: {names}")
    return out


def rebalance_protocol(assignors: Iterable[AbstractPartitionAssignor]) -> str:
    """Cooperative only if every assignor offered is (Kafka's rule): a member
    must behave the same whichever of its assignors the coordinator picks."""
    return COOPERATIVE if all(getattr(a, "rebalance_protocol", EAGER) == COOPERATIVE for a in assignors) \
        else EAGER
