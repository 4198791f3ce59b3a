"""Moving one device change through its states (change-lifecycle.md). All writes are on the row.

* ``claim`` — READY → SENDING in one atomic statement with a lease; the attempt is counted here, so a crash
  loop still ends. The claim *is* the intent record: it commits before the request leaves.
* ``to_ready`` / ``to_awaiting`` / ``finish`` / ``advance`` — the outcomes.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from bulkchange.domain.change_request import StatusUpdateRequest
from bulkchange.domain.plan import CarrierStep
from bulkchange.domain.statuses import ChangeStatus
from bulkchange.engine.batching import batch_key
from bulkchange.store.tables import M2MDeviceChange

C = M2MDeviceChange


def current_step(change: M2MDeviceChange) -> CarrierStep:
    """The plan step the change is on."""
    return CarrierStep(change.plan.split(",")[change.step_index])


def steps_of(change: M2MDeviceChange) -> list[CarrierStep]:
    return [CarrierStep(s) for s in change.plan.split(",") if s]


def request_of(change: M2MDeviceChange) -> StatusUpdateRequest:
    return StatusUpdateRequest.from_json(change.change_request)


def _due(bulk_change_id: int, now: datetime) -> list[object]:
    return [
        C.bulk_change_id == bulk_change_id,
        C.status == ChangeStatus.READY.value,
        or_(C.next_attempt_at.is_(None), C.next_attempt_at <= now),
    ]


def claim(
    session: Session, bulk_change_id: int, *, worker: str, lease_s: int, now: datetime, limit: int
) -> list[M2MDeviceChange]:
    """Claim up to ``limit`` due READY changes that share one batch key; commit; return them.

    PostgreSQL skips rows another worker holds (``FOR UPDATE SKIP LOCKED``); SQLite serialises writers, and
    the ``Status = 'READY'`` guard in the UPDATE makes a lost race claim nothing rather than twice.
    """
    first_key = session.execute(
        select(C.batch_key).where(*_due(bulk_change_id, now)).order_by(C.id).limit(1)  # type: ignore[arg-type]
    ).scalar_one_or_none()
    if first_key is None:
        session.rollback()
        return []
    candidates = (
        select(C.id).where(*_due(bulk_change_id, now), C.batch_key == first_key).order_by(C.id).limit(limit)  # type: ignore[arg-type]
    )
    if session.get_bind().dialect.name == "postgresql":
        candidates = candidates.with_for_update(skip_locked=True)
    correlation = uuid.uuid4().hex
    claimed_ids = list(
        session.execute(
            update(C)
            .where(C.id.in_(candidates), C.status == ChangeStatus.READY.value)
            .values(
                status=ChangeStatus.SENDING.value,
                lease_owner=worker,
                lease_expires_at=now + timedelta(seconds=lease_s),
                attempt_count=C.attempt_count + 1,
                correlation_id=correlation,
                sent_at=now,
            )
            .returning(C.id)
            .execution_options(synchronize_session=False)
        ).scalars()
    )
    session.commit()
    if not claimed_ids:
        return []
    return list(session.execute(select(C).where(C.id.in_(claimed_ids)).order_by(C.id)).scalars())


def claim_expired_sending(
    session: Session, bulk_change_id: int, *, worker: str, lease_s: int, now: datetime, limit: int
) -> list[M2MDeviceChange]:
    """Take over SENDING changes whose lease expired (a worker died mid-call): they must be reconciled."""
    candidates = (
        select(C.id)
        .where(
            C.bulk_change_id == bulk_change_id,
            C.status == ChangeStatus.SENDING.value,
            C.lease_expires_at < now,
        )
        .order_by(C.id)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        candidates = candidates.with_for_update(skip_locked=True)
    ids = list(
        session.execute(
            update(C)
            .where(C.id.in_(candidates), C.status == ChangeStatus.SENDING.value, C.lease_expires_at < now)
            .values(lease_owner=worker, lease_expires_at=now + timedelta(seconds=lease_s))
            .returning(C.id)
            .execution_options(synchronize_session=False)
        ).scalars()
    )
    session.commit()
    if not ids:
        return []
    return list(session.execute(select(C).where(C.id.in_(ids)).order_by(C.id)).scalars())


def to_ready(
    change: M2MDeviceChange,
    *,
    next_attempt_at: datetime | None,
    details: str | None = None,
    code: str | None = None,
    key: str | None = None,
    refund_attempt: bool = False,
) -> None:
    """Back to READY: sent again later (transient error, nothing done at the carrier)."""
    change.status = ChangeStatus.READY.value
    change.next_attempt_at = next_attempt_at
    change.lease_owner = None
    change.lease_expires_at = None
    if refund_attempt and change.attempt_count > 0:
        change.attempt_count -= 1
    if details is not None:
        change.status_details = details
    if code is not None:
        change.last_error_code = code
    if key is not None:
        change.batch_key = key


def hold_for_reconcile(change: M2MDeviceChange, *, until: datetime, details: str) -> None:
    """Stay SENDING with a lease nobody owns: reconciled again when it expires, never resent blindly."""
    change.status = ChangeStatus.SENDING.value
    change.lease_owner = None
    change.lease_expires_at = until
    change.status_details = details


def to_awaiting(change: M2MDeviceChange, *, request_id: str | None, details: str) -> None:
    """Accepted asynchronously: the result comes by callback or by the deferred check."""
    change.status = ChangeStatus.AWAITING_RESULT.value
    change.carrier_request_id = request_id
    change.lease_owner = None
    change.lease_expires_at = None
    change.status_details = details


def finish(
    change: M2MDeviceChange,
    status: ChangeStatus,
    *,
    details: str,
    now: datetime,
    process_by: str,
    code: str | None = None,
) -> None:
    """A terminal status with readable details. Never overwritten by the bulk status (B2)."""
    assert status.is_terminal
    change.status = status.value
    change.status_details = details
    change.is_processed = True
    change.has_errors = status.has_errors
    change.processed_date = now
    change.processed_by = process_by
    change.lease_owner = None
    change.lease_expires_at = None
    change.next_attempt_at = None
    if code is not None:
        change.last_error_code = code


def advance(change: M2MDeviceChange) -> bool:
    """Move to the next plan step (READY, fresh attempts). False when the plan is complete."""
    steps = steps_of(change)
    if change.step_index + 1 >= len(steps):
        return False
    change.step_index += 1
    change.attempt_count = 0
    change.carrier_request_id = None
    change.next_attempt_at = None
    change.batch_key = batch_key(steps[change.step_index], request_of(change))
    change.status = ChangeStatus.READY.value
    change.lease_owner = None
    change.lease_expires_at = None
    return True


def counts_by_status(session: Session, bulk_change_id: int) -> dict[ChangeStatus, int]:
    rows = session.execute(
        select(C.status, func.count()).where(C.bulk_change_id == bulk_change_id).group_by(C.status)
    ).all()
    return {ChangeStatus(status): int(n) for status, n in rows}


def earliest(session: Session, bulk_change_id: int, status: ChangeStatus, column: str) -> datetime | None:
    """The earliest ``column`` (NextAttemptAt / LeaseExpiresAt) among changes in ``status``."""
    col = getattr(C, column)
    value = session.execute(
        select(func.min(col)).where(C.bulk_change_id == bulk_change_id, C.status == status.value)
    ).scalar_one_or_none()
    return value if isinstance(value, datetime) else None
