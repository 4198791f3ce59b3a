"""The ThingSpace CarrierService callback receiver: ThingSpace POSTs one JSON document per device here.

* **Who may call.** Everything about the caller and the body is decided by ``engine.callbacks.gate`` — the
  same gate the Lambda handler uses, so both answer alike: the source allow-list (403, before the body is
  read), the body limit (413, counted as it arrives), the JSON nesting limit and shape (400), the URL's
  provider and *its* callback credentials, echoed by ThingSpace in the body and compared in constant time
  (401), then the callback's own fields (400). The application refuses to start when a provider's
  credentials are missing or half-configured (``check_callback_setup``), unless ``insecure``.
* **Duplicates.** ThingSpace re-sends a callback it thinks was not acknowledged (``callbackCount``); the
  engine records each in ``ThingSpaceCallBackResponseLog`` (unique requestId + ICCID) so a replay is a
  no-op answered 200 with ``result: duplicate``.
* **Quickly, and nothing acknowledged is lost.** The callback is committed before the 200 — together with
  every other callback that arrived meanwhile (``engine.callback_intake``: group commit, so a burst of
  10,000 is a few hundred transactions) — and applied to its change later, in batches, by a background
  applier (``engine.callback_applier``). Anything not a callback (not JSON, no requestId, no device) is 400
  and changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import structlog
from fastapi import APIRouter, FastAPI, Path, Request
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel
from sqlalchemy.exc import SQLAlchemyError

from bulkchange.api.problems import problem_response
from bulkchange.api.schemas import Problem
from bulkchange.engine.callbacks.applier import CallbackApplier
from bulkchange.engine.callbacks.gate import CallbackGate, CallbackPolicy, CallbackRefused, check_callback_setup
from bulkchange.engine.callbacks.intake import CallbackIntake
from bulkchange.engine.engine import Engine
from bulkchange.metrics import CALLBACKS_RECEIVED

log = structlog.get_logger("bulkchange.callbacks")

MAX_ID = 2**31 - 1


class CallbackAck(BaseModel):
    """What the receiver did with the callback."""

    result: str  # stored (committed; applied to its change by the applier) | duplicate


_CALLBACK_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "A CarrierService callback as ThingSpace POSTs it (one per device).",
    "required": ["requestId", "deviceIds"],
    "properties": {
        "username": {"type": "string"},
        "password": {"type": "string"},
        "requestId": {"type": "string", "minLength": 1},
        "deviceIds": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["id", "kind"],
                "properties": {"id": {"type": "string"}, "kind": {"type": "string"}},
            },
        },
        "deviceResponse": {"type": "object"},
        "faultResponse": {
            "type": "object",
            "properties": {"faultcode": {"type": "string"}, "faultstring": {"type": "string"}},
        },
        "status": {"type": "string"},
        "callbackCount": {"type": "integer"},
        "maxCallbackThreshold": {"type": "integer"},
    },
}


def provider_id_of(raw: object) -> int | None:
    """The path's provider id when it is plain ASCII digits in 1..MAX_ID, else None."""
    if not isinstance(raw, str) or not raw.isascii() or not raw.isdigit() or len(raw) > 10:
        return None
    value = int(raw)
    return value if 1 <= value <= MAX_ID else None


