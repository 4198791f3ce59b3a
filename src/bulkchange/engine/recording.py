"""Writing outcomes down: one transaction per batch updates the change rows, the local device tables and
the log rows together, so a crash leaves either all of it or none of it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from bulkchange.domain.outcomes import Kind, LogEntry, Outcome
from bulkchange.domain.plan import CarrierStep
from bulkchange.domain.statuses import RESULT_DEVICE_STATUS, ChangeStatus, DeviceStatusId, TargetStatus
from bulkchange.engine import changes as ch
from bulkchange.engine.batching import solo_key
from bulkchange.engine.context import EngineContext
from bulkchange.engine.local_db import DeviceUpdate, apply_device_statuses
from bulkchange.engine.logbook import write_logs
from bulkchange.integrations.steps import schedule_after_success
from bulkchange.store.tables import (
    DeviceBulkChange,
    M2MDeviceChange,
    ServiceProvider,
    ThingSpaceAuthentication,
    ThingSpaceCallBackResponseLog,
)

# The local status a device has once a step took effect, when more steps follow.
_STEP_STATUS = {
    CarrierStep.ADD: DeviceStatusId.INVENTORY,
    CarrierStep.ACTIVATE: DeviceStatusId.ACTIVE,
    CarrierStep.DEACTIVATE: DeviceStatusId.DEACTIVE,
    CarrierStep.SUSPEND: DeviceStatusId.SUSPEND,
    CarrierStep.RESTORE: DeviceStatusId.ACTIVE,
}


def local_status_after(change: M2MDeviceChange, step: CarrierStep, *, last: bool) -> int:
    """The local DeviceStatusId after ``step``: the target's on the last step, the carrier's truth for Activate."""
    if step is CarrierStep.ACTIVATE or not last:
        return _STEP_STATUS[step]
    return RESULT_DEVICE_STATUS[TargetStatus(change.target_status)]


def record_outcomes(
    session: Session,
    ctx: EngineContext,
    bulk: DeviceBulkChange,
    auth: ThingSpaceAuthentication | None,
    outcomes: Sequence[Outcome],
) -> list[int]:
    """Apply ``outcomes`` to their changes (already loaded or loaded here); return ids left AWAITING."""
    now = ctx.clock()
    s = ctx.settings
    process_by = s.process_by
    policy = ctx.retry_policy
    provider = session.get(ServiceProvider, bulk.service_provider_id)
    tenant_id = provider.tenant_id if provider else None
    ids = [o.change_id for o in outcomes]
    # Locked on PostgreSQL: a callback and a check round may settle the same change at the same moment.
    rows = {
        c.id: c
        for c in session.execute(select(M2MDeviceChange).where(M2MDeviceChange.id.in_(ids)).with_for_update()).scalars()
    }
    logs: list[LogEntry] = []
    awaiting: list[int] = []
    done: list[DeviceUpdate] = []
    for outcome in outcomes:
        change = rows[outcome.change_id]
        if ChangeStatus(change.status).is_terminal:
            continue  # settled meanwhile (a callback raced a reconcile): first writer wins
        if outcome.expect_status is not None and change.status != outcome.expect_status.value:
            continue  # moved on since this outcome was read
        if outcome.expect_correlation is not None and change.correlation_id != outcome.expect_correlation:
            continue  # claimed again by another worker since: its outcome, not this one, counts
        logs.extend(outcome.logs)
        step = ch.current_step(change)
        if outcome.kind is Kind.DONE:
            last = not ch.advance(change)
            req = ch.request_of(change)
            done.append(
                DeviceUpdate(
                    change,
                    local_status_after(change, step, last=last),
                    outcome.facts,
                    req.request.rate_plan_code,
                    req.request.rev_account_number,
                )
            )
            if last:
                ch.finish(change, ChangeStatus.PROCESSED, details=outcome.details, now=now, process_by=process_by)
                schedule_after_success(session, change, req)  # billing / rate plan: the additional step is now due
            else:
                change.status_details = f"{outcome.details}; next: {ch.current_step(change).value.lower()}"
        elif outcome.kind is Kind.AWAITING:
            ch.to_awaiting(change, request_id=outcome.request_id, details=outcome.details)
            awaiting.append(change.id)
        elif outcome.kind is Kind.RETRY:
            if policy.exhausted(change.attempt_count):
                ch.finish(
                    change,
                    ChangeStatus.API_FAILED,
                    details=f"{outcome.details} (gave up after {change.attempt_count} attempts)",
                    now=now,
                    process_by=process_by,
                    code=outcome.code,
                )
            else:
                delay = policy.delay_s(change.attempt_count, retry_after_s=outcome.retry_after_s, rng=ctx.rng)
                ch.to_ready(
                    change,
                    next_attempt_at=now + timedelta(seconds=delay),
                    details=f"{outcome.details}; retry {change.attempt_count + 1} in {delay:.0f}s",
                    code=outcome.code,
                )
        elif outcome.kind is Kind.ISOLATE:
            ch.to_ready(
                change, next_attempt_at=None, details=outcome.details, key=solo_key(change.id), refund_attempt=True
            )
            change.solo = True
        elif outcome.kind in (Kind.UNKNOWN, Kind.HOLD):
            if change.sent_at and now - change.sent_at > timedelta(seconds=s.reconcile_giveup_s):
                ch.finish(
                    change,
                    ChangeStatus.NEEDS_REVIEW,
                    details=f"{outcome.details}; still ambiguous after {s.reconcile_giveup_s}s — check the device "
                    "at the carrier before retrying",
                    now=now,
                    process_by=process_by,
                    code=outcome.code,
                )
            else:
                delay = 0 if outcome.kind is Kind.UNKNOWN else s.reconcile_retry_s
                ch.hold_for_reconcile(change, until=now + timedelta(seconds=delay), details=outcome.details)
                if outcome.code:
                    change.last_error_code = outcome.code
        elif outcome.kind is Kind.FAILED:
            ch.finish(
                change,
                outcome.terminal or ChangeStatus.ERROR,
                details=outcome.details,
                now=now,
                process_by=process_by,
                code=outcome.code,
            )
    logs.extend(
        apply_device_statuses(
            session,
            done,
            provider_id=bulk.service_provider_id,
            tenant_id=tenant_id,
            account_number=auth.account_number if auth else None,
            process_by=process_by,
        )
    )
    write_logs(session, logs, process_by=process_by)
    return awaiting


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
            .join(
                DeviceBulkChange,
                (DeviceBulkChange.id == M2MDeviceChange.bulk_change_id)
                & (DeviceBulkChange.service_provider_id == ThingSpaceCallBackResponseLog.service_provider_id),
            )
            .where(M2MDeviceChange.id.in_(ids), ThingSpaceCallBackResponseLog.m2m_device_change_id.is_(None))
        ).scalars()
    ]
    if log_ids:
        session.execute(
            update(ThingSpaceCallBackResponseLog)
            .where(ThingSpaceCallBackResponseLog.id.in_(log_ids))
            .values(outcome=None)
        )
    return log_ids
