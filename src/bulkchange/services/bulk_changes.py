"""Reading bulk changes: filtered, paged lists, one page of a bulk change's device changes, counts by status.

The REST API and the dashboard both read through here (``api/`` holds no SQL for these reads). Every
filter is a bound parameter; text filters are case-insensitive and match a part of the value (LIKE
wildcards typed by the user are escaped). Paging is by offset over a stable order (id), with the total
counted by the same conditions, so a page number means the same rows until the data changes.

A bulk change of 10,000 device changes is read one page at a time: the counts are one grouped query, a
page is ``limit`` rows, and the "current step" filter is turned into ``(Plan, StepIndex)`` pairs from the
few distinct plans of the bulk change (no string splitting in SQL).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any, Generic, TypeVar

from sqlalchemy import ColumnElement, and_, exists, false, func, or_, select, update
from sqlalchemy.orm import Session

from bulkchange.domain.statuses import ACTIVE_BULK_STATUSES, FINISHED_BULK_STATUSES, BulkStatus, ChangeStatus
from bulkchange.store.tables import DeviceBulkChange, DeviceBulkChangeLog, M2MDeviceChange, ServiceProvider, as_utc

C = M2MDeviceChange
B = DeviceBulkChange
L = DeviceBulkChangeLog

TERMINAL = frozenset(s.value for s in ChangeStatus if s.is_terminal)
FINISHED = frozenset(s.value for s in FINISHED_BULK_STATUSES)
PAUSABLE = frozenset(s.value for s in ACTIVE_BULK_STATUSES if s is not BulkStatus.PAUSED)
NO_ADDITIONAL_STEP = "NONE"
"""The ``additional_step`` filter value for changes that asked for no additional step (NULL status)."""

T = TypeVar("T")


@dataclass(frozen=True)
class LogEntry:
    """One ``DeviceBulkChangeLog`` row: a carrier call, a database step or a billing step."""

    id: int
    description: str
    has_errors: bool
    response_status: str | None
    error_text: str | None
    request_text: str | None
    response_text: str | None
    processed_by: str | None
    processed_date: datetime


@dataclass(frozen=True)
class ChangeRow:
    """One device change as people read it."""

    id: int
    iccid: str
    imei: str | None
    target_status: str
    status: str
    plan: list[str]
    step_index: int
    attempt_count: int
    msisdn: str | None
    ip_address: str | None
    details: str | None
    last_error_code: str | None
    carrier_request_id: str | None
    additional_step_status: str | None
    processed_date: datetime | None
    logs: list[LogEntry] | None = None

    @property
    def current_step(self) -> str | None:
        return self.plan[self.step_index] if 0 <= self.step_index < len(self.plan) else None


@dataclass(frozen=True)
class BulkChangeSummary:
    """A bulk change with its device changes counted by status (``counts``) and by target (``targets``)."""

    id: int
    service_provider_id: int
    status: str
    has_errors: bool
    details: str | None
    created_by: str | None
    created_date: datetime
    modified_date: datetime | None
    processed_date: datetime | None
    retry_of_bulk_change_id: int | None
    file_name: str | None
    total: int
    finished: int
    progress: float
    counts: dict[str, int]
    targets: dict[str, int] = field(default_factory=dict)
    next_check_at: datetime | None = None
    """When the deferred check next looks at the changes awaiting their result, in UTC (None: none waits on it)."""
    paused_at: datetime | None = None
    paused_by: str | None = None

    @property
    def cancellable(self) -> int:
        """Changes the carrier has not accepted (READY, a retry in backoff included): what cancel takes."""
        return self.counts.get(ChangeStatus.READY.value, 0)

    @property
    def finished_outcome(self) -> bool:
        """Every change and additional step settled: the status is the bulk change's outcome."""
        return self.processed_date is not None and self.status in FINISHED

    @property
    def pausable(self) -> bool:
        return self.paused_at is None and self.status in PAUSABLE

    @property
    def resumable(self) -> bool:
        """Paused, or failed at bulk level with changes left (a refused login): ``resume`` applies."""
        if self.paused_at is not None:
            return self.status == BulkStatus.PAUSED.value
        return self.status == BulkStatus.ERROR.value and self.finished < self.total


