"""What an operator does to bulk changes besides submitting them: preview, idempotent create, cancel, retry.

Entry points (the REST API, the dashboard, the CLI) call these; none of them writes change rows itself.

* ``preview`` — a dry run: every row validated exactly as ``create_bulk_change`` would, the carrier steps
  planned per row (the provider's carrier's ``plan``) and warnings a person should read before confirming.
* ``create_idempotent`` — ``create_bulk_change`` behind an ``Idempotency-Key``: the same key with the same
  request gives the same bulk change; the same key with another request is refused.
* cancel, pause and resume are ``engine.controls`` (each one conditional UPDATE).
* ``retry_failed`` — the failed changes of a bulk change as a new bulk change linked to the old one
  (``RetryOfBulkChangeId``); a device already retried from that bulk change is not retried twice.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError
from sqlalchemy import event, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from bulkchange.carrier import catalogue
from bulkchange.carrier.port import Carrier
from bulkchange.domain.carriers import CarrierName
from bulkchange.domain.statuses import (
    DEVICE_STATUS_NAMES,
    RESULT_DEVICE_STATUS,
    ChangeStatus,
    TargetStatus,
)
from bulkchange.engine.preview_estimate import estimate
from bulkchange.engine.row_rules import RowProblem, build_request, rules_for
from bulkchange.engine.submit import (
    CheckedChunk,
    SubmissionRefused,
    SubmitReport,
    carrier_for,
    checked_chunks,
    create_bulk_change,
)
from bulkchange.queue.base import Transport
from bulkchange.store.tables import (
    ApiIdempotencyKey,
    Device,
    DeviceBulkChange,
    M2MDeviceChange,
    ServiceProvider,
    utcnow,
)

#: ThingSpace allows this many provisioning actions per line in a rolling 24 hours.
DAILY_ACTIONS_PER_LINE = 5
#: The steps ThingSpace counts as provisioning actions (accepted with a requestId, settled later).
_THINGSPACE = catalogue.carrier(CarrierName.THINGSPACE)
_PROVISIONING = frozenset(s for s in _THINGSPACE.steps if _THINGSPACE.settles_later(s))
#: Statuses ``retry_failed`` takes by default: every terminal status but PROCESSED and CANCELLED.
FAILED_STATUSES: frozenset[ChangeStatus] = frozenset(
    {ChangeStatus.ERROR, ChangeStatus.API_FAILED, ChangeStatus.ACTIVATION_UNVERIFIED, ChangeStatus.NEEDS_REVIEW}
)
#: A key whose request never finished (the process died between claiming the key and creating) is taken over.
IDEMPOTENCY_STALE_AFTER = timedelta(minutes=10)


# ----------------------------------------------------------------------------------------------- preview


@dataclass
class PreviewRow:
    row: int
    iccid: str | None
    target: str | None
    plan: list[str]
    current_status: str | None
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class Preview:
    rows: list[PreviewRow]
    problems: list[RowProblem]  # every problem, as create_bulk_change would report it (row 0 = file level)
    # The time the valid rows take at the account's calls per second (Control Center); None otherwise.
    estimate: str | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def warnings(self) -> int:
        return sum(len(r.warnings) for r in self.rows)

    def planned_operations(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for r in self.rows:
            if r.ok:
                for step in r.plan:
                    counts[step] = counts.get(step, 0) + 1
        return counts


def preview(
    session: Session,
    rows: Iterable[Any],
    *,
    status: str,
    service_provider_id: int,
    ignore_current_status: bool = False,
    now: datetime | None = None,
) -> Preview:
    """A dry run of ``create_bulk_change``: the same validation, the planned carrier steps, warnings.

    Nothing is written. Warnings do not refuse a row; problems do (and would refuse the whole file). ``rows``
    may be any iterable: it is read once and checked a chunk at a time, like ``create_bulk_change`` does (the
    preview itself has one entry per row, so it is only for files a person reads).
    """
    now = now or utcnow()
    problems: list[RowProblem] = []
    provider = session.get(ServiceProvider, service_provider_id)
    if provider is None or provider.is_deleted:
        problems.append(RowProblem(0, "service_provider", f"no service provider {service_provider_id}"))
    report = SubmitReport()
    previewed: list[PreviewRow] = []
    for chunk in checked_chunks(
        session,
        rows,
        report,
        status=status,
        service_provider_id=service_provider_id,
        ignore_current_status=ignore_current_status,
    ):
        problems.extend(chunk.problems)
        previewed.extend(
            _preview_chunk(
                session,
                chunk,
                status=status,
                service_provider_id=service_provider_id,
                ignore_current_status=ignore_current_status,
                since=now - timedelta(hours=24),
            )
        )
    if report.file_refused or report.rows == 0:  # a file-level problem: the rows' own problems do not count
        problems = [p for p in problems if p.row == 0] + report.problems
    timing = estimate(session, provider, [r.plan for r in previewed if r.ok and r.plan])
    session.rollback()
    return Preview(previewed, problems, estimate=timing)


def _preview_chunk(
    session: Session,
    chunk: CheckedChunk,
    *,
    status: str,
    service_provider_id: int,
    ignore_current_status: bool,
    since: datetime,
) -> list[PreviewRow]:
    """The preview of one checked chunk: each row's plan, its problems, its current status and warnings."""
    by_row: dict[int, list[str]] = {}
    for p in chunk.problems:
        by_row.setdefault(p.row, []).append(f"{p.field}: {p.message}")
    carrier = carrier_for(session.get(ServiceProvider, service_provider_id))
    parsed = [
        _preview_row(
            number,
            raw,
            by_row.get(number, []),
            status=status,
            ignore_current_status=ignore_current_status,
            carrier=carrier,
        )
        for number, raw in chunk.rows
    ]
    iccids = [r.iccid for r in parsed if r.iccid]
    current = _local_statuses(session, iccids, service_provider_id)
    recent = _recent_actions(session, iccids, service_provider_id, since=since)
    for r in parsed:
        if r.iccid is not None:
            _add_status_warnings(r, current.get(r.iccid), recent.get(r.iccid, 0), carrier)
    return parsed


