"""``Throttler``: paces background I/O to a bytes-per-second budget.

The cleaner calls ``tick(n)`` after reading or writing ``n`` bytes; once the
bytes done since ``reset`` are ahead of what the budget allows for the time
that passed, it sleeps the difference. Sleeps shorter than ``min_sleep`` are
put off and merged into a later one, so a stream of small batches does not
turn into a stream of tiny sleeps. The clock and the sleep function are
injected: tests pass a fake clock whose sleep just advances it.
"""

from __future__ import annotations

import time
from typing import Callable


class Throttler:
    """Keeps a caller at or below ``max_bytes_per_second`` (None or <= 0: unlimited)."""

    def __init__(
        self,
        max_bytes_per_second: float | None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        min_sleep: float = 0.01,
    ) -> None:
        self.rate = max_bytes_per_second if max_bytes_per_second and max_bytes_per_second > 0 else None
        self._clock = clock
        self._sleep = sleep
        self.min_sleep = min_sleep
        self.slept = 0.0  # seconds slept in total, for tests and stats
        self.reset()

    def reset(self) -> None:
        """Start a new measuring period (so idle time before it earns no credit)."""
        self._start = self._clock()
        self._bytes = 0

    def tick(self, nbytes: int) -> None:
        """Account for ``nbytes`` of I/O just done; sleeps if ahead of the budget. Blocks."""
        if self.rate is None:
            return
        self._bytes += nbytes
        ahead = self._bytes / self.rate - (self._clock() - self._start)
        if ahead >= self.min_sleep:
            self._sleep(ahead)
            self.slept += ahead
