"""Carrier-side limits: activate requests per minute and actions per line per day.

Both use rolling windows over the injected clock, so tests can fill a window,
advance a :class:`~.clock.ManualClock` and see capacity come back.
"""

from __future__ import annotations

import math
from collections import deque


class SlidingWindowLimiter:
    """At most ``limit`` events in any ``window_s`` seconds."""

    def __init__(self, limit: int, window_s: float) -> None:
        self.limit = limit
        self.window_s = window_s
        self._events: deque[float] = deque()

    def _trim(self, now: float) -> None:
        while self._events and self._events[0] <= now - self.window_s:
            self._events.popleft()

    def try_acquire(self, now: float) -> int:
        """Record an event and return 0, or return the whole seconds (>= 1) until a slot frees."""
        self._trim(now)
        if len(self._events) < self.limit:
            self._events.append(now)
            return 0
        return max(1, math.ceil(self._events[0] + self.window_s - now))


class PerLineDailyLimiter:
    """At most ``limit`` provisioning actions per line in a rolling 24 hours."""

    WINDOW_S = 24 * 3600.0

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._events: dict[str, deque[float]] = {}

    def try_acquire(self, line: str, now: float) -> bool:
        events = self._events.setdefault(line, deque())
        while events and events[0] <= now - self.WINDOW_S:
            events.popleft()
        if len(events) >= self.limit:
            return False
        events.append(now)
        return True
