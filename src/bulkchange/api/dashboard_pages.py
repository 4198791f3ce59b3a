"""The dashboard's list of bulk changes and one bulk change's page, and the live endpoints behind them.

* ``/ui/`` — bulk changes, newest first, filtered (status, target status, provider, creation dates, file
  name, who submitted) and paged on the server.
* ``/ui/bulk-changes/{id}`` — one bulk change: counts by status (each a link that filters), actions,
  and its device changes a page at a time, searched by ICCID / MSISDN and filtered by status, current
  step and additional step status.
* ``/ui/fragments/…`` — what the page script polls: JSON with the page's live parts (HTML and a digest
  each) and the rows of the page shown, so the script redraws only what changed (api/static/app.js).
  Without a valid session they answer 401 with ``login`` (where to log in), never the login page itself.

Every read goes through ``bulkchange.services.bulk_changes``; nothing here builds a query.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import date
from typing import Annotated, Any, TypeVar
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse
from sqlalchemy.orm import Session

from bulkchange.api.schemas import MAX_ID
from bulkchange.api.security import CurrentPrincipal, owned_bulk
from bulkchange.api.templating import Parts, render, sig
from bulkchange.domain.statuses import BulkStatus, ChangeStatus, TargetStatus
from bulkchange.engine import operator_actions as ops
from bulkchange.engine.additional_step import AdditionalStepStatus
from bulkchange.engine.outbox import WAKEUP_PENDING_WARNING, wakeup_pending
from bulkchange.runtime import Runtime
from bulkchange.services import billing_steps
from bulkchange.services import bulk_changes as svc
from bulkchange.services.apikeys import Principal

LIST_PAGE_SIZE = 50
DEVICE_PAGE_SIZE = 100

IdPath = Annotated[int, Path(ge=1, le=MAX_ID)]
PageNumber = Annotated[int, Query(ge=1, le=MAX_ID)]
T = TypeVar("T")

_CHANGE_STATUSES = [s.value for s in ChangeStatus]
_EXTRA_STEPS = {s.value for s in AdditionalStepStatus} | {svc.NO_ADDITIONAL_STEP}


def _bad(message: str) -> HTTPException:
    return HTTPException(status_code=400, detail=message)


def _choice(value: str, allowed: Collection[str], what: str) -> str:
    """``value`` upper-cased when it is one of ``allowed`` ("" stays ""), else a 400."""
    text = value.strip().upper()
    if text and text not in allowed:
        raise _bad(f"unknown {what} {value!r}")
    return text


def _day(value: str, what: str) -> date | None:
    try:
        return date.fromisoformat(value.strip()) if value.strip() else None
    except ValueError as exc:
        raise _bad(f"{what}: not a date (YYYY-MM-DD): {value!r}") from exc


def _page_of(fetch: Callable[[int], svc.Page[T]], number: int, size: int) -> svc.Page[T]:
    """Page ``number``; past the last page (the rows shrank, or a typed number), the last page."""
    page = fetch((number - 1) * size)
    if not page.items and page.total and page.offset:
        page = fetch((page.count - 1) * size)
    return page


def _params(values: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in values.items() if v not in (None, "")}


@dataclass(frozen=True)
class ListQuery:
    """The list page's filters, as the form sends them."""

    status: str = ""
    target: str = ""
    provider: int | None = None
    created_from: date | None = None
    created_to: date | None = None
    file: str = ""
    by: str = ""
    page: int = 1

    def params(self) -> dict[str, str]:
        """The filters as query parameters (without the page)."""
        return _params(
            {
                "status": self.status,
                "target": self.target,
                "provider": self.provider,
                "created_from": self.created_from.isoformat() if self.created_from else None,
                "created_to": self.created_to.isoformat() if self.created_to else None,
                "file": self.file,
                "by": self.by,
            }
        )

    @property
    def filtered(self) -> bool:
        return bool(self.params())

    def filter(self) -> svc.BulkChangeFilter:
        return svc.BulkChangeFilter(
            status=self.status or None,
            target_status=self.target or None,
            service_provider_id=self.provider,
            created_from=self.created_from,
            created_to=self.created_to,
            file_name=self.file or None,
            created_by=self.by or None,
        )


