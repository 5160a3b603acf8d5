"""Fetches that continue where the last one on their connection ended (CONTINUE)."""

from __future__ import annotations

import pytest

from protocol import messages as m
from protocol.errors import ErrorCode
from tests.broker.test_server import produce, values_of
from tests.rawclient import RawClient

pytestmark = pytest.mark.timeout(60)

LONG = 600_000  # ms: a fetch that only data or a later request can answer


def request(c, topic, offset, max_wait_ms=LONG, max_bytes=1 << 20, partitions=(0,)):
    return m.FetchRequest(max_wait_ms=max_wait_ms, correlation_id=c.next_id(), partitions=tuple(
        m.FetchPartition(topic, p, offset, max_bytes) for p in partitions))


def test_a_continued_fetch_reads_where_the_last_answer_ended(broker):
    with RawClient(broker.host, broker.port) as c:
        for v in (b"0", b"1", b"2"):
            produce(c, "cont", [v])
        first = c.request(request(c, "cont", 1, max_wait_ms=0, max_bytes=1))  # one batch: offset 1
        assert values_of(first.partitions[0].records) == [b"1"]
        assert first.partitions[0].fetch_offset == 1
        nxt = c.request(request(c, "cont", m.CONTINUE, max_wait_ms=0))
        assert nxt.partitions[0].fetch_offset == 2
        assert values_of(nxt.partitions[0].records) == [b"2"]
        # at the end: an empty answer continues from the same place
        empty = c.request(request(c, "cont", m.CONTINUE, max_wait_ms=0))
        assert empty.partitions[0].fetch_offset == 3 and len(empty.partitions[0].records) == 0
        again = c.request(request(c, "cont", m.CONTINUE, max_wait_ms=0))
        assert again.partitions[0].fetch_offset == 3


def test_a_continued_fetch_waits_behind_the_parked_one_and_parks_in_turn(broker):
    """The pipelined pair a consumer keeps: each append is answered by a fetch
    that was already parked, and the one behind it parks at once."""
    with RawClient(broker.host, broker.port) as c, RawClient(broker.host, broker.port) as p:
        produce(p, "pipe", [b"0"])
        lead = request(c, "pipe", 1)
        follow = request(c, "pipe", m.CONTINUE)
        c.send(lead)
        c.send(follow)  # must not cut the parked lead short
        produce(p, "pipe", [b"1"])
        first = c.next_event()
        assert first.correlation_id == lead.correlation_id
        assert values_of(first.partitions[0].records) == [b"1"]
        third = request(c, "pipe", m.CONTINUE)
        c.send(third)  # queued behind the follower, which is parked at offset 2
        produce(p, "pipe", [b"2"])
        second = c.next_event()
        assert second.correlation_id == follow.correlation_id
        assert second.partitions[0].fetch_offset == 2
        assert values_of(second.partitions[0].records) == [b"2"]
        produce(p, "pipe", [b"3", b"4"])
        last = c.next_event()
        assert last.correlation_id == third.correlation_id
        assert last.partitions[0].fetch_offset == 3
        assert values_of(last.partitions[0].records) == [b"3", b"4"]


def test_another_request_cuts_short_the_parked_fetch_and_the_queued_ones(broker):
    with RawClient(broker.host, broker.port, timeout=10) as c:
        produce(c, "cut", [b"0"])
        reqs = [request(c, "cut", 1), request(c, "cut", m.CONTINUE), request(c, "cut", m.CONTINUE)]
        for r in reqs:
            c.send(r)
        meta = m.MetadataRequest(topics=("cut",), correlation_id=c.next_id())
        c.send(meta)
        answers = [c.next_event() for _ in range(4)]  # within the socket's 10 s
        assert [a.correlation_id for a in answers] == [r.correlation_id for r in reqs] + [meta.correlation_id]
        for a in answers[:3]:
            assert a.partitions[0].error_code == 0 and len(a.partitions[0].records) == 0
            assert a.partitions[0].fetch_offset == 1


def test_a_fetch_from_elsewhere_behind_a_parked_one_still_cuts_it_short(broker):
    with RawClient(broker.host, broker.port, timeout=10) as c:
        produce(c, "seek", [b"0"])
        parked = request(c, "seek", 1)
        c.send(parked)
        again = c.request(request(c, "seek", 0, max_wait_ms=0))  # a seek: an offset of its own
        assert again.correlation_id == parked.correlation_id  # the parked one answers first
        answer = c.next_event()
        assert values_of(answer.partitions[0].records) == [b"0"]
        # and the next continuation follows the seek's answer
        nxt = c.request(request(c, "seek", m.CONTINUE, max_wait_ms=0))
        assert nxt.partitions[0].fetch_offset == 1


def test_continuing_with_nothing_to_continue_is_an_invalid_request(broker):
    with RawClient(broker.host, broker.port) as c:
        produce(c, "fresh", [b"0"])
        resp = c.request(request(c, "fresh", m.CONTINUE))
        part = resp.partitions[0]
        assert part.error_code == ErrorCode.INVALID_REQUEST and part.fetch_offset == -1
    with RawClient(broker.host, broker.port) as other:  # ends are per connection
        c_first = other.request(request(other, "fresh", 0, max_wait_ms=0))
        assert values_of(c_first.partitions[0].records) == [b"0"]


def test_an_error_continues_from_the_offset_it_was_for(broker):
    with RawClient(broker.host, broker.port) as c:
        produce(c, "err", [b"0"])
        bad = c.request(request(c, "err", 5, max_wait_ms=0))
        assert bad.partitions[0].error_code == ErrorCode.OFFSET_OUT_OF_RANGE
        assert bad.partitions[0].fetch_offset == 5
        again = c.request(request(c, "err", m.CONTINUE, max_wait_ms=0))
        assert again.partitions[0].error_code == ErrorCode.OFFSET_OUT_OF_RANGE
        assert again.partitions[0].fetch_offset == 5


def test_a_client_that_leaves_with_fetches_queued_costs_nothing(broker):
    c = RawClient(broker.host, broker.port)
    produce(c, "gone", [b"0"])
    for r in (request(c, "gone", 1), request(c, "gone", m.CONTINUE)):
        c.send(r)
    c.close()
    with RawClient(broker.host, broker.port) as p:
        produce(p, "gone", [b"1"])  # wakes nothing that is still there
        f = p.request(request(p, "gone", 0, max_wait_ms=0))
        assert values_of(f.partitions[0].records) == [b"0", b"1"]
