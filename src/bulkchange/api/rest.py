"""The REST API, ``/api/v1``: create (JSON rows or an uploaded file, ``Idempotency-Key``, ``?dry_run=true``),
list and read bulk changes, their device changes with log entries, CSV export, cancel, pause, resume, retry
failed.

Handlers are plain ``def``: FastAPI runs them in its thread pool, so the synchronous database work never
blocks the event loop that serves callbacks (and, with ``--with-worker``, runs the worker).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Header, HTTPException, Path, Query, Response, UploadFile
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BeforeValidator
from sqlalchemy.orm import Session

from bulkchange.api import problems, queries
from bulkchange.api.problems import ApiProblem
from bulkchange.api.schemas import (
    MAX_ID,
    BulkChangeOut,
    BulkChangePage,
    CancelIn,
    CancelOut,
    ChangeOut,
    ChangePage,
    ControlOut,
    CreateBulkChange,
    PreviewOut,
    Problem,
    Refused,
    RerunBillingIn,
    RerunBillingOut,
    RetryIn,
    ServiceProviderOut,
)
from bulkchange.api.security import CurrentPrincipal, owned_bulk, scoped_idempotency_key
from bulkchange.api.settings import ApiSettings
from bulkchange.domain.statuses import BulkStatus, ChangeStatus
from bulkchange.engine import controls
from bulkchange.engine import operator_actions as ops
from bulkchange.engine.outbox import WAKEUP_PENDING_WARNING, wakeup_pending
from bulkchange.engine.submit import SubmissionRefused, create_bulk_change, input_carrier, input_rows, open_input
from bulkchange.input import InputRefused, InputTooLarge, Table
from bulkchange.runtime import Runtime
from bulkchange.services import billing_steps, bulk_changes
from bulkchange.settings import Settings

MAX_PAGE = 500

IdPath = Annotated[int, Path(ge=1, le=MAX_ID)]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE)]
Offset = Annotated[int, Query(ge=0, le=MAX_ID)]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        description="same key and same request → the same bulk change; same key, other request → 409",
    ),
]

_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": Problem, "description": "no such bulk change"}}
_AUTH: dict[int | str, dict[str, Any]] = {401: {"model": Problem, "description": "no valid API key"}}
_FORBIDDEN_PROVIDER: dict[int | str, dict[str, Any]] = {
    403: {"model": Problem, "description": "the service provider is not one this API key may use"}
}
REPLAYED_HEADER = "Idempotent-Replayed"
"""Set to ``true`` when an Idempotency-Key replays the answer of the request that first used it."""
WAKEUP_PENDING_HEADER = "Wake-Up-Pending"
"""Set to ``true`` on a creation answer when the bulk change exists but its wake-up has not reached the queue."""

_CREATE_RESPONSES: dict[int | str, dict[str, Any]] = {
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
    **_FORBIDDEN_PROVIDER,
}


def _upper(value: Any) -> Any:
    """Filter values are matched whatever their case (``processing`` is ``PROCESSING``)."""
    if isinstance(value, str):
        return value.strip().upper()
    if isinstance(value, list):
        return [_upper(v) for v in value]
    return value


def _who(principal: CurrentPrincipal) -> str:
    """Who acted, for the audit rows: the API key's id (never the key)."""
    return f"api-key {principal.key_id}"


class _Unclean(ValueError):
    pass


def _check_text(value: Any) -> None:
    """Refuse NUL characters and lone surrogates anywhere (no database stores them)."""
    if isinstance(value, str):
        if "\x00" in value:
            raise _Unclean("text must not contain NUL characters")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise _Unclean("text must be valid Unicode") from exc
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_text(k)
            _check_text(v)
    elif isinstance(value, list):
        for v in value:
            _check_text(v)


def _refused(exc: SubmissionRefused) -> ApiProblem:
    """422: every row problem in ``errors`` (row and field each), nothing created."""
    report = exc.report
    errors = [e.model_dump(mode="json") for e in queries.problems_out(report.problems)]
    return ApiProblem(
        422, str(exc), type=problems.REFUSED, errors=errors, rows=report.rows, errors_omitted=report.omitted
    )


