"""The consumer's doorbell: no lost wake-up between arming, looking and waiting."""

import collections
import threading

from client.record_buffer import Doorbell


def test_a_ring_from_another_thread_wakes_the_waiter():
    bell = Doorbell()
    bell.arm()
    t = threading.Thread(target=bell.ring)
    t.start()
    assert bell.wait(10)
    t.join(10)


def test_an_unarmed_ring_is_dropped_and_the_wait_times_out():
    bell = Doorbell()
    bell.ring()
    bell.arm()
    assert not bell.wait(0.01)
    assert not bell.armed


def test_a_ring_between_arming_and_waiting_is_kept_and_rings_twice_are_one():
    bell = Doorbell()
    bell.arm()
    bell.ring()
    bell.ring()  # not armed any more: nothing happens
    bell.arm()
    bell.ring()  # the lock is free already: no error
    assert bell.wait(0)
    assert not bell.wait(0)


def test_no_item_is_left_waiting_while_another_thread_keeps_adding():
    bell, items, n = Doorbell(), collections.deque(), 20_000

    def produce():
        for i in range(n):
            items.append(i)
            bell.ring()

    t = threading.Thread(target=produce)
    t.start()
    got = []
    while len(got) < n:
        bell.arm()
        if items:
            got.append(items.popleft())
            continue
        # more items are coming, each rung after it is added: only a lost
        # ring would leave this wait to time out
        assert bell.wait(10), "lost wake-up"
    t.join(10)
    assert got == list(range(n))


def test_chunks_put_while_held_wake_the_consumer_only_at_release():
    """The fetcher holds the wake-up while it sends its next fetches, so the
    consuming thread is not woken only to wait for the GIL; it must still be
    woken once, at release, for everything put meanwhile."""
    from client.record_buffer import RecordBuffer
    from client.subscription import SubscriptionState

    buf = RecordBuffer(SubscriptionState(), on_taken=lambda: None)
    buf.arm()
    buf.hold()
    buf.put("chunk 1")
    buf.put("chunk 2")
    assert not buf.wait_blocking(0)  # held: not rung yet
    buf.arm()
    buf.release()
    assert buf.wait_blocking(0)  # rung once at release
    assert list(buf._chunks) == ["chunk 1", "chunk 2"]
    buf.arm()
    buf.hold()
    buf.release()  # nothing put: no ring
    assert not buf.wait_blocking(0)
    buf.arm()
    buf.put("chunk 3")  # not held: rings at once
    assert buf.wait_blocking(0)
