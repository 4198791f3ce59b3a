"""The bulk change's status, computed from its changes and never written onto them (the seed's
MarkProcessed, without overwriting each device's own outcome), and a bulk-level failure.

When a bulk change becomes terminal, its status-update event is written in the same transaction
(``WebhookOutbox``, whatever the configuration: a destination configured later still gets it).
"""

from __future__ import annotations

import uuid

import structlog
from sqlalchemy import select
from sqlalchemy.orm import Session

from bulkchange.domain.outcomes import LogEntry
from bulkchange.domain.statuses import IN_FLIGHT_CHANGE_STATUSES, BulkStatus, compute_bulk_status
from bulkchange.engine import changes as ch
from bulkchange.engine.context import EngineContext
from bulkchange.engine.logbook import write_logs
from bulkchange.store.tables import DeviceBulkChange, WebhookOutbox, utcnow

log = structlog.get_logger("bulkchange.engine")

FINISHED_EVENT = "bulk_change.completed"
"""The status-update event of a finished bulk change (the seed's NotifyStatusUpdateDone)."""


def refresh_status(ctx: EngineContext, bulk_id: int) -> BulkStatus:
    """Compute the bulk status from its changes; never write it onto them."""
    with ctx.session_factory.begin() as session:
        bulk = session.get(DeviceBulkChange, bulk_id, with_for_update=True)
        if bulk is None:
            return BulkStatus.ERROR
        counts = ch.counts_by_status(session, bulk_id)
        failed = bulk.status == BulkStatus.ERROR.value
        status = compute_bulk_status(counts, bulk_failure=failed)
        was_terminal = bulk.status == BulkStatus.PROCESSED.value
        bulk.status = status.value
        bulk.has_errors = any(n and s.has_errors for s, n in counts.items())
        summary = ", ".join(f"{n} {s.value}" for s, n in sorted(counts.items(), key=lambda kv: kv[0].value) if n)
        if not failed:
            bulk.status_details = summary
        bulk.modified_date = ctx.clock()
        if status is BulkStatus.PROCESSED and not was_terminal:
            bulk.processed_date = ctx.clock()
            bulk.next_wake_at = None
            log.info("bulk change processed", bulk_change_id=bulk_id, summary=summary)
            record_finished_event(session, bulk)
        return status


def record_finished_event(session: Session, bulk: DeviceBulkChange) -> None:
    """The bulk change's status-update event, once (a bulk change resumed and finished again keeps it)."""
    already = session.execute(
        select(WebhookOutbox.id).where(
            WebhookOutbox.bulk_change_id == bulk.id, WebhookOutbox.event_type == FINISHED_EVENT
        )
    ).first()
    if already:
        return
    session.add(
        WebhookOutbox(
            event_id=uuid.uuid4().hex,
            event_type=FINISHED_EVENT,
            bulk_change_id=bulk.id,
            status="PENDING",
            pages_delivered=0,
            attempt_count=0,
            created_date=utcnow(),
        )
    )


def fail_bulk(ctx: EngineContext, bulk_id: int, reason: str, *, description: str = "Device Status Update") -> None:
    """Bulk-level failure: ERROR with the reason (and a bulk log row titled ``description``); unfinished
    changes stay as they are (resumable)."""
    with ctx.session_factory.begin() as session:
        bulk = session.get(DeviceBulkChange, bulk_id)
        if bulk is None:
            return
        counts = ch.counts_by_status(session, bulk_id)
        in_flight = sum(n for s, n in counts.items() if s in IN_FLIGHT_CHANGE_STATUSES)
        bulk.status = BulkStatus.ERROR.value if in_flight else bulk.status
        bulk.has_errors = True
        bulk.status_details = f"{reason} — {in_flight} changes not finished; resume with `bulkchange resume {bulk_id}`"
        bulk.modified_date = utcnow()
        bulk.next_wake_at = None
        write_logs(
            session,
            [LogEntry(bulk_id, None, description, False, error_text=reason)],
            process_by=ctx.settings.process_by,
        )
