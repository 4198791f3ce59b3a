"""Injectable wall clocks.

Every timed behaviour of the simulator (token/session expiry, action delays,
callback retries, rate-limit windows) reads the injected clock, so tests can
jump hours ahead with :class:`ManualClock` instead of sleeping.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

#: A clock returns wall time in seconds (like :func:`time.time`).
Clock = Callable[[], float]


def system_clock() -> float:
    """Real wall time; the default clock."""
    return time.time()


class ManualClock:
    """A clock that only moves when told to; safe to advance from any thread."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = float(start)
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> float:
        """Move time forward by ``seconds`` (must be >= 0) and return the new time."""
        if seconds < 0:
            raise ValueError("a ManualClock cannot go backwards")
        with self._lock:
            self._now += seconds
            return self._now
