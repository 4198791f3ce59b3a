"""Read-side queries shared by the REST API and the dashboard (no writes here)."""

from __future__ import annotations

import csv
import io
from collections.abc import Collection, Iterator, Sequence
from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session, sessionmaker

from bulkchange.api.schemas import BulkChangeOut, ChangeOut, LogEntryOut, PreviewOut, PreviewRowOut, RowProblemOut
from bulkchange.domain.statuses import ChangeStatus
from bulkchange.engine.operator_actions import Preview
from bulkchange.engine.row_rules import RowProblem
from bulkchange.input import is_formula
from bulkchange.store.tables import DeviceBulkChange, DeviceBulkChangeLog, M2MDeviceChange

C = M2MDeviceChange
B = DeviceBulkChange
L = DeviceBulkChangeLog


def counts_for(session: Session, bulk_ids: Sequence[int]) -> dict[int, dict[str, int]]:
    """Device changes by status for each bulk change, in one grouped query."""
    result: dict[int, dict[str, int]] = {i: {} for i in bulk_ids}
    if not bulk_ids:
        return result
    for bulk_id, status, n in session.execute(
        select(C.bulk_change_id, C.status, func.count())
        .where(C.bulk_change_id.in_(list(bulk_ids)))
        .group_by(C.bulk_change_id, C.status)
    ).all():
        result[int(bulk_id)][str(status)] = int(n)
    return result


def bulk_out(bulk: DeviceBulkChange, counts: dict[str, int]) -> BulkChangeOut:
    total = sum(counts.values())
    finished = sum(n for s, n in counts.items() if s in _TERMINAL)
    return BulkChangeOut(
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
        total=total,
        finished=finished,
        progress=(finished / total) if total else 1.0,
        counts=dict(sorted(counts.items())),
    )


_TERMINAL = {s.value for s in ChangeStatus if s.is_terminal}


def list_bulk_changes(
    session: Session,
    *,
    status: str | None,
    service_provider_id: int | None,
    limit: int,
    offset: int,
    service_provider_ids: Collection[int] | None = None,
) -> tuple[list[BulkChangeOut], int]:
    """Newest first; only those of ``service_provider_ids`` when given (an API key's scope)."""
    conditions: list[ColumnElement[bool]] = []
    if service_provider_ids is not None:
        conditions.append(B.service_provider_id.in_(sorted(service_provider_ids)))
    if status:
        conditions.append(B.status == status)
    if service_provider_id is not None:
        conditions.append(B.service_provider_id == service_provider_id)
    total = int(session.execute(select(func.count()).select_from(B).where(*conditions)).scalar_one())
    bulks = list(
        session.execute(select(B).where(*conditions).order_by(B.id.desc()).limit(limit).offset(offset)).scalars()
    )
    counts = counts_for(session, [b.id for b in bulks])
    return [bulk_out(b, counts[b.id]) for b in bulks], total


def get_bulk_change(session: Session, bulk_id: int) -> BulkChangeOut | None:
    bulk = session.get(B, bulk_id)
    if bulk is None:
        return None
    return bulk_out(bulk, counts_for(session, [bulk_id])[bulk_id])


