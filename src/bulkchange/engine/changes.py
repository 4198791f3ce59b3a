"""Moving one device change through its states (change-lifecycle.md). All writes are on the row.

* ``claim`` — READY → SENDING in one atomic statement with a lease; the attempt is counted here, so a crash
  loop still ends. The claim *is* the intent record: it commits before the request leaves.
* ``claim_expired_sending`` — a SENDING change whose lease expired is taken over (to be reconciled).
  Both claims are safe with many workers on PostgreSQL, SQL Server and SQLite (``lock_candidates``).
* ``to_ready`` / ``to_awaiting`` / ``finish`` / ``advance`` — the outcomes.
"""

from __future__ import annotations

import uuid
import weakref
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import cast

from sqlalchemy import ColumnElement, SQLColumnExpression, Table, Update, case, exists, func, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from bulkchange.carrier.port import LONGEST_PLAN, Carrier, ChangeView
from bulkchange.domain.change_request import StatusUpdateRequest
from bulkchange.domain.statuses import ACTIVE_BULK_STATUSES, IN_FLIGHT_CHANGE_STATUSES, ChangeStatus, TargetStatus
from bulkchange.engine.context import default_carriers
from bulkchange.jobs import statements as jobs
from bulkchange.jobs.kinds import CARRIER_STEP
from bulkchange.store.db import read_only_session
from bulkchange.store.tables import DeviceBulkChange, M2MDeviceChange

C = M2MDeviceChange
B = DeviceBulkChange
_T = cast(Table, M2MDeviceChange.__table__)


def unfinished_change_of(bulk_id: SQLColumnExpression[int]) -> ColumnElement[bool]:
    """Some change of the bulk change ``bulk_id`` (a column of the outer query) is not terminal yet."""
    return exists().where(C.bulk_change_id == bulk_id, C.status.in_([s.value for s in IN_FLIGHT_CHANGE_STATUSES]))


def active_bulk_ids(session_factory: sessionmaker[Session], *conditions: ColumnElement[bool]) -> list[int]:
    """The bulk changes still active (not finished, not failed at bulk level) that meet ``conditions``; read
    without taking the write lock (the recovery passes look often and rarely find anything)."""
    with read_only_session(session_factory) as session:
        query = select(B.id).where(B.status.in_([s.value for s in ACTIVE_BULK_STATUSES]), *conditions)
        return list(session.execute(query).scalars())


def current_step(change: M2MDeviceChange) -> str:
    """The plan step the change is on (the carrier's own name for it)."""
    return change.plan.split(",")[change.step_index]


def steps_of(change: M2MDeviceChange) -> list[str]:
    return [s for s in change.plan.split(",") if s]


_parsed: weakref.WeakKeyDictionary[M2MDeviceChange, tuple[str, StatusUpdateRequest]] = weakref.WeakKeyDictionary()


def request_of(change: M2MDeviceChange) -> StatusUpdateRequest:
    """The change's request, parsed once per loaded row and text: recording a callback's verdict reads it
    for the verdict and again for the local device tables (~20 µs a parse). Never modify what this returns."""
    text = change.change_request
    known = _parsed.get(change)
    if known is not None and known[0] == text:
        return known[1]
    request = StatusUpdateRequest.from_json(text)
    _parsed[change] = (text, request)
    return request


def reuse_requests(rows: Iterable[M2MDeviceChange], earlier: Iterable[M2MDeviceChange]) -> None:
    """Give each of ``rows`` the request already parsed for ``earlier``'s row of the same change (a load of it
    before this one), where the request's text is still the same: a worker parses a batch's requests to send
    it, then reads its changes again to record the outcomes."""
    by_id = {c.id: c for c in earlier}
    for row in rows:
        held = by_id.get(row.id)
        known = _parsed.get(held) if held is not None else None
        if known is not None and known[0] == row.change_request and row not in _parsed:
            _parsed[row] = known


def view_of(change: M2MDeviceChange) -> ChangeView:
    """What a carrier adapter sees of the change: its device, current step and request."""
    request = request_of(change)
    return ChangeView(
        id=change.id,
        bulk_change_id=change.bulk_change_id,
        iccid=change.iccid,
        imei=change.imei,
        target=TargetStatus.parse(change.target_status),
        step=current_step(change),
        request=request,
        carrier_request_id=change.carrier_request_id,
        sent_at=change.sent_at,
        status_details=change.status_details,
    )


def at_once_steps(carriers: Iterable[Carrier]) -> tuple[str, ...]:
    """The steps of ``carriers`` whose answer settles them (not settled later by a callback or a check)."""
    return tuple(sorted({step for c in carriers for step in c.steps if not c.settles_later(step)}))


