"""What the bulk change's page posts: cancel unsent, pause, resume, retry failed and rerun billing steps.

Each checks the CSRF token and that the principal may see the bulk change (404 otherwise), then goes back
to the bulk change's page with a notice saying what happened (or why it was refused); a retry goes to the
bulk change it created.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Form, HTTPException
from fastapi.responses import RedirectResponse

from bulkchange.api.dashboard.common import CSRF, IdPath, require_bulk, who, with_notice
from bulkchange.api.deps import RuntimeDep
from bulkchange.api.security import CurrentPrincipal, scoped_idempotency_key
from bulkchange.engine import controls
from bulkchange.engine import operator_actions as ops
from bulkchange.engine.submit import SubmissionRefused
from bulkchange.runtime import Runtime
from bulkchange.services import billing_steps
from bulkchange.services.apikeys import Principal

router = APIRouter(include_in_schema=False)


@router.post("/ui/bulk-changes/{bulk_change_id}/cancel", dependencies=CSRF)
def cancel(rt: RuntimeDep, principal: CurrentPrincipal, bulk_change_id: IdPath) -> RedirectResponse:
    require_bulk(rt, principal, bulk_change_id)
    try:
        result = controls.cancel(rt.ctx, bulk_change_id, by=who(principal))
    except controls.NoSuchBulkChange as exc:
        raise HTTPException(status_code=404, detail="no such bulk change") from exc
    return with_notice(bulk_change_id, result.summary())


@router.post("/ui/bulk-changes/{bulk_change_id}/pause", dependencies=CSRF)
def pause(rt: RuntimeDep, principal: CurrentPrincipal, bulk_change_id: IdPath) -> RedirectResponse:
    return _control(rt, principal, bulk_change_id, controls.pause)


@router.post("/ui/bulk-changes/{bulk_change_id}/resume", dependencies=CSRF)
def resume(rt: RuntimeDep, principal: CurrentPrincipal, bulk_change_id: IdPath) -> RedirectResponse:
    return _control(rt, principal, bulk_change_id, controls.resume)


def _control(rt: Runtime, principal: Principal, bulk_change_id: int, action: Callable[..., str]) -> RedirectResponse:
    """Pause or resume: what was done, or "Refused: …" when it does not apply to the bulk change now."""
    require_bulk(rt, principal, bulk_change_id)
    try:
        done = action(rt.ctx, bulk_change_id, by=who(principal))
    except controls.NoSuchBulkChange as exc:
        raise HTTPException(status_code=404, detail="no such bulk change") from exc
    except controls.NotApplicable as exc:
        return with_notice(bulk_change_id, f"Refused: {exc}")
    return with_notice(bulk_change_id, done)


@router.post("/ui/bulk-changes/{bulk_change_id}/rerun-billing", dependencies=CSRF)
def rerun_billing(rt: RuntimeDep, principal: CurrentPrincipal, bulk_change_id: IdPath) -> RedirectResponse:
    """Every failed or waiting additional step of the bulk change, due again."""
    require_bulk(rt, principal, bulk_change_id)
    try:
        with rt.session_factory() as session:
            result = billing_steps.rerun_billing(session, bulk_change_id, by="dashboard")
    except billing_steps.NothingToRerun as exc:
        return with_notice(bulk_change_id, str(exc))
    return with_notice(bulk_change_id, f"{result.count} billing step(s) will run again")


@router.post("/ui/bulk-changes/{bulk_change_id}/retry", dependencies=CSRF)
def retry(
    rt: RuntimeDep,
    principal: CurrentPrincipal,
    bulk_change_id: IdPath,
    key: Annotated[str, Form(min_length=1, max_length=255)],
) -> RedirectResponse:
    """The failed changes again, as a new bulk change (once per idempotency key)."""
    require_bulk(rt, principal, bulk_change_id)
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
        return with_notice(bulk_change_id, str(exc))
    except SubmissionRefused as exc:
        return with_notice(bulk_change_id, f"retry refused ({exc.first_problem()})")
    return RedirectResponse(f"/ui/bulk-changes/{created.bulk_change_id}", status_code=303)
