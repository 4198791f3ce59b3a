"""Wake-up messages: sent once however many workers ask (``NextWakeAt``), and recovered when lost.

Messages only wake workers; the database says what is left. A wake-up that was lost after a commit, a
message dead-lettered, a worker that died: ``recover_lost_wakeups`` finds every bulk change with unfinished
changes and no pending wake-up, and wakes it.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import structlog
from sqlalchemy import exists, or_, update

from bulkchange.domain.statuses import AT_CARRIER_VALUES
from bulkchange.engine import changes as ch
from bulkchange.engine.context import EngineContext
from bulkchange.queue.message import BulkChangeMessage
from bulkchange.store.tables import DeviceBulkChange, M2MDeviceChange

log = structlog.get_logger("bulkchange.engine")

MAX_DELAY_S = 900
"""SQS's longest message delay; a longer wait is a later wake-up that looks again."""


def wake(ctx: EngineContext, bulk_id: int, *, delay_s: float, force: bool = False) -> bool:
    """Send a wake-up unless an earlier one is already pending (NextWakeAt), so duplicates don't multiply."""
    delay = int(min(MAX_DELAY_S, max(0, round(delay_s))))
    if not _set_wake(ctx, bulk_id, delay, force=force):
        return False
    ctx.transport.send(BulkChangeMessage(bulk_change_id=bulk_id), delay_s=delay)
    return True


def _set_wake(ctx: EngineContext, bulk_id: int, delay_s: int, *, force: bool) -> bool:
    now = ctx.clock()
    target = now + timedelta(seconds=delay_s)
    stale = now - timedelta(seconds=ctx.settings.queue_visibility_timeout_s * 2)
    B = DeviceBulkChange
    with ctx.session_factory.begin() as session:
        condition = [B.id == bulk_id]
        if not force:
            condition.append(or_(B.next_wake_at.is_(None), B.next_wake_at > target, B.next_wake_at < stale))
        return bool(rowcount(session.execute(update(B).where(*condition).values(next_wake_at=target))))


def clear_due_wake(ctx: EngineContext, bulk: DeviceBulkChange) -> None:
    """The wake-up this message was has arrived: no longer pending (the caller commits)."""
    if bulk.next_wake_at is not None and bulk.next_wake_at <= ctx.clock():
        bulk.next_wake_at = None


def recover_lost_wakeups(ctx: EngineContext, *, stale_after_s: float | None = None) -> list[int]:
    """Wake bulk changes that have unfinished changes but no pending wake-up — none, or one overdue by
    ``stale_after_s`` (default: twice the queue's visibility timeout)."""
    stale_s = ctx.settings.queue_visibility_timeout_s * 2 if stale_after_s is None else stale_after_s
    stale = ctx.clock() - timedelta(seconds=stale_s)
    B, C = DeviceBulkChange, M2MDeviceChange
    ids = ch.active_bulk_ids(
        ctx.session_factory,
        or_(B.next_wake_at.is_(None), B.next_wake_at < stale),
        or_(B.paused_at.is_(None), exists().where(C.bulk_change_id == B.id, C.status.in_(AT_CARRIER_VALUES))),
        ch.unfinished_change_of(B.id),
    )
    woken = [bulk_id for bulk_id in ids if wake(ctx, bulk_id, delay_s=0, force=True)]
    if woken:
        log.warning("woke bulk changes with no pending message", bulk_change_ids=woken)
    return woken


def rowcount(result: Any) -> int:
    """Rows an UPDATE touched (the typed Result hides CursorResult.rowcount)."""
    return int(result.rowcount)
