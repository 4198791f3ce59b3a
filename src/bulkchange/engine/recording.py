"""Writing outcomes down: one transaction per batch updates the change rows, the local device tables and
the log rows together, so a crash leaves either all of it or none of it (the seed's "update database").
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from bulkchange.carrier.port import Carrier, CarrierAccount, ChangeView
from bulkchange.domain.outcomes import Kind, LogEntry, Outcome
from bulkchange.domain.statuses import ChangeStatus
from bulkchange.engine import changes as ch
from bulkchange.engine.additional_step import schedule_after_success
from bulkchange.engine.context import EngineContext
from bulkchange.engine.local_tables import DeviceUpdate, write_devices
from bulkchange.engine.logbook import write_logs
from bulkchange.store.core import write_modified
from bulkchange.store.tables import DeviceBulkChange, M2MDeviceChange, ServiceProvider, ThingSpaceCallBackResponseLog


def naive_utc(moment: datetime) -> datetime:
    """The database's form of a time: naive UTC (an aware time is converted first)."""
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


def solo_key(change_id: int) -> str:
    """A batch key no other change shares: a change isolated after its batch was refused goes alone."""
    return f"solo:{change_id}"


@dataclass
class _Pass:
    """What one recording pass collects before writing it all at once."""

    logs: list[LogEntry]
    awaiting: list[int]
    done: list[DeviceUpdate]
    views: Mapping[int, ChangeView]


def record_outcomes(
    session: Session,
    ctx: EngineContext,
    bulk: DeviceBulkChange,
    account: CarrierAccount,
    outcomes: Sequence[Outcome],
    *,
    views: Mapping[int, ChangeView] | None = None,
    held: Sequence[M2MDeviceChange] = (),
) -> list[int]:
    """Apply ``outcomes`` to their changes, in the caller's transaction; return the ids left AWAITING.

    An outcome read under an older state or claim than the change has now is skipped (``Outcome.expect_*``):
    a slow worker, a repeated check round or a callback racing a reconcile never overwrites a newer state.
    ``views``: change id → the change's view (``changes.view_of``) already built in this transaction from the
    row this reads, unmodified since — the callback applier judged each callback against one — so it is not
    built again. ``held``: the same changes as loaded before (the worker's claim), whose parsed requests are
    reused where the text is unchanged (``changes.reuse_requests``).
    """
    now = ctx.clock()
    carrier = ctx.carrier(account.carrier)
    rows = _changes(session, [o.change_id for o in outcomes])
    ch.reuse_requests(rows.values(), held)
    found = _Pass([], [], [], views or {})
    for outcome in outcomes:
        change = rows.get(outcome.change_id)
        if change is None or not _current(change, outcome):
            continue
        found.logs.extend(outcome.logs)
        _apply(session, ctx, carrier, change, outcome, now, found)
    with session.no_autoflush:  # the changes are written below, once, with their device (``write_devices``)
        provider = session.get(ServiceProvider, bulk.service_provider_id)
        found.logs.extend(
            write_devices(
                session,
                found.done,
                carrier=carrier,
                account=account,
                tenant_id=provider.tenant_id if provider else None,
                process_by=ctx.settings.process_by,
                now=now,
            )
        )
    # The changes — their new state and, for those done, their device, MSISDN and IP address — as a few UPDATE
    # executemanys by id, not the ORM's flush at commit (its bookkeeping costs several times the UPDATE per
    # row: a 10,000-device batch is 10,000 rows).
    write_modified(session, (M2MDeviceChange,))
    write_logs(session, found.logs, process_by=ctx.settings.process_by)
    return found.awaiting


def _changes(session: Session, ids: list[int]) -> dict[int, M2MDeviceChange]:
    """The changes by id, locked where rows can be: a callback and a check round may settle the same change at
    the same moment (PostgreSQL, SQL Server). SQLite has no row locks — the transaction holds the database's
    write lock — so there a change the session holds already is taken as it is, which is what the SELECT
    would give too (it does not overwrite a loaded row); only the others are read (the callback applier has
    just loaded every one it settles)."""
    rows: dict[int, M2MDeviceChange] = {}
    if session.get_bind().dialect.name == "sqlite":
        for change_id in ids:
            held = session.identity_map.get(session.identity_key(M2MDeviceChange, change_id))
            if isinstance(held, M2MDeviceChange):
                rows[change_id] = held
    missing = [i for i in ids if i not in rows]
    if missing:
        query = select(M2MDeviceChange).where(M2MDeviceChange.id.in_(missing)).with_for_update()
        rows.update((c.id, c) for c in session.execute(query).scalars())
    return rows


def _current(change: M2MDeviceChange, outcome: Outcome) -> bool:
    """Does the outcome still speak for the change as it is now?"""
    if ChangeStatus(change.status).is_terminal:
        return False  # settled meanwhile (a callback raced a reconcile): the first writer wins
    if outcome.expect_status is not None and change.status != outcome.expect_status.value:
        return False  # moved on since this outcome was read
    # Claimed again by another worker since: its outcome, not this one, counts.
    return outcome.expect_correlation is None or change.correlation_id == outcome.expect_correlation