@dataclass(frozen=True)
class Page(Generic[T]):
    """``items`` of ``total`` matching, from ``offset``, at most ``limit`` of them."""

    items: list[T]
    total: int
    offset: int
    limit: int

    @property
    def number(self) -> int:
        """1-based number of this page."""
        return self.offset // self.limit + 1 if self.limit else 1

    @property
    def count(self) -> int:
        """How many pages the matching rows fill (at least 1, the empty page)."""
        return max(1, -(-self.total // self.limit)) if self.limit else 1


@dataclass(frozen=True)
class BulkChangeFilter:
    """Filters of the list of bulk changes; ``None`` means "any". Dates are UTC days, both inclusive."""

    status: str | None = None
    target_status: str | None = None
    service_provider_id: int | None = None
    created_from: date | None = None
    created_to: date | None = None
    file_name: str | None = None
    created_by: str | None = None


@dataclass(frozen=True)
class ChangeFilter:
    """Filters of one bulk change's device changes; empty means "any".

    ``iccid`` is an exact ICCID (the REST API's filter); ``search`` is part of an ICCID or an MSISDN;
    ``step`` the current carrier step (``ADD``, ``ACTIVATE`` …); ``additional_step`` an additional step
    status, or ``NONE`` for changes without one.
    """

    statuses: tuple[str, ...] = ()
    iccid: str | None = None
    search: str | None = None
    step: str | None = None
    additional_step: str | None = None


@dataclass(frozen=True)
class ChangeFilterChoices:
    """What the step filters of one bulk change can take: the steps of its plans, in plan order."""

    steps: list[str]
    additional_steps: list[str]


# ------------------------------------------------------------------------------------------ bulk changes


def counts_for(session: Session, bulk_ids: Sequence[int]) -> dict[int, tuple[dict[str, int], dict[str, int]]]:
    """Device changes by status and by target status for each bulk change, in one grouped query."""
    result: dict[int, tuple[dict[str, int], dict[str, int]]] = {i: ({}, {}) for i in bulk_ids}
    if not bulk_ids:
        return result
    for bulk_id, status, target, n in session.execute(
        select(C.bulk_change_id, C.status, C.target_status, func.count())
        .where(C.bulk_change_id.in_(list(bulk_ids)))
        .group_by(C.bulk_change_id, C.status, C.target_status)
    ).all():
        by_status, by_target = result[int(bulk_id)]
        by_status[str(status)] = by_status.get(str(status), 0) + int(n)
        by_target[str(target)] = by_target.get(str(target), 0) + int(n)
    return result


def next_check_at(bulk: DeviceBulkChange, counts: dict[str, int]) -> datetime | None:
    """When the deferred check next runs for this bulk change's changes awaiting their result: its round is
    scheduled (``CheckRound`` > 0) and ``NextWakeAt`` is when that message is due (a continuation due
    earlier replaces it, and the check then looks at that time). None when no change awaits a result, or
    before the first round is scheduled (changes are still being sent)."""
    at = bulk.next_wake_at
    if at is None or bulk.check_round < 1 or not counts.get(ChangeStatus.AWAITING_RESULT.value):
        return None
    return as_utc(at)


def _summary(bulk: DeviceBulkChange, counts: dict[str, int], targets: dict[str, int]) -> BulkChangeSummary:
    total = sum(counts.values())
    finished = sum(n for s, n in counts.items() if s in TERMINAL)
    return BulkChangeSummary(
        id=bulk.id,
        service_provider_id=bulk.service_provider_id,
        status=bulk.status,
        has_errors=bulk.has_errors,
        details=bulk.status_details,
        created_by=bulk.created_by,
        created_date=bulk.created_date,
        modified_date=bulk.modified_date,
        processed_date=bulk.processed_date,
        retry_of_bulk_change_id=bulk.retry_of_bulk_change_id,
        file_name=bulk.file_name,
        total=total,
        finished=finished,
        progress=(finished / total) if total else 1.0,
        counts=dict(sorted(counts.items())),
        targets=dict(sorted(targets.items())),
        next_check_at=next_check_at(bulk, counts),
        paused_at=bulk.paused_at,
        paused_by=bulk.paused_by,
    )


def _bulk_conditions(filters: BulkChangeFilter, scope: Collection[int] | None) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if scope is not None:
        conditions.append(B.service_provider_id.in_(sorted(scope)))
    if filters.status:
        conditions.append(func.upper(B.status) == filters.status.strip().upper())
    if filters.service_provider_id is not None:
        conditions.append(B.service_provider_id == filters.service_provider_id)
    if filters.target_status:
        target = filters.target_status.strip().lower()
        conditions.append(exists().where(C.bulk_change_id == B.id, func.lower(C.target_status) == target))
    if filters.created_from is not None:
        conditions.append(B.created_date >= datetime.combine(filters.created_from, time.min))
    if filters.created_to is not None:
        conditions.append(B.created_date < datetime.combine(filters.created_to + timedelta(days=1), time.min))
    if filters.file_name and filters.file_name.strip():
        conditions.append(B.file_name.icontains(filters.file_name.strip(), autoescape=True))
    if filters.created_by and filters.created_by.strip():
        conditions.append(B.created_by.icontains(filters.created_by.strip(), autoescape=True))
    return conditions


def list_bulk_changes(
    session: Session,
    filters: BulkChangeFilter,
    *,
    limit: int,
    offset: int,
    scope: Collection[int] | None = None,
) -> Page[BulkChangeSummary]:
    """Bulk changes matching ``filters``, newest first; only those of the providers in ``scope`` when given."""
    conditions = _bulk_conditions(filters, scope)
    total = int(session.execute(select(func.count()).select_from(B).where(*conditions)).scalar_one())
    bulks = list(
        session.execute(select(B).where(*conditions).order_by(B.id.desc()).limit(limit).offset(offset)).scalars()
    )
    counts = counts_for(session, [b.id for b in bulks])
    return Page([_summary(b, *counts[b.id]) for b in bulks], total, offset, limit)


def get_bulk_change(session: Session, bulk_id: int) -> BulkChangeSummary | None:
    bulk = session.get(B, bulk_id)
    if bulk is None:
        return None
    return _summary(bulk, *counts_for(session, [bulk_id])[bulk_id])


def record_file_name(session: Session, bulk_id: int, file_name: str | None) -> None:
    """Remember the name of the file a bulk change was created from (commits)."""
    name = (file_name or "").strip()[:255]
    if name:
        session.execute(update(B).where(B.id == bulk_id).values(file_name=name))
        session.commit()


@dataclass(frozen=True)
class ProviderChoice:
    id: int
    name: str
    callbacks: bool = False
    """Whether the provider registers a CarrierService callback (``register_carrier_service_callback``)."""


def providers_in(session: Session, scope: Collection[int]) -> list[ProviderChoice]:
    """The service providers of ``scope`` that are not deleted, by id (the REST API's list and the
    dashboard's choices)."""
    return [
        ProviderChoice(int(pid), str(name), bool(callbacks))
        for pid, name, callbacks in session.execute(
            select(ServiceProvider.id, ServiceProvider.name, ServiceProvider.register_carrier_service_callback)
            .where(ServiceProvider.is_deleted.is_(False), ServiceProvider.id.in_(sorted(scope)))
            .order_by(ServiceProvider.id)
        ).all()
    ]


# ---------------------------------------------------------------------------------------- device changes


def _log_entry(row: DeviceBulkChangeLog) -> LogEntry:
    return LogEntry(
        id=row.id,
        description=row.log_entry_description,
        has_errors=row.has_errors,
        response_status=row.response_status,
        error_text=row.error_text,
        request_text=row.request_text,
        response_text=row.response_text,
        processed_by=row.process_by,
        processed_date=row.processed_date,
    )


def _change_row(change: M2MDeviceChange, logs: list[LogEntry] | None) -> ChangeRow:
    return ChangeRow(
        id=change.id,
        iccid=change.iccid,
        imei=change.imei,
        target_status=change.target_status,
        status=change.status,
        plan=[s for s in change.plan.split(",") if s],
        step_index=change.step_index,
        attempt_count=change.attempt_count,
        msisdn=change.msisdn,
        ip_address=change.ip_address,
        details=change.status_details,
        last_error_code=change.last_error_code,
        carrier_request_id=change.carrier_request_id,
        additional_step_status=change.additional_step_status,
        processed_date=change.processed_date,
        logs=logs,
    )


def logs_for(session: Session, bulk_id: int, change_ids: Sequence[int]) -> dict[int, list[LogEntry]]:
    """The log entries of these device changes, oldest first."""
    result: dict[int, list[LogEntry]] = {i: [] for i in change_ids}
    if not change_ids:
        return result
    for row in session.execute(
        select(L).where(L.bulk_change_id == bulk_id, L.m2m_device_change_id.in_(list(change_ids))).order_by(L.id)
    ).scalars():
        if row.m2m_device_change_id is not None:
            result[row.m2m_device_change_id].append(_log_entry(row))
    return result


def bulk_logs(session: Session, bulk_id: int) -> list[LogEntry]:
    """Log rows of the bulk change itself (not of one device: e.g. a refused login)."""
    return [
        _log_entry(r)
        for r in session.execute(
            select(L).where(L.bulk_change_id == bulk_id, L.m2m_device_change_id.is_(None)).order_by(L.id)
        ).scalars()
    ]


def _plans(session: Session, bulk_id: int) -> list[str]:
    return [str(p) for p in session.execute(select(C.plan).where(C.bulk_change_id == bulk_id).distinct()).scalars()]


def _current_step_is(session: Session, bulk_id: int, step: str) -> ColumnElement[bool]:
    """``the change's current step is step``, as (Plan, StepIndex) pairs of this bulk change's plans."""
    wanted = step.strip().upper()
    pairs = [(p, i) for p in _plans(session, bulk_id) for i, s in enumerate(p.split(",")) if s == wanted]
    if not pairs:
        return false()
    return or_(*(and_(C.plan == p, C.step_index == i) for p, i in pairs))


def _search_term(text: str) -> str:
    """An ICCID or MSISDN as typed or pasted: spaces, dashes, dots and a leading + are not part of it."""
    return "".join(ch for ch in text.strip() if ch not in " -.()\t").lstrip("+")


def _change_conditions(session: Session, bulk_id: int, filters: ChangeFilter) -> list[Any]:
    conditions: list[Any] = [C.bulk_change_id == bulk_id]
    if filters.statuses:
        conditions.append(C.status.in_([s.strip().upper() for s in filters.statuses]))
    if filters.iccid:
        conditions.append(C.iccid == filters.iccid)
    term = _search_term(filters.search or "")
    if term:
        conditions.append(or_(C.iccid.icontains(term, autoescape=True), C.msisdn.icontains(term, autoescape=True)))
    if filters.step:
        conditions.append(_current_step_is(session, bulk_id, filters.step))
    if filters.additional_step:
        extra = filters.additional_step.strip().upper()
        conditions.append(
            C.additional_step_status.is_(None)
            if extra == NO_ADDITIONAL_STEP
            else func.upper(C.additional_step_status) == extra
        )
    return conditions


def list_changes(
    session: Session,
    bulk_id: int,
    filters: ChangeFilter,
    *,
    limit: int,
    offset: int,
    include_logs: bool = False,
) -> Page[ChangeRow]:
    """One page of the bulk change's device changes matching ``filters``, in id order."""
    conditions = _change_conditions(session, bulk_id, filters)
    total = int(session.execute(select(func.count()).select_from(C).where(*conditions)).scalar_one())
    changes = list(session.execute(select(C).where(*conditions).order_by(C.id).limit(limit).offset(offset)).scalars())
    logs = logs_for(session, bulk_id, [c.id for c in changes]) if include_logs else None
    items = [_change_row(c, logs[c.id] if logs is not None else None) for c in changes]
    return Page(items, total, offset, limit)


def get_change(session: Session, bulk_id: int, change_id: int) -> ChangeRow | None:
    """One device change of this bulk change, with its log entries."""
    change = session.get(C, change_id)
    if change is None or change.bulk_change_id != bulk_id:
        return None
    return _change_row(change, logs_for(session, bulk_id, [change_id])[change_id])


def filter_choices(session: Session, bulk_id: int, step_order: Sequence[str]) -> ChangeFilterChoices:
    """The carrier steps in this bulk change's plans and the additional step statuses its changes have; the
    steps in ``step_order`` (``carrier.catalogue.all_steps()``: each carrier's plan order) — reading bulk
    changes needs no carrier, so the readers (``bulkchange status``, ``list``) load none."""
    steps = {s for p in _plans(session, bulk_id) for s in p.split(",") if s}
    order = {s: i for i, s in enumerate(step_order)}
    extra = {
        str(s) if s is not None else NO_ADDITIONAL_STEP
        for s in session.execute(
            select(C.additional_step_status).where(C.bulk_change_id == bulk_id).distinct()
        ).scalars()
    }
    return ChangeFilterChoices(
        steps=sorted(steps, key=lambda s: (order.get(s, len(order)), s)),
        additional_steps=sorted(extra, key=lambda s: (s == NO_ADDITIONAL_STEP, s)),
    )


def device_results(session: Session, bulk_id: int) -> list[dict[str, Any]]:
    """Every device change of the bulk change as ``bulkchange status --json`` shows it, in id order."""
    return [
        {
            "id": c.id,
            "iccid": c.iccid,
            "target": c.target_status,
            "status": c.status,
            "msisdn": c.msisdn,
            "ip_address": c.ip_address,
            "details": c.status_details,
            "has_errors": c.has_errors,
            "last_error_code": c.last_error_code,
            "additional_step_status": c.additional_step_status,
            "additional_step_details": c.additional_step_details,
        }
        for c in session.execute(select(C).where(C.bulk_change_id == bulk_id).order_by(C.id)).scalars()
    ]


@dataclass(frozen=True)
class Progress:
    """How far one bulk change is: device changes finished (any terminal status) out of all of them."""

    bulk_change_id: int
    finished: int
    total: int


def recent_progress(session: Session, limit: int = 10) -> list[Progress]:
    """The progress of the ``limit`` most recent bulk changes, newest first (what ``worker`` draws)."""
    ids = list(session.execute(select(DeviceBulkChange.id).order_by(DeviceBulkChange.id.desc()).limit(limit)).scalars())
    progress = []
    for bulk_id, (by_status, _targets) in counts_for(session, ids).items():
        finished = sum(n for s, n in by_status.items() if ChangeStatus(s).is_terminal)
        progress.append(Progress(bulk_id, finished, sum(by_status.values())))
    return progress