def list_query(
    status: Annotated[str, Query(max_length=30)] = "",
    target: Annotated[str, Query(max_length=50)] = "",
    provider: Annotated[str, Query(max_length=12)] = "",
    created_from: Annotated[str, Query(max_length=10)] = "",
    created_to: Annotated[str, Query(max_length=10)] = "",
    file: Annotated[str, Query(max_length=255)] = "",
    by: Annotated[str, Query(max_length=100)] = "",
    page: PageNumber = 1,
) -> ListQuery:
    """The list's query parameters, checked (an unknown value is a 400 naming it)."""
    try:
        target_status = TargetStatus.parse(target).value if target.strip() else ""
    except ValueError as exc:
        raise _bad(str(exc)) from exc
    if provider.strip() and not provider.strip().isdigit():
        raise _bad(f"provider: not an id: {provider!r}")
    return ListQuery(
        status=_choice(status, {s.value for s in BulkStatus}, "status"),
        target=target_status,
        provider=int(provider) if provider.strip() else None,
        created_from=_day(created_from, "created_from"),
        created_to=_day(created_to, "created_to"),
        file=file.strip(),
        by=by.strip(),
        page=page,
    )


@dataclass(frozen=True)
class DetailQuery:
    """One bulk change page's search and filters, as the form sends them."""

    q: str = ""
    status: str = ""
    step: str = ""
    extra: str = ""
    page: int = 1

    def params(self) -> dict[str, str]:
        return _params({"q": self.q, "status": self.status, "step": self.step, "extra": self.extra})

    @property
    def filtered(self) -> bool:
        return bool(self.params())

    def filter(self) -> svc.ChangeFilter:
        return svc.ChangeFilter(
            statuses=(self.status,) if self.status else (),
            search=self.q or None,
            step=self.step or None,
            additional_step=self.extra or None,
        )


def detail_query(
    q: Annotated[str, Query(max_length=64)] = "",
    status: Annotated[str, Query(max_length=30)] = "",
    step: Annotated[str, Query(max_length=30)] = "",
    extra: Annotated[str, Query(max_length=30)] = "",
    page: PageNumber = 1,
) -> DetailQuery:
    """The detail page's query parameters, checked (an unknown value is a 400 naming it)."""
    return DetailQuery(
        q=q.strip(),
        status=_choice(status, set(_CHANGE_STATUSES), "status"),
        step=_choice(step, set(svc.ALL_STEPS), "step"),
        extra=_choice(extra, _EXTRA_STEPS, "additional step status"),
        page=page,
    )


# ----------------------------------------------------------------------------------------------- routes

ListParams = Annotated[ListQuery, Depends(list_query)]
DetailParams = Annotated[DetailQuery, Depends(detail_query)]


def _done(bulk: svc.BulkChangeSummary) -> bool:
    """Nothing more will change on its own: finished, or failed at bulk level (until resumed)."""
    return bulk.status in svc.FINISHED