def _not_clean(exc: _Unclean) -> ApiProblem:
    return ApiProblem(422, str(exc), type=problems.REFUSED, errors=[{"row": 0, "field": "rows", "message": str(exc)}])


def _unreadable(exc: InputRefused) -> ApiProblem:
    """A file that cannot be read as rows: 413 over a limit, else 400, the line named in the detail."""
    where = [{"row": exc.problem.line, "field": exc.problem.column, "message": exc.problem.message}]
    if isinstance(exc, InputTooLarge):
        return ApiProblem(413, str(exc), type=problems.TOO_LARGE, errors=where)
    return ApiProblem(400, str(exc), type=problems.UNREADABLE_FILE, errors=where)


def _conflict(exc: Exception) -> ApiProblem:
    return ApiProblem(409, str(exc), type=problems.CONFLICT)


def _upload_digest(upload: UploadFile) -> str:
    """The uploaded file's SHA-256 (the Idempotency-Key's fingerprint), read in chunks, then rewound."""
    upload.file.seek(0)
    digest = hashlib.file_digest(upload.file, "sha256").hexdigest()  # type: ignore[arg-type]
    upload.file.seek(0)
    return digest


def _opener(rows: list[dict[str, Any]], settings: Settings, carrier: str) -> Callable[[], Table]:
    """What reads a JSON body's rows as the input reader reads a JSON file's (``carrier``'s columns)."""
    return lambda: input_rows(rows, settings=settings, carrier=carrier)


def _bulk_response(rt: Runtime, created: ops.Created, response: Response) -> BulkChangeOut:
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


