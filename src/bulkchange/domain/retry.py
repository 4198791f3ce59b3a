"""Retry policy: capped exponential backoff with full jitter, honouring Retry-After — as a decision.

Every kind of durable work (carrier steps, billing steps, webhook deliveries, wake-ups) asks the same
question after a transient failure: try again, and when — or give up? ``RetryPolicy.decide`` answers it
with a ``RetryDecision`` the caller records on the row; nothing else in bulkchange computes a backoff.

Pure: the caller passes the clock's "now" and the random source, so tests are deterministic.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class RetryDecision:
    """What to do after attempt ``attempts`` failed transiently.

    ``retry_at`` is when the work is due again, or None when the attempts are used up (give up).
    """

    attempts: int
    retry_at: datetime | None
    delay_s: float

    @property
    def give_up(self) -> bool:
        return self.retry_at is None

    def describe(self) -> str:
        """A readable tail for status details: "retry 3 in 12s" or "gave up after 5 attempts"."""
        if self.retry_at is None:
            return f"gave up after {self.attempts} attempts"
        return f"retry {self.attempts + 1} in {self.delay_s:.0f}s"


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how late transiently failed work is tried again.

    ``max_attempts`` counts every claim of the work (attempts are counted when a row is claimed, so a
    crash loop also ends).
    """

    max_attempts: int = 5
    base_s: float = 5.0
    cap_s: float = 300.0

    def delay_s(self, attempt: int, *, retry_after_s: float | None = None, rng: random.Random | None = None) -> float:
        """Seconds to wait before attempt ``attempt + 1`` (full jitter; never less than Retry-After)."""
        source = rng or random
        ceiling = min(self.cap_s, self.base_s * (2 ** max(attempt - 1, 0)))
        delay = source.uniform(0, ceiling)
        if retry_after_s is not None:
            delay = max(delay, retry_after_s)
        return delay

    def exhausted(self, attempt: int) -> bool:
        """True when ``attempt`` attempts have been used up."""
        return attempt >= self.max_attempts

    def decide(
        self,
        attempts: int,
        *,
        now: datetime,
        retry_after_s: float | None = None,
        rng: random.Random | None = None,
    ) -> RetryDecision:
        """After ``attempts`` attempts (the failed one included): when to try again, or give up."""
        if self.exhausted(attempts):
            return RetryDecision(attempts, None, 0.0)
        delay = self.delay_s(attempts, retry_after_s=retry_after_s, rng=rng)
        return RetryDecision(attempts, now + timedelta(seconds=delay), delay)
