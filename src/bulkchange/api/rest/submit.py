"""Creating a bulk change: ``POST /api/v1/bulk-changes`` (JSON rows) and ``POST /api/v1/bulk-changes/upload``
(a CSV, xlsx or JSON file), each previewed instead with ``?dry_run=true``, both through ``submit``; and the
creation answer (``bulk_response``) that retry shares."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Annotated, Any

from fastapi import File, Form, Response, UploadFile
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from bulkchange.api import queries
from bulkchange.api.rest import refusals
from bulkchange.api.rest.access import Rt, carrier_of, check_provider
from bulkchange.api.rest.params import FORBIDDEN_PROVIDER, DryRun, IdempotencyKey, Responses, api_router
from bulkchange.api.schemas import MAX_ID, BulkChangeOut, CreateBulkChange, PreviewOut, Problem, Refused
from bulkchange.api.security import CurrentPrincipal, scoped_idempotency_key
from bulkchange.engine import operator_actions as ops
from bulkchange.engine.outbox import WAKEUP_PENDING_WARNING, wakeup_pending
from bulkchange.engine.submit import SubmissionRefused, create_bulk_change, input_rows, open_input
from bulkchange.input import InputRefused, Table
from bulkchange.runtime import Runtime
from bulkchange.settings import Settings

REPLAYED_HEADER = "Idempotent-Replayed"
"""Set to ``true`` when an Idempotency-Key replays the answer of the request that first used it."""
WAKEUP_PENDING_HEADER = "Wake-Up-Pending"
"""Set to ``true`` on a creation answer when the bulk change exists but its wake-up has not reached the queue."""

CREATE_RESPONSES: Responses = {
    201: {
        "description": "created — or, for a repeated Idempotency-Key, the bulk change it already created, "
        f"answered alike with the header {REPLAYED_HEADER}: true; when the queue could not be reached the bulk "
        f"change exists all the same, `warnings` says its wake-up is pending and the header "
        f"{WAKEUP_PENDING_HEADER}: true is set (the running workers send the wake-up as soon as the queue answers)",
        "headers": {
            WAKEUP_PENDING_HEADER: {"description": "true when the wake-up is pending", "schema": {"type": "string"}},
            REPLAYED_HEADER: {"description": "true: a repeated Idempotency-Key", "schema": {"type": "string"}},
        },
    },
    200: {"model": PreviewOut, "description": "with dry_run=true: the preview (nothing written)"},
    400: {"model": Problem, "description": "the uploaded file cannot be read (encoding, CSV / JSON / xlsx syntax)"},
    409: {"model": Problem, "description": "Idempotency-Key reused with another request, or still in progress"},
    413: {
        "model": Problem,
        "description": "the uploaded file is over BULKCHANGE_MAX_UPLOAD_BYTES or has more rows than "
        "BULKCHANGE_MAX_ROWS_PER_BULK_CHANGE",
    },
    422: {"model": Refused, "description": "refused: nothing was created (every problem listed)"},
    **FORBIDDEN_PROVIDER,
}

Rows = list[dict[str, Any]] | Callable[[], Table]
"""A JSON body's rows, or what opens the uploaded file (again, each time it is read)."""

router = api_router()


@dataclass(frozen=True)
class Submission:
    """One creation request, whichever way its rows came."""

    status: str
    service_provider_id: int
    ignore_current_status: bool
    dry_run: bool
    key: str | None
    """The Idempotency-Key as sent (scoped to the tenant by ``submit``)."""
    fingerprint: str
    """What a repeated Idempotency-Key must match: a hash of the request."""


def bulk_response(rt: Runtime, created: ops.Created, response: Response) -> BulkChangeOut:
    """The creation answer: the bulk change, ``Location``, and the wake-up-pending / replayed headers."""
    with rt.session_factory() as session:
        out = queries.get_bulk_change(session, created.bulk_change_id)
        pending = wakeup_pending(session, created.bulk_change_id)
    assert out is not None
    location = f"/api/v1/bulk-changes/{out.id}"
    headers = {"Location": location}
    if pending:  # created all the same: the queue did not take the wake-up yet, the workers relay it
        out.warnings.append(WAKEUP_PENDING_WARNING)
        headers[WAKEUP_PENDING_HEADER] = "true"
    if created.replayed:  # answered as the original was (201, Location), and said to be a replay
        headers[REPLAYED_HEADER] = "true"
    response.headers.update(headers)
    return out


def _refuse_unclean(rows: Rows, status: str) -> None:
    try:
        if not callable(rows):
            refusals.check_text(rows)
        refusals.check_text(status)
    except refusals.Unclean as exc:
        raise refusals.not_clean(exc) from exc


def _preview(rt: Runtime, open_rows: Callable[[], Table], sub: Submission) -> JSONResponse:
    """200 with the preview; nothing is written."""
    try:
        with open_rows() as table, rt.session_factory() as session:
            p = ops.preview(
                session,
                table,
                status=sub.status,
                service_provider_id=sub.service_provider_id,
                ignore_current_status=sub.ignore_current_status,
            )
    except InputRefused as exc:
        raise refusals.unreadable(exc) from exc
    return JSONResponse(status_code=200, content=queries.preview_out(p).model_dump(mode="json"))


