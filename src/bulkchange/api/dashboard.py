"""The operator dashboard: server-rendered pages (Jinja2) and live parts polled by a little plain JS.

* ``/ui/`` and ``/ui/bulk-changes/{id}`` — the list and one bulk change (``api/dashboard_pages.py``);
  cancel unsent, pause, resume and retry failed are posted from the bulk change's page to the handlers here.
* ``/ui/upload`` — a CSV / xlsx / JSON upload whose dry-run preview is shown before anything is created;
  the confirmation carries an Idempotency-Key, so a double submit creates one bulk change. A destructive
  submission (deactivations, suspensions of active lines) first shows its consequences summed up and is
  created only when the operator types the number of lines it changes destructively.
  ``/ui/template.csv?status=…`` downloads the columns a target status needs with one example row.

No front-end build step, no third-party script: the pages work without JavaScript (the live parts just
stop refreshing) and the JS only fetches live parts.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Callable
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, File, Form, HTTPException, Path, Query, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.orm import Session

from bulkchange.api import queries
from bulkchange.api.dashboard_pages import bulk_pages_router
from bulkchange.api.preview_view import preview_view, problem_report_csv
from bulkchange.api.schemas import MAX_ID
from bulkchange.api.security import SESSION_COOKIE, CurrentPrincipal, owned_bulk, scoped_idempotency_key, verify_csrf
from bulkchange.api.settings import ApiSettings
from bulkchange.api.templating import TEMPLATES
from bulkchange.domain.statuses import TargetStatus
from bulkchange.engine import controls, row_rules
from bulkchange.engine import operator_actions as ops
from bulkchange.engine.submit import SubmissionRefused, create_bulk_change, input_carrier, open_input
from bulkchange.input import InputRefused, Source
from bulkchange.runtime import Runtime
from bulkchange.services import billing_steps, bulk_changes
from bulkchange.services.apikeys import Principal, authenticate
from bulkchange.services.bulk_changes import ProviderChoice
from bulkchange.services.consequences import Consequences, consequences_of

IdPath = Annotated[int, Path(ge=1, le=MAX_ID)]

CSRF = [Depends(verify_csrf)]


def _providers(session: Session, principal: Principal) -> list[ProviderChoice]:
    return bulk_changes.providers_in(session, principal.service_provider_ids)


def _who(principal: Principal) -> str:
    """Who acted, for the audit rows: the dashboard and the API key's id (never the key)."""
    return f"dashboard (api-key {principal.key_id})"


