"""Which answers of a continuing fetch the consumer takes."""

from __future__ import annotations

from client.fetcher import Fetcher
from client.subscription import SubscriptionState
from protocol.errors import ErrorCode
from protocol.messages import FetchPartitionResponse


class Cluster:
    def __init__(self):
        self.updates = 0

    def request_update(self):
        self.updates += 1


def setup(fetch_offset=7):
    subs = SubscriptionState()
    fetcher = Fetcher(Cluster(), subs)
    st = subs._new_state()
    st.seek(fetch_offset)
    return fetcher, st


def answer(fetch_offset, error_code=0):
    return FetchPartitionResponse("t", 0, error_code=error_code, fetch_offset=fetch_offset)


def test_an_answer_from_where_fetching_stands_is_taken():
    fetcher, st = setup(7)
    assert fetcher._continued(1, st, answer(7))


def test_an_answer_from_anywhere_else_is_dropped():
    fetcher, st = setup(7)
    assert not fetcher._continued(1, st, answer(5))
    assert not fetcher._continued(1, st, answer(9))
    assert 1 not in fetcher._no_continue


def test_nothing_is_taken_while_an_error_waits_for_the_application():
    fetcher, st = setup(7)
    st.stalled = True
    assert not fetcher._continued(1, st, answer(7))


def test_errors_are_left_to_the_next_named_fetch_but_stale_metadata_is_refreshed():
    fetcher, st = setup(7)
    assert not fetcher._continued(1, st, answer(7, ErrorCode.OFFSET_OUT_OF_RANGE))
    assert fetcher.cluster.updates == 0
    assert not fetcher._continued(1, st, answer(7, ErrorCode.NOT_LEADER_OR_FOLLOWER))
    assert fetcher.cluster.updates == 1
    assert not fetcher._no_continue


def test_a_broker_that_does_not_say_where_it_read_is_not_sent_continuing_fetches():
    fetcher, st = setup(7)
    # what continuing means was lost (a new connection): not a reason to stop
    assert not fetcher._continued(1, st, answer(-1, ErrorCode.INVALID_REQUEST))
    assert fetcher._no_continue == set()
    # a broker that read offset -1 as an offset does not know CONTINUE
    assert not fetcher._continued(2, st, answer(-1, ErrorCode.OFFSET_OUT_OF_RANGE))
    assert fetcher._no_continue == {2}
