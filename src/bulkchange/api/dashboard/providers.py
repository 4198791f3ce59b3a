"""``/ui/providers`` — the service providers the API key may use and their CarrierService listener: register
(or replace) it at a URL, or delete it; each form goes back to the page with a notice of what happened (or
why the carrier refused)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from bulkchange.api.dashboard.common import CSRF, IdPath
from bulkchange.api.deps import RuntimeDep
from bulkchange.api.provider_callbacks import allowed, at_carrier
from bulkchange.api.security import CurrentPrincipal
from bulkchange.api.templating import render
from bulkchange.providers import callback_states, delete_callback_listener, register_callback_listener

router = APIRouter(include_in_schema=False)


def _notice(text: str) -> RedirectResponse:
    return RedirectResponse(f"/ui/providers?{urlencode({'notice': text[:300]})}", status_code=303)


def _from_form(provider_id: int, call: Callable[[], Any], done: str) -> RedirectResponse:
    """Run one carrier exchange; back to the page with ``done``, or with the carrier's refusal."""
    try:
        at_carrier(call)
    except HTTPException as exc:
        return _notice(f"service provider {provider_id}: {exc.detail}")
    return _notice(done)


@router.get("/ui/providers", response_class=HTMLResponse)
def providers_page(
    request: Request, rt: RuntimeDep, principal: CurrentPrincipal, notice: str | None = None
) -> HTMLResponse:
    with rt.reading() as session:
        states = callback_states(session, principal.service_provider_ids)
    return render(request, "providers.html", {"providers": states, "notice": notice, "nav": "providers"})


@router.post("/ui/providers/{provider_id}/callbacks", dependencies=CSRF)
def register_form(
    rt: RuntimeDep,
    principal: CurrentPrincipal,
    provider_id: IdPath,
    url: Annotated[str, Form(min_length=1, max_length=400)],
) -> RedirectResponse:
    allowed(principal, provider_id)
    return _from_form(
        provider_id,
        lambda: asyncio.run(register_callback_listener(rt.ctx, provider_id, url)),
        f"service provider {provider_id}: CarrierService listener registered",
    )


@router.post("/ui/providers/{provider_id}/callbacks/delete", dependencies=CSRF)
def delete_form(rt: RuntimeDep, principal: CurrentPrincipal, provider_id: IdPath) -> RedirectResponse:
    allowed(principal, provider_id)
    return _from_form(
        provider_id,
        lambda: asyncio.run(delete_callback_listener(rt.ctx, provider_id)),
        f"service provider {provider_id}: CarrierService listener deleted; its changes wait for the deferred check",
    )
