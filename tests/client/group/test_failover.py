"""Failures: a member SIGKILLed without LeaveGroup, and a broker SIGKILLed under committed offsets."""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import threading
import uuid

import pytest

from client import TopicPartition
from tests.brokerproc import ROOT

from .helpers import GROUP_FLAGS, assignments, consumer, create_topic, poll_all, produce, settled, wait_for

pytestmark = pytest.mark.timeout(90)


class MemberProcess:
    """tests/client/group/member_proc.py in a subprocess; its output lines collected by a thread."""

    def __init__(self, bootstrap: str, topic: str, group: str) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.client.group.member_proc", bootstrap, topic, group],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=str(ROOT), env=env)
        self.records: list[bytes] = []
        self.assigned: set[int] = set()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            if not line.endswith("\n"):
                break  # cut off by the SIGKILL: not a record it reported
            kind, _, rest = line.rstrip("\n").partition(" ")
            if kind == "record":
                self.records.append(rest.encode())
            elif kind == "assigned":
                self.assigned = {int(p) for p in rest.split(",") if p}

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()  # SIGKILL: no LeaveGroup, no last commit, sockets closed by the kernel
        self.proc.wait(10)
        self._reader.join(5)


def test_killed_member_partitions_move_within_the_session_timeout_and_nothing_is_lost(broker_factory):
    broker = broker_factory(*GROUP_FLAGS)
    suffix = uuid.uuid4().hex[:8]
    topic, group = f"t-{suffix}", f"g-{suffix}"
    create_topic(broker.bootstrap, topic, 6)
    values = produce(broker.bootstrap, topic, 600, 6)
    processed: dict = {}
    members = [consumer(broker.bootstrap, topic, group, enable_auto_commit=False) for _ in range(2)]
    victim = MemberProcess(broker.bootstrap, topic, group)
    try:
        wait_for(lambda: settled(members, 4) and len(victim.assigned) == 2, 30,
                 "three members with two partitions each", lambda: poll_all(members, processed, commit=True))
        values += produce(broker.bootstrap, topic, 600, 6, start=len(values))
        wait_for(lambda: len(victim.records) > 0, 20, "the member to be killed to process records",
                 lambda: poll_all(members, processed, commit=True))
        victim.kill()
        took = wait_for(lambda: settled(members, 6), 20, "the survivors to take the dead member's partitions",
                        lambda: poll_all(members, processed, commit=True))
        # session_timeout_ms is 1500: the coordinator evicts the member then
        # (it checks every 100 ms), and the survivors rebalance in well under a
        # second; the bound leaves room for a loaded 2-core machine while staying
        # far below the rebalance timeout (max_poll_interval_ms, 300 s)
        assert took < 1.5 + 6
        assert sorted(len(a) for a in assignments(members)) == [3, 3]
        values += produce(broker.bootstrap, topic, 600, 6, start=len(values))
        wait_for(lambda: {r.value for recs in processed.values() for r in recs} | set(victim.records)
                 >= set(values), 20, "every record", lambda: poll_all(members, processed, commit=True))
        seen = collections.Counter([r.value for recs in processed.values() for r in recs] + victim.records)
        assert set(seen) == set(values)  # at least once; the victim's uncommitted tail twice at most
        assert sum(n - 1 for n in seen.values()) <= 200
    finally:
        victim.kill()
        for c in members:
            c.close()


def test_committed_offsets_survive_a_broker_kill(broker_factory):
    broker = broker_factory(*GROUP_FLAGS)
    topic, group = "survive", "g-survive"
    create_topic(broker.bootstrap, topic, 2)
    produce(broker.bootstrap, topic, 20, 2)
    c = consumer(broker.bootstrap, topic, group, enable_auto_commit=False)
    try:
        wait_for(lambda: settled([c], 2), 20, "the assignment", lambda: poll_all([c]))
        c.commit({TopicPartition(topic, 0): 7, TopicPartition(topic, 1): 9})
        broker.restart(kill=True)
        # membership is not kept across a restart: the member is told, rejoins, and goes on
        assert c.committed(TopicPartition(topic, 0)) == 7
        wait_for(lambda: settled([c], 2) and c._ac._coordinator.rebalances >= 2, 20,
                 "the member to rejoin the restarted broker", lambda: poll_all([c]))
    finally:
        c.close()
    c = consumer(broker.bootstrap, topic, group)
    try:
        got: dict = {}
        wait_for(lambda: len(got.get(c, ())) >= 4, 20, "the records after the committed offsets",
                 lambda: poll_all([c], got))
        assert sorted({(r.partition, r.offset) for r in got[c]})[:1] == [(0, 7)]
        assert min(r.offset for r in got[c] if r.partition == 1) == 9
    finally:
        c.close()
