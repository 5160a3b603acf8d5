"""The background thread that runs the blocking clients' event loop.

``Producer``, ``Consumer`` and ``Admin`` each own one ``LoopThread``: an asyncio
loop (uvloop when it is installed) running in a daemon thread, where their
asyncio counterparts live. Callers block on ``run(coro, timeout)``; hot paths
avoid it and hand work over with ``call_soon`` instead.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from typing import Any, Awaitable, Callable

from .errors import FerryTimeoutError, IllegalStateError


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A uvloop loop if uvloop is importable, else asyncio's default."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Unix
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class LoopThread:
    """An event loop running forever in its own daemon thread until ``stop()``."""

    def __init__(self, name: str = "ferry-io") -> None:
        self.loop = new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()
        self._started.wait()
        self.ident = self._thread.ident

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._started.set)
        try:
            self.loop.run_forever()
        finally:
            try:
                pending = [t for t in asyncio.all_tasks(self.loop) if not t.done()]
                for t in pending:
                    t.cancel()
                if pending:
                    self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            finally:
                self.loop.close()

    def in_loop(self) -> bool:
        return threading.get_ident() == self.ident

    @property
    def running(self) -> bool:
        return self._thread.is_alive() and not self.loop.is_closed()

    def run(self, coro: Awaitable, timeout: float | None = None, what: str = "the operation") -> Any:
        """Run ``coro`` in the loop and block for its result (or its exception).

        Raises FerryTimeoutError (and cancels it) if it takes over ``timeout``
        seconds; IllegalStateError if called from the loop's own thread.
        """
        if self.in_loop():
            coro.close()
            raise IllegalStateError("a blocking client call cannot run in the client's own I/O thread")
        if not self.running:
            coro.close()
            raise IllegalStateError("the client is closed")
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return fut.result(timeout)
        except concurrent.futures.TimeoutError:
            if fut.done():
                raise
            fut.cancel()
            raise FerryTimeoutError(f"{what} did not finish within {timeout * 1000:.0f} ms") from None

    def call_soon(self, fn: Callable, *args) -> None:
        """Schedule ``fn(*args)`` in the loop from any thread."""
        if self.in_loop():
            self.loop.call_soon(fn, *args)
        else:
            self.loop.call_soon_threadsafe(fn, *args)

    def stop(self, timeout: float | None = 10.0) -> None:
        """Stop the loop (cancelling what still runs) and join the thread. Idempotent."""
        if self.loop.is_closed() or not self._thread.is_alive():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        if not self.in_loop():
            self._thread.join(timeout)


async def _call(fn: Callable, args: tuple) -> Any:
    return fn(*args)


def call_in(thread: LoopThread, fn: Callable, *args, timeout: float | None = None) -> Any:
    """Run the plain function ``fn(*args)`` in ``thread``'s loop and return its result."""
    return thread.run(_call(fn, args), timeout)
