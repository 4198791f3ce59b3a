"""The worker loop: receive, process, delete only after the work is committed; recover lost wake-ups;
wait out database and queue outages."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Callable
from datetime import timedelta
from typing import TypeVar

import structlog
from sqlalchemy import exists, or_, select

from bulkchange.domain.statuses import IN_FLIGHT_CHANGE_STATUSES, BulkStatus
from bulkchange.engine.outage import QueueUnavailable
from bulkchange.engine.processor import Processor
from bulkchange.queue.base import QueueStats, ReceivedMessage
from bulkchange.store.db import is_connection_lost, read_only_session
from bulkchange.store.tables import DeviceBulkChange, M2MDeviceChange

log = structlog.get_logger("bulkchange.worker")

ProgressHook = Callable[[int], None]
_T = TypeVar("_T")


async def _keep_invisible(processor: Processor, pending: set[str], visibility_s: int) -> None:
    """Heartbeat: every third of the visibility timeout, hide the received-but-unfinished messages again
    for a full timeout, so a long slice is not redelivered to another worker while it runs. A handle
    the queue calls stale is dropped (the message was redelivered or deleted meanwhile). A lost database
    is not logged here: the message's own processing meets it too, and the worker loop reports the outage."""
    interval = max(0.2, visibility_s / 3)
    while True:
        await asyncio.sleep(interval)
        for handle in list(pending):
            try:
                if not processor.ctx.transport.change_visibility(handle, visibility_s):
                    pending.discard(handle)
            except Exception as exc:
                if not is_connection_lost(exc):
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

    A lost database or an unreachable queue ends no worker: the turn stops where it is, the outage is
    logged once (``EngineContext.db_outage`` / ``queue_outage``), the loop tries again after a jittered
    backoff, and carries on when the dependency answers. Messages received and not finished are not
    deleted: they are made visible again once the queue answers (else after their visibility timeout), and
    what they had started is picked up by the row claims and leases like after a crash — nothing is sent
    to the carrier twice.
    """
    loop = _WorkerLoop(
        processor, until_idle=until_idle, on_message=on_message, poll_s=poll_s, callback_sweep_s=callback_sweep_s
    )
    ctx = processor.ctx
    while stop is None or not stop.is_set():
        try:
            wait = await loop.turn()
        except QueueUnavailable as exc:
            await _pause(ctx.queue_outage.failed(exc.__cause__ or exc), stop)
            continue
        except Exception as exc:
            if not is_connection_lost(exc):
                raise
            await _pause(ctx.db_outage.failed(exc), stop)
            continue
        ctx.db_outage.recovered()
        ctx.queue_outage.recovered()
        if wait is None:
            break
        if wait > 0:
            await asyncio.sleep(wait)
    return loop.processed


def _is_outage(exc: BaseException) -> bool:
    return isinstance(exc, QueueUnavailable) or is_connection_lost(exc)


async def _pause(seconds: float, stop: asyncio.Event | None) -> None:
    """Wait ``seconds`` (the outage backoff), or less if the worker is told to stop."""
    if stop is None:
        await asyncio.sleep(seconds)
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


class _WorkerLoop:
    """The state of one ``run_worker``: what a turn needs to remember across turns (and outages)."""

    def __init__(
        self,
        processor: Processor,
        *,
        until_idle: bool,
        on_message: ProgressHook | None,
        poll_s: float,
        callback_sweep_s: float,
    ) -> None:
        self.processor = processor
        self.transport = processor.ctx.transport
        self.until_idle = until_idle
        self.on_message = on_message
        self.poll_s = poll_s
        self.callback_sweep_s = callback_sweep_s
        self.visibility_s = processor.ctx.settings.queue_visibility_timeout_s
        self.processed = 0
        self.sweep_at = 0.0
        self.starting = True  # the first turn looks for lost wake-ups
        self.interrupted: list[str] = []  # receipt handles left unfinished by an outage, to give back

    def _queue(self, call: Callable[[], _T]) -> _T:
        """A transport call; a failure that is not the database's becomes ``QueueUnavailable``."""
        try:
            return call()
        except Exception as exc:
            if is_connection_lost(exc):
                raise
            raise QueueUnavailable(str(exc)) from exc

    async def turn(self) -> float | None:
        """One pass: give back what an outage interrupted, receive, process, sweep callbacks, side work.

        Returns the seconds to wait before the next pass (0: at once), or ``None`` when an ``until_idle``
        worker is done.
        """
        if self.interrupted:
            self._give_back()
        if self.starting:
            self._queue(functools.partial(recover_lost_wakeups, self.processor))  # it sends wake-ups
            self.starting = False
        batch = self._queue(lambda: self.transport.receive(max_messages=10))
        await self._handle(batch)
        # Callbacks stored but not yet applied (a receiver busy elsewhere, or one that crashed after storing).
        callbacks_done = 0
        if time.monotonic() >= self.sweep_at:
            callbacks_done = _apply_callbacks(self.processor)
            self.sweep_at = time.monotonic() + self.callback_sweep_s
        # Side work: relaying pending wake-ups, additional steps (billing) and webhook deliveries due now.
        side_done, side_due_s = await _side_work(self.processor)
        if batch or side_done or callbacks_done:
            return 0.0
        return await self._idle(side_due_s)

    async def _handle(self, batch: list[ReceivedMessage]) -> None:
        # Received but not yet finished: kept invisible by the heartbeat until handled (or failed).
        pending = {received.receipt_handle for received in batch}
        heartbeat = (
            asyncio.create_task(_keep_invisible(self.processor, pending, self.visibility_s)) if batch else None
        )
        try:
            for index, received in enumerate(batch):
                try:
                    await self.processor.handle(received)
                    # Only now: handle() returned, so everything it did is committed.
                    self._queue(functools.partial(self.transport.delete, received.receipt_handle))
                except Exception as exc:
                    pending.discard(received.receipt_handle)
                    if _is_outage(exc):
                        self._interrupt(batch[index:])  # not deleted: it comes back after the outage
                        raise
                    log.exception("message processing failed; it will be redelivered", message_id=received.message_id)
                    continue
                pending.discard(received.receipt_handle)
                self.processed += 1
                if self.on_message is not None:
                    try:
                        self.on_message(self._queue(self.transport.stats).visible)
                    except Exception as exc:
                        if _is_outage(exc):
                            self._interrupt(batch[index + 1 :])
                        raise
        finally:
            if heartbeat is not None:
                heartbeat.cancel()

    def _interrupt(self, unfinished: list[ReceivedMessage]) -> None:
        """An outage stopped the batch: remember what to give back once the queue answers again."""
        self.interrupted = [received.receipt_handle for received in unfinished]

    def _give_back(self) -> None:
        """Make the messages an outage interrupted visible again at once, instead of after their timeout.

        A handle that went stale meanwhile (the message was redelivered) is simply skipped.
        """
        for handle in list(self.interrupted):
            self._queue(functools.partial(self.transport.change_visibility, handle, 0))
            self.interrupted.remove(handle)

    async def _idle(self, side_due_s: float | None) -> float | None:
        """Nothing was done this turn: how long to wait, or ``None`` when an ``until_idle`` worker may stop."""
        stats = self._queue(self.transport.stats)
        idle = stats.visible == 0 and stats.delayed == 0 and stats.in_flight == 0
        if self.until_idle and idle and side_due_s is None:
            woken = self._queue(functools.partial(recover_lost_wakeups, self.processor))
            if not woken and not await _side_work_appeared(self.processor):
                return None
            return 0.0
        if self.until_idle and side_due_s is None and _only_spare_wakeups_left(self.processor, stats):
            if await _side_work_appeared(self.processor):
                return 0.0
            log.info("only delayed wake-ups of finished bulk changes are left; stopping", delayed=stats.delayed)
            return None
        wait = self.poll_s if stats.next_visible_in_s is None else min(self.poll_s, max(0.01, stats.next_visible_in_s))
        if side_due_s is not None:
            wait = min(wait, max(0.01, side_due_s))
        return wait


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
    """Apply stored callbacks; a failure is logged and retried on the next turn, never fatal (a lost
    database is left to the worker loop, which waits the outage out)."""
    try:
        return processor.apply_pending_callbacks()
    except Exception as exc:
        if is_connection_lost(exc):
            raise
        log.exception("applying stored callbacks failed; they will be tried again")
        return 0


async def _side_work(processor: Processor) -> tuple[int, float | None]:
    """The processor's side work; a failure is logged and retried on the next turn, never fatal (a lost
    database is left to the worker loop, which waits the outage out)."""
    try:
        return await processor.run_side_work()
    except Exception as exc:
        if is_connection_lost(exc):
            raise
        log.exception("side work failed; it will be tried again")
        return 0, 1.0
