"""Acting on a bulk change: cancel, pause, resume, re-run its additional (billing) steps, retry its failed
changes as a new bulk change. Another tenant's bulk change is not found (404); an action that does not apply
as the bulk change stands is 409."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import HTTPException, Response
from sqlalchemy.orm import Session

from bulkchange.api import problems, queries
from bulkchange.api.problems import ApiProblem
from bulkchange.api.rest import refusals
from bulkchange.api.rest.access import Rt, current, require_bulk, who
from bulkchange.api.rest.params import NOT_FOUND, IdempotencyKey, IdPath, Responses, api_router
from bulkchange.api.rest.submit import bulk_response
from bulkchange.api.schemas import (
    BulkChangeOut,
    CancelIn,
    CancelOut,
    ControlOut,
    Problem,
    Refused,
    RerunBillingIn,
    RerunBillingOut,
    RetryIn,
)
from bulkchange.api.security import CurrentPrincipal, scoped_idempotency_key
from bulkchange.domain.statuses import ChangeStatus
from bulkchange.engine import controls as bulk_controls
from bulkchange.engine import operator_actions as ops
from bulkchange.engine.submit import SubmissionRefused
from bulkchange.runtime import Runtime
from bulkchange.services import billing_steps

CONTROL_RESPONSES: Responses = {
    **NOT_FOUND,
    409: {"model": Problem, "description": "does not apply as the bulk change stands (the detail says why)"},
}

router = api_router()


@router.post(
    "/bulk-changes/{bulk_change_id}/cancel",
    response_model=CancelOut,
    responses=NOT_FOUND,
    tags=["bulk changes"],
)
def cancel(principal: CurrentPrincipal, rt: Rt, bulk_change_id: IdPath, body: CancelIn | None = None) -> CancelOut:
    """Cancel every change the carrier has not accepted (READY: never sent, or waiting to be sent again
    after a transient error); the changes at the carrier and the finished ones are counted, not touched."""
    require_bulk(rt, principal, bulk_change_id)
    try:
        result = bulk_controls.cancel(
            rt.ctx, bulk_change_id, change_ids=body.change_ids if body else None, by=who(principal)
        )
    except bulk_controls.NoSuchBulkChange as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from exc
    return CancelOut(
        cancelled=result.cancelled,
        at_carrier=result.at_carrier,
        finished=result.finished,
        not_cancellable=result.not_cancellable,
        bulk_change=current(rt, bulk_change_id),
    )


def _control(rt: Runtime, principal: CurrentPrincipal, bulk_change_id: int, action: Callable[..., str]) -> ControlOut:
    """Pause or resume: 404 for another tenant's bulk change, 409 when the action does not apply."""
    require_bulk(rt, principal, bulk_change_id)
    try:
        done = action(rt.ctx, bulk_change_id, by=who(principal))
    except bulk_controls.NoSuchBulkChange as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from exc
    except bulk_controls.NotApplicable as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from exc
    return ControlOut(detail=done, bulk_change=current(rt, bulk_change_id))


@router.post(
    "/bulk-changes/{bulk_change_id}/pause",
    response_model=ControlOut,
    responses=CONTROL_RESPONSES,
    tags=["bulk changes"],
)
def pause(principal: CurrentPrincipal, rt: Rt, bulk_change_id: IdPath) -> ControlOut:
    """Stop sending the bulk change's remaining changes; those already at the carrier finish."""
    return _control(rt, principal, bulk_change_id, bulk_controls.pause)


@router.post(
    "/bulk-changes/{bulk_change_id}/resume",
    response_model=ControlOut,
    responses=CONTROL_RESPONSES,
    tags=["bulk changes"],
)
def resume(principal: CurrentPrincipal, rt: Rt, bulk_change_id: IdPath) -> ControlOut:
    """Resume a paused bulk change, or one that failed at bulk level; 409 for anything else."""
    return _control(rt, principal, bulk_change_id, bulk_controls.resume)


@router.post(
    "/bulk-changes/{bulk_change_id}/rerun-billing",
    response_model=RerunBillingOut,
    responses={
        **NOT_FOUND,
        409: {"model": Problem, "description": "no additional step of the selection can be re-run"},
        422: {"model": Problem, "description": "a status that cannot be re-run"},
    },
    tags=["bulk changes"],
)
def rerun_billing(
    principal: CurrentPrincipal, rt: Rt, bulk_change_id: IdPath, body: RerunBillingIn | None = None
) -> RerunBillingOut:
    """Run failed (ERROR) or credential-waiting additional steps (Rev.io billing, customer rate plan) again:
    one device, a selection, or all of the bulk change. The carrier results are not touched."""
    require_bulk(rt, principal, bulk_change_id)
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


def _retry_statuses(body: RetryIn | None) -> frozenset[ChangeStatus]:
    """The statuses to retry (every failed one by default); 422 for one that is not a failure."""
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
    return statuses


@router.post(
    "/bulk-changes/{bulk_change_id}/retry",
    status_code=201,
    response_model=BulkChangeOut,
    responses={
        **NOT_FOUND,
        409: {"model": Problem, "description": "nothing left to retry, or Idempotency-Key conflict"},
        422: {"model": Refused, "description": "a device can no longer take the change; nothing was created"},
    },
    tags=["bulk changes"],
)
def retry(
    principal: CurrentPrincipal,
    rt: Rt,
    bulk_change_id: IdPath,
    response: Response,
    body: RetryIn | None = None,
    idempotency_key: IdempotencyKey = None,
) -> BulkChangeOut:
    """Retry only the failed changes, as a new bulk change linked to this one (retry_of_bulk_change_id)."""
    statuses = _retry_statuses(body)
    require_bulk(rt, principal, bulk_change_id)
    key = scoped_idempotency_key(principal, idempotency_key)
    fingerprint = ops.request_hash("retry", bulk_change_id, sorted(s.value for s in statuses))

    def create(session: Session) -> int:
        return ops.retry_failed(session, rt.transport, bulk_change_id, statuses=statuses, created_by="api")

    try:
        created = ops.create_or_replay(rt.session_factory, key, fingerprint, create)
    except (ops.NothingToRetry, ops.IdempotencyConflict) as exc:
        raise refusals.conflict(exc) from exc
    except SubmissionRefused as exc:
        raise refusals.refused(exc) from exc
    return bulk_response(rt, created, response)
