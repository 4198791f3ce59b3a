"""After a message: the next one (the seed's requeue) — a continuation, a retry wake-up, or the next round
of the deferred check — each sent once however many workers finish at the same moment."""

from __future__ import annotations

from datetime import datetime, timedelta

import structlog
from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from bulkchange.domain.statuses import ChangeStatus
from bulkchange.engine import changes as ch
from bulkchange.engine.context import EngineContext
from bulkchange.engine.wakeups import rowcount, wake
from bulkchange.queue.message import BulkChangeMessage
from bulkchange.store.db import read_only_session
from bulkchange.store.tables import DeviceBulkChange, M2MDeviceChange

log = structlog.get_logger("bulkchange.engine")


def follow_up(ctx: EngineContext, bulk_id: int, message: BulkChangeMessage) -> None:
    """Continuation, retry and deferred-check messages for what is left of the bulk change.

    Reads what is left in one snapshot (on SQLite without the write lock) and acts after it, each action in
    a transaction of its own, so no transaction is held open while another one is started (on SQLite they
    would wait for each other).
    """
    now = ctx.clock()
    s = ctx.settings
    with read_only_session(ctx.session_factory) as session:
        counts = ch.counts_by_status(session, bulk_id)
        ready_due = ch.earliest(session, bulk_id, ChangeStatus.READY, "next_attempt_at")
        lease_due = ch.earliest(session, bulk_id, ChangeStatus.SENDING, "lease_expires_at")
        awaiting_checks, scheduled_due = _awaiting(session, bulk_id)
        paused = session.execute(select(DeviceBulkChange.paused_at).where(DeviceBulkChange.id == bulk_id)).scalar()
    # A paused bulk change's READY changes wait for resume (which wakes it); what is at the carrier goes on.
    if counts.get(ChangeStatus.READY, 0) and paused is None:
        wait = 0.0 if ready_due is None else max(0.0, (ready_due - now).total_seconds())
        wake(ctx, bulk_id, delay_s=max(wait, float(s.continuation_delay_s)) if wait else s.continuation_delay_s)
    elif counts.get(ChangeStatus.SENDING, 0):
        wait = 1.0 if lease_due is None else max(1.0, (lease_due - now).total_seconds())
        wake(ctx, bulk_id, delay_s=wait)
    else:
        if awaiting_checks:
            with ctx.session_factory() as session:
                schedule_check(ctx, session, bulk_id, message)
        if scheduled_due is not None:  # a change the carrier applies at a date: look once it has passed
            wake(ctx, bulk_id, delay_s=max(1.0, (scheduled_due - now).total_seconds()))


def _awaiting(session: Session, bulk_id: int) -> tuple[int, datetime | None]:
    """Changes awaiting a callback or the deferred check, and when the first scheduled one is due."""
    C = M2MDeviceChange
    awaiting = [C.bulk_change_id == bulk_id, C.status == ChangeStatus.AWAITING_RESULT.value]
    checks = session.execute(select(func.count()).where(*awaiting, C.next_attempt_at.is_(None))).scalar_one()
    scheduled = session.execute(
        select(func.min(C.next_attempt_at)).where(C.bulk_change_id == bulk_id, C.status == ChangeStatus.SCHEDULED.value)
    ).scalar_one_or_none()
    return int(checks), scheduled if isinstance(scheduled, datetime) else None


def schedule_check(ctx: EngineContext, session: Session, bulk_id: int, message: BulkChangeMessage) -> None:
    """The next round of the deferred check, claimed by compare-and-swap on ``CheckRound``.

    One conditional UPDATE both decides and records (CheckRound and NextWakeAt together), and only its
    winner sends: concurrent follow-ups of several workers send one check message.
    """
    B = DeviceBulkChange
    now = ctx.clock()
    delay = ctx.settings.activation_check_delay_s
    if message.is_retry_new_activate_thingspace_device:
        next_round = message.retry_number + 1
        condition = [B.check_round == message.retry_number]  # a duplicate of this round loses
    else:
        check_round = session.execute(select(B.check_round).where(B.id == bulk_id)).scalar_one_or_none()
        if check_round is None:
            return
        if check_round == 0:
            next_round, condition = 1, [B.check_round == 0]
        else:
            # A plain wake-up while a check is scheduled: send that round again only if its wake-up looks
            # lost (none pending, or overdue by a minute).
            next_round = check_round
            overdue = or_(B.next_wake_at.is_(None), B.next_wake_at <= now - timedelta(seconds=60))
            condition = [B.check_round == check_round, overdue]
    values = {"check_round": next_round, "next_wake_at": now + timedelta(seconds=delay)}
    won = rowcount(session.execute(update(B).where(B.id == bulk_id, *condition).values(**values)))
    session.commit()
    if not won:
        return  # another worker, or a duplicate of this message, scheduled it
    ctx.transport.send(
        BulkChangeMessage(
            bulk_change_id=bulk_id,
            is_retry_new_activate_thingspace_device=True,
            service_provider_id=message.service_provider_id,
            is_from_automated_update_device_status_lambda=message.is_from_automated_update_device_status_lambda,
            retry_number=next_round,
        ),
        delay_s=delay,
        body="Get ThingSpace device after new activate device",
    )
    log.info("activation check scheduled", bulk_change_id=bulk_id, round=next_round, delay_s=delay)
