"""The worker loop: receive, process, delete only after the work is committed; recover lost wake-ups."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import timedelta

import structlog
from sqlalchemy import exists, or_, select

from bulkchange.domain.statuses import IN_FLIGHT_CHANGE_STATUSES, BulkStatus
from bulkchange.engine.processor import Processor
from bulkchange.queue.base import QueueStats
from bulkchange.store.db import read_only_session
from bulkchange.store.tables import DeviceBulkChange, M2MDeviceChange

log = structlog.get_logger("bulkchange.worker")

ProgressHook = Callable[[int], None]


async def _keep_invisible(processor: Processor, pending: set[str], visibility_s: int) -> None:
    """Heartbeat: every third of the visibility timeout, hide the received-but-unfinished messages again
    for a full timeout, so a long slice is not redelivered to another worker while it runs. A handle
    the queue calls stale is dropped (the message was redelivered or deleted meanwhile)."""
    interval = max(0.2, visibility_s / 3)
    while True:
        await asyncio.sleep(interval)
        for handle in list(pending):
            try:
                if not processor.ctx.transport.change_visibility(handle, visibility_s):
                    pending.discard(handle)
            except Exception:
                log.warning("visibility heartbeat failed", exc_info=True)


def recover_lost_wakeups(processor: Processor) -> list[int]:
    """Wake bulk changes that have unfinished changes but no pending wake-up (a send lost after a commit,
    a message dead-lettered, a worker that died): the database row, not the queue, says what is left."""
    ctx = processor.ctx
    stale = ctx.clock() - timedelta(seconds=ctx.settings.queue_visibility_timeout_s * 2)
    with read_only_session(ctx.session_factory) as session:
        ids = list(
            session.execute(
                select(DeviceBulkChange.id).where(
                    DeviceBulkChange.status.in_([BulkStatus.NEW.value, BulkStatus.PROCESSING.value]),
                    or_(DeviceBulkChange.next_wake_at.is_(None), DeviceBulkChange.next_wake_at < stale),
                    exists().where(
                        M2MDeviceChange.bulk_change_id == DeviceBulkChange.id,
                        M2MDeviceChange.status.in_([s.value for s in IN_FLIGHT_CHANGE_STATUSES]),
                    ),
                )
            ).scalars()
        )
    woken = [bulk_id for bulk_id in ids if processor.wake(bulk_id, delay_s=0, force=True)]
    if woken:
        log.warning("woke bulk changes with no pending message", bulk_change_ids=woken)
    return woken


async def run_worker(
    processor: Processor,
    *,
    until_idle: bool = False,
    on_message: ProgressHook | None = None,
    stop: asyncio.Event | None = None,
    poll_s: float = 0.5,
    callback_sweep_s: float = 5.0,
) -> int:
    """Process messages until stopped (or, with ``until_idle``, until none is left — delayed ones included).

    Every ``callback_sweep_s`` (and on the first turn) it also applies stored callbacks no receiver has
    applied — a safety net: receivers apply what they store. Sweeping on every turn made each idle poll a
    full read of the waiting callbacks and a write transaction, competing with the receivers for the
    database during a burst. Returns the number of messages processed.
    """
    transport = processor.ctx.transport
    processed = 0
    recover_lost_wakeups(processor)
    visibility_s = processor.ctx.settings.queue_visibility_timeout_s
    sweep_at = 0.0
    while stop is None or not stop.is_set():
        batch = transport.receive(max_messages=10)
        # Received but not yet finished: kept invisible by the heartbeat until handled (or failed).
        pending = {received.receipt_handle for received in batch}
        heartbeat = asyncio.create_task(_keep_invisible(processor, pending, visibility_s)) if batch else None
        try:
            for received in batch:
                try:
                    await processor.handle(received)
                except Exception:
                    pending.discard(received.receipt_handle)
                    log.exception("message processing failed; it will be redelivered", message_id=received.message_id)
                    continue
                pending.discard(received.receipt_handle)
                # Only now: handle() returned, so everything it did is committed.
                transport.delete(received.receipt_handle)
                processed += 1
                if on_message is not None:
                    on_message(processor.ctx.transport.stats().visible)
        finally:
            if heartbeat is not None:
                heartbeat.cancel()
        # Callbacks stored but not yet applied (a receiver busy elsewhere, or one that crashed after storing).
        callbacks_done = 0
        if time.monotonic() >= sweep_at:
            callbacks_done = _apply_callbacks(processor)
            sweep_at = time.monotonic() + callback_sweep_s
        # Side work: additional steps (billing) and webhook deliveries due now (bulkchange.integrations).
        side_done, side_due_s = await _side_work(processor)
        if batch or side_done or callbacks_done:
            continue
        stats = transport.stats()
        idle = stats.visible == 0 and stats.delayed == 0 and stats.in_flight == 0
        if until_idle and idle and side_due_s is None:
            if not recover_lost_wakeups(processor) and not await _side_work_appeared(processor):
                break
            continue
        if until_idle and side_due_s is None and _only_spare_wakeups_left(processor, stats):
            if await _side_work_appeared(processor):
                continue
            log.info("only delayed wake-ups of finished bulk changes are left; stopping", delayed=stats.delayed)
            break
        wait = poll_s if stats.next_visible_in_s is None else min(poll_s, max(0.01, stats.next_visible_in_s))
        if side_due_s is not None:
            wait = min(wait, max(0.01, side_due_s))
        await asyncio.sleep(wait)
    return processed


def _only_spare_wakeups_left(processor: Processor, stats: QueueStats) -> bool:
    """With ``until_idle``: the queue holds only delayed messages and no bulk change has work left.

    A worker that found rows held by another worker schedules a wake-up for when that lease would expire
    (300 s by default); once the other worker has finished them, that message has nothing left to wake,
    and waiting for it would keep every ``--until-idle`` worker alive for the whole lease. So when nothing
    is visible or being handled and every bulk change is terminal (none NEW or PROCESSING: no change in
    flight — READY, SENDING, AWAITING_RESULT, whose deferred check is a delayed message it needs — and
    none whose last outcome is recorded but whose status, and with it the webhook event, is not yet
    refreshed), the run ends; the caller has already checked that no additional step or webhook is
    pending (side work). The spare messages stay queued; a later worker acknowledges them as no-ops.
    """
    if stats.visible or stats.in_flight or not stats.delayed:
        return False
    with read_only_session(processor.ctx.session_factory) as session:
        active = session.execute(
            select(DeviceBulkChange.id)
            .where(DeviceBulkChange.status.in_([BulkStatus.NEW.value, BulkStatus.PROCESSING.value]))
            .limit(1)
        ).first()
    return active is None


async def _side_work_appeared(processor: Processor) -> bool:
    """Before an ``until_idle`` worker stops: side work that became due after this turn's side work ran.

    A receiver in another thread or process can finish a bulk change (and queue its webhook and billing)
    between that run and the check that nothing is left; without this look the worker stopped with the
    webhook undelivered.
    """
    done, due_s = await _side_work(processor)
    return bool(done) or due_s is not None


def _apply_callbacks(processor: Processor) -> int:
    """Apply stored callbacks; a failure is logged and retried on the next turn, never fatal."""
    try:
        return processor.apply_pending_callbacks()
    except Exception:
        log.exception("applying stored callbacks failed; they will be tried again")
        return 0


async def _side_work(processor: Processor) -> tuple[int, float | None]:
    """The processor's side work; a failure is logged and retried on the next turn, never fatal."""
    try:
        return await processor.run_side_work()
    except Exception:
        log.exception("side work failed; it will be tried again")
        return 0, 1.0
