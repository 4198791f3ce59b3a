"""The bulk change's status, computed from its changes and their additional steps and never written onto
them (the seed's MarkProcessed, without overwriting each device's own outcome), and a bulk-level failure.

When a bulk change becomes terminal, its status-update event is written in the same transaction
(``WebhookOutbox``, whatever the configuration: a destination configured later still gets it).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable

import structlog
from sqlalchemy import exists, func, select
from sqlalchemy.orm import Session

from bulkchange.domain.outcomes import LogEntry
from bulkchange.domain.statuses import (
    FINISHED_BULK_STATUSES,
    IN_FLIGHT_CHANGE_STATUSES,
    BulkOutcome,
    BulkStatus,
    ChangeStatus,
    StepCounts,
    compute_bulk_outcome,
)
from bulkchange.engine import changes as ch
from bulkchange.engine.additional_step import UNSETTLED, AdditionalStepStatus
from bulkchange.engine.context import EngineContext
from bulkchange.engine.logbook import write_logs
from bulkchange.store.db import read_only_session
from bulkchange.store.tables import DeviceBulkChange, M2MDeviceChange, WebhookOutbox, utcnow

log = structlog.get_logger("bulkchange.engine")

FINISHED_EVENT = "bulk_change.completed"
"""The status-update event of a finished bulk change (the seed's NotifyStatusUpdateDone)."""


def refresh_status(ctx: EngineContext, bulk_id: int) -> BulkStatus:
    """Compute the bulk status from its changes and their additional steps; never write it onto them.

    Whoever settles a change or an additional step calls this. When the bulk change becomes finished (every
    change terminal, every additional step settled), its ``ProcessedDate`` is set and its status-update event
    written, in the same transaction.
    """
    with ctx.session_factory.begin() as session:
        bulk = session.get(DeviceBulkChange, bulk_id, with_for_update=True)
        if bulk is None:
            return BulkStatus.ERROR
        now = ctx.clock()
        outcome = outcome_of(session, bulk)
        was_finished = bulk.status in _FINISHED and bulk.processed_date is not None
        bulk_failure = outcome.status is BulkStatus.ERROR and not outcome.finished
        bulk.status = outcome.status.value
        bulk.has_errors = outcome.has_errors
        if not bulk_failure:  # a bulk-level failure keeps its reason (and how to resume) as details
            bulk.status_details = outcome.details
        bulk.modified_date = now
        if outcome.finished and not was_finished:
            bulk.processed_date = now
            bulk.next_wake_at = None
            log.info(
                "bulk change processed", bulk_change_id=bulk_id, status=outcome.status.value, summary=outcome.details
            )
            record_finished_event(session, bulk)
        elif not outcome.finished:
            bulk.processed_date = None
        return outcome.status


_FINISHED = frozenset(s.value for s in FINISHED_BULK_STATUSES)

_UNFINISHABLE = tuple(sorted(s.value for s in IN_FLIGHT_CHANGE_STATUSES - {ChangeStatus.SCHEDULED}))
"""Change statuses that keep a bulk change PROCESSING (or PAUSED / ERROR by its own flags) whatever the
other changes' statuses: unfinished and not SCHEDULED (``compute_bulk_outcome``)."""


class PacedRefresh:
    """Bulk status refreshes for a stream of passes that each settle a few changes (the callback applier).

    A refresh counts a bulk change's rows in a write transaction; during a callback burst a pass every quarter
    second would refresh the same bulk change four times a second. Here a bulk change is refreshed at once
    after a pass unless it was refreshed less than ``interval_s`` ago *and* still has a change that is
    unfinished and not SCHEDULED. Such a change fixes the refresh's status (PROCESSING, or PAUSED / ERROR by
    the bulk change's own flags) and keeps it unfinished, so a deferred refresh only changes the counts shown
    (``StatusDetails``), ``HasErrors`` and ``ModifiedDate``: a bulk change still becomes finished in the pass
    that settles its last change. A deferred refresh is owed, and made by the first pass at least
    ``interval_s`` after the last one, or by ``settle`` (the applier found nothing more to apply), whichever
    comes first. Should a refresh fail, the bulk change stays owed. Owed refreshes die with the process: the
    bulk change's unfinished change is settled later by someone, who refreshes it then.
    """

    def __init__(
        self, ctx: EngineContext, *, interval_s: float = 1.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._ctx = ctx
        self._interval_s = interval_s
        self._clock = clock
        self._refreshed_at: dict[int, float] = {}
        self._owed: set[int] = set()

    @property
    def owed(self) -> frozenset[int]:
        return frozenset(self._owed)

    def touched(self, bulk_ids: Iterable[int]) -> None:
        """A pass settled changes of these bulk changes (and committed)."""
        now = self._clock()
        self._refreshed_at = {b: t for b, t in self._refreshed_at.items() if now - t < self._interval_s}
        touched = set(bulk_ids)
        recent = {b for b in touched if b in self._refreshed_at}
        deferred = unfinishable(self._ctx, recent) if recent else set()
        due = (touched - deferred) | {b for b in self._owed if b not in self._refreshed_at}
        self._owed |= touched  # until refreshed: a refresh that fails is owed still
        for bulk_id in sorted(due):
            self._refresh(bulk_id)

    def settle(self) -> None:
        """Make every owed refresh now."""
        for bulk_id in sorted(self._owed):
            self._refresh(bulk_id)

    def _refresh(self, bulk_id: int) -> None:
        refresh_status(self._ctx, bulk_id)
        self._refreshed_at[bulk_id] = self._clock()
        self._owed.discard(bulk_id)


def unfinishable(ctx: EngineContext, bulk_ids: Iterable[int]) -> set[int]:
    """Which of ``bulk_ids`` have a change whose status keeps the bulk change unfinished and its status as
    its flags make it (``PacedRefresh``): one index probe each, read without the write lock."""
    found: set[int] = set()
    with read_only_session(ctx.session_factory) as session:
        for bulk_id in bulk_ids:
            probe = select(M2MDeviceChange.id).where(
                M2MDeviceChange.bulk_change_id == bulk_id, M2MDeviceChange.status.in_(_UNFINISHABLE)
            )
            if session.execute(probe.limit(1)).first() is not None:
                found.add(bulk_id)
    return found


def refresh_forgotten(ctx: EngineContext) -> list[int]:
    """Refresh the bulk changes still shown as active although everything in them is settled.

    Settling a change and refreshing its bulk change's status are two transactions: a process that dies
    between them (a SIGKILLed worker, a Lambda timeout) leaves a bulk change PROCESSING for ever, with
    nothing left that would refresh it and no status-update event. Only those with no unfinished change
    and no unsettled additional step are taken, so a pass finds nothing once each is refreshed.
    """
    B, C = DeviceBulkChange, M2MDeviceChange
    ids = ch.active_bulk_ids(
        ctx.session_factory,
        ~ch.unfinished_change_of(B.id),
        ~exists().where(C.bulk_change_id == B.id, C.additional_step_status.in_(UNSETTLED)),
    )
    for bulk_id in ids:
        status = refresh_status(ctx, bulk_id)
        log.info("bulk change status refreshed after its last change settled", bulk_change_id=bulk_id, status=status)
    return ids


def outcome_of(session: Session, bulk: DeviceBulkChange) -> BulkOutcome:
    """The bulk change's outcome as its rows say now (read in the caller's transaction)."""
    return compute_bulk_outcome(
        ch.counts_by_status(session, bulk.id),
        additional_step_counts(session, bulk.id),
        bulk_failure=bulk.status == BulkStatus.ERROR.value,
        paused=bulk.paused_at is not None,
    )


def additional_step_counts(session: Session, bulk_id: int) -> StepCounts:
    """The bulk change's additional steps by status, in one grouped query."""
    C = M2MDeviceChange
    rows = session.execute(
        select(C.additional_step_status, func.count())
        .where(C.bulk_change_id == bulk_id, C.additional_step_status.is_not(None))
        .group_by(C.additional_step_status)
    ).all()
    by = {str(status): int(n) for status, n in rows}
    return StepCounts(
        pending=sum(by.get(s, 0) for s in UNSETTLED),
        processed=by.get(AdditionalStepStatus.PROCESSED.value, 0),
        error=by.get(AdditionalStepStatus.ERROR.value, 0),
    )


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
        if in_flight:  # with nothing unfinished there is nothing to resume: the outcome is the changes'
            bulk.status = BulkStatus.ERROR.value
            bulk.has_errors = True
            bulk.status_details = (
                f"{reason} — {in_flight} changes not finished; resume with `bulkchange resume {bulk_id}`"
            )
        bulk.modified_date = utcnow()
        bulk.next_wake_at = None
        write_logs(
            session,
            [LogEntry(bulk_id, None, description, False, error_text=reason)],
            process_by=ctx.settings.process_by,
        )
