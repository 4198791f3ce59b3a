"""The REST API's read models: bulk changes and device changes (read by ``bulkchange.services.bulk_changes``,
returned as the API's schemas), the CSV export, previews and uploaded files (no writes here)."""

from __future__ import annotations

import csv
import io
from collections.abc import Collection, Iterator, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bulkchange.api.schemas import BulkChangeOut, ChangeOut, PreviewOut, PreviewRowOut, RowProblemOut, as_utc
from bulkchange.engine.operator_actions import Preview
from bulkchange.engine.row_rules import RowProblem
from bulkchange.input import is_formula
from bulkchange.services import bulk_changes
from bulkchange.store.tables import M2MDeviceChange

C = M2MDeviceChange


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
    page = bulk_changes.list_bulk_changes(
        session,
        bulk_changes.BulkChangeFilter(status=status, service_provider_id=service_provider_id),
        limit=limit,
        offset=offset,
        scope=service_provider_ids,
    )
    return [BulkChangeOut.model_validate(b, from_attributes=True) for b in page.items], page.total


def get_bulk_change(session: Session, bulk_id: int) -> BulkChangeOut | None:
    bulk = bulk_changes.get_bulk_change(session, bulk_id)
    return BulkChangeOut.model_validate(bulk, from_attributes=True) if bulk is not None else None


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
    page = bulk_changes.list_changes(
        session,
        bulk_id,
        bulk_changes.ChangeFilter(statuses=tuple(statuses or ()), iccid=iccid),
        limit=limit,
        offset=offset,
        include_logs=include_logs,
    )
    return [ChangeOut.model_validate(c, from_attributes=True) for c in page.items], page.total


def get_change(session: Session, bulk_id: int, change_id: int) -> ChangeOut | None:
    change = bulk_changes.get_change(session, bulk_id, change_id)
    return ChangeOut.model_validate(change, from_attributes=True) if change is not None else None


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
                        as_utc(c.processed_date).isoformat() if c.processed_date else None,
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
        estimated_time=p.estimate,
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