def _apply(
    session: Session,
    ctx: EngineContext,
    carrier: Carrier,
    change: M2MDeviceChange,
    outcome: Outcome,
    now: datetime,
    found: _Pass,
) -> None:
    """One outcome onto its change row (the step it concerns is the change's current one)."""
    if outcome.kind is Kind.DONE:
        _done(session, ctx, carrier, change, outcome, now, found)
    elif outcome.kind is Kind.AWAITING:
        _awaiting(change, outcome)
        found.awaiting.append(change.id)
    elif outcome.kind is Kind.RETRY:
        _retry(ctx, change, outcome, now)
    elif outcome.kind is Kind.ISOLATE:
        ch.to_ready(change, next_attempt_at=None, details=outcome.details, key=solo_key(change.id), refund_attempt=True)
        change.solo = True
    elif outcome.kind in (Kind.UNKNOWN, Kind.HOLD):
        _unknown(ctx, change, outcome, now)
    elif outcome.kind is Kind.FAILED:
        terminal = outcome.terminal or ChangeStatus.ERROR
        ch.finish(
            change, terminal, details=outcome.details, now=now, process_by=ctx.settings.process_by, code=outcome.code
        )


def _done(
    session: Session,
    ctx: EngineContext,
    carrier: Carrier,
    change: M2MDeviceChange,
    outcome: Outcome,
    now: datetime,
    found: _Pass,
) -> None:
    """The step took effect: the next step, or PROCESSED (and the additional step due) after the last."""
    view = found.views.get(change.id) or ch.view_of(change)  # the step that took effect, before moving on
    last = not ch.advance(change, carrier)
    status_id = carrier.local_status(view.step, view.target, last=last)
    if status_id is not None:
        found.done.append(DeviceUpdate(change, view, status_id, outcome.facts))
    if last:
        ch.finish(change, ChangeStatus.PROCESSED, details=outcome.details, now=now, process_by=ctx.settings.process_by)
        schedule_after_success(session, change, view.request)
    else:
        change.status_details = f"{outcome.details}; next: {ch.current_step(change).lower()}"


def _awaiting(change: M2MDeviceChange, outcome: Outcome) -> None:
    """Accepted: settled later by callback or check — or, for a change the carrier applies at a date
    (``check_after``), looked at once that date has passed."""
    ch.to_awaiting(change, request_id=outcome.request_id, details=outcome.details)
    change.next_attempt_at = naive_utc(outcome.check_after) if outcome.check_after else None
    if outcome.check_after is not None:
        change.status = ChangeStatus.SCHEDULED.value  # the carrier makes it at a date: shown as such


def _retry(ctx: EngineContext, change: M2MDeviceChange, outcome: Outcome, now: datetime) -> None:
    decision = ctx.retry_policy.decide(change.attempt_count, now=now, retry_after_s=outcome.retry_after_s, rng=ctx.rng)
    if decision.give_up:
        ch.finish(
            change,
            ChangeStatus.API_FAILED,
            details=f"{outcome.details} ({decision.describe()})",
            now=now,
            process_by=ctx.settings.process_by,
            code=outcome.code,
        )
        return
    ch.to_ready(
        change,
        next_attempt_at=decision.retry_at,
        details=f"{outcome.details}; {decision.describe()}",
        code=outcome.code,
    )


def _unknown(ctx: EngineContext, change: M2MDeviceChange, outcome: Outcome, now: datetime) -> None:
    """Maybe done at the carrier: stay SENDING under a lease nobody owns, reconciled (read) when it ends;
    after ``reconcile_giveup_s`` of ambiguity a person looks (NEEDS_REVIEW)."""
    s = ctx.settings
    if change.sent_at and now - change.sent_at > timedelta(seconds=s.reconcile_giveup_s):
        ch.finish(
            change,
            ChangeStatus.NEEDS_REVIEW,
            details=f"{outcome.details}; still ambiguous after {s.reconcile_giveup_s}s — check the device "
            "at the carrier before retrying",
            now=now,
            process_by=s.process_by,
            code=outcome.code,
        )
        return
    delay = 0 if outcome.kind is Kind.UNKNOWN else s.reconcile_retry_s
    ch.hold_for_reconcile(change, until=now + timedelta(seconds=delay), details=outcome.details)
    if outcome.code:
        change.last_error_code = outcome.code


def early_callbacks(session: Session, change_ids: Iterable[int]) -> list[int]:
    """Stored callbacks for changes that just became AWAITING: the carrier can be faster than our commit.
    Only callbacks posted for the change's own provider (the others could never settle it).

    Returns their log row ids, made pending again so the next ``apply_pending_callbacks`` applies them.
    """
    ids = list(change_ids)
    if not ids:
        return []
    log_ids = [
        int(i)
        for i in session.execute(
            select(ThingSpaceCallBackResponseLog.id)
            .join(
                M2MDeviceChange,
                (ThingSpaceCallBackResponseLog.request_id == M2MDeviceChange.carrier_request_id)
                & (ThingSpaceCallBackResponseLog.iccid == M2MDeviceChange.iccid),
            )
            .where(
                M2MDeviceChange.id.in_(ids),
                M2MDeviceChange.service_provider_id == ThingSpaceCallBackResponseLog.service_provider_id,
                ThingSpaceCallBackResponseLog.m2m_device_change_id.is_(None),
            )
        ).scalars()
    ]
    if log_ids:
        session.execute(
            update(ThingSpaceCallBackResponseLog)
            .where(ThingSpaceCallBackResponseLog.id.in_(log_ids))
            .values(outcome=None)
        )
    return log_ids