def _preview_row(
    number: int, raw: Any, problems: list[str], *, status: str, ignore_current_status: bool, carrier: Carrier
) -> PreviewRow:
    """One row's planned steps and the warnings it carries on its own (whatever its problems)."""
    iccid: str | None = None
    target: TargetStatus | None = None
    plan: list[str] = []
    warnings: list[str] = []
    try:
        rules = rules_for(carrier.name)
        req = build_request(raw, status=status, ignore_current_status=ignore_current_status, rules=rules)
        iccid = req.request.iccid
        target = TargetStatus.parse(req.update_status)
        plan = carrier.plan(target, req, ignore_current_status=req.is_ignore_current_status)
        if target is TargetStatus.DEACTIVE:
            terms = carrier.deactivation
            if terms.fee_unless_waived and not req.request.etf_waiver:
                warnings.append("deactivation may incur an early-termination fee (EtfWaiver is not set for this row)")
            warnings.append(terms.warning)
    except (ValidationError, ValueError, TypeError, AttributeError):
        pass
    return PreviewRow(
        row=number,
        iccid=iccid,
        target=target.value if target else None,
        plan=plan,
        current_status=None,
        problems=problems,
        warnings=warnings,
    )


def _add_status_warnings(r: PreviewRow, status_id: int | None, done: int, carrier: Carrier) -> None:
    """Warnings that need the database: already in the target state, ThingSpace's daily action budget."""
    r.current_status = DEVICE_STATUS_NAMES.get(status_id) if status_id else None
    if r.target is not None and RESULT_DEVICE_STATUS[TargetStatus(r.target)] == status_id:
        r.warnings.append(f"the device is already {r.current_status} (the target state)")
    if carrier.name != CarrierName.THINGSPACE.value:
        return
    planned = sum(1 for s in r.plan if carrier.settles_later(s))
    if planned and done + planned > DAILY_ACTIONS_PER_LINE:
        r.warnings.append(
            f"daily action budget: {done} provisioning action(s) on this line in the last 24 h plus {planned} "
            f"planned exceeds ThingSpace's {DAILY_ACTIONS_PER_LINE} per line per day; the carrier will refuse "
            "the excess (DailyActionLimitExceeded)"
        )


def _local_statuses(session: Session, iccids: list[str], service_provider_id: int) -> dict[str, int]:
    found: dict[str, int] = {}
    for start in range(0, len(iccids), 500):
        chunk = iccids[start : start + 500]
        for iccid, status_id in session.execute(
            select(Device.iccid, Device.device_status_id).where(
                Device.iccid.in_(chunk),
                Device.service_provider_id == service_provider_id,
                Device.is_deleted.is_(False),
            )
        ).all():
            if status_id is not None:
                found[iccid] = int(status_id)
    return found