def _create(
    rt: Runtime, open_rows: Callable[[], Table], sub: Submission, key: str | None, response: Response
) -> BulkChangeOut:
    """201: the bulk change created, or the one the Idempotency-Key ``key`` already created."""

    def create(session: Session) -> int:
        with open_rows() as table:
            return create_bulk_change(
                session,
                rt.transport,
                table,
                status=sub.status,
                service_provider_id=sub.service_provider_id,
                ignore_current_status=sub.ignore_current_status,
                created_by="api",
            )

    try:
        created = ops.create_or_replay(rt.session_factory, key, sub.fingerprint, create)
    except SubmissionRefused as exc:
        raise refusals.refused(exc) from exc
    except InputRefused as exc:
        raise refusals.unreadable(exc) from exc
    except ops.IdempotencyConflict as exc:
        raise refusals.conflict(exc) from exc
    return bulk_response(rt, created, response)


def submit(rt: Runtime, principal: CurrentPrincipal, rows: Rows, sub: Submission, response: Response) -> Any:
    """Preview (``dry_run``) or create the bulk change of ``rows``, for either creation route."""
    check_provider(principal, sub.service_provider_id)
    key = scoped_idempotency_key(principal, sub.key)
    _refuse_unclean(rows, sub.status)
    open_rows = rows if callable(rows) else _opener(rows, rt.settings, carrier_of(rt, sub.service_provider_id))
    if sub.dry_run:
        return _preview(rt, open_rows, sub)
    return _create(rt, open_rows, sub, key, response)


def _opener(rows: list[dict[str, Any]], settings: Settings, carrier: str) -> Callable[[], Table]:
    """What reads a JSON body's rows as the input reader reads a JSON file's (``carrier``'s columns)."""
    return lambda: input_rows(rows, settings=settings, carrier=carrier)


def _open_upload(file: IO[bytes], filename: str | None, settings: Settings, carrier: str) -> Table:
    """The uploaded file's rows, read from its start (each time: the preview and the creation read it)."""
    file.seek(0)
    return open_input(file, settings=settings, filename=filename, carrier=carrier)


def _upload_digest(upload: UploadFile) -> str:
    """The uploaded file's SHA-256 (the Idempotency-Key's fingerprint), read in chunks, then rewound."""
    upload.file.seek(0)
    digest = hashlib.file_digest(upload.file, "sha256").hexdigest()  # type: ignore[arg-type]
    upload.file.seek(0)
    return digest


@router.post(
    "/bulk-changes",
    status_code=201,
    response_model=BulkChangeOut,
    responses=CREATE_RESPONSES,
    tags=["bulk changes"],
    summary="Create a bulk change from JSON rows (or preview it with dry_run=true)",
)
def create_from_rows(
    principal: CurrentPrincipal,
    rt: Rt,
    body: CreateBulkChange,
    response: Response,
    idempotency_key: IdempotencyKey = None,
    dry_run: DryRun = False,
) -> Any:
    sub = Submission(
        status=body.status,
        service_provider_id=body.service_provider_id,
        ignore_current_status=body.ignore_current_status,
        dry_run=dry_run,
        key=idempotency_key,
        fingerprint=ops.request_hash("create-rows", body.model_dump(mode="json")),
    )
    return submit(rt, principal, body.rows, sub, response)


@router.post(
    "/bulk-changes/upload",
    status_code=201,
    response_model=BulkChangeOut,
    responses=CREATE_RESPONSES,
    tags=["bulk changes"],
    summary="Create a bulk change from an uploaded CSV, xlsx or JSON file (or preview it with dry_run=true)",
)
def create_from_file(
    principal: CurrentPrincipal,
    rt: Rt,
    response: Response,
    file: Annotated[
        UploadFile,
        File(description="CSV (Excel's: , ; or tab), an .xlsx workbook (first sheet), or a JSON list of objects"),
    ],
    service_provider_id: Annotated[int, Form(ge=1, le=MAX_ID)],
    status: Annotated[str, Form(max_length=50)],
    ignore_current_status: Annotated[bool, Form()] = False,
    idempotency_key: IdempotencyKey = None,
    dry_run: DryRun = False,
) -> Any:
    check_provider(principal, service_provider_id)
    fingerprint = ops.request_hash(
        "create-file", _upload_digest(file), service_provider_id, status, ignore_current_status
    )
    open_upload = functools.partial(
        _open_upload, file.file, file.filename, rt.settings, carrier_of(rt, service_provider_id)
    )
    try:
        open_upload().close()  # a file that cannot be read at all is refused before anything else
    except InputRefused as exc:
        raise refusals.unreadable(exc) from exc
    sub = Submission(status, service_provider_id, ignore_current_status, dry_run, idempotency_key, fingerprint)
    return submit(rt, principal, open_upload, sub, response)
