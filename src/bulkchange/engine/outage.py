"""Waiting out an outage of the database or the queue instead of dying of it.

Every long-running loop of a process (the worker loop, the callback applier, the wake-up relay) shares
one ``Outage`` per dependency (``EngineContext.db_outage`` / ``queue_outage``). A loop that finds the
dependency unreachable calls ``failed``: the first failure of an outage logs one warning, later ones only
count, and each returns how long to wait before trying again (the project's ``RetryPolicy``: capped
exponential backoff with full jitter, so many workers do not hammer a database that is starting up in
step). The first pass that works again calls ``recovered``, which logs one line with how long the outage
lasted. ``/readyz`` answers "not ready" while ``active``.

The tracker only reports and paces; what a loop does about the work it had in hand is the loop's
business (the worker gives its received messages back, the relay leaves its rows for the next pass).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable

import structlog

from bulkchange.domain.retry import RetryPolicy

log = structlog.get_logger("bulkchange.outage")


class QueueUnavailable(Exception):
    """The queue transport failed (SQS unreachable, an error answered): retried like a database outage."""


def describe(exc: BaseException, limit: int = 300) -> str:
    """The error's first line, shortened: what the outage warning shows (engines hide bound parameters)."""
    text = str(exc).strip().splitlines()
    first = text[0] if text else type(exc).__name__
    return first[:limit]


class Outage:
    """One dependency's availability as this process's loops see it (thread-safe; see the module doc)."""

    def __init__(
        self,
        dependency: str,
        policy: RetryPolicy,
        *,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.dependency = dependency
        self.policy = policy
        self._rng = rng or random.Random()
        self._clock = clock
        self._lock = threading.Lock()
        self._since: float | None = None
        self._failures = 0

    @property
    def active(self) -> bool:
        """An outage is in progress (a failure was seen and no pass has worked since)."""
        return self._since is not None

    def down_for_s(self) -> float | None:
        """Seconds since the outage began, or ``None`` when there is none."""
        since = self._since
        return None if since is None else max(0.0, self._clock() - since)

    def failed(self, exc: BaseException) -> float:
        """Record a failed attempt; return the seconds to wait before the next one.

        Only the first failure of an outage is logged (a warning naming the error); the caller logs nothing.
        """
        with self._lock:
            self._failures += 1
            failures = self._failures
            starting = self._since is None
            if starting:
                self._since = self._clock()
            delay = self.policy.delay_s(failures, rng=self._rng)
        if starting:
            log.warning(
                f"{self.dependency} unavailable; waiting for it to come back",
                dependency=self.dependency,
                error=describe(exc),
            )
        return delay

    def recovered(self) -> None:
        """Record a pass that worked: ends the outage (one info line with its duration) if one was on."""
        if self._since is None:  # the common case: nothing to do, no lock taken
            return
        with self._lock:
            since, failures = self._since, self._failures
            self._since, self._failures = None, 0
        if since is not None:
            log.info(
                f"{self.dependency} available again",
                dependency=self.dependency,
                outage_s=round(self._clock() - since, 1),
                failed_attempts=failures,
            )
