"""The per-account call rate of Control Center: a token bucket on a monotonic clock.

Control Center counts transactions per second per account (1 by default, more by contract) and asks for
one call at a time; the in-flight half lives in the simulator (it needs to know when a call ends).
"""

from __future__ import annotations

# Float sums of intervals (0.2 + 0.2 + …) land a hair under a whole token; that is not a client's fault.
_EPSILON = 1e-9


class TokenBucket:
    """``rate`` tokens per second, at most ``capacity`` stored; one call takes one token."""

    def __init__(self, rate: float, capacity: float, now: float) -> None:
        self.rate = rate
        self.capacity = capacity
        self._tokens = capacity
        self._last = now

    def try_take(self, now: float) -> bool:
        """Take a token and return True, or return False (nothing taken) when the bucket is empty."""
        elapsed = max(0.0, now - self._last)
        self._last = max(self._last, now)
        self._tokens = min(self.capacity, self._tokens + elapsed * self.rate)
        if self._tokens >= 1.0 - _EPSILON:
            self._tokens = max(0.0, self._tokens - 1.0)
            return True
        return False