def rest_router(rt: Runtime, settings: ApiSettings) -> APIRouter:
    router = APIRouter(prefix="/api/v1", responses=_AUTH)

    def check_provider(principal: CurrentPrincipal, service_provider_id: int) -> None:
        if not principal.may_use(service_provider_id):
            raise HTTPException(
                status_code=403, detail=f"service provider {service_provider_id} is not one this API key may use"
            )

    def carrier_of(service_provider_id: int) -> str:
        """The carrier whose columns the provider's rows are read with."""
        with rt.session_factory() as session:
            return input_carrier(session, service_provider_id)

    def require_bulk(principal: CurrentPrincipal, bulk_change_id: int) -> None:
        with rt.session_factory() as session:
            if owned_bulk(session, principal, bulk_change_id) is None:
                raise HTTPException(status_code=404, detail=f"no bulk change {bulk_change_id}")

    def submit(
        principal: CurrentPrincipal,
        rows: list[dict[str, Any]] | Callable[[], Table],
        *,
        status: str,
        service_provider_id: int,
        ignore_current_status: bool,
        dry_run: bool,
        key: str | None,
        fingerprint: str,
        response: Response,
    ) -> Any:
        """``rows``: a JSON body's rows, or what opens the uploaded file (again, each time it is read)."""
        check_provider(principal, service_provider_id)
        key = scoped_idempotency_key(principal, key)
        try:
            if not callable(rows):
                _check_text(rows)
            _check_text(status)
        except _Unclean as exc:
            raise _not_clean(exc) from exc
        open_rows = rows if callable(rows) else _opener(rows, rt.settings, carrier_of(service_provider_id))
        if dry_run:
            try:
                with open_rows() as table, rt.session_factory() as session:
                    p = ops.preview(
                        session,
                        table,
                        status=status,
                        service_provider_id=service_provider_id,
                        ignore_current_status=ignore_current_status,
                    )
            except InputRefused as exc:
                raise _unreadable(exc) from exc
            return JSONResponse(status_code=200, content=queries.preview_out(p).model_dump(mode="json"))

        def create(session: Session) -> int:
            with open_rows() as table:
                return create_bulk_change(
                    session,
                    rt.transport,
                    table,
                    status=status,
                    service_provider_id=service_provider_id,
                    ignore_current_status=ignore_current_status,
                    created_by="api",
                )

        try:
            created = ops.create_or_replay(rt.session_factory, key, fingerprint, create)
        except SubmissionRefused as exc:
            raise _refused(exc) from exc
        except InputRefused as exc:
            raise _unreadable(exc) from exc
        except ops.IdempotencyConflict as exc:
            raise _conflict(exc) from exc
        return _bulk_response(rt, created, response)

    @router.get("/service-providers", response_model=list[ServiceProviderOut], tags=["service providers"])
    def service_providers(principal: CurrentPrincipal) -> list[ServiceProviderOut]:
        """Service providers this API key may create bulk changes for."""
        with rt.session_factory() as session:
            found = bulk_changes.providers_in(session, principal.service_provider_ids)
        return [ServiceProviderOut(id=p.id, name=p.name, callbacks=p.callbacks) for p in found]

    @router.post(
        "/bulk-changes",
        status_code=201,
        response_model=BulkChangeOut,
        responses=_CREATE_RESPONSES,
        tags=["bulk changes"],
        summary="Create a bulk change from JSON rows (or preview it with dry_run=true)",
    )
    def create_from_rows(
        principal: CurrentPrincipal,
        body: CreateBulkChange,
        response: Response,
        idempotency_key: IdempotencyKey = None,
        dry_run: Annotated[bool, Query(description="validate and plan only; nothing is written")] = False,
    ) -> Any:
        fingerprint = ops.request_hash("create-rows", body.model_dump(mode="json"))
        return submit(
            principal,
            body.rows,
            status=body.status,
            service_provider_id=body.service_provider_id,
            ignore_current_status=body.ignore_current_status,
            dry_run=dry_run,
            key=idempotency_key,
            fingerprint=fingerprint,
            response=response,
        )

    @router.post(
        "/bulk-changes/upload",
        status_code=201,
        response_model=BulkChangeOut,
        responses=_CREATE_RESPONSES,
        tags=["bulk changes"],
        summary="Create a bulk change from an uploaded CSV, xlsx or JSON file (or preview it with dry_run=true)",
    )
    def create_from_file(
        principal: CurrentPrincipal,
        response: Response,
        file: Annotated[
            UploadFile,
            File(description="CSV (Excel's: , ; or tab), an .xlsx workbook (first sheet), or a JSON list of objects"),
        ],
        service_provider_id: Annotated[int, Form(ge=1, le=MAX_ID)],
        status: Annotated[str, Form(max_length=50)],
        ignore_current_status: Annotated[bool, Form()] = False,
        idempotency_key: IdempotencyKey = None,
        dry_run: Annotated[bool, Query(description="validate and plan only; nothing is written")] = False,
    ) -> Any:
        check_provider(principal, service_provider_id)
        fingerprint = ops.request_hash(
            "create-file", _upload_digest(file), service_provider_id, status, ignore_current_status
        )

        carrier = carrier_of(service_provider_id)

        def open_upload() -> Table:
            file.file.seek(0)
            return open_input(file.file, settings=rt.settings, filename=file.filename, carrier=carrier)

        try:
            open_upload().close()  # a file that cannot be read at all is refused before anything else
        except InputRefused as exc:
            raise _unreadable(exc) from exc
        return submit(
            principal,
            open_upload,
            status=status,
            service_provider_id=service_provider_id,
            ignore_current_status=ignore_current_status,
            dry_run=dry_run,
            key=idempotency_key,
            fingerprint=fingerprint,
            response=response,
        )

    @router.get("/bulk-changes", response_model=BulkChangePage, tags=["bulk changes"])
    def list_bulk_changes(
        principal: CurrentPrincipal,
        status: Annotated[BulkStatus | None, BeforeValidator(_upper), Query(description="any case")] = None,
        service_provider_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
        limit: Limit = 50,
        offset: Offset = 0,
    ) -> BulkChangePage:
        """Bulk changes, newest first, with their device changes counted by status."""
        with rt.session_factory() as session:
            items, total = queries.list_bulk_changes(
                session,
                status=status.value if status else None,
                service_provider_id=service_provider_id,
                limit=limit,
                offset=offset,
                service_provider_ids=principal.service_provider_ids,
            )
        return BulkChangePage(items=items, total=total, limit=limit, offset=offset)

    @router.get(
        "/bulk-changes/{bulk_change_id}", response_model=BulkChangeOut, responses=_NOT_FOUND, tags=["bulk changes"]
    )
    def read_bulk_change(principal: CurrentPrincipal, bulk_change_id: IdPath) -> BulkChangeOut:
        with rt.session_factory() as session:
            owned = owned_bulk(session, principal, bulk_change_id)
            out = queries.get_bulk_change(session, bulk_change_id) if owned is not None else None
        if out is None:
            raise HTTPException(status_code=404, detail=f"no bulk change {bulk_change_id}")
        return out

    @router.get(
        "/bulk-changes/{bulk_change_id}/changes",
        response_model=ChangePage,
        responses=_NOT_FOUND,
        tags=["device changes"],
    )
    def list_changes(
        principal: CurrentPrincipal,
        bulk_change_id: IdPath,
        status: Annotated[
            list[ChangeStatus] | None, BeforeValidator(_upper), Query(description="any of these statuses, any case")
        ] = None,
        iccid: Annotated[str | None, Query(max_length=30)] = None,
        include_logs: Annotated[bool, Query(description="each change's DeviceBulkChangeLog entries")] = True,
        limit: Limit = 50,
        offset: Offset = 0,
    ) -> ChangePage:
        """The device changes of one bulk change, filtered by status, paged, with their log entries."""
        with rt.session_factory() as session:
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
    def read_change(principal: CurrentPrincipal, bulk_change_id: IdPath, change_id: IdPath) -> ChangeOut:
        with rt.session_factory() as session:
            owned = owned_bulk(session, principal, bulk_change_id)
            out = queries.get_change(session, bulk_change_id, change_id) if owned is not None else None
        if out is None:
            raise HTTPException(status_code=404, detail=f"no change {change_id} in bulk change {bulk_change_id}")
        return out

    @router.get(
        "/bulk-changes/{bulk_change_id}/export.csv",
        response_class=StreamingResponse,
        responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}}}, **_NOT_FOUND},
        tags=["bulk changes"],
    )
    def export(principal: CurrentPrincipal, bulk_change_id: IdPath) -> StreamingResponse:
        """Every device change's result as CSV (one row per device)."""
        require_bulk(principal, bulk_change_id)
        return StreamingResponse(
            queries.export_csv(rt.session_factory, bulk_change_id),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="bulk-change-{bulk_change_id}.csv"'},
        )

    def current(bulk_change_id: int) -> BulkChangeOut:
        with rt.session_factory() as session:
            out = queries.get_bulk_change(session, bulk_change_id)
        assert out is not None
        return out

    @router.post(
        "/bulk-changes/{bulk_change_id}/cancel",
        response_model=CancelOut,
        responses=_NOT_FOUND,
        tags=["bulk changes"],
    )
    def cancel(principal: CurrentPrincipal, bulk_change_id: IdPath, body: CancelIn | None = None) -> CancelOut:
        """Cancel every change the carrier has not accepted (READY: never sent, or waiting to be sent again
        after a transient error); the changes at the carrier and the finished ones are counted, not touched."""
        require_bulk(principal, bulk_change_id)
        try:
            result = controls.cancel(
                rt.ctx, bulk_change_id, change_ids=body.change_ids if body else None, by=_who(principal)
            )
        except controls.NoSuchBulkChange as exc:
            raise HTTPException(status_code=404, detail=str(exc)) from exc
        return CancelOut(
            cancelled=result.cancelled,
            at_carrier=result.at_carrier,
            finished=result.finished,
            not_cancellable=result.not_cancellable,
            bulk_change=current(bulk_change_id),
        )

    def control(principal: CurrentPrincipal, bulk_change_id: int, action: Callable[..., str]) -> ControlOut:
        require_bulk(principal, bulk_change_id)
        try:
            done = action(rt.ctx, bulk_change_id, by=_who(principal))
        except controls.NoSuchBulkChange as exc:
            raise HTTPException(status_code=404, detail=str(exc)) from exc
        except controls.NotApplicable as exc:
            raise HTTPException(status_code=409, detail=str(exc)) from exc
        return ControlOut(detail=done, bulk_change=current(bulk_change_id))

    _CONTROL_RESPONSES: dict[int | str, dict[str, Any]] = {
        **_NOT_FOUND,
        409: {"model": Problem, "description": "does not apply as the bulk change stands (the detail says why)"},
    }

    @router.post(
        "/bulk-changes/{bulk_change_id}/pause",
        response_model=ControlOut,
        responses=_CONTROL_RESPONSES,
        tags=["bulk changes"],
    )
    def pause(principal: CurrentPrincipal, bulk_change_id: IdPath) -> ControlOut:
        """Stop sending the bulk change's remaining changes; those already at the carrier finish."""
        return control(principal, bulk_change_id, controls.pause)

    @router.post(
        "/bulk-changes/{bulk_change_id}/resume",
        response_model=ControlOut,
        responses=_CONTROL_RESPONSES,
        tags=["bulk changes"],
    )
    def resume(principal: CurrentPrincipal, bulk_change_id: IdPath) -> ControlOut:
        """Resume a paused bulk change, or one that failed at bulk level; 409 for anything else."""
        return control(principal, bulk_change_id, controls.resume)

    @router.post(
        "/bulk-changes/{bulk_change_id}/rerun-billing",
        response_model=RerunBillingOut,
        responses={
            **_NOT_FOUND,
            409: {"model": Problem, "description": "no additional step of the selection can be re-run"},
            422: {"model": Problem, "description": "a status that cannot be re-run"},
        },
        tags=["bulk changes"],
    )
    def rerun_billing(
        principal: CurrentPrincipal, bulk_change_id: IdPath, body: RerunBillingIn | None = None
    ) -> RerunBillingOut:
        """Run failed (ERROR) or credential-waiting additional steps (Rev.io billing, customer rate plan) again:
        one device, a selection, or all of the bulk change. The carrier results are not touched."""
        require_bulk(principal, bulk_change_id)
        body = body or RerunBillingIn()
        try:
            with rt.session_factory() as session:
                result = billing_steps.rerun_billing(
                    session,
                    bulk_change_id,
                    change_ids=body.change_ids or (),
                    iccids=body.iccids or (),
                    statuses=body.statuses,
                    by="api",
                )
                out = queries.get_bulk_change(session, bulk_change_id)
        except KeyError as exc:
            raise HTTPException(status_code=404, detail=f"no bulk change {bulk_change_id}") from exc
        except billing_steps.NothingToRerun as exc:
            raise HTTPException(status_code=409, detail=str(exc)) from exc
        except ValueError as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from exc
        assert out is not None
        return RerunBillingOut(rerun=result.change_ids, bulk_change=out)

    @router.post(
        "/bulk-changes/{bulk_change_id}/retry",
        status_code=201,
        response_model=BulkChangeOut,
        responses={
            **_NOT_FOUND,
            409: {"model": Problem, "description": "nothing left to retry, or Idempotency-Key conflict"},
            422: {"model": Refused, "description": "a device can no longer take the change; nothing was created"},
        },
        tags=["bulk changes"],
    )
    def retry(
        principal: CurrentPrincipal,
        bulk_change_id: IdPath,
        response: Response,
        body: RetryIn | None = None,
        idempotency_key: IdempotencyKey = None,
    ) -> Any:
        """Retry only the failed changes, as a new bulk change linked to this one (retry_of_bulk_change_id)."""
        statuses = frozenset(body.statuses) if body and body.statuses else ops.FAILED_STATUSES
        not_failed = statuses - ops.FAILED_STATUSES
        if not_failed:
            names = ", ".join(sorted(s.value for s in not_failed))
            raise ApiProblem(
                422,
                f"only failed changes can be retried, not {names}",
                type=problems.REFUSED,
                errors=[{"row": 0, "field": "statuses", "message": f"not a failed status: {names}"}],
            )
        require_bulk(principal, bulk_change_id)
        idempotency_key = scoped_idempotency_key(principal, idempotency_key)
        fingerprint = ops.request_hash("retry", bulk_change_id, sorted(s.value for s in statuses))

        def create(session: Session) -> int:
            return ops.retry_failed(session, rt.transport, bulk_change_id, statuses=statuses, created_by="api")

        try:
            created = ops.create_or_replay(rt.session_factory, idempotency_key, fingerprint, create)
        except (ops.NothingToRetry, ops.IdempotencyConflict) as exc:
            raise _conflict(exc) from exc
        except SubmissionRefused as exc:
            raise _refused(exc) from exc
        return _bulk_response(rt, created, response)

    return router