def _safe_next(target: str | None) -> str:
    """Only a path of this dashboard (never another site) to go to after logging in."""
    if target and target.startswith("/ui/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/ui/"


def _with_notice(bulk_change_id: int, notice: str) -> RedirectResponse:
    return RedirectResponse(f"/ui/bulk-changes/{bulk_change_id}?{urlencode({'notice': notice[:300]})}", status_code=303)


def _typed_count_matches(typed: str | None, expected: int) -> bool:
    """The typed confirmation: the number, with or without thousands separators (``4210``, ``4,210``)."""
    digits = "".join(ch for ch in (typed or "") if ch not in " ,.'_\u00a0\u202f")
    return digits.isdigit() and int(digits) == expected


def _decoded(payload: str, max_upload_bytes: int) -> bytes:
    """The upload a form carries back (base64): 413 over the upload limit, 400 when it is not base64."""
    if len(payload) > 2 * max_upload_bytes:  # base64 is 4/3 of the file
        raise HTTPException(status_code=413, detail="the upload is over BULKCHANGE_MAX_UPLOAD_BYTES")
    try:
        return base64.b64decode(payload, validate=True)
    except binascii.Error as exc:
        raise HTTPException(status_code=400, detail=f"the upload could not be read back: {exc}") from exc


def _ascii(name: str) -> str:
    return "".join(ch if ch.isascii() and (ch.isalnum() or ch in "-_.") else "_" for ch in name)[:100]


def dashboard_router(rt: Runtime, settings: ApiSettings) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    router.include_router(bulk_pages_router(rt))

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

    def require_bulk(principal: Principal, bulk_change_id: int) -> None:
        with rt.session_factory() as session:
            if owned_bulk(session, principal, bulk_change_id) is None:
                raise HTTPException(status_code=404, detail="no such bulk change")

    @router.post("/ui/bulk-changes/{bulk_change_id}/cancel", dependencies=CSRF)
    def cancel(principal: CurrentPrincipal, bulk_change_id: IdPath) -> RedirectResponse:
        require_bulk(principal, bulk_change_id)
        try:
            result = controls.cancel(rt.ctx, bulk_change_id, by=_who(principal))
        except controls.NoSuchBulkChange as exc:
            raise HTTPException(status_code=404, detail="no such bulk change") from exc
        return _with_notice(bulk_change_id, result.summary())

    @router.post("/ui/bulk-changes/{bulk_change_id}/pause", dependencies=CSRF)
    def pause(principal: CurrentPrincipal, bulk_change_id: IdPath) -> RedirectResponse:
        return control(principal, bulk_change_id, controls.pause)

    @router.post("/ui/bulk-changes/{bulk_change_id}/resume", dependencies=CSRF)
    def resume(principal: CurrentPrincipal, bulk_change_id: IdPath) -> RedirectResponse:
        return control(principal, bulk_change_id, controls.resume)

    def control(principal: Principal, bulk_change_id: int, action: Callable[..., str]) -> RedirectResponse:
        require_bulk(principal, bulk_change_id)
        try:
            done = action(rt.ctx, bulk_change_id, by=_who(principal))
        except controls.NoSuchBulkChange as exc:
            raise HTTPException(status_code=404, detail="no such bulk change") from exc
        except controls.NotApplicable as exc:
            return _with_notice(bulk_change_id, f"Refused: {exc}")
        return _with_notice(bulk_change_id, done)

    @router.post("/ui/bulk-changes/{bulk_change_id}/rerun-billing", dependencies=CSRF)
    def rerun_billing(principal: CurrentPrincipal, bulk_change_id: IdPath) -> RedirectResponse:
        """Every failed or waiting additional step of the bulk change, due again."""
        require_bulk(principal, bulk_change_id)
        try:
            with rt.session_factory() as session:
                result = billing_steps.rerun_billing(session, bulk_change_id, by="dashboard")
        except billing_steps.NothingToRerun as exc:
            return _with_notice(bulk_change_id, str(exc))
        return _with_notice(bulk_change_id, f"{result.count} billing step(s) will run again")

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
    def template_csv(
        principal: CurrentPrincipal,
        status: Annotated[str, Query(max_length=50)],
        carrier: Annotated[str, Query(max_length=30)] = row_rules.CARRIER,
    ) -> Response:
        """The columns ``status`` needs on ``carrier`` and one example row, as a CSV to fill in."""
        try:
            target = TargetStatus.parse(status)
            rules = row_rules.rules_for(carrier)
        except ValueError as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from exc
        name = f"bulkchange-{rules.carrier}-{target.value.replace(' ', '-')}.csv"
        if rules.carrier == row_rules.CARRIER:
            name = f"bulkchange-{target.value.replace(' ', '-')}.csv"  # the name ThingSpace templates always had
        return Response(
            rules.template(target),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )

    def preview_of(source: Source, filename: str | None, status: str, provider_id: int, ignore: bool) -> ops.Preview:
        """The dry run of an upload (raises ``InputRefused`` when the file cannot be read)."""
        with rt.session_factory() as session:
            carrier = input_carrier(session, provider_id)
        table = open_input(source, settings=rt.settings, filename=filename, carrier=carrier)
        with table, rt.session_factory() as session:
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
                "view": preview_view(out),
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

    def typed_confirmation(
        request: Request,
        session: Session,
        principal: Principal,
        impact: Consequences,
        form: dict[str, Any],
        *,
        typed: str | None,
    ) -> HTMLResponse:
        """The consequences of a destructive submission and the field to type their count in."""
        names = {p.id: p.name for p in _providers(session, principal)}
        error = None
        if typed is not None:
            error = f"You typed {typed.strip()!r}: type {impact.destructive:,} (the number of lines) to confirm."
        context = {
            **form,
            "provider_name": names.get(form["service_provider_id"], f"#{form['service_provider_id']}"),
            "consequences": impact,
            "error": error,
        }
        return page(request, "confirm.html", context, status_code=200 if typed is None else 422)

    @router.post("/ui/preview/problems.csv", dependencies=CSRF)
    def problem_report(
        principal: CurrentPrincipal,
        payload: Annotated[str, Form(description="the upload, base64 (the request body limit bounds it)")],
        filename: Annotated[str, Form(max_length=255)],
        service_provider_id: Annotated[int, Form(ge=1, le=MAX_ID)],
        status: Annotated[str, Form(max_length=50)],
        ignore_current_status: Annotated[bool, Form()] = False,
    ) -> Response:
        """Every problem of the previewed file as CSV (line, column, ICCID, problem)."""
        if not principal.may_use(service_provider_id):
            raise HTTPException(status_code=403, detail="not a service provider this API key may use")
        data = _decoded(payload, rt.settings.max_upload_bytes)
        try:
            preview = preview_of(data, filename, status, service_provider_id, ignore_current_status)
        except InputRefused as exc:
            raise HTTPException(status_code=400, detail=f"the upload could not be read back: {exc}") from exc
        stem = filename.rsplit(".", 1)[0] or "upload"
        return Response(
            problem_report_csv(queries.problems_out(preview.problems)),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{_ascii(stem)}-problems.csv"'},
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
        confirm_count: Annotated[str | None, Form(max_length=30)] = None,
    ) -> Response:
        if not principal.may_use(service_provider_id):
            raise HTTPException(status_code=403, detail="not a service provider this API key may use")
        form = {
            "payload": payload,
            "filename": filename,
            "service_provider_id": service_provider_id,
            "status": status,
            "ignore_current_status": ignore_current_status,
            "key": key,
        }
        key = scoped_idempotency_key(principal, key) or key
        data = _decoded(payload, rt.settings.max_upload_bytes)
        with rt.session_factory() as session:
            carrier = input_carrier(session, service_provider_id)
        with (
            rt.session_factory() as session,
            open_input(data, settings=rt.settings, filename=filename, carrier=carrier) as table,
        ):
            impact = consequences_of(
                session,
                (row.cells for row in table),
                status=status,
                service_provider_id=service_provider_id,
                ignore_current_status=ignore_current_status,
            )
            if impact.destructive and not _typed_count_matches(confirm_count, impact.destructive):
                return typed_confirmation(request, session, principal, impact, form, typed=confirm_count)
        fingerprint = ops.request_hash("create-file", data, service_provider_id, status, ignore_current_status)

        def create(session: Session) -> int:
            with open_input(data, settings=rt.settings, filename=filename, carrier=carrier) as table:
                bulk_id = create_bulk_change(
                    session,
                    rt.transport,
                    table,
                    status=status,
                    service_provider_id=service_provider_id,
                    ignore_current_status=ignore_current_status,
                    created_by="dashboard",
                )
            bulk_changes.record_file_name(session, bulk_id, filename)
            return bulk_id

        try:
            created = ops.create_or_replay(rt.session_factory, key, fingerprint, create)
        except InputRefused as exc:
            raise HTTPException(status_code=400, detail=f"the upload could not be read back: {exc}") from exc
        except (SubmissionRefused, ops.IdempotencyConflict) as exc:
            return upload_page(request, principal, str(exc), status_code=409)
        return RedirectResponse(f"/ui/bulk-changes/{created.bulk_change_id}", status_code=303)

    return router
