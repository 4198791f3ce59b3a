"""A hard deadline: the moment by which a piece of work must have returned, on the monotonic clock.

One ``Deadline`` is made where the time limit is known (the Lambda handler, from the invocation's
remaining time less its cutoff) and handed down to every call that can block: each bounds its own
timeout with ``bounded(timeout)`` and does not start at all when ``allows(minimum)`` is false. So a
hanging carrier, billing API or webhook receiver can no longer hold an invocation past its limit.

``margin_s`` is kept free at the end of every bounded wait: the time the caller needs after a call
returns (to record its outcome) before the deadline itself.

Work refused for lack of time raises an ``OutOfTime`` subclass (``carrier.errors.DeadlineExceeded``,
``integrations.revio.RevioDeadlineExceeded``): nothing was started, so the caller releases what it
claimed without counting an attempt, and the work is picked up again by the next invocation.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

DEFAULT_MARGIN_S = 1.0


class OutOfTime(Exception):
    """Work was not started (or was cut short before it had any effect) because the deadline was too close."""


@dataclass(frozen=True)
class Deadline:
    """``end`` is a value of ``clock`` (``time.monotonic`` unless a test gives another clock)."""

    end: float
    margin_s: float = DEFAULT_MARGIN_S
    clock: Callable[[], float] = field(default=time.monotonic, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.margin_s < 0:
            raise ValueError(f"margin_s must be >= 0, got {self.margin_s}")

    @classmethod
    def after(
        cls, seconds: float, *, margin_s: float = DEFAULT_MARGIN_S, clock: Callable[[], float] = time.monotonic
    ) -> Deadline:
        """The deadline ``seconds`` from now (a negative value gives one that has already passed)."""
        return cls(end=clock() + seconds, margin_s=margin_s, clock=clock)

    def remaining_s(self) -> float:
        """Seconds until the deadline (0 once it has passed)."""
        return max(0.0, self.end - self.clock())

    @property
    def expired(self) -> bool:
        return self.clock() >= self.end

    def usable_s(self) -> float:
        """Seconds a call may still take: the remaining time less the margin (0 when none is left)."""
        return max(0.0, self.remaining_s() - self.margin_s)

    def bounded(self, timeout: float) -> float:
        """``min(timeout, remaining − margin)``, never negative: the timeout to give the next call."""
        return max(0.0, min(timeout, self.usable_s()))

    def allows(self, seconds: float) -> bool:
        """Whether ``seconds`` of work still fit before the deadline, margin kept (never once none is left)."""
        usable = self.usable_s()
        return usable > 0 and usable >= seconds

    def earlier(self, other: Deadline | None) -> Deadline:
        """The sooner of two deadlines (``self`` when ``other`` is None)."""
        if other is None or self.end <= other.end:
            return self
        return other


def bounded(deadline: Deadline | None, timeout: float) -> float:
    """``timeout`` bounded by ``deadline`` when there is one."""
    return timeout if deadline is None else deadline.bounded(timeout)
