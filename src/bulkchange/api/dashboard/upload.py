"""``/ui/upload`` — a CSV / xlsx / JSON upload whose dry-run preview is shown before anything is created (the
preview carries the file, base64, to the confirmation), the preview's problems as CSV, and
``/ui/template.csv?status=…``: the columns a target status needs with one example row."""

from __future__ import annotations

import base64
import binascii
import uuid
from typing import Annotated

from fastapi import APIRouter, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.responses import HTMLResponse, Response

from bulkchange.api import queries
from bulkchange.api.dashboard.common import CSRF, providers_of, require_provider
from bulkchange.api.deps import RuntimeDep
from bulkchange.api.preview_view import preview_view, problem_report_csv
from bulkchange.api.schemas import MAX_ID
from bulkchange.api.security import CurrentPrincipal
from bulkchange.api.templating import render
from bulkchange.domain.statuses import TargetStatus
from bulkchange.engine import operator_actions as ops
from bulkchange.engine import row_rules
from bulkchange.engine.submit import input_carrier, open_input
from bulkchange.input import InputRefused, Source
from bulkchange.runtime import Runtime
from bulkchange.services.apikeys import Principal

router = APIRouter(include_in_schema=False)


def decoded(payload: str, max_upload_bytes: int) -> bytes:
    """The upload a form carries back (base64): 413 over the upload limit, 400 when it is not base64."""
    if len(payload) > 2 * max_upload_bytes:  # base64 is 4/3 of the file
        raise HTTPException(status_code=413, detail="the upload is over BULKCHANGE_MAX_UPLOAD_BYTES")
    try:
        return base64.b64decode(payload, validate=True)
    except binascii.Error as exc:
        raise HTTPException(status_code=400, detail=f"the upload could not be read back: {exc}") from exc


def _ascii(name: str) -> str:
    return "".join(ch if ch.isascii() and (ch.isalnum() or ch in "-_.") else "_" for ch in name)[:100]


def upload_page(
    request: Request, rt: Runtime, principal: Principal, error: str | None, status_code: int = 200
) -> HTMLResponse:
    """The upload form, with ``error`` above it when a submission was refused."""
    with rt.reading() as session:
        providers = providers_of(session, principal)
    context = {"providers": providers, "targets": [t.value for t in TargetStatus], "error": error}
    return render(request, "upload.html", context, status_code=status_code)


@router.get("/ui/upload", response_class=HTMLResponse)
def upload_form(request: Request, rt: RuntimeDep, principal: CurrentPrincipal) -> HTMLResponse:
    return upload_page(request, rt, principal, None)


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


def _preview_of(
    rt: Runtime, source: Source, filename: str | None, status: str, provider_id: int, ignore: bool
) -> ops.Preview:
    """The dry run of an upload (raises ``InputRefused`` when the file cannot be read)."""
    with rt.session_factory() as session:
        carrier = input_carrier(session, provider_id)
    table = open_input(source, settings=rt.settings, filename=filename, carrier=carrier)
    with table, rt.session_factory() as session:
        return ops.preview(session, table, status=status, service_provider_id=provider_id, ignore_current_status=ignore)


@router.post("/ui/upload", response_class=HTMLResponse, dependencies=CSRF)
def upload_preview(
    request: Request,
    rt: RuntimeDep,
    principal: CurrentPrincipal,
    file: Annotated[UploadFile, File()],
    service_provider_id: Annotated[int, Form(ge=1, le=MAX_ID)],
    status: Annotated[str, Form(max_length=50)],
    ignore_current_status: Annotated[bool, Form()] = False,
) -> HTMLResponse:
    """The dry run of the uploaded file, with the file carried on (base64) to the confirmation."""
    require_provider(principal, service_provider_id)
    try:
        preview = _preview_of(rt, file.file, file.filename, status, service_provider_id, ignore_current_status)
    except InputRefused as exc:
        return upload_page(request, rt, principal, f"The file cannot be read: {exc}", status_code=400)
    file.file.seek(0)
    payload = base64.b64encode(file.file.read()).decode("ascii")  # carried to the confirmation
    with rt.session_factory() as session:
        provider = next((p for p in providers_of(session, principal) if p.id == service_provider_id), None)
    out = queries.preview_out(preview)
    device_rows = {d.row for d in out.devices}
    context = {
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
    }
    return render(request, "preview.html", context)


@router.post("/ui/preview/problems.csv", dependencies=CSRF)
def problem_report(
    rt: RuntimeDep,
    principal: CurrentPrincipal,
    payload: Annotated[str, Form(description="the upload, base64 (the request body limit bounds it)")],
    filename: Annotated[str, Form(max_length=255)],
    service_provider_id: Annotated[int, Form(ge=1, le=MAX_ID)],
    status: Annotated[str, Form(max_length=50)],
    ignore_current_status: Annotated[bool, Form()] = False,
) -> Response:
    """Every problem of the previewed file as CSV (line, column, ICCID, problem)."""
    require_provider(principal, service_provider_id)
    data = decoded(payload, rt.settings.max_upload_bytes)
    try:
        preview = _preview_of(rt, data, filename, status, service_provider_id, ignore_current_status)
    except InputRefused as exc:
        raise HTTPException(status_code=400, detail=f"the upload could not be read back: {exc}") from exc
    stem = filename.rsplit(".", 1)[0] or "upload"
    return Response(
        problem_report_csv(queries.problems_out(preview.problems)),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{_ascii(stem)}-problems.csv"'},
    )