def _recent_actions(
    session: Session, iccids: list[str], service_provider_id: int, *, since: datetime
) -> dict[str, int]:
    """Provisioning actions bulkchange itself sent per line since ``since`` (async steps already claimed).

    The carrier may count actions made elsewhere (its portal, other systems) too: this is a lower bound.
    """
    counts: dict[str, int] = {}
    for start in range(0, len(iccids), 500):
        chunk = iccids[start : start + 500]
        for iccid, plan, step_index, change_status in session.execute(
            select(M2MDeviceChange.iccid, M2MDeviceChange.plan, M2MDeviceChange.step_index, M2MDeviceChange.status)
            .join(DeviceBulkChange, DeviceBulkChange.id == M2MDeviceChange.bulk_change_id)
            .where(
                M2MDeviceChange.iccid.in_(chunk),
                M2MDeviceChange.sent_at >= since,
                DeviceBulkChange.service_provider_id == service_provider_id,
            )
        ).all():
            steps = [s for s in str(plan).split(",") if s]
            sent = steps[: int(step_index) + 1]
            if change_status == ChangeStatus.READY.value and sent:
                sent = sent[:-1]  # the current step is waiting to be (re)sent
            counts[iccid] = counts.get(iccid, 0) + sum(1 for s in sent if s in _PROVISIONING)
    return counts


# ---------------------------------------------------------------------------------------- idempotency


class IdempotencyConflict(Exception):
    """The key was used for another request, or its first request is still being processed."""

    def __init__(self, message: str, *, in_progress: bool = False) -> None:
        super().__init__(message)
        self.in_progress = in_progress


