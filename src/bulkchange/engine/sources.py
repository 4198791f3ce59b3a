"""The engine's kinds of background work, as the worker loop runs them (``jobs.loop.WorkSource``):

* ``messages`` — receive queue messages and run each through the flow (a slice, a check round); delete a
  message only after its work is committed; keep it invisible while it runs; give back what an outage
  interrupted.
* ``callback sweep`` — apply stored callbacks no receiver applied (a receiver busy, or one that died).
* ``wake-up recovery`` — wake bulk changes whose wake-up was lost (``wakeups.recover_lost_wakeups``), and
  refresh those whose last change settled in a process that died before refreshing them
  (``bulk_status.refresh_forgotten``).

The submissions' wake-up relay (``outbox.WakeupRelay``) and the integrations' kinds (billing steps, webhook
deliveries) are registered beside these by whoever builds the runtime.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TypeVar

import structlog
from sqlalchemy import select

from bulkchange.domain.statuses import ACTIVE_BULK_STATUSES
from bulkchange.engine.bulk_status import refresh_forgotten
from bulkchange.engine.callbacks.apply import apply_pending_callbacks
from bulkchange.engine.context import EngineContext
from bulkchange.engine.wakeups import recover_lost_wakeups
from bulkchange.jobs.loop import is_outage
from bulkchange.jobs.outage import QueueUnavailable
from bulkchange.queue.base import QueueStats, ReceivedMessage
from bulkchange.store.db import is_connection_lost, read_only_session
from bulkchange.store.tables import DeviceBulkChange

log = structlog.get_logger("bulkchange.worker")

_T = TypeVar("_T")
Handle = Callable[[ReceivedMessage], Awaitable[None]]
ProgressHook = Callable[[int], None]


def queue_call(call: Callable[[], _T]) -> _T:
    """A transport call; a failure that is not the database's becomes ``QueueUnavailable`` (an outage)."""
    try:
        return call()
    except Exception as exc:
        if is_connection_lost(exc):
            raise
        raise QueueUnavailable(str(exc)) from exc


class MessageSource:
    """Queue messages, handled one after another; deleted only once their work is committed."""

    kind = "messages"

    def __init__(self, ctx: EngineContext, handle: Handle, *, on_message: ProgressHook | None = None) -> None:
        self.ctx = ctx
        self.handle = handle
        self.on_message = on_message
        self.processed = 0
        self.interrupted: list[str] = []  # receipt handles an outage left unfinished, to give back

    async def run_due(self) -> int:
        transport = self.ctx.transport
        for handle in list(self.interrupted):  # visible again at once, not after their timeout
            queue_call(functools.partial(transport.change_visibility, handle, 0))
            self.interrupted.remove(handle)
        batch = queue_call(lambda: transport.receive(max_messages=10))
        if not batch:
            return 0
        pending = {received.receipt_handle for received in batch}
        heartbeat = asyncio.create_task(self._keep_invisible(pending))
        try:
            for index, received in enumerate(batch):
                await self._one(received, batch[index:], pending)
        finally:
            heartbeat.cancel()
        return len(batch)

    async def _one(self, received: ReceivedMessage, rest: list[ReceivedMessage], pending: set[str]) -> None:
        try:
            await self.handle(received)
            # Only now: the work is committed, so the message may go.
            queue_call(functools.partial(self.ctx.transport.delete, received.receipt_handle))
        except Exception as exc:
            pending.discard(received.receipt_handle)
            if is_outage(exc):
                self.interrupted = [r.receipt_handle for r in rest]  # not deleted: it comes back
                raise
            log.exception("message processing failed; it will be redelivered", message_id=received.message_id)
            return
        pending.discard(received.receipt_handle)
        self.processed += 1
        if self.on_message is not None:
            self.on_message(queue_call(self.ctx.transport.stats).visible)

    async def _keep_invisible(self, pending: set[str]) -> None:
        """Every third of the visibility timeout, hide the received-but-unfinished messages again, so a long
        slice is not redelivered meanwhile; a handle the queue calls stale is dropped."""
        visibility_s = self.ctx.settings.queue_visibility_timeout_s
        while True:
            await asyncio.sleep(max(0.2, visibility_s / 3))
            for handle in list(pending):
                with contextlib.suppress(Exception):  # the message's own processing meets an outage too
                    if not self.ctx.transport.change_visibility(handle, visibility_s):
                        pending.discard(handle)

    def next_due_in_s(self) -> float | None:
        """When the next message becomes visible; None when none is left that matters — nothing queued, or
        only delayed wake-ups of bulk changes that are all finished (a wake-up scheduled for a lease that
        another worker's finish made moot), which a later worker acknowledges as no-ops."""
        stats = queue_call(self.ctx.transport.stats)
        if stats.next_visible_in_s is None or self._only_spare_wakeups(stats):
            return None
        return stats.next_visible_in_s

    def _only_spare_wakeups(self, stats: QueueStats) -> bool:
        if stats.visible or stats.in_flight or not stats.delayed:
            return False
        with read_only_session(self.ctx.session_factory) as db:
            active = db.execute(
                select(DeviceBulkChange.id)
                .where(DeviceBulkChange.status.in_([s.value for s in ACTIVE_BULK_STATUSES]))
                .limit(1)
            ).first()
        return active is None


class CallbackSweep:
    """Stored callbacks no receiver applied: every ``interval_s`` (and on the first turn). Receivers apply
    what they store; this is the safety net, so it never keeps an ``--until-idle`` worker waiting.

    After the first turn it takes only callbacks stored more than ``left_after_s`` ago (default: the
    interval): a live receiver applies its own within a fraction of a second, and a sweep that took them too
    would race it for each burst — on PostgreSQL, where the two do not queue for one write lock, the worker
    then spent a share of its event loop applying callbacks between its carrier requests. The first turn
    takes everything: a worker started after a receiver died must not leave its callbacks waiting."""

    kind = "callback sweep"

    def __init__(self, ctx: EngineContext, *, interval_s: float = 5.0, left_after_s: float | None = None) -> None:
        self.ctx = ctx
        self.interval_s = interval_s
        self.left_after_s = interval_s if left_after_s is None else left_after_s
        self._next = 0.0
        self._first = True

    async def run_due(self) -> int:
        if time.monotonic() < self._next:
            return 0
        self._next = time.monotonic() + self.interval_s
        left_before = None if self._first else self.ctx.clock() - timedelta(seconds=self.left_after_s)
        self._first = False
        return apply_pending_callbacks(self.ctx, received_before=left_before)

    def next_due_in_s(self) -> float | None:
        return None


class WakeupRecovery:
    """Bulk changes with work left and no wake-up on its way: woken. Looked for on the first turn and
    whenever the queue holds nothing visible or in flight (at most once a second)."""

    kind = "wake-up recovery"

    def __init__(self, ctx: EngineContext) -> None:
        self.ctx = ctx
        self._last = 0.0
        self._first = True

    async def run_due(self) -> int:
        if not self._first:
            if time.monotonic() - self._last < 1.0:
                return 0
            stats = queue_call(self.ctx.transport.stats)
            if stats.visible or stats.in_flight:
                return 0
        self._first = False
        self._last = time.monotonic()
        return len(queue_call(lambda: recover_lost_wakeups(self.ctx))) + len(refresh_forgotten(self.ctx))

    def next_due_in_s(self) -> float | None:
        return None
