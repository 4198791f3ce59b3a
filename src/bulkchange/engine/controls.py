"""An operator's controls over a bulk change in flight: cancel what the carrier has not accepted, pause, resume.

Every transition is one conditional UPDATE on the row's current status, so it is decided by the database and
never by a value read beforehand:

* ``cancel`` — every READY change (never sent, or waiting to be sent again: a retry in backoff after a 429,
  the next step of a plan) becomes CANCELLED with ``Status = 'READY'`` in the UPDATE's WHERE, the guard the
  claim carries too. A change a worker claims at the same moment is either claimed (SENDING: counted as at
  the carrier) or cancelled, never both: on PostgreSQL the UPDATE waits for the claim's row lock and then
  re-tests the status; SQLite runs one writer at a time. Changes SENDING or AWAITING_RESULT (including those
  the carrier accepted for a later date) are at the carrier and are only counted.
* ``pause`` — ``PausedAt`` set (only if not already paused, only while the bulk change has work): the
  claim statement tests it (``engine.changes``), so no READY change is claimed after the pause commits;
  changes already at the carrier finish and are recorded as usual.
* ``resume`` — clears the pause, or sets a bulk change that failed at bulk level (a refused login)
  PROCESSING again, and wakes it. Anything else is refused with why (``NotApplicable``).

Each control writes a bulk log row (``DeviceBulkChangeLog`` without a device) naming who did it; its
``ProcessedDate`` says when.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.orm import Session

from bulkchange.domain.outcomes import LogEntry
from bulkchange.domain.statuses import (
    ACTIVE_BULK_STATUSES,
    AT_CARRIER_VALUES,
    BulkStatus,
    ChangeStatus,
)
from bulkchange.engine.bulk_status import outcome_of, refresh_status
from bulkchange.engine.context import EngineContext
from bulkchange.engine.logbook import write_logs
from bulkchange.engine.wakeups import rowcount, wake
from bulkchange.store.tables import DeviceBulkChange, M2MDeviceChange

B = DeviceBulkChange
C = M2MDeviceChange


class NotApplicable(Exception):
    """The control does not apply to this bulk change as it stands; the message says why, in one line."""


class NoSuchBulkChange(KeyError):
    """No bulk change with this id."""

    def __str__(self) -> str:
        return f"no bulk change {self.args[0]}"


# --------------------------------------------------------------------------------------------- cancel


@dataclass(frozen=True)
class CancelResult:
    """What a cancel did: the changes cancelled, and those it left because the carrier has them or they ended."""

    cancelled: list[int]
    at_carrier: int  # SENDING or AWAITING_RESULT: sent, or accepted (scheduled ones included)
    finished: int  # already in a terminal status before the cancel

    @property
    def not_cancellable(self) -> int:
        return self.at_carrier + self.finished

    def summary(self) -> str:
        return (
            f"{len(self.cancelled)} change(s) cancelled; {self.at_carrier} already at the carrier (sending or "
            f"awaiting its result); {self.finished} already finished"
        )


def cancel(
    ctx: EngineContext, bulk_change_id: int, *, change_ids: Iterable[int] | None = None, by: str = "operator"
) -> CancelResult:
    """Cancel every change of the bulk change (or of ``change_ids``) the carrier has not accepted.

    Raises ``NoSuchBulkChange``.
    """
    wanted = sorted(set(change_ids)) if change_ids is not None else None
    now = ctx.clock()
    with ctx.session_factory.begin() as session:
        if session.get(B, bulk_change_id) is None:
            raise NoSuchBulkChange(bulk_change_id)
        scope = [C.bulk_change_id == bulk_change_id] + ([C.id.in_(wanted)] if wanted is not None else [])
        cancelled = _cancel_ready(session, scope, first_step=True, now=now, by=by)
        cancelled += _cancel_ready(session, scope, first_step=False, now=now, by=by)
        grouped = session.execute(select(C.status, func.count()).where(*scope).group_by(C.status)).all()
        left = {str(status): int(n) for status, n in grouped}
        at_carrier = sum(int(left.get(s, 0)) for s in AT_CARRIER_VALUES)
        finished = sum(int(n) for s, n in left.items() if ChangeStatus(s).is_terminal) - len(cancelled)
        result = CancelResult(sorted(cancelled), at_carrier, finished)
        entries = [
            LogEntry(bulk_change_id, cid, "Cancel device change (operator)", True, response_text=f"cancelled by {by}")
            for cid in result.cancelled
        ]
        entries.append(_audit(bulk_change_id, "Cancel bulk change (operator)", f"{by}: {result.summary()}", now))
        write_logs(session, entries, process_by=by)
    refresh_status(ctx, bulk_change_id)
    return result


def _cancel_ready(
    session: Session, scope: Sequence[ColumnElement[bool]], *, first_step: bool, now: datetime, by: str
) -> list[int]:
    """One conditional UPDATE: READY → CANCELLED (the claim's own guard), RETURNING the ids it changed."""
    step = C.step_index == 0 if first_step else C.step_index > 0
    details = (
        f"cancelled by {by} before it was sent"
        if first_step
        else f"cancelled by {by} before its next step was sent (the earlier steps were done at the carrier)"
    )
    statement = (
        update(C)
        .where(*scope, step, C.status == ChangeStatus.READY.value)
        .values(
            status=ChangeStatus.CANCELLED.value,
            status_details=details,
            is_processed=True,
            has_errors=ChangeStatus.CANCELLED.has_errors,
            processed_date=now,
            processed_by=by[:100],
            next_attempt_at=None,
            lease_owner=None,
            lease_expires_at=None,
        )
        .returning(C.id)
        .execution_options(synchronize_session=False)
    )
    return [int(i) for i in session.execute(statement).scalars()]


# ------------------------------------------------------------------------------------- pause / resume


_PAUSABLE = [s.value for s in ACTIVE_BULK_STATUSES if s is not BulkStatus.PAUSED]
_ACTIVE = [s.value for s in ACTIVE_BULK_STATUSES]  # a pause left on a bulk change that finished is moot


def pause(ctx: EngineContext, bulk_change_id: int, *, by: str = "operator") -> str:
    """Stop workers claiming the bulk change's READY changes; return what was done, in one line.

    Raises ``NoSuchBulkChange`` or ``NotApplicable`` (already paused, finished, failed at bulk level).
    """
    now = ctx.clock()
    with ctx.session_factory.begin() as session:
        changed = rowcount(
            session.execute(
                update(B)
                .where(B.id == bulk_change_id, B.paused_at.is_(None), B.status.in_(_PAUSABLE))
                .values(paused_at=now, paused_by=by[:100])
                .execution_options(synchronize_session=False)
            )
        )
        if not changed:
            raise _why_not(session, bulk_change_id, "pause", now)
        at_carrier = _count(session, bulk_change_id, AT_CARRIER_VALUES)
        done = f"paused by {by}; {at_carrier} change(s) already at the carrier will finish"
        write_logs(session, [_audit(bulk_change_id, "Pause bulk change (operator)", done, now)], process_by=by)
    refresh_status(ctx, bulk_change_id)
    return f"bulk change {bulk_change_id} {done}"


def resume(ctx: EngineContext, bulk_change_id: int, *, by: str = "operator") -> str:
    """Resume a paused bulk change, or one that failed at bulk level; wake it. Return what was done.

    Raises ``NoSuchBulkChange`` or ``NotApplicable`` (finished, or neither paused nor failed).
    """
    now = ctx.clock()
    with ctx.session_factory.begin() as session:
        unpaused = rowcount(
            session.execute(
                update(B)
                .where(B.id == bulk_change_id, B.paused_at.is_not(None), B.status.in_(_ACTIVE))
                .values(paused_at=None, paused_by=None)
                .execution_options(synchronize_session=False)
            )
        )
        failed = 0
        if not unpaused:
            unfinished = _count(session, bulk_change_id, [s.value for s in ChangeStatus if not s.is_terminal])
            failed = (
                rowcount(
                    session.execute(
                        update(B)
                        .where(B.id == bulk_change_id, B.status == BulkStatus.ERROR.value)
                        .values(status=BulkStatus.PROCESSING.value)
                        .execution_options(synchronize_session=False)
                    )
                )
                if unfinished
                else 0
            )
        if not unpaused and not failed:
            raise _why_not(session, bulk_change_id, "resume", now)
        done = f"resumed by {by}" + ("" if unpaused else " after a bulk-level failure")
        write_logs(session, [_audit(bulk_change_id, "Resume bulk change (operator)", done, now)], process_by=by)
    wake(ctx, bulk_change_id, delay_s=0, force=True)
    refresh_status(ctx, bulk_change_id)
    return f"bulk change {bulk_change_id} {done}"


def _why_not(session: Session, bulk_change_id: int, action: str, now: datetime) -> Exception:
    """The one-line reason ``action`` does not apply to the bulk change as it stands."""
    bulk = session.get(B, bulk_change_id)
    if bulk is None:
        return NoSuchBulkChange(bulk_change_id)
    outcome = outcome_of(session, bulk)
    if outcome.finished:
        return NotApplicable(
            f"bulk change {bulk_change_id} is {outcome.status.value} (finished: {outcome.details}); nothing to {action}"
        )
    if action == "pause" and bulk.paused_at is not None:
        return NotApplicable(f"bulk change {bulk_change_id} is already paused (by {bulk.paused_by})")
    if action == "pause":
        return NotApplicable(
            f"bulk change {bulk_change_id} is {bulk.status} (failed at bulk level); fix the cause and resume it"
        )
    return NotApplicable(f"bulk change {bulk_change_id} is {bulk.status}: it is neither paused nor failed")


def _count(session: Session, bulk_change_id: int, statuses: Iterable[str]) -> int:
    query = select(func.count()).where(C.bulk_change_id == bulk_change_id, C.status.in_(list(statuses)))
    return int(session.execute(query).scalar_one())


def _audit(bulk_change_id: int, description: str, text: str, now: datetime) -> LogEntry:
    """A bulk log row: who (``ProcessBy``) did what; ``at`` in the text as the operator's clock saw it."""
    return LogEntry(bulk_change_id, None, description, True, response_text=f"{text} at {now.isoformat()}Z")