DEFAULT_AT_ONCE = at_once_steps(default_carriers().values())


def _due(bulk_change_id: int, now: datetime) -> list[ColumnElement[bool]]:
    """Due READY changes of a bulk change that is not paused.

    The pause is tested inside the claim statement itself, so a pause committed before the claim runs is
    always seen (no change is claimed after it); one committed while a claim runs lets that claim finish,
    like any change already at the carrier.
    """
    return [
        C.bulk_change_id == bulk_change_id,
        C.status == ChangeStatus.READY.value,
        or_(C.next_attempt_at.is_(None), C.next_attempt_at <= now),
        ~exists().where(B.id == bulk_change_id, B.paused_at.is_not(None)),
    ]


def claim_statement(
    dialect_name: str,
    bulk_change_id: int,
    *,
    worker: str,
    lease_s: int,
    now: datetime,
    limit: int,
    correlation: str,
    at_once: Sequence[str] = DEFAULT_AT_ONCE,
) -> Update:
    """One statement that claims up to ``limit`` due READY changes sharing the batch key of the first due
    one, sets their lease, and counts the attempt.

    "First" is by ``claim_order``, then by id: the changes whose results take longest go to the carrier
    first, so it works on them while the worker records the quick ones. In plain id order, a bulk change
    that listed its inventory Adds first sent its activations only once every Add had been recorded (on
    bench/throughput.py's 10,000 mixed changes, 5,000 Adds went ahead of the first callback).

    The batch key is chosen *inside* the statement (a scalar subquery, locked like the rows), so choosing
    and claiming are one atomic step on every database: on SQLite a key read beforehand could be stale by
    the time the write lock is taken; on PostgreSQL / SQL Server the key's row is itself locked (skipping
    locked rows), so a worker never picks a key whose rows all belong to another worker's batch in flight.
    """
    key = func.coalesce(C.batch_key, "")
    order = (claim_order(at_once),)
    first_key = jobs.lock_candidates(
        select(key).where(*_due(bulk_change_id, now)).order_by(*order, C.id).limit(1), CARRIER_STEP, dialect_name
    ).scalar_subquery()
    values = jobs.lease_values(CARRIER_STEP, owner=worker, now=now, lease_s=lease_s)
    values.update({_T.c.CorrelationId: correlation, _T.c.SentAt: now})
    return jobs.claim_statement(
        CARRIER_STEP,
        dialect_name,
        where=[*_due(bulk_change_id, now), key == first_key],
        guard=[C.status == ChangeStatus.READY.value],
        values=values,
        limit=limit,
        order=order,
        returning=(C,),
    )


def claim_order(at_once: Sequence[str] = DEFAULT_AT_ONCE) -> ColumnElement[int]:
    """Which due changes a claim takes first (lowest first):

    0. a step after another of the same change — the Activate of an Add-then-Activate whose Add is recorded —
       so a device's next step leaves as soon as its previous one is done, never after a whole bulk change's
       first steps;
    1. a first step with another after it — the Add of an Add-then-Activate, so the longest chain starts first;
    2. a step the carrier answers later (ThingSpace's Activate, Deactivate, Suspend, Restore: accepted with a
       requestId, settled by a callback seconds or minutes afterwards);
    3. a step it answers in its response (``at_once``) with nothing after it (an inventory Add).

    Read from the row: ``StepIndex`` is the current step, ``Plan`` the comma-joined steps — a step follows
    when the plan has more commas than that, tested with LIKE up to the longest plan (counting the commas with
    LENGTH and REPLACE cost more per row: every claim evaluates this on every due row of the bulk change;
    at 100,000 ready rows on SQLite a claim of 2,000 took 128–161 ms against 105–117 ms, three interleaved
    pairs, and 86–127 ms in plain id order) — and a batch key starts with its step (``batching.batch_key``).
    """
    a_step_follows = or_(
        *((C.step_index == index) & C.plan.like("%" + ",%" * (index + 1)) for index in range(LONGEST_PLAN - 1))
    )
    key = func.coalesce(C.batch_key, "")
    return case(
        (C.step_index > 0, 0),
        (a_step_follows, 1),
        (or_(*(key.like(f"{step}:%") for step in at_once)), 3),
        else_=2,
    )


def reclaim_statement(
    dialect_name: str, bulk_change_id: int, *, worker: str, lease_s: int, now: datetime, limit: int
) -> Update:
    """One statement that takes over up to ``limit`` SENDING changes whose lease expired."""
    expired = _expired_sending(bulk_change_id, now)
    # A fresh correlation id: an outcome read under the previous claim can no longer be recorded.
    values = jobs.lease_values(CARRIER_STEP, owner=worker, now=now, lease_s=lease_s, count_attempt=False)
    del values[_T.c.Status]  # stays SENDING: taken over to be reconciled, not sent
    values[_T.c.CorrelationId] = uuid.uuid4().hex
    return jobs.claim_statement(
        CARRIER_STEP, dialect_name, where=expired, guard=expired, values=values, limit=limit, returning=(C,)
    )


