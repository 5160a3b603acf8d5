"""Long polls: woken by an append in one pass of the loop, bounded by their timeout."""

import asyncio

from broker.waiters import LogWaiters


class Log:
    """A stand-in for a fetch's read: it has enough once ``size`` reaches ``need``."""

    def __init__(self, need=1):
        self.size = 0
        self.need = need
        self.reads = 0

    def read(self, final):
        self.reads += 1
        if final or self.size >= self.need:
            return ("answer", self.size)
        return None


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 10))


def parked(waiters, read, keys=(("t", 0),), timeout=30.0):
    answered = []
    poll = waiters.park(list(keys), read, timeout)
    poll.on_done = answered.append
    return poll, answered


async def one_pass():
    await asyncio.sleep(0)


def test_an_append_answers_a_parked_poll_in_one_pass_of_the_loop():
    async def go():
        waiters, log = LogWaiters(), Log()
        poll, answered = parked(waiters, log.read)
        log.size = 1
        waiters.notify(("t", 0))
        assert not poll.done()  # not inside the append that woke it
        await one_pass()
        assert answered == [poll] and poll.result() == ("answer", 1)
        assert len(waiters) == 0

    run(go())


def test_a_poll_without_enough_keeps_waiting_and_counts_each_wake_once():
    async def go():
        waiters, log = LogWaiters(), Log(need=3)
        poll, answered = parked(waiters, log.read)
        for size in (1, 2):
            log.size = size
            waiters.notify(("t", 0))
            waiters.notify(("t", 0))  # a second append before the loop runs
            await one_pass()
            assert not poll.done()
        assert log.reads == 2
        log.size = 3
        waiters.notify(("t", 0))
        await one_pass()
        assert poll.result() == ("answer", 3) and answered == [poll]

    run(go())


def test_other_partitions_do_not_wake_it_and_the_timeout_answers_with_what_there_is():
    async def go():
        waiters, log = LogWaiters(), Log()
        poll, answered = parked(waiters, log.read, timeout=0.05)
        waiters.notify(("t", 1))
        waiters.notify(("u", 0))
        await one_pass()
        assert log.reads == 0 and not poll.done()
        while not poll.done():  # bounded by the test's wait_for
            await asyncio.sleep(0.01)
        assert poll.result() == ("answer", 0) and len(waiters) == 0

    run(go())


def test_cut_short_answers_at_once_and_a_late_wake_changes_nothing():
    async def go():
        waiters, log = LogWaiters(), Log()
        poll, answered = parked(waiters, log.read)
        log.size = 1
        waiters.notify(("t", 0))
        poll.cut_short()  # synchronously
        assert answered == [poll] and poll.result() == ("answer", 1)
        await one_pass()
        assert answered == [poll] and log.reads == 1

    run(go())


def test_a_cancelled_poll_is_forgotten_and_never_answers():
    async def go():
        waiters, log = LogWaiters(), Log()
        poll, answered = parked(waiters, log.read)
        poll.cancel()
        assert poll.cancelled() and len(waiters) == 0
        log.size = 1
        waiters.notify(("t", 0))
        await one_pass()
        assert answered == [] and log.reads == 0

    run(go())


def test_a_read_that_fails_completes_the_poll_with_its_error():
    async def go():
        waiters = LogWaiters()

        def broken(final):
            raise OSError("disk gone")

        poll, answered = parked(waiters, broken)
        waiters.notify(("t", 0))
        await one_pass()
        assert answered == [poll] and isinstance(poll.exception(), OSError)

    run(go())


def test_a_poll_on_several_partitions_answers_once():
    async def go():
        waiters, log = LogWaiters(), Log()
        poll, answered = parked(waiters, log.read, keys=[("t", 0), ("t", 1)])
        log.size = 2
        waiters.notify(("t", 0))
        waiters.notify(("t", 1))
        await one_pass()
        assert answered == [poll] and log.reads == 1 and len(waiters) == 0

    run(go())