class LeanCallbackRoute(APIRoute):
    """The callback route, served without FastAPI's per-request dependency solving.

    ThingSpace sends one callback per device, 10,000 in a burst, and the receiver's CPU per callback is
    what bounds the burst, and FastAPI's request machinery (resolving the ``Request`` and the validated path
    parameter for each call) is a large share of it (docs/benchmarks.md). A well-formed provider id (plain
    digits, in range) goes straight to the endpoint; anything else goes through FastAPI's own handler, so
    its validation answers (422) stay exactly as documented.
    The endpoint's signature still documents the route in the OpenAPI schema (FastAPI's documented
    extension point: a custom ``APIRoute`` overriding ``get_route_handler``).
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        full = super().get_route_handler()
        endpoint = self.endpoint

        async def handler(request: Request) -> Response:
            provider = provider_id_of(request.path_params.get("service_provider_id"))
            if provider is None:
                return await full(request)
            response: Response = await endpoint(request, provider)
            return response

        return handler


class CallbackReceiver:
    """What a receiver process runs besides its route: the gate, the group-commit intake and the batch
    applier.

    ``start`` / ``stop`` belong in the application's lifespan. ``start`` runs the receivers' start-up check
    (``check_callback_setup``) and raises ``CallbackConfigError``, so the application does not start, when
    a provider's callback credentials are not in order (an unreachable database only skips the check);
    ``stop`` answers every request still waiting for its commit, then applies what was stored last.
    Building it touches no database.
    """

    def __init__(self, engine: Engine, *, insecure: bool = False) -> None:
        ctx = engine.ctx
        self._ctx = ctx
        self.insecure = insecure
        policy = CallbackPolicy.from_settings(ctx.settings, insecure=insecure)
        self.gate = CallbackGate(ctx.session_factory, policy, resolve=ctx.secret_resolver)
        self.intake = CallbackIntake(ctx)
        self.applier = CallbackApplier(ctx)

    def check(self) -> None:
        """The start-up check alone (``serve`` runs it before the server, to refuse with one line)."""
        ctx = self._ctx
        check_callback_setup(ctx.session_factory, ctx.settings, insecure=self.insecure, resolve=ctx.secret_resolver)

    async def start(self) -> None:
        try:
            await asyncio.to_thread(self.check)
        except SQLAlchemyError as exc:
            # The database is what is down, not the configuration: serve anyway (/readyz says not ready);
            # every callback is still checked against its provider's credentials as it arrives.
            log.warning("callback credentials not checked at start-up: database unavailable", error=type(exc).__name__)
        await self.applier.start()

    async def stop(self) -> None:
        await self.intake.drain()
        await self.applier.stop()


async def _read_body(request: Request, gate: CallbackGate) -> bytes:
    """The body, refused (413) as soon as it grows past the limit — also without a Content-Length."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit():
        gate.check_size(int(declared))
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        gate.check_size(size)
        chunks.append(chunk)
    return b"".join(chunks)


def callback_router(receiver: CallbackReceiver) -> APIRouter:
    """The route: the gate's checks, then stores through the receiver's intake and nudges its applier."""
    gate, intake, applier = receiver.gate, receiver.intake, receiver.applier
    router = APIRouter(tags=["callbacks"], route_class=LeanCallbackRoute)

    @router.post(
        "/callbacks/thingspace/{service_provider_id}",
        response_model=CallbackAck,
        summary="Receive a ThingSpace CarrierService callback",
        responses={
            400: {"model": Problem, "description": "not a CarrierService callback (or nested too deep)"},
            401: {"model": Problem, "description": "echoed username/password are not this provider's"},
            403: {"model": Problem, "description": "source address not allowed"},
            413: {"model": Problem, "description": "body too large"},
        },
        openapi_extra={
            "requestBody": {"required": True, "content": {"application/json": {"schema": _CALLBACK_SCHEMA}}}
        },
    )
    async def receive(request: Request, service_provider_id: int = Path(ge=1, le=MAX_ID)) -> JSONResponse:
        try:
            gate.check_source(request.client.host if request.client else None, service_provider_id)
            payload = gate.parse(await _read_body(request, gate))
            if gate.needs_lookup(service_provider_id):
                await asyncio.to_thread(gate.lookup, service_provider_id)
            message = gate.admit(service_provider_id, payload)
        except CallbackRefused as refused:
            CALLBACKS_RECEIVED.labels(refused.reason).inc()
            return problem_response(refused.status, refused.detail)
        # Stored (committed with whatever else arrived meanwhile), then answered; applied in batches later.
        stored = await intake.store(payload, message, service_provider_id=service_provider_id)
        applier.notify()
        result = "stored" if stored is not None else "duplicate"
        CALLBACKS_RECEIVED.labels(result).inc()
        log.debug("callback", result=result, request_id=message.request_id, service_provider_id=service_provider_id)
        # A ready response: FastAPI skips validating and serializing it through the response model again
        # (a measurable share of the receiver's CPU per callback); the model still documents it.
        return JSONResponse({"result": result})

    return router


def callback_app(engine: Engine, *, insecure: bool = False) -> FastAPI:
    """A minimal application serving only the callback receiver (the demo, the benchmarks, engine tests).

    It stores each callback (group commit) and answers; a background applier applies them in batches.
    Its start-up fails with ``CallbackConfigError`` when a provider's callback credentials are not in order
    (``check_callback_setup``; ``insecure`` admits providers without any — loopback development only).
    """
    receiver = CallbackReceiver(engine, insecure=insecure)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await receiver.start()
        try:
            yield
        finally:
            await receiver.stop()

    app = FastAPI(title="bulkchange callbacks", docs_url=None, redoc_url=None, lifespan=lifespan)
    app.include_router(callback_router(receiver))
    return app
