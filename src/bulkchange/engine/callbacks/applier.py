"""Applying stored callbacks in the background, so a callback receiver only stores and answers.

ThingSpace sends one callback per device; 10,000 activations are 10,000 POSTs in a burst. The receiver stores
them (``callbacks.intake``: group commit, deduplicated) and nudges this applier, which applies whatever has
accumulated in batches — one transaction per batch, the bulk status refreshed at a pace (``PacedRefresh``) —
in a worker thread, while the receiver keeps answering 2xx quickly. Each nudge reads only callbacks newer than
the last it examined; callbacks still waiting for their change (early ones, or another system's on the same
account) are looked at again by a full pass every ``full_pass_s``, not on every nudge — else a burst would
re-read all of them once per callback. Nothing is lost if the process dies: stored callbacks are applied by
the next applier or by any worker loop (``worker.run_worker`` applies them too). A lost database stops no
applier: it is logged once per outage (``EngineContext.db_outage``) and the applier tries again after a
jittered backoff until the database answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import structlog

from bulkchange.engine.bulk_status import PacedRefresh
from bulkchange.engine.callbacks.apply import apply_callbacks_after, apply_pass
from bulkchange.engine.context import EngineContext
from bulkchange.store.db import is_connection_lost

log = structlog.get_logger("bulkchange.callbacks")


class CallbackApplier:
    """One background task per receiver process."""

    def __init__(
        self,
        ctx: EngineContext,
        *,
        idle_poll_s: float = 1.0,
        full_pass_s: float = 5.0,
        gather_s: float = 0.25,
        refresh_s: float = 1.0,
        limit: int = 2000,
    ) -> None:
        self._ctx = ctx
        self._limit = limit
        self._idle_poll_s = idle_poll_s
        self._full_pass_s = full_pass_s
        self._gather_s = gather_s
        # A burst's passes refresh a bulk change's counts at most every ``refresh_s`` while it cannot finish;
        # one that can is refreshed in the pass that settles its last change (``PacedRefresh``).
        self._statuses = PacedRefresh(ctx, interval_s=refresh_s)
        self._nudge = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def notify(self) -> None:
        """A callback was stored: apply soon (many nudges during one batch make one more batch)."""
        self._nudge.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="callback-applier")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        # Whatever arrived last is applied before the process goes (else the next worker does it).
        try:
            await asyncio.to_thread(self._last_pass)
        except Exception as exc:
            if not is_connection_lost(exc):
                raise
            log.warning("database unavailable at shutdown; stored callbacks are left to the next applier")

    def _last_pass(self) -> None:
        apply_callbacks_after(self._ctx, 0, statuses=self._statuses)
        self._statuses.settle()  # and every refresh still owed

    async def _run(self) -> None:
        seen_up_to = 0  # the highest callback row id examined since the last full pass
        full_pass_at = 0.0
        last_pass_end = 0.0
        backlog = False
        while True:
            if not backlog:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._nudge.wait(), timeout=self._idle_poll_s)
                # Gather: a pass costs about the same for 30 callbacks as for 300 (a few dozen statements and a
                # status refresh), and on SQLite it holds the write lock the receiver's own commits need. Applying
                # back to back, a pass would take only what the carrier's senders got stored during the last one
                # (one each, as they wait for their answers), and the receiver would store only between passes.
                # So a quarter of a second after each pass the receiver stores freely, then the next pass takes
                # all of it. Callbacks are stored already; only applying waits.
                await asyncio.sleep(max(0.0, last_pass_end + self._gather_s - time.monotonic()))
            self._nudge.clear()
            if time.monotonic() >= full_pass_at:
                seen_up_to, full_pass_at = 0, time.monotonic() + self._full_pass_s
            outage = self._ctx.db_outage
            try:
                result = await asyncio.to_thread(
                    apply_pass, self._ctx, seen_up_to, limit=self._limit, statuses=self._statuses
                )
            except Exception as exc:
                seen_up_to, backlog = 0, False
                if not is_connection_lost(exc):
                    log.exception("applying stored callbacks failed; they will be tried again")
                    continue
                # The database is gone: logged once for the process, tried again after the backoff (the
                # stored callbacks wait in the database; the receiver answers errors meanwhile).
                await asyncio.sleep(outage.failed(exc))
                self._nudge.set()
                continue
            outage.recovered()
            last_pass_end = time.monotonic()
            seen_up_to = result.after_id
            backlog = result.examined >= self._limit  # a full pass: more is stored already (a restart's backlog)
            if not result.examined:
                self._statuses.settle()  # nothing new: every refresh still owed
