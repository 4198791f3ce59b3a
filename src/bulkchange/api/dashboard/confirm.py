"""``/ui/confirm`` — the previewed upload, created as a bulk change.

The confirmation carries an Idempotency-Key, so a double submit creates one bulk change. A destructive
submission (deactivations, suspensions of active lines) first shows its consequences summed up and is
created only when the operator types the number of lines it changes destructively.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import partial
from typing import Annotated

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.orm import Session

from bulkchange.api.dashboard.common import CSRF, providers_of, require_provider
from bulkchange.api.dashboard.upload import decoded, upload_page
from bulkchange.api.deps import RuntimeDep
from bulkchange.api.schemas import MAX_ID
from bulkchange.api.security import CurrentPrincipal, scoped_idempotency_key
from bulkchange.api.templating import render
from bulkchange.engine import operator_actions as ops
from bulkchange.engine.submit import SubmissionRefused, create_bulk_change, input_carrier, open_input
from bulkchange.input import InputRefused
from bulkchange.runtime import Runtime
from bulkchange.services import bulk_changes
from bulkchange.services.apikeys import Principal
from bulkchange.services.consequences import Consequences, consequences_of

router = APIRouter(include_in_schema=False)


@dataclass(frozen=True)
class Submission:
    """The confirmation form as the preview sent it (``key`` as typed, before it is scoped to the tenant)."""

    payload: str
    filename: str
    service_provider_id: int
    status: str
    ignore_current_status: bool
    key: str


def typed_count_matches(typed: str | None, expected: int) -> bool:
    """The typed confirmation: the number, with or without thousands separators (``4210``, ``4,210``)."""
    digits = "".join(ch for ch in (typed or "") if ch not in " ,.'_\u00a0\u202f")
    return digits.isdigit() and int(digits) == expected


def _typed_confirmation(
    request: Request,
    session: Session,
    principal: Principal,
    impact: Consequences,
    form: Submission,
    *,
    typed: str | None,
) -> HTMLResponse:
    """The consequences of a destructive submission and the field to type their count in."""
    names = {p.id: p.name for p in providers_of(session, principal)}
    error = None
    if typed is not None:
        error = f"You typed {typed.strip()!r}: type {impact.destructive:,} (the number of lines) to confirm."
    context = {
        **asdict(form),
        "provider_name": names.get(form.service_provider_id, f"#{form.service_provider_id}"),
        "consequences": impact,
        "error": error,
    }
    return render(request, "confirm.html", context, status_code=200 if typed is None else 422)


def _unconfirmed(
    request: Request, rt: Runtime, principal: Principal, form: Submission, data: bytes, carrier: str, typed: str | None
) -> HTMLResponse | None:
    """The typed confirmation page when the submission changes lines destructively and their count was not
    typed (or typed wrong); ``None`` when it may be created."""
    with (
        rt.session_factory() as session,
        open_input(data, settings=rt.settings, filename=form.filename, carrier=carrier) as table,
    ):
        impact = consequences_of(
            session,
            (row.cells for row in table),
            status=form.status,
            service_provider_id=form.service_provider_id,
            ignore_current_status=form.ignore_current_status,
        )
        if impact.destructive and not typed_count_matches(typed, impact.destructive):
            return _typed_confirmation(request, session, principal, impact, form, typed=typed)
    return None


def _create(rt: Runtime, form: Submission, data: bytes, carrier: str, session: Session) -> int:
    """The bulk change of the upload (read again from ``data``), with its file name; its id."""
    with open_input(data, settings=rt.settings, filename=form.filename, carrier=carrier) as table:
        bulk_id = create_bulk_change(
            session,
            rt.transport,
            table,
            status=form.status,
            service_provider_id=form.service_provider_id,
            ignore_current_status=form.ignore_current_status,
            created_by="dashboard",
        )
    bulk_changes.record_file_name(session, bulk_id, form.filename)
    return bulk_id


@router.post("/ui/confirm", dependencies=CSRF)
def confirm(
    request: Request,
    rt: RuntimeDep,
    principal: CurrentPrincipal,
    payload: Annotated[str, Form(description="the upload, base64 (the request body limit bounds it)")],
    filename: Annotated[str, Form(max_length=255)],
    service_provider_id: Annotated[int, Form(ge=1, le=MAX_ID)],
    status: Annotated[str, Form(max_length=50)],
    key: Annotated[str, Form(min_length=1, max_length=255)],
    ignore_current_status: Annotated[bool, Form()] = False,
    confirm_count: Annotated[str | None, Form(max_length=30)] = None,
) -> Response:
    require_provider(principal, service_provider_id)
    form = Submission(payload, filename, service_provider_id, status, ignore_current_status, key)
    data = decoded(payload, rt.settings.max_upload_bytes)
    with rt.session_factory() as session:
        carrier = input_carrier(session, service_provider_id)
    unconfirmed = _unconfirmed(request, rt, principal, form, data, carrier, confirm_count)
    if unconfirmed is not None:
        return unconfirmed
    fingerprint = ops.request_hash("create-file", data, service_provider_id, status, ignore_current_status)
    scoped_key = scoped_idempotency_key(principal, key) or key
    create = partial(_create, rt, form, data, carrier)
    try:
        created = ops.create_or_replay(rt.session_factory, scoped_key, fingerprint, create)
    except InputRefused as exc:
        raise HTTPException(status_code=400, detail=f"the upload could not be read back: {exc}") from exc
    except (SubmissionRefused, ops.IdempotencyConflict) as exc:
        return upload_page(request, rt, principal, str(exc), status_code=409)
    return RedirectResponse(f"/ui/bulk-changes/{created.bulk_change_id}", status_code=303)