def request_hash(*parts: Any) -> str:
    """A stable SHA-256 of the request (canonical JSON; bytes hashed as they are)."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, bytes):
            digest.update(b"b:" + part)
        else:
            digest.update(b"j:" + json.dumps(part, sort_keys=True, separators=(",", ":"), default=str).encode())
        digest.update(b"\x00")
    return digest.hexdigest()


@dataclass(frozen=True)
class Created:
    bulk_change_id: int
    replayed: bool  # True when the key had already created this bulk change


def create_idempotent(
    session_factory: sessionmaker[Session],
    key: str | None,
    fingerprint: str,
    create: Callable[[Session], int],
    *,
    now: Callable[[], datetime] = utcnow,
) -> Created:
    """Run ``create`` once per key. Without a key it simply runs.

    The key row is claimed (committed) before creating, so two concurrent requests with one key cannot
    both create; a refused submission releases the key (nothing was created, a corrected request may
    reuse it).
    """
    if not key:
        with session_factory() as session:
            return Created(create(session), replayed=False)
    _claim_key(session_factory, key, fingerprint, now())
    try:
        with session_factory() as session:
            bulk_id = create(session)
    except BaseException:
        with session_factory.begin() as session:
            row = session.get(ApiIdempotencyKey, key)
            if row is not None and row.bulk_change_id is None:
                session.delete(row)
        raise
    with session_factory.begin() as session:
        row = session.get(ApiIdempotencyKey, key)
        if row is not None:
            row.bulk_change_id = bulk_id
    return Created(bulk_id, replayed=False)


def _claim_key(session_factory: sessionmaker[Session], key: str, fingerprint: str, now: datetime) -> None:
    for _ in range(3):
        with session_factory() as session:
            row = session.get(ApiIdempotencyKey, key)
            if row is None:
                session.add(ApiIdempotencyKey(key=key, request_hash=fingerprint, created_date=now))
                try:
                    session.commit()
                    return
                except IntegrityError:
                    session.rollback()
                    continue  # another request claimed it first: read what it stored
            if row.request_hash != fingerprint:
                raise IdempotencyConflict(
                    "this Idempotency-Key was already used with a different request; use a new key"
                )
            if row.bulk_change_id is not None:
                raise _Replay(row.bulk_change_id)
            if now - row.created_date < IDEMPOTENCY_STALE_AFTER:
                raise IdempotencyConflict(
                    "a request with this Idempotency-Key is still being processed; retry shortly", in_progress=True
                )
            row.created_date = now  # abandoned by a process that died: take it over
            session.commit()
            return
    raise IdempotencyConflict("could not claim the Idempotency-Key; retry", in_progress=True)


class _Replay(Exception):
    def __init__(self, bulk_change_id: int) -> None:
        super().__init__(bulk_change_id)
        self.bulk_change_id = bulk_change_id


def create_or_replay(
    session_factory: sessionmaker[Session],
    key: str | None,
    fingerprint: str,
    create: Callable[[Session], int],
    *,
    now: Callable[[], datetime] = utcnow,
) -> Created:
    """``create_idempotent``, turning a replay into ``Created(replayed=True)``."""
    try:
        return create_idempotent(session_factory, key, fingerprint, create, now=now)
    except _Replay as replay:
        return Created(replay.bulk_change_id, replayed=True)


# ---------------------------------------------------------------------------------------------- retry


def retry_rows(
    session: Session, bulk_change_id: int, statuses: Iterable[ChangeStatus] = FAILED_STATUSES
) -> list[dict[str, Any]]:
    """The input rows that re-create the failed changes (minus devices already retried from this bulk change)."""
    already = set(
        session.execute(
            select(M2MDeviceChange.iccid)
            .join(DeviceBulkChange, DeviceBulkChange.id == M2MDeviceChange.bulk_change_id)
            .where(DeviceBulkChange.retry_of_bulk_change_id == bulk_change_id)
        ).scalars()
    )
    wanted = [s.value for s in statuses]
    rows: list[dict[str, Any]] = []
    for change in session.execute(
        select(M2MDeviceChange)
        .where(M2MDeviceChange.bulk_change_id == bulk_change_id, M2MDeviceChange.status.in_(wanted))
        .order_by(M2MDeviceChange.id)
    ).scalars():
        if change.iccid in already:
            continue
        rows.append(_row_of(change))
    return rows


def _row_of(change: M2MDeviceChange) -> dict[str, Any]:
    """A stored change request as an input row ``build_request`` reads back (original JSON names).

    Every field an input row can carry comes back: the device request's, the Rev.io service's — its product
    and rate lists included, as lists (the reader takes a list as it is) — and the request-level ones
    (``CustomerRatePlan``, ``IntegrationAuthenticationId``). A retry that dropped a field would bill
    without products, or be refused when the tenant has more than one Rev.io credential."""
    stored = json.loads(change.change_request)
    row: dict[str, Any] = {}
    request = stored.get("Request") or {}
    for key, value in request.items():
        if value is not None and not isinstance(value, dict):
            row[key] = list(value) if isinstance(value, list) else value
    for key, value in (stored.get("RevService") or {}).items():
        if value is not None and not isinstance(value, dict):
            # A Control Center change's own EffectiveDate is the carrier's; its Rev.io one is RevEffectiveDate.
            column = "RevEffectiveDate" if key == "EffectiveDate" and key in request else key
            row[column] = list(value) if isinstance(value, list) else value
    row["UpdateStatus"] = stored.get("UpdateStatus") or change.target_status
    row["IsIgnoreCurrentStatus"] = bool(stored.get("IsIgnoreCurrentStatus"))
    for key in _REQUEST_LEVEL_COLUMNS:
        if stored.get(key) is not None:
            row[key] = stored[key]
    return row


#: Top-level fields of a stored change request that are also input columns.
_REQUEST_LEVEL_COLUMNS = ("CustomerRatePlan", "IntegrationAuthenticationId")


class NothingToRetry(Exception):
    pass


def retry_failed(
    session: Session,
    transport: Transport,
    bulk_change_id: int,
    *,
    statuses: Iterable[ChangeStatus] = FAILED_STATUSES,
    created_by: str = "operator",
) -> int:
    """Create a new bulk change for the failed changes of ``bulk_change_id``; return its id.

    Raises ``KeyError`` (no such bulk change), ``NothingToRetry``, or ``SubmissionRefused`` (a device can no
    longer take the change, e.g. it is in another unfinished change).
    """
    statuses = frozenset(statuses)
    bad = statuses - FAILED_STATUSES
    if bad:
        raise ValueError(f"only failed changes can be retried, not {sorted(s.value for s in bad)}")
    old = session.get(DeviceBulkChange, bulk_change_id)
    if old is None:
        raise KeyError(bulk_change_id)
    provider_id = old.service_provider_id
    rows = retry_rows(session, bulk_change_id, statuses)
    if not rows:
        raise NothingToRetry(f"bulk change {bulk_change_id} has no failed change left to retry")
    session.rollback()

    def link(sess: Session, _ctx: Any, _instances: Any) -> None:
        # The link is written in the same flush (and commit) as the new bulk change itself.
        for obj in sess.new:
            if isinstance(obj, DeviceBulkChange) and obj.retry_of_bulk_change_id is None:
                obj.retry_of_bulk_change_id = bulk_change_id

    event.listen(session, "before_flush", link)
    try:
        return create_bulk_change(
            session,
            transport,
            rows,
            status=str(rows[0]["UpdateStatus"]),
            service_provider_id=provider_id,
            ignore_current_status=False,
            created_by=created_by,
        )
    finally:
        event.remove(session, "before_flush", link)


__all__ = [
    "DAILY_ACTIONS_PER_LINE",
    "FAILED_STATUSES",
    "Created",
    "IdempotencyConflict",
    "NothingToRetry",
    "Preview",
    "PreviewRow",
    "SubmissionRefused",
    "SubmitReport",
    "create_or_replay",
    "preview",
    "request_hash",
    "retry_failed",
    "retry_rows",
]