class BulkPages:
    """The pages and live endpoints, reading through the services with one short session each."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    def list_context(self, principal: Principal, query: ListQuery) -> dict[str, Any]:
        with self.rt.session_factory() as session:
            rows = _page_of(
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
            "live": any(not _done(b) for b in rows.items),
        }

    def detail_context(
        self, session: Session, principal: Principal, bulk_id: int, query: DetailQuery
    ) -> dict[str, Any]:
        bulk = svc.get_bulk_change(session, bulk_id) if owned_bulk(session, principal, bulk_id) else None
        if bulk is None:
            raise HTTPException(status_code=404, detail=f"no bulk change {bulk_id}")
        rows = _page_of(
            lambda offset: svc.list_changes(session, bulk_id, query.filter(), limit=DEVICE_PAGE_SIZE, offset=offset),
            query.page,
            DEVICE_PAGE_SIZE,
        )
        return {
            "bulk": bulk,
            "rows": rows,
            "query": query,
            "bulk_logs": svc.bulk_logs(session, bulk_id),
            "done": _done(bulk),
            # Shown while anything is READY or SENDING: a change being sent may come back READY (a retry), and
            # the READY ones beside it can be cancelled (cancel counts what it leaves at the carrier).
            "cancellable": any(bulk.counts.get(s.value, 0) for s in (ChangeStatus.READY, ChangeStatus.SENDING)),
            "retryable": any(bulk.counts.get(s.value, 0) for s in ops.FAILED_STATUSES),
            "billing_rerunnable": billing_steps.rerunnable_count(session, bulk_id),
            # Created, but the queue did not take its wake-up yet (the workers relay it): say so until it has.
            "wake_up_pending": WAKEUP_PENDING_WARNING if wakeup_pending(session, bulk_id) else None,
        }


def _live_rows(html: list[tuple[int, str, str]]) -> list[dict[str, str]]:
    return [{"key": str(key), "sig": digest, "html": row} for key, digest, row in html]


def bulk_pages_router(rt: Runtime) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    pages = BulkPages(rt)

    @router.get("/ui/", response_class=HTMLResponse)
    def index(request: Request, principal: CurrentPrincipal, query: ListParams) -> HTMLResponse:
        context = pages.list_context(principal, query)
        live_params = {**query.params(), "page": context["rows"].number}
        context.update(
            live_url=f"/ui/fragments/bulk-changes?{urlencode(live_params)}",
            bulk_statuses=[s.value for s in BulkStatus],
            targets=[t.value for t in TargetStatus],
        )
        return render(request, "index.html", context)

    @router.get("/ui/fragments/bulk-changes")
    def index_live(request: Request, principal: CurrentPrincipal, query: ListParams) -> JSONResponse:
        context = pages.list_context(principal, query)
        parts = Parts(request)
        rows = context["rows"]
        return JSONResponse(
            {
                "live": context["live"],
                "regions": {"part-pager": parts.region("pager", rows, "/ui/", query.params(), "bulk", "bulk changes")},
                "rows": _live_rows(
                    [(b.id, sig(b), parts("bulk_row", b, context["provider_names"])) for b in rows.items]
                ),
            }
        )

    @router.get("/ui/bulk-changes/{bulk_change_id}", response_class=HTMLResponse)
    def detail(
        request: Request,
        principal: CurrentPrincipal,
        bulk_change_id: IdPath,
        query: DetailParams,
        notice: Annotated[str | None, Query(max_length=300)] = None,
    ) -> HTMLResponse:
        with rt.session_factory() as session:
            context = pages.detail_context(session, principal, bulk_change_id, query)
            context["choices"] = svc.filter_choices(session, bulk_change_id)
        live_params = {**query.params(), "page": context["rows"].number}
        context.update(
            notice=notice,
            all_statuses=_CHANGE_STATUSES,
            live_url=f"/ui/fragments/bulk-changes/{bulk_change_id}?{urlencode(live_params)}",
        )
        return render(request, "detail.html", context)

    @router.get("/ui/fragments/bulk-changes/{bulk_change_id}")
    def detail_live(
        request: Request, principal: CurrentPrincipal, bulk_change_id: IdPath, query: DetailParams
    ) -> JSONResponse:
        with rt.session_factory() as session:
            c = pages.detail_context(session, principal, bulk_change_id, query)
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
                "rows": _live_rows([(r.id, sig(r), parts("change_row", r, bulk.id)) for r in rows.items]),
            }
        )

    @router.get("/ui/fragments/bulk-changes/{bulk_change_id}/changes/{change_id}/logs", response_class=HTMLResponse)
    def change_logs(
        request: Request, principal: CurrentPrincipal, bulk_change_id: IdPath, change_id: IdPath
    ) -> HTMLResponse:
        with rt.session_factory() as session:
            owned = owned_bulk(session, principal, bulk_change_id)
            change = svc.get_change(session, bulk_change_id, change_id) if owned is not None else None
        if change is None:
            raise HTTPException(status_code=404, detail="no such change")
        return render(request, "_logs.html", {"change": change})

    return router
