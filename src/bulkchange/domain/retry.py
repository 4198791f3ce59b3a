"""Retry policy for carrier steps: capped exponential backoff with full jitter, honouring Retry-After.

Pure: the caller passes the random source, so tests are deterministic.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how late a transiently failed step is tried again.

    ``max_attempts`` counts every claim of the step (attempts are counted when a row is claimed, so a
    crash loop also ends).
    """

    max_attempts: int = 5
    base_s: float = 5.0
    cap_s: float = 300.0

    def delay_s(
        self, attempt: int, *, retry_after_s: float | None = None, rng: random.Random | None = None
    ) -> float:
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
