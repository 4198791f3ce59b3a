"""``/ui/`` — bulk changes, newest first, filtered (status, target status, provider, creation dates, file
name, who submitted) and paged on the server — and ``/ui/fragments/bulk-changes``, its live part.

Every read goes through ``bulkchange.services.bulk_changes``; nothing here builds a query.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse

from bulkchange.api.dashboard.common import done, live_rows, page_of
from bulkchange.api.dashboard.filters import ListParams, ListQuery
from bulkchange.api.deps import RuntimeDep
from bulkchange.api.security import CurrentPrincipal
from bulkchange.api.templating import Parts, render, sig
from bulkchange.domain.statuses import BulkStatus, TargetStatus
from bulkchange.runtime import Runtime
from bulkchange.services import bulk_changes as svc
from bulkchange.services.apikeys import Principal

LIST_PAGE_SIZE = 50

router = APIRouter(include_in_schema=False)


def list_context(rt: Runtime, principal: Principal, query: ListQuery) -> dict[str, Any]:
    """The list page's rows (one page, within the principal's providers) and what the template needs."""
    with rt.reading() as session:
        rows = page_of(
            lambda offset: svc.list_bulk_changes(
                session, query.filter(), limit=LIST_PAGE_SIZE, offset=offset, scope=principal.service_provider_ids
            ),
            query.page,
            LIST_PAGE_SIZE,
        )
        providers = svc.providers_in(session, principal.service_provider_ids)
    return {
        "rows": rows,
        "query": query,
        "providers": providers,
        "provider_names": {p.id: p.name for p in providers},
        "live": any(not done(b) for b in rows.items),
    }


@router.get("/ui/", response_class=HTMLResponse)
def index(request: Request, rt: RuntimeDep, principal: CurrentPrincipal, query: ListParams) -> HTMLResponse:
    context = list_context(rt, principal, query)
    live_params = {**query.params(), "page": context["rows"].number}
    context.update(
        live_url=f"/ui/fragments/bulk-changes?{urlencode(live_params)}",
        bulk_statuses=[s.value for s in BulkStatus],
        targets=[t.value for t in TargetStatus],
    )
    return render(request, "index.html", context)


@router.get("/ui/fragments/bulk-changes")
def index_live(request: Request, rt: RuntimeDep, principal: CurrentPrincipal, query: ListParams) -> JSONResponse:
    context = list_context(rt, principal, query)
    parts = Parts(request)
    rows = context["rows"]
    return JSONResponse(
        {
            "live": context["live"],
            "regions": {"part-pager": parts.region("pager", rows, "/ui/", query.params(), "bulk", "bulk changes")},
            "rows": live_rows([(b.id, sig(b), parts("bulk_row", b, context["provider_names"])) for b in rows.items]),
        }
    )
