"""Reading bulk changes: the list, one bulk change, its device changes (with their log entries) and the CSV
export. Another tenant's bulk change is not found (404)."""

from __future__ import annotations

from typing import Annotated

from fastapi import HTTPException, Query
from fastapi.responses import StreamingResponse
from pydantic import BeforeValidator

from bulkchange.api import queries
from bulkchange.api.rest.access import Rt, require_bulk
from bulkchange.api.rest.params import NOT_FOUND, IdPath, Limit, Offset, api_router, upper
from bulkchange.api.schemas import MAX_ID, BulkChangeOut, BulkChangePage, ChangeOut, ChangePage, Problem
from bulkchange.api.security import CurrentPrincipal
from bulkchange.domain.statuses import BulkStatus, ChangeStatus
from bulkchange.services import exports
from bulkchange.services.apikeys import owned_bulk

router = api_router()


@router.get("/bulk-changes", response_model=BulkChangePage, tags=["bulk changes"])
def list_bulk_changes(
    principal: CurrentPrincipal,
    rt: Rt,
    status: Annotated[BulkStatus | None, BeforeValidator(upper), Query(description="any case")] = None,
    service_provider_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> BulkChangePage:
    """Bulk changes, newest first, with their device changes counted by status."""
    with rt.reading() as session:
        items, total = queries.list_bulk_changes(
            session,
            status=status.value if status else None,
            service_provider_id=service_provider_id,
            limit=limit,
            offset=offset,
            service_provider_ids=principal.service_provider_ids,
        )
    return BulkChangePage(items=items, total=total, limit=limit, offset=offset)


@router.get("/bulk-changes/{bulk_change_id}", response_model=BulkChangeOut, responses=NOT_FOUND, tags=["bulk changes"])
def read_bulk_change(principal: CurrentPrincipal, rt: Rt, bulk_change_id: IdPath) -> BulkChangeOut:
    with rt.reading() as session:
        owned = owned_bulk(session, principal, bulk_change_id)
        out = queries.get_bulk_change(session, bulk_change_id) if owned is not None else None
    if out is None:
        raise HTTPException(status_code=404, detail=f"no bulk change {bulk_change_id}")
    return out


@router.get(
    "/bulk-changes/{bulk_change_id}/changes",
    response_model=ChangePage,
    responses=NOT_FOUND,
    tags=["device changes"],
)
def list_changes(
    principal: CurrentPrincipal,
    rt: Rt,
    bulk_change_id: IdPath,
    status: Annotated[
        list[ChangeStatus] | None, BeforeValidator(upper), Query(description="any of these statuses, any case")
    ] = None,
    iccid: Annotated[str | None, Query(max_length=30)] = None,
    include_logs: Annotated[bool, Query(description="each change's DeviceBulkChangeLog entries")] = True,
    limit: Limit = 50,
    offset: Offset = 0,
) -> ChangePage:
    """The device changes of one bulk change, filtered by status, paged, with their log entries."""
    with rt.reading() as session:
        if owned_bulk(session, principal, bulk_change_id) is None:
            raise HTTPException(status_code=404, detail=f"no bulk change {bulk_change_id}")
        items, total = queries.list_changes(
            session,
            bulk_change_id,
            statuses=[s.value for s in status] if status else None,
            iccid=iccid,
            include_logs=include_logs,
            limit=limit,
            offset=offset,
        )
    return ChangePage(bulk_change_id=bulk_change_id, items=items, total=total, limit=limit, offset=offset)


@router.get(
    "/bulk-changes/{bulk_change_id}/changes/{change_id}",
    response_model=ChangeOut,
    responses={404: {"model": Problem, "description": "no such change in this bulk change"}},
    tags=["device changes"],
)
def read_change(principal: CurrentPrincipal, rt: Rt, bulk_change_id: IdPath, change_id: IdPath) -> ChangeOut:
    with rt.reading() as session:
        owned = owned_bulk(session, principal, bulk_change_id)
        out = queries.get_change(session, bulk_change_id, change_id) if owned is not None else None
    if out is None:
        raise HTTPException(status_code=404, detail=f"no change {change_id} in bulk change {bulk_change_id}")
    return out


@router.get(
    "/bulk-changes/{bulk_change_id}/export.csv",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}}}, **NOT_FOUND},
    tags=["bulk changes"],
)
def export(principal: CurrentPrincipal, rt: Rt, bulk_change_id: IdPath) -> StreamingResponse:
    """Every device change's result as CSV (one row per device)."""
    require_bulk(rt, principal, bulk_change_id)
    return StreamingResponse(
        exports.export_csv(rt.session_factory, bulk_change_id),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="bulk-change-{bulk_change_id}.csv"'},
    )
