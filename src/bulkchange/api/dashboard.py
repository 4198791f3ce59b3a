"""The operator dashboard: server-rendered pages (Jinja2) and HTML fragments polled by a little plain JS.

* ``/ui/`` — bulk changes with live progress bars (``/ui/fragments/bulk-changes`` is polled).
* ``/ui/bulk-changes/{id}`` — one bulk change: counts, progress, actions (cancel unsent, retry failed,
  export CSV), the per-device table with a status filter and paging, each row's log entries on demand.
* ``/ui/upload`` — a CSV / xlsx / JSON upload whose dry-run preview is shown before anything is created;
  the confirmation carries an Idempotency-Key, so a double submit creates one bulk change.
  ``/ui/template.csv?status=…`` downloads the columns a target status needs with one example row.

No front-end build step, no third-party script: the pages work without JavaScript (the live parts just
stop refreshing) and the JS only fetches fragments.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from pathlib import Path as FsPath
from typing import Annotated, Any, NamedTuple
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, File, Form, HTTPException, Path, Query, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy import select
from sqlalchemy.orm import Session

from bulkchange.api import queries
from bulkchange.api.schemas import MAX_ID
from bulkchange.api.security import SESSION_COOKIE, CurrentPrincipal, owned_bulk, scoped_idempotency_key, verify_csrf
from bulkchange.api.settings import ApiSettings
from bulkchange.domain.statuses import ChangeStatus, TargetStatus
from bulkchange.engine import operator_actions as ops
from bulkchange.engine import row_rules
from bulkchange.engine.submit import SubmissionRefused, create_bulk_change, open_input
from bulkchange.input import InputRefused, Source
from bulkchange.runtime import Runtime
from bulkchange.security.apikeys import Principal, authenticate
from bulkchange.store.tables import ServiceProvider

TEMPLATES = Jinja2Templates(directory=str(FsPath(__file__).parent / "templates"))
PAGE_SIZE = 50

IdPath = Annotated[int, Path(ge=1, le=MAX_ID)]

STATUS_TONE = {
    "PROCESSED": "ok",
    "READY": "wait",
    "SENDING": "wait",
    "AWAITING_RESULT": "wait",
    "NEW": "wait",
    "PROCESSING": "wait",
    "CANCELLED": "muted",
    "ERROR": "bad",
    "API_FAILED": "bad",
    "ACTIVATION_UNVERIFIED": "warn",
    "NEEDS_REVIEW": "warn",
}
TEMPLATES.env.globals["tone"] = lambda status: STATUS_TONE.get(str(status), "muted")
TEMPLATES.env.globals["csrf_token"] = lambda request: str(getattr(request.state, "csrf_token", ""))
CSRF = [Depends(verify_csrf)]


class ProviderChoice(NamedTuple):
    id: int
    name: str


def _providers(session: Session, principal: Principal) -> list[ProviderChoice]:
    return [
        ProviderChoice(int(pid), str(name))
        for pid, name in session.execute(
            select(ServiceProvider.id, ServiceProvider.name)
            .where(
                ServiceProvider.is_deleted.is_(False), ServiceProvider.id.in_(sorted(principal.service_provider_ids))
            )
            .order_by(ServiceProvider.id)
        ).all()
    ]


def _safe_next(target: str | None) -> str:
    """Only a path of this dashboard (never another site) to go to after logging in."""
    if target and target.startswith("/ui/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/ui/"


def _with_notice(bulk_change_id: int, notice: str) -> RedirectResponse:
    return RedirectResponse(f"/ui/bulk-changes/{bulk_change_id}?{urlencode({'notice': notice[:300]})}", status_code=303)


def dashboard_router(rt: Runtime, settings: ApiSettings) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    def page(request: Request, name: str, context: dict[str, Any], status_code: int = 200) -> HTMLResponse:
        return TEMPLATES.TemplateResponse(request, name, context, status_code=status_code)

    @router.get("/")
    def root() -> RedirectResponse:
        return RedirectResponse("/ui/", status_code=307)

    @router.get("/ui/login", response_class=HTMLResponse)
    def login_form(request: Request, next: Annotated[str | None, Query(max_length=2000)] = None) -> HTMLResponse:
        return page(request, "login.html", {"next": _safe_next(next), "error": None})

    @router.post("/ui/login", response_model=None)
    def login(
        request: Request,
        key: Annotated[str, Form(max_length=200)],
        next: Annotated[str | None, Form(max_length=2000)] = None,
    ) -> Response:
        with rt.session_factory() as session:
            principal = authenticate(session, key.strip())
        if principal is None:
            context = {"next": _safe_next(next), "error": "That API key is not valid."}
            return page(request, "login.html", context, status_code=401)
        response = RedirectResponse(_safe_next(next), status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            key.strip(),
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path="/",
            max_age=12 * 3600,
        )
        return response

    @router.post("/ui/logout", dependencies=CSRF)
    def logout() -> RedirectResponse:
        response = RedirectResponse("/ui/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
        return response

    @router.get("/ui/", response_class=HTMLResponse)
    def index(
        request: Request, principal: CurrentPrincipal, offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0
    ) -> HTMLResponse:
        with rt.session_factory() as session:
            items, total = queries.list_bulk_changes(
                session,
                status=None,
                service_provider_id=None,
                limit=PAGE_SIZE,
                offset=offset,
                service_provider_ids=principal.service_provider_ids,
            )
            names = {p.id: p.name for p in _providers(session, principal)}
        context = {"items": items, "total": total, "offset": offset, "page_size": PAGE_SIZE, "provider_names": names}
        return page(request, "index.html", context)

    @router.get("/ui/fragments/bulk-changes", response_class=HTMLResponse)
    def bulk_rows(
        request: Request, principal: CurrentPrincipal, offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0
    ) -> HTMLResponse:
        with rt.session_factory() as session:
            items, _total = queries.list_bulk_changes(
                session,
                status=None,
                service_provider_id=None,
                limit=PAGE_SIZE,
                offset=offset,
                service_provider_ids=principal.service_provider_ids,
            )
            names = {p.id: p.name for p in _providers(session, principal)}
        return page(request, "_bulk_rows.html", {"items": items, "provider_names": names})

    def detail_context(
        session: Session, principal: Principal, bulk_change_id: int, status: str | None, offset: int
    ) -> dict[str, Any]:
        owned = owned_bulk(session, principal, bulk_change_id)
        bulk = queries.get_bulk_change(session, bulk_change_id) if owned is not None else None
        if bulk is None:
            raise HTTPException(status_code=404, detail=f"no bulk change {bulk_change_id}")
        statuses = [status] if status else None
        changes, total = queries.list_changes(
            session,
            bulk_change_id,
            statuses=statuses,
            iccid=None,
            include_logs=False,
            limit=PAGE_SIZE,
            offset=offset,
        )
        return {
            "bulk": bulk,
            "changes": changes,
            "changes_total": total,
            "status_filter": status or "",
            "offset": offset,
            "page_size": PAGE_SIZE,
            "all_statuses": [s.value for s in ChangeStatus],
            "bulk_logs": queries.bulk_logs(session, bulk_change_id),
            "done": bulk.status in ("PROCESSED", "ERROR"),
            "cancellable": bulk.counts.get("READY", 0) > 0,
            "retryable": any(bulk.counts.get(s.value, 0) for s in ops.FAILED_STATUSES),
        }

    def status_param(status: str | None) -> str | None:
        if not status:
            return None
        if status not in {s.value for s in ChangeStatus}:
            raise HTTPException(status_code=400, detail=f"unknown status {status!r}")
        return status

    @router.get("/ui/bulk-changes/{bulk_change_id}", response_class=HTMLResponse)
    def detail(
        request: Request,
        principal: CurrentPrincipal,
        bulk_change_id: IdPath,
        status: Annotated[str | None, Query(max_length=30)] = None,
        offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
        notice: Annotated[str | None, Query(max_length=300)] = None,
    ) -> HTMLResponse:
        with rt.session_factory() as session:
            context = detail_context(session, principal, bulk_change_id, status_param(status), offset)
        context["notice"] = notice
        return page(request, "detail.html", context)

    @router.get("/ui/fragments/bulk-changes/{bulk_change_id}", response_class=HTMLResponse)
    def detail_fragment(
        request: Request,
        principal: CurrentPrincipal,
        bulk_change_id: IdPath,
        status: Annotated[str | None, Query(max_length=30)] = None,
        offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
    ) -> HTMLResponse:
        with rt.session_factory() as session:
            context = detail_context(session, principal, bulk_change_id, status_param(status), offset)
        return page(request, "_detail_live.html", context)

    @router.get("/ui/fragments/bulk-changes/{bulk_change_id}/changes/{change_id}/logs", response_class=HTMLResponse)
    def change_logs(
        request: Request, principal: CurrentPrincipal, bulk_change_id: IdPath, change_id: IdPath
    ) -> HTMLResponse:
        with rt.session_factory() as session:
            owned = owned_bulk(session, principal, bulk_change_id)
            change = queries.get_change(session, bulk_change_id, change_id) if owned is not None else None
        if change is None:
            raise HTTPException(status_code=404, detail="no such change")
        return page(request, "_logs.html", {"change": change})

    def require_bulk(principal: Principal, bulk_change_id: int) -> None:
        with rt.session_factory() as session:
            if owned_bulk(session, principal, bulk_change_id) is None:
                raise HTTPException(status_code=404, detail="no such bulk change")

    @router.post("/ui/bulk-changes/{bulk_change_id}/cancel", dependencies=CSRF)
    def cancel(principal: CurrentPrincipal, bulk_change_id: IdPath) -> RedirectResponse:
        require_bulk(principal, bulk_change_id)
        try:
            result = ops.cancel_unsent(rt.processor, bulk_change_id, by="dashboard")
        except KeyError as exc:
            raise HTTPException(status_code=404, detail="no such bulk change") from exc
        notice = f"{len(result.cancelled)} change(s) cancelled; {result.not_cancellable} already sent or finished"
        return _with_notice(bulk_change_id, notice)

    @router.post("/ui/bulk-changes/{bulk_change_id}/retry", dependencies=CSRF)
    def retry(
        principal: CurrentPrincipal, bulk_change_id: IdPath, key: Annotated[str, Form(min_length=1, max_length=255)]
    ) -> RedirectResponse:
        require_bulk(principal, bulk_change_id)
        key = scoped_idempotency_key(principal, key) or key
        fingerprint = ops.request_hash("retry", bulk_change_id, sorted(s.value for s in ops.FAILED_STATUSES))
        try:
            created = ops.create_or_replay(
                rt.session_factory,
                key,
                fingerprint,
                lambda s: ops.retry_failed(s, rt.transport, bulk_change_id, created_by="dashboard"),
            )
        except KeyError as exc:
            raise HTTPException(status_code=404, detail="no such bulk change") from exc
        except (ops.NothingToRetry, ops.IdempotencyConflict) as exc:
            return _with_notice(bulk_change_id, str(exc))
        except SubmissionRefused as exc:
            first = exc.report.problems[0] if exc.report.problems else None
            why = f"{first.iccid or ''} {first.field}: {first.message}" if first else ""
            return _with_notice(bulk_change_id, f"retry refused ({why.strip()})")
        return RedirectResponse(f"/ui/bulk-changes/{created.bulk_change_id}", status_code=303)

    def upload_page(request: Request, principal: Principal, error: str | None, status_code: int = 200) -> HTMLResponse:
        with rt.session_factory() as session:
            providers = _providers(session, principal)
        context = {"providers": providers, "targets": [t.value for t in TargetStatus], "error": error}
        return page(request, "upload.html", context, status_code=status_code)

    @router.get("/ui/upload", response_class=HTMLResponse)
    def upload_form(request: Request, principal: CurrentPrincipal) -> HTMLResponse:
        return upload_page(request, principal, None)

    @router.get("/ui/template.csv")
    def template_csv(principal: CurrentPrincipal, status: Annotated[str, Query(max_length=50)]) -> Response:
        """The columns ``status`` needs and one example row, as a CSV to fill in."""
        try:
            target = TargetStatus.parse(status)
        except ValueError as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from exc
        name = f"bulkchange-{target.value.replace(' ', '-')}.csv"
        return Response(
            row_rules.template(target),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )

    def preview_of(source: Source, filename: str | None, status: str, provider_id: int, ignore: bool) -> ops.Preview:
        """The dry run of an upload (raises ``InputRefused`` when the file cannot be read)."""
        with open_input(source, settings=rt.settings, filename=filename) as table, rt.session_factory() as session:
            return ops.preview(
                session, table, status=status, service_provider_id=provider_id, ignore_current_status=ignore
            )

    @router.post("/ui/upload", response_class=HTMLResponse, dependencies=CSRF)
    def upload_preview(
        request: Request,
        principal: CurrentPrincipal,
        file: Annotated[UploadFile, File()],
        service_provider_id: Annotated[int, Form(ge=1, le=MAX_ID)],
        status: Annotated[str, Form(max_length=50)],
        ignore_current_status: Annotated[bool, Form()] = False,
    ) -> HTMLResponse:
        if not principal.may_use(service_provider_id):
            raise HTTPException(status_code=403, detail="not a service provider this API key may use")
        try:
            preview = preview_of(file.file, file.filename, status, service_provider_id, ignore_current_status)
        except InputRefused as exc:
            return upload_page(request, principal, f"The file cannot be read: {exc}", status_code=400)
        file.file.seek(0)
        payload = base64.b64encode(file.file.read()).decode("ascii")  # carried to the confirmation
        with rt.session_factory() as session:
            provider = next((p for p in _providers(session, principal) if p.id == service_provider_id), None)
        out = queries.preview_out(preview)
        device_rows = {d.row for d in out.devices}
        return page(
            request,
            "preview.html",
            {
                "preview": out,
                "file_problems": [p for p in out.problems if p.row not in device_rows],
                "filename": file.filename or "upload.csv",
                "payload": payload,
                "service_provider_id": service_provider_id,
                "provider_name": provider.name if provider else f"#{service_provider_id}",
                "status": status,
                "ignore_current_status": ignore_current_status,
                "key": uuid.uuid4().hex,
            },
        )

    @router.post("/ui/confirm", dependencies=CSRF)
    def confirm(
        request: Request,
        principal: CurrentPrincipal,
        payload: Annotated[str, Form(description="the upload, base64 (the request body limit bounds it)")],
        filename: Annotated[str, Form(max_length=255)],
        service_provider_id: Annotated[int, Form(ge=1, le=MAX_ID)],
        status: Annotated[str, Form(max_length=50)],
        key: Annotated[str, Form(min_length=1, max_length=255)],
        ignore_current_status: Annotated[bool, Form()] = False,
    ) -> Response:
        if not principal.may_use(service_provider_id):
            raise HTTPException(status_code=403, detail="not a service provider this API key may use")
        key = scoped_idempotency_key(principal, key) or key
        if len(payload) > 2 * rt.settings.max_upload_bytes:  # base64 is 4/3 of the file
            raise HTTPException(status_code=413, detail="the upload is over BULKCHANGE_MAX_UPLOAD_BYTES")
        try:
            data = base64.b64decode(payload, validate=True)
        except binascii.Error as exc:
            raise HTTPException(status_code=400, detail=f"the upload could not be read back: {exc}") from exc
        fingerprint = ops.request_hash("create-file", data, service_provider_id, status, ignore_current_status)

        def create(session: Session) -> int:
            with open_input(data, settings=rt.settings, filename=filename) as table:
                return create_bulk_change(
                    session,
                    rt.transport,
                    table,
                    status=status,
                    service_provider_id=service_provider_id,
                    ignore_current_status=ignore_current_status,
                    created_by="dashboard",
                )

        try:
            created = ops.create_or_replay(rt.session_factory, key, fingerprint, create)
        except InputRefused as exc:
            raise HTTPException(status_code=400, detail=f"the upload could not be read back: {exc}") from exc
        except (SubmissionRefused, ops.IdempotencyConflict) as exc:
            return upload_page(request, principal, str(exc), status_code=409)
        return RedirectResponse(f"/ui/bulk-changes/{created.bulk_change_id}", status_code=303)

    return router
