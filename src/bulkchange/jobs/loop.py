"""The worker loop: one loop drives every registered kind of work until stopped (or idle).

Each kind of background work — queue messages (a carrier slice, a check round), applying stored
callbacks, relaying wake-ups, billing steps, webhook deliveries — is a ``WorkSource`` registered by the
package that owns it. The loop knows none of them: each turn it asks every source to do what is due,
then sleeps until the earliest source says something will be due.

A database that goes away is an outage, not a crash: the turn is abandoned, the loop backs off with
jitter and tries again, logging once when the outage starts and once, with its duration, when it ends;
``health.ready`` is False meanwhile (``/readyz`` reports it). Any other error of a source is logged and
retried on a later turn: one kind of work failing never stops the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from bulkchange.domain.retry import RetryPolicy
from bulkchange.store.db import is_connection_lost as is_connection_error

log = structlog.get_logger("bulkchange.worker")


class WorkSource(Protocol):
    """Background work of one kind, kept in the database (or a queue) like everything else."""

    kind: str

    async def run_due(self) -> int:
        """Do what is due now; return how much was done (0: nothing was due)."""
        ...

    def next_due_in_s(self) -> float | None:
        """Seconds until something of this kind is due (0: now), or None when nothing is waiting."""
        ...


@dataclass
class Health:
    """What a process's loop last saw of the database (read by ``/readyz``)."""

    ready: bool = True
    outage_since: float | None = None
    last_error: str | None = None


OUTAGE_BACKOFF = RetryPolicy(max_attempts=1_000_000, base_s=0.5, cap_s=15.0)
"""Waits between tries while the database is unreachable: 0.5 s doubling to 15 s, full jitter."""


@dataclass
class WorkerLoop:
    """Runs ``sources`` in registration order, turn after turn."""

    sources: Sequence[WorkSource]
    health: Health = field(default_factory=Health)
    poll_s: float = 0.5
    outage_backoff: RetryPolicy = OUTAGE_BACKOFF
    rng: random.Random = field(default_factory=random.Random)
    monotonic: Callable[[], float] = time.monotonic

    async def run(self, *, until_idle: bool = False, stop: asyncio.Event | None = None) -> int:
        """Turn after turn until ``stop`` is set — or, with ``until_idle``, until no source has anything
        waiting (two quiet turns in a row: work another process finished meanwhile is seen). Returns the
        units of work done."""
        done = quiet = failures = 0
        while stop is None or not stop.is_set():
            try:
                units, wait = await self.turn()
            except Exception as exc:
                if not is_connection_error(exc):
                    raise
                failures += 1
                self._outage(exc)
                await self._sleep(self.outage_backoff.delay_s(failures, rng=self.rng), stop)
                continue
            failures = 0
            self._recovered()
            done += units
            if units:
                quiet = 0
                continue
            if until_idle and wait is None:
                quiet += 1
                if quiet >= 2:
                    break
                continue
            await self._sleep(self.poll_s if wait is None else min(self.poll_s, max(0.01, wait)), stop)
        return done

    async def turn(self) -> tuple[int, float | None]:
        """Every source once: (units done, seconds until the earliest source has work, or None)."""
        units = 0
        for source in self.sources:
            units += await self._run(source)
        waits = [w for w in (self._due(source) for source in self.sources) if w is not None]
        return units, (min(waits) if waits else None)

    async def _run(self, source: WorkSource) -> int:
        try:
            return await source.run_due()
        except Exception as exc:
            if is_connection_error(exc):
                raise
            log.exception("work failed; it will be tried again", kind=source.kind)
            return 0

    def _due(self, source: WorkSource) -> float | None:
        try:
            return source.next_due_in_s()
        except Exception as exc:
            if is_connection_error(exc):
                raise
            log.exception("could not tell when work is due; looking again shortly", kind=source.kind)
            return 1.0

    def _outage(self, exc: BaseException) -> None:
        self.health.last_error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
        if self.health.outage_since is None:
            self.health.outage_since = self.monotonic()
            self.health.ready = False
            log.warning("database unreachable; waiting for it to come back", error=self.health.last_error)

    def _recovered(self) -> None:
        if self.health.outage_since is None:
            return
        lasted = self.monotonic() - self.health.outage_since
        self.health.outage_since = None
        self.health.ready = True
        self.health.last_error = None
        log.info("database reachable again; carrying on", outage_s=round(lasted, 1))

    @staticmethod
    async def _sleep(seconds: float, stop: asyncio.Event | None) -> None:
        if stop is None:
            await asyncio.sleep(seconds)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=seconds)