def log_out(row: DeviceBulkChangeLog) -> LogEntryOut:
    return LogEntryOut(
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


def change_out(change: M2MDeviceChange, logs: list[LogEntryOut] | None) -> ChangeOut:
    return ChangeOut(
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


def logs_for(session: Session, bulk_id: int, change_ids: Sequence[int]) -> dict[int, list[LogEntryOut]]:
    result: dict[int, list[LogEntryOut]] = {i: [] for i in change_ids}
    if not change_ids:
        return result
    for row in session.execute(
        select(L).where(L.bulk_change_id == bulk_id, L.m2m_device_change_id.in_(list(change_ids))).order_by(L.id)
    ).scalars():
        if row.m2m_device_change_id is not None:
            result[row.m2m_device_change_id].append(log_out(row))
    return result


def bulk_logs(session: Session, bulk_id: int) -> list[LogEntryOut]:
    """Log rows of the bulk change itself (not of one device: e.g. a refused login)."""
    return [
        log_out(r)
        for r in session.execute(
            select(L).where(L.bulk_change_id == bulk_id, L.m2m_device_change_id.is_(None)).order_by(L.id)
        ).scalars()
    ]


def list_changes(
    session: Session,
    bulk_id: int,
    *,
    statuses: Sequence[str] | None,
    iccid: str | None,
    include_logs: bool,
    limit: int,
    offset: int,
) -> tuple[list[ChangeOut], int]:
    conditions: list[Any] = [C.bulk_change_id == bulk_id]
    if statuses:
        conditions.append(C.status.in_(list(statuses)))
    if iccid:
        conditions.append(C.iccid == iccid)
    total = int(session.execute(select(func.count()).select_from(C).where(*conditions)).scalar_one())
    changes = list(session.execute(select(C).where(*conditions).order_by(C.id).limit(limit).offset(offset)).scalars())
    logs = logs_for(session, bulk_id, [c.id for c in changes]) if include_logs else None
    return [change_out(c, logs[c.id] if logs is not None else None) for c in changes], total


def get_change(session: Session, bulk_id: int, change_id: int) -> ChangeOut | None:
    change = session.get(C, change_id)
    if change is None or change.bulk_change_id != bulk_id:
        return None
    return change_out(change, logs_for(session, bulk_id, [change_id])[change_id])


EXPORT_COLUMNS = [
    "ChangeId",
    "ICCID",
    "IMEI",
    "TargetStatus",
    "Status",
    "MSISDN",
    "IpAddress",
    "StatusDetails",
    "LastErrorCode",
    "CarrierRequestId",
    "AdditionalStepStatus",
    "ProcessedDate",
]


def _cell(value: Any) -> str:
    """A CSV cell that a spreadsheet will not run as a formula (the same test that refuses them on input)."""
    text = "" if value is None else str(value)
    return "'" + text if is_formula(text) else text


def export_csv(session_factory: sessionmaker[Session], bulk_id: int, *, chunk: int = 1000) -> Iterator[str]:
    """The results of one bulk change as CSV, streamed in chunks (keyset paging, one short session each)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(EXPORT_COLUMNS)
    yield buffer.getvalue()
    last = 0
    while True:
        buffer.seek(0)
        buffer.truncate()
        with session_factory() as session:
            rows = list(
                session.execute(
                    select(C).where(C.bulk_change_id == bulk_id, C.id > last).order_by(C.id).limit(chunk)
                ).scalars()
            )
        if not rows:
            return
        for c in rows:
            writer.writerow(
                [
                    _cell(v)
                    for v in (
                        c.id,
                        c.iccid,
                        c.imei,
                        c.target_status,
                        c.status,
                        c.msisdn,
                        c.ip_address,
                        c.status_details,
                        c.last_error_code,
                        c.carrier_request_id,
                        c.additional_step_status,
                        c.processed_date.isoformat() if c.processed_date else None,
                    )
                ]
            )
        last = rows[-1].id
        yield buffer.getvalue()


def problems_out(problems: Sequence[RowProblem]) -> list[RowProblemOut]:
    return [RowProblemOut(row=p.row, field=p.field, message=p.message, iccid=p.iccid) for p in problems]


def preview_out(p: Preview) -> PreviewOut:
    return PreviewOut(
        ok=p.ok,
        rows=len(p.rows),
        planned_operations=p.planned_operations(),
        warnings=p.warnings,
        problems=problems_out(p.problems),
        devices=[
            PreviewRowOut(
                row=r.row,
                iccid=r.iccid,
                target=r.target,
                current_status=r.current_status,
                plan=r.plan,
                ok=r.ok,
                problems=r.problems,
                warnings=r.warnings,
            )
            for r in p.rows
        ],
    )
