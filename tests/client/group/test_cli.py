"""``ferry group`` and ``ferry consume --group`` end to end: bin/ferry in a subprocess."""

from __future__ import annotations

import json

import pytest

from client import Admin, TopicPartition
from tests.brokerproc import BrokerProcess

from ..test_cli import ferry
from .helpers import GROUP_FLAGS, consumer, poll_all, settled, wait_for

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    proc = BrokerProcess(tmp_path_factory.mktemp("groupcli") / "data", *GROUP_FLAGS).start()
    yield proc
    proc.kill()


def ok(res):
    assert res.returncode == 0, res.stderr
    return res


def test_consume_with_a_group_resumes_where_the_last_one_left_off(broker):
    ok(ferry(broker, "topic", "create", "resume", "-p", "1"))
    ok(ferry(broker, "produce", "resume", input="a\nb\nc\nd\ne\nf\n"))
    res = ok(ferry(broker, "consume", "resume", "--group", "readers", "--from-beginning", "-n", "4"))
    assert res.stdout.splitlines() == ["a", "b", "c", "d"]
    res = ok(ferry(broker, "consume", "resume", "--group", "readers", "-n", "2"))
    assert res.stdout.splitlines() == ["e", "f"]
    res = ok(ferry(broker, "group", "describe", "readers", "--json"))
    (group,) = json.loads(res.stdout)
    assert group["state"] == "Empty" and group["total_lag"] == 0
    assert [(p["partition"], p["committed"]) for p in group["partitions"]] == [(0, 6)]


def test_describe_shows_members_committed_offsets_and_lag(broker):
    ok(ferry(broker, "topic", "create", "lagged", "-p", "3"))
    for p, n in ((0, 5), (1, 8), (2, 2)):
        ok(ferry(broker, "produce", "lagged", "-p", str(p), input="x\n" * n))
    with Admin(bootstrap_servers=broker.bootstrap) as admin:
        admin.alter_consumer_group_offsets("lagging", {TopicPartition("lagged", 0): 2, TopicPartition("lagged", 1): 8})
    res = ok(ferry(broker, "group", "describe", "lagging", "--json"))
    (group,) = json.loads(res.stdout)
    rows = {p["partition"]: p for p in group["partitions"]}
    assert set(rows) == {0, 1}  # nothing committed to, or assigned from, partition 2
    for p, committed, end in ((0, 2, 5), (1, 8, 8)):
        assert (rows[p]["committed"], rows[p]["log_end_offset"]) == (committed, end)
        assert rows[p]["lag"] == end - committed
    assert group["total_lag"] == 3 and group["members"] == []

    member = consumer(broker.bootstrap, "lagged", "lagging", client_id="lag-reader", enable_auto_commit=False)
    try:
        wait_for(lambda: settled([member], 3), 20, "the member's assignment", lambda: poll_all([member]))
        res = ok(ferry(broker, "group", "describe", "lagging", "--json"))
        (group,) = json.loads(res.stdout)
        assert group["state"] == "Stable" and group["protocol"] == "cooperative-sticky"
        (m,) = group["members"]
        assert m["client_id"] == "lag-reader" and m["host"] == "127.0.0.1"
        assert sorted(map(tuple, m["partitions"])) == [("lagged", 0), ("lagged", 1), ("lagged", 2)]
        rows = {p["partition"]: p for p in group["partitions"]}
        assert rows[2]["committed"] is None and rows[2]["lag"] == 2  # nothing committed: the whole log
        assert {r["member_id"] for r in rows.values()} == {m["member_id"]}
        res = ok(ferry(broker, "group", "describe", "lagging"))
        lines = res.stdout.splitlines()
        assert "STATE        Stable" in lines and "TOTAL-LAG    5" in lines
        header = next(line for line in lines if line.startswith("TOPIC"))
        assert header.split() == ["TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-START-OFFSET", "LOG-END-OFFSET",
                                  "LAG", "MEMBER-ID", "CLIENT-ID", "HOST"]
        row2 = next(line.split() for line in lines if line.startswith("lagged") and line.split()[1] == "2")
        assert row2[2] == "-" and row2[5] == "2"
        # an active group's offsets cannot be reset
        res = ferry(broker, "group", "reset-offsets", "lagging", "--topic", "lagged", "--to-latest")
        assert res.returncode == 1 and "inactive" in res.stderr and "Traceback" not in res.stderr
    finally:
        member.close()


def test_reset_offsets_dry_run_then_execute(broker):
    ok(ferry(broker, "topic", "create", "resets", "-p", "2"))
    for p in (0, 1):
        ok(ferry(broker, "produce", "resets", "-p", str(p), input="r\n" * 10))
    with Admin(bootstrap_servers=broker.bootstrap) as admin:
        admin.alter_consumer_group_offsets("resetters", {TopicPartition("resets", 0): 4, TopicPartition("resets", 1): 6})

        def committed():
            return {tp.partition: om.offset for tp, om in admin.list_consumer_group_offsets("resetters").items()}

        res = ok(ferry(broker, "group", "reset-offsets", "resetters", "--topic", "resets", "--to-earliest"))
        assert "dry run" in res.stdout
        rows = [line.split() for line in res.stdout.splitlines() if line.startswith("resets")]
        assert rows == [["resets", "0", "4", "0"], ["resets", "1", "6", "0"]]
        assert committed() == {0: 4, 1: 6}

        res = ok(ferry(broker, "group", "reset-offsets", "resetters", "--topic", "resets:1", "--shift-by", "-2",
                       "--execute", "--json"))
        assert json.loads(res.stdout)["partitions"] == [
            {"topic": "resets", "partition": 1, "current": 6, "new": 4}]
        assert committed() == {0: 4, 1: 4}

        ok(ferry(broker, "group", "reset-offsets", "resetters", "--topic", "resets", "--to-offset", "99",
                 "--execute"))
        assert committed() == {0: 10, 1: 10}  # clamped to the log end
        ok(ferry(broker, "group", "reset-offsets", "resetters", "--topic", "resets", "--to-datetime",
                 "2000-01-01T00:00:00Z", "--execute"))
        assert committed() == {0: 0, 1: 0}

    res = ferry(broker, "group", "reset-offsets", "resetters", "--topic", "resets")
    assert res.returncode == 2 and "exactly one" in res.stderr


def test_list_and_delete(broker):
    with Admin(bootstrap_servers=broker.bootstrap) as admin:
        admin.create_topics(["listed"])
        admin.alter_consumer_group_offsets("to-delete", {TopicPartition("listed", 0): 0})
    res = ok(ferry(broker, "group", "list", "--json"))
    assert {"group_id": "to-delete", "state": "Empty", "protocol_type": ""} in json.loads(res.stdout)
    res = ok(ferry(broker, "group", "list"))
    assert res.stdout.splitlines()[0].split() == ["GROUP", "STATE", "PROTOCOL-TYPE"]
    ok(ferry(broker, "group", "delete", "to-delete"))
    res = ok(ferry(broker, "group", "list", "--json"))
    assert "to-delete" not in {g["group_id"] for g in json.loads(res.stdout)}
    res = ferry(broker, "group", "describe", "to-delete")
    assert res.returncode == 4 and "does not exist" in res.stderr
    res = ferry(broker, "group", "delete", "to-delete")
    assert res.returncode == 4
