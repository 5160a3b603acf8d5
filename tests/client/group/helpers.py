"""Shared pieces of the consumer group tests: a broker with short group timeouts, bounded waits."""

from __future__ import annotations

import time
from typing import Callable, Iterable

from client import Admin, Consumer, NewTopic, Producer

# The broker accepts short sessions and starts a group's first generation at once.
GROUP_FLAGS = ("--group-min-session-timeout-ms", "100", "--group-initial-rebalance-delay-ms", "0")

# Fast group timing for test consumers: a dead member is noticed within ~1.5 s.
FAST = dict(session_timeout_ms=1500, heartbeat_interval_ms=100, fetch_max_wait_ms=100,
            auto_offset_reset="earliest", retry_backoff_ms=50)


def create_topic(bootstrap: str, name: str, partitions: int) -> None:
    with Admin(bootstrap_servers=bootstrap) as admin:
        admin.create_topics([NewTopic(name, partitions)])


def produce(bootstrap: str, topic: str, count: int, partitions: int, start: int = 0) -> list[bytes]:
    """``count`` records spread round-robin over the partitions; returns their values."""
    values = [f"v{i}".encode() for i in range(start, start + count)]
    with Producer(bootstrap_servers=bootstrap, linger_ms=5) as producer:
        for i, v in enumerate(values):
            producer.send(topic, v, partition=(start + i) % partitions)
        producer.flush(30)
    return values


def consumer(bootstrap: str, topic: str | None, group: str, **kw) -> Consumer:
    settings = dict(FAST)
    settings.update(kw)
    topics = (topic,) if topic else ()
    return Consumer(*topics, bootstrap_servers=bootstrap, group_id=group, **settings)


def wait_for(cond: Callable[[], bool], timeout: float, what: str,
             step: Callable[[], None] | None = None) -> float:
    """Call ``step`` until ``cond()`` holds; fail after ``timeout`` s. Returns the time it took."""
    start = time.monotonic()
    while not cond():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        if step is not None:
            step()
        else:
            time.sleep(0.02)
    return time.monotonic() - start


def poll_all(consumers: Iterable[Consumer], sink: dict | None = None, timeout_ms: int = 20,
             commit: bool = False) -> None:
    """One poll of each consumer; records go to ``sink[consumer]``; commit after processing if asked.

    Checks that a poll returns records only of partitions the consumer is assigned.
    """
    for c in consumers:
        records = c.poll(timeout_ms)
        assert set(records) <= c.assignment(), "records of a partition that is not assigned"
        if sink is not None:
            for recs in records.values():
                sink.setdefault(c, []).extend(recs)
        if commit and records:
            c.commit()


def assignments(consumers: Iterable[Consumer]) -> list[set]:
    return [c.assignment() for c in consumers]


def generation(c: Consumer) -> int:
    return c._ac._coordinator.generation


def settled(consumers: list[Consumer], partitions: int) -> bool:
    """One generation, Stable everywhere, every partition assigned once, balanced within one."""
    coords = [c._ac._coordinator for c in consumers]
    if len({co.generation for co in coords}) != 1 or any(co.state.value != "stable" for co in coords):
        return False
    if any(co._rejoin_reason is not None for co in coords):
        return False
    sets = assignments(consumers)
    sizes = [len(s) for s in sets]
    return sum(sizes) == partitions == len(set().union(*sets)) and max(sizes) - min(sizes) <= 1
