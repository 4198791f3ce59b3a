"""``/ui/bulk-changes/{id}`` — one bulk change: counts by status (each a link that filters), actions, and its
device changes a page at a time, searched by ICCID / MSISDN and filtered by status, current step and
additional step status — and its live parts under ``/ui/fragments/bulk-changes/{id}``.

Every read goes through ``bulkchange.services.bulk_changes``; nothing here builds a query.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse
from sqlalchemy.orm import Session

from bulkchange.api.dashboard.common import IdPath, done, live_rows, page_of
from bulkchange.api.dashboard.filters import CHANGE_STATUSES, DetailParams, DetailQuery
from bulkchange.api.deps import RuntimeDep
from bulkchange.api.security import CurrentPrincipal
from bulkchange.api.templating import Parts, render, sig
from bulkchange.carrier.catalogue import all_steps
from bulkchange.domain.statuses import ChangeStatus
from bulkchange.engine import operator_actions as ops
from bulkchange.engine.outbox import WAKEUP_PENDING_WARNING, wakeup_pending
from bulkchange.services import billing_steps
from bulkchange.services import bulk_changes as svc
from bulkchange.services.apikeys import Principal, owned_bulk

DEVICE_PAGE_SIZE = 100

router = APIRouter(include_in_schema=False)


def detail_context(session: Session, principal: Principal, bulk_id: int, query: DetailQuery) -> dict[str, Any]:
    """The bulk change (a 404 unless the principal may see it), one page of its changes and its live parts."""
    bulk = svc.get_bulk_change(session, bulk_id) if owned_bulk(session, principal, bulk_id) else None
    if bulk is None:
        raise HTTPException(status_code=404, detail=f"no bulk change {bulk_id}")
    rows = page_of(
        lambda offset: svc.list_changes(session, bulk_id, query.filter(), limit=DEVICE_PAGE_SIZE, offset=offset),
        query.page,
        DEVICE_PAGE_SIZE,
    )
    return {
        "bulk": bulk,
        "rows": rows,
        "query": query,
        "bulk_logs": svc.bulk_logs(session, bulk_id),
        "done": done(bulk),
        # Shown while anything is READY or SENDING: a change being sent may come back READY (a retry), and
        # the READY ones beside it can be cancelled (cancel counts what it leaves at the carrier).
        "cancellable": any(bulk.counts.get(s.value, 0) for s in (ChangeStatus.READY, ChangeStatus.SENDING)),
        "retryable": any(bulk.counts.get(s.value, 0) for s in ops.FAILED_STATUSES),
        "billing_rerunnable": billing_steps.rerunnable_count(session, bulk_id),
        # Created, but the queue did not take its wake-up yet (the workers relay it): say so until it has.
        "wake_up_pending": WAKEUP_PENDING_WARNING if wakeup_pending(session, bulk_id) else None,
    }


@router.get("/ui/bulk-changes/{bulk_change_id}", response_class=HTMLResponse)
def detail(
    request: Request,
    rt: RuntimeDep,
    principal: CurrentPrincipal,
    bulk_change_id: IdPath,
    query: DetailParams,
    notice: Annotated[str | None, Query(max_length=300)] = None,
) -> HTMLResponse:
    with rt.reading() as session:
        context = detail_context(session, principal, bulk_change_id, query)
        context["choices"] = svc.filter_choices(session, bulk_change_id, all_steps())
    live_params = {**query.params(), "page": context["rows"].number}
    context.update(
        notice=notice,
        all_statuses=CHANGE_STATUSES,
        live_url=f"/ui/fragments/bulk-changes/{bulk_change_id}?{urlencode(live_params)}",
    )
    return render(request, "detail.html", context)


@router.get("/ui/fragments/bulk-changes/{bulk_change_id}")
def detail_live(
    request: Request, rt: RuntimeDep, principal: CurrentPrincipal, bulk_change_id: IdPath, query: DetailParams
) -> JSONResponse:
    with rt.reading() as session:
        c = detail_context(session, principal, bulk_change_id, query)
    bulk, rows, parts = c["bulk"], c["rows"], Parts(request)
    regions = {
        "part-state": parts.region("state", bulk),
        "part-actions": parts.region("actions", bulk, c["cancellable"], c["retryable"], c["billing_rerunnable"]),
        "part-notices": parts.region("notices", bulk, c["bulk_logs"], c["wake_up_pending"]),
        "part-counts": parts.region("counts", bulk, query.status),
        "part-pager": parts.region(
            "pager", rows, f"/ui/bulk-changes/{bulk.id}", query.params(), "devices", "device changes"
        ),
    }
    return JSONResponse(
        {
            "live": not c["done"],
            "status": bulk.status,
            "regions": regions,
            "rows": live_rows([(r.id, sig(r), parts("change_row", r, bulk.id)) for r in rows.items]),
        }
    )


@router.get("/ui/fragments/bulk-changes/{bulk_change_id}/changes/{change_id}/logs", response_class=HTMLResponse)
def change_logs(
    request: Request, rt: RuntimeDep, principal: CurrentPrincipal, bulk_change_id: IdPath, change_id: IdPath
) -> HTMLResponse:
    with rt.reading() as session:
        owned = owned_bulk(session, principal, bulk_change_id)
        change = svc.get_change(session, bulk_change_id, change_id) if owned is not None else None
    if change is None:
        raise HTTPException(status_code=404, detail="no such change")
    return render(request, "_logs.html", {"change": change})
