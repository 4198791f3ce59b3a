"""The worker loop: one loop drives every registered kind of work until stopped (or idle).

Each kind of background work — queue messages (a carrier slice, a check round), applying stored
callbacks, relaying and recovering wake-ups, billing steps, webhook deliveries — is a ``WorkSource``
registered by the package that owns it. The loop knows none of them: each turn it asks every source to do
what is due, then sleeps until the earliest source says something will be due.

A database or queue that goes away is an outage, not a crash: the turn is abandoned where it is, the
process's ``Outage`` tracker for that dependency logs once when the outage starts and once, with its
duration, when it ends (``/readyz`` reads the same tracker), and the loop backs off with jitter and tries
again. Any other error of a source is logged and retried on a later turn: one kind of work failing never
stops the others.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import structlog

from bulkchange.jobs.outage import Outage, QueueUnavailable
from bulkchange.store.db import is_connection_lost

log = structlog.get_logger("bulkchange.worker")


class WorkSource(Protocol):
    """Background work of one kind, kept in the database (or a queue) like everything else."""

    kind: str

    async def run_due(self) -> int:
        """Do what is due now; return how much was done (0: nothing was due)."""
        ...

    def next_due_in_s(self) -> float | None:
        """Seconds until work of this kind is due (0: now), or None when none is waiting."""
        ...


def is_outage(exc: BaseException) -> bool:
    """The database or the queue is unreachable: wait, do not fail the work."""
    return isinstance(exc, QueueUnavailable) or is_connection_lost(exc)


@dataclass
class WorkerLoop:
    """Runs ``sources`` in registration order, turn after turn."""

    sources: Sequence[WorkSource]
    db_outage: Outage
    queue_outage: Outage
    poll_s: float = 0.5

    async def run(self, *, until_idle: bool = False, stop: asyncio.Event | None = None) -> int:
        """Turn after turn until ``stop`` is set — or, with ``until_idle``, until no source has anything
        waiting two quiet turns in a row (work another process finished meanwhile is seen). Returns the
        units of work done."""
        done = quiet = 0
        while stop is None or not stop.is_set():
            try:
                units = await self.turn()
                # Only an idle turn asks when work is due: after a productive one the loop turns again at once.
                wait = None if units else self.next_due_in_s()
            except Exception as exc:
                if not is_outage(exc):
                    raise
                tracker = self.queue_outage if isinstance(exc, QueueUnavailable) else self.db_outage
                await _pause(tracker.failed(exc.__cause__ or exc), stop)
                continue
            self.db_outage.recovered()
            self.queue_outage.recovered()
            done += units
            if units:
                quiet = 0
                continue
            if until_idle and wait is None:
                quiet += 1
                if quiet >= 2:
                    break
                continue
            await _pause(self.poll_s if wait is None else min(self.poll_s, max(0.01, wait)), stop)
        return done

    async def turn(self) -> int:
        """Every source once; the units of work done."""
        units = 0
        for source in self.sources:
            units += await self._run(source)
        return units

    def next_due_in_s(self) -> float | None:
        """Seconds until the earliest source has work (0: now), or None when none is waiting."""
        waits = [w for w in (self._due(source) for source in self.sources) if w is not None]
        return min(waits) if waits else None

    @staticmethod
    async def _run(source: WorkSource) -> int:
        try:
            return await source.run_due()
        except Exception as exc:
            if is_outage(exc):
                raise
            log.exception("work failed; it will be tried again", kind=source.kind)
            return 0

    @staticmethod
    def _due(source: WorkSource) -> float | None:
        try:
            return source.next_due_in_s()
        except Exception as exc:
            if is_outage(exc):
                raise
            log.exception("could not tell when work is due; looking again shortly", kind=source.kind)
            return 1.0


async def _pause(seconds: float, stop: asyncio.Event | None) -> None:
    """Wait ``seconds``, or less if the worker is told to stop."""
    if stop is None:
        await asyncio.sleep(seconds)
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