def any_expired_sending(session: Session, bulk_change_id: int, *, now: datetime) -> bool:
    """Has any SENDING change of the bulk change an expired lease (``claim_expired_sending`` would take it)? One
    index probe, for a read-only session: a slice asks at its start and after each batch, and almost always the
    answer is no — which must not cost the write lock, on SQLite, that a receiver's commits wait for."""
    query = select(C.id).where(*_expired_sending(bulk_change_id, now)).limit(1)
    return session.execute(query).first() is not None


def _expired_sending(bulk_change_id: int, now: datetime) -> list[ColumnElement[bool]]:
    return [C.bulk_change_id == bulk_change_id, C.status == ChangeStatus.SENDING.value, C.lease_expires_at < now]


def extend_claim(
    session: Session, ids: Sequence[int], *, worker: str, correlation: str | None, until: datetime
) -> int:
    """The heartbeat of a claim whose carrier work is still going on: the SENDING changes among ``ids`` that
    this claim (``worker`` and the claim's correlation id) still holds keep their lease until ``until``.
    Returns how many it still holds (one taken over in the meantime is left alone)."""
    if not ids:
        return 0
    stmt = (
        update(C)
        .where(
            C.id.in_(list(ids)),
            C.lease_owner == worker,
            C.correlation_id == correlation,
            C.status == ChangeStatus.SENDING.value,
        )
        .values(lease_expires_at=until)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(session.execute(stmt), "rowcount", 0) or 0)


def _run_claim(session: Session, stmt: Update) -> list[M2MDeviceChange]:
    """Execute a claim, commit it (the claim is the intent record), return the rows as claimed."""
    stmt = stmt.execution_options(synchronize_session=False)
    rows = list(session.scalars(stmt, execution_options={"populate_existing": True}))
    session.commit()
    return sorted(rows, key=lambda c: c.id)  # RETURNING / OUTPUT order is unspecified


def claim(
    session: Session,
    bulk_change_id: int,
    *,
    worker: str,
    lease_s: int,
    now: datetime,
    limit: int,
    at_once: Sequence[str] = DEFAULT_AT_ONCE,
) -> list[M2MDeviceChange]:
    """Claim up to ``limit`` due READY changes that share one batch key; commit; return them.

    Safe with any number of workers (``claim_statement``): PostgreSQL and SQL Server skip rows another
    worker holds; SQLite serialises writers, and the ``Status = 'READY'`` guard in the UPDATE makes a
    lost race claim nothing rather than twice.
    """
    stmt = claim_statement(
        session.get_bind().dialect.name,
        bulk_change_id,
        worker=worker,
        lease_s=lease_s,
        now=now,
        limit=limit,
        correlation=uuid.uuid4().hex,
        at_once=at_once,
    )
    rows = _run_claim(session, stmt)
    keys = {c.batch_key for c in rows}
    if len(keys) > 1:
        # Cannot happen where the key subquery runs once (PostgreSQL InitPlan, SQLite); a guard for a
        # planner that re-evaluates it: one request must never carry another key's fields.
        keep = rows[0].batch_key
        extra = [c for c in rows if c.batch_key != keep]
        for change in extra:
            session.add(change)
            to_ready(change, next_attempt_at=None, refund_attempt=True)
        session.commit()
        rows = [c for c in rows if c.batch_key == keep]
    return rows


def claim_expired_sending(
    session: Session, bulk_change_id: int, *, worker: str, lease_s: int, now: datetime, limit: int
) -> list[M2MDeviceChange]:
    """Take over SENDING changes whose lease expired (a worker died mid-call): they must be reconciled."""
    stmt = reclaim_statement(
        session.get_bind().dialect.name, bulk_change_id, worker=worker, lease_s=lease_s, now=now, limit=limit
    )
    return _run_claim(session, stmt)


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
    """A terminal status with readable details, never overwritten by the bulk status (computed from these)."""
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


def advance(change: M2MDeviceChange, carrier: Carrier) -> bool:
    """Move to the next plan step (READY, fresh attempts). False when the plan is complete."""
    steps = steps_of(change)
    if change.step_index + 1 >= len(steps):
        return False
    change.step_index += 1
    change.attempt_count = 0
    change.carrier_request_id = None
    change.next_attempt_at = None
    change.batch_key = carrier.batch_key(steps[change.step_index], request_of(change))
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
