"""A provider's callback listener at its carrier, over REST (``/api/v1/providers/{id}/callbacks``) and from
the dashboard's providers page (``/ui/providers``, in ``api/dashboard/providers.py``): register it, list what
the carrier has, delete it.

ThingSpace providers are settled by CarrierService callbacks once their listener is registered; without one
every change waits for the deferred check. Control Center providers are read back: they have no listener,
and the answers say so. Every call reaches the carrier with the provider's own credentials
(``bulkchange.providers``); a provider outside the API key's tenant scope is refused (403) before that.

Handlers are plain ``def`` (FastAPI's thread pool), each carrier exchange run to completion there; they take the
application's runtime through ``RuntimeDep``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, HTTPException, Path, Response

from bulkchange.api.deps import RuntimeDep
from bulkchange.api.schemas import (
    MAX_ID,
    CallbackRegistrationIn,
    CallbackRegistrationOut,
    CallbacksOut,
    Problem,
)
from bulkchange.api.security import CurrentPrincipal
from bulkchange.carrier.errors import CarrierError
from bulkchange.domain.errors import BulkFailure
from bulkchange.engine.context import EngineContext
from bulkchange.providers import (
    NoCallbacks,
    callback_registrations,
    callback_states,
    delete_callback_listener,
    register_callback_listener,
)
from bulkchange.services.apikeys import Principal

IdPath = Annotated[int, Path(ge=1, le=MAX_ID)]
T = TypeVar("T")

_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": Problem, "description": "no callback credentials yet, or a URL that is not https"},
    401: {"model": Problem, "description": "no valid API key"},
    403: {"model": Problem, "description": "the service provider is not one this API key may use"},
    409: {"model": Problem, "description": "the provider's carrier sends no callbacks (Control Center is read back)"},
    404: {"model": Problem, "description": "the provider has no carrier account"},
    502: {"model": Problem, "description": "the carrier refused or could not be reached (its message is the detail)"},
}


def allowed(principal: Principal, provider_id: int) -> None:
    """A 403 unless the principal may use the service provider."""
    if not principal.may_use(provider_id):
        raise HTTPException(status_code=403, detail=f"service provider {provider_id} is not one this API key may use")


def at_carrier(call: Callable[[], T]) -> T:
    """Run one carrier exchange; its refusals as HTTP problems (see ``_RESPONSES``)."""
    try:
        return call()
    except KeyError as exc:
        raise HTTPException(status_code=404, detail=str(exc.args[0])) from exc
    except NoCallbacks as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from exc
    except ValueError as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from exc
    except (CarrierError, BulkFailure) as exc:
        raise HTTPException(status_code=502, detail=f"the carrier refused: {exc}") from exc


def _state(ctx: EngineContext, provider_id: int) -> CallbacksOut:
    found = asyncio.run(callback_registrations(ctx, provider_id))
    with ctx.session_factory() as session:
        states = callback_states(session, [provider_id])
    return CallbacksOut(
        service_provider_id=provider_id,
        registered_url=states[0].registered_url if states else None,
        registrations=[CallbackRegistrationOut(service=r.service, url=r.url, username=r.username) for r in found],
    )


_TAGS: list[str | Any] = ["service providers"]

router = APIRouter()


@router.get("/api/v1/providers/{provider_id}/callbacks", response_model=CallbacksOut, responses=_RESPONSES, tags=_TAGS)
def list_callbacks(rt: RuntimeDep, principal: CurrentPrincipal, provider_id: IdPath) -> CallbacksOut:
    """The callback listeners the carrier has registered for the provider's account (asked now)."""
    allowed(principal, provider_id)
    return at_carrier(lambda: _state(rt.ctx, provider_id))


@router.post(
    "/api/v1/providers/{provider_id}/callbacks",
    status_code=201,
    response_model=CallbacksOut,
    responses=_RESPONSES,
    tags=_TAGS,
)
def register(
    rt: RuntimeDep, principal: CurrentPrincipal, provider_id: IdPath, body: CallbackRegistrationIn
) -> CallbacksOut:
    """Register (or replace) the provider's CarrierService listener at ``url`` with its callback credentials."""
    allowed(principal, provider_id)
    at_carrier(lambda: asyncio.run(register_callback_listener(rt.ctx, provider_id, body.url)))
    return at_carrier(lambda: _state(rt.ctx, provider_id))


@router.delete("/api/v1/providers/{provider_id}/callbacks", status_code=204, responses=_RESPONSES, tags=_TAGS)
def delete(rt: RuntimeDep, principal: CurrentPrincipal, provider_id: IdPath) -> Response:
    """Delete the provider's CarrierService listener: its changes then wait for the deferred check."""
    allowed(principal, provider_id)
    at_carrier(lambda: asyncio.run(delete_callback_listener(rt.ctx, provider_id)))
    return Response(status_code=204)


def provider_callbacks_router() -> APIRouter:
    """The REST routes (the dashboard's providers page is part of ``dashboard_router``)."""
    return router
