"""The REST API's read models: bulk changes and device changes read by ``bulkchange.services.bulk_changes``
and returned as the API's schemas, and previews and row problems as schemas. No SQL here (the services hold
the queries) and no writes."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from sqlalchemy.orm import Session

from bulkchange.api.schemas import BulkChangeOut, ChangeOut, PreviewOut, PreviewRowOut, RowProblemOut
from bulkchange.engine.operator_actions import Preview
from bulkchange.engine.row_rules import RowProblem
from bulkchange.services import bulk_changes


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
