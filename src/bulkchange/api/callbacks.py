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
  every other callback that arrived meanwhile (``engine.callbacks.intake``: group commit, so a burst of
  10,000 is a few hundred transactions) — and applied to its change later, in batches, by a background
  applier (``engine.callbacks.applier``). Anything not a callback (not JSON, no requestId, no device) is 400
  and changes nothing; a callback the database did not take is 503, so the carrier sends it again.
* **Cheaply.** ``CallbackEndpoint`` answers the callback POSTs straight from ASGI, ahead of the
  application's middleware and routing (``ReceiverApp``), with the same checks and headers; the FastAPI
  route stays for the documentation and for provider ids that are not plain digits.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import structlog
from fastapi import APIRouter, FastAPI, Path, Request
from fastapi.responses import Response
from pydantic import BaseModel
from sqlalchemy.exc import SQLAlchemyError
from starlette.types import Receive, Scope, Send

from bulkchange.api.problems import MEDIA_TYPE as PROBLEM_MEDIA_TYPE
from bulkchange.api.problems import problem_bytes
from bulkchange.api.schemas import Problem
from bulkchange.api.security import security_headers
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


class ClientGone(Exception):
    """The caller disconnected before its body was read: nothing to answer."""


async def _asgi_chunks(receive: Receive) -> AsyncIterator[bytes]:
    """The request body as it arrives, from the raw ASGI ``receive``."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        yield message.get("body", b"")
        if not message.get("more_body", False):
            return


async def _read_body(chunks: AsyncIterator[bytes], declared: str | None, gate: CallbackGate) -> bytes:
    """The body, refused (413) as soon as it grows past the limit — also without a Content-Length."""
    if declared is not None:
        gate.check_size(int(declared) if declared.isdigit() else gate.policy.max_body_bytes + 1)
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        gate.check_size(size)
        parts.append(chunk)
    return parts[0] if len(parts) == 1 else b"".join(parts)


_ANSWERS = {
    result: json.dumps({"result": result}, separators=(",", ":")).encode() for result in ("stored", "duplicate")
}
_JSON = b"application/json"
_PROBLEM = PROBLEM_MEDIA_TYPE.encode()


class CallbackReceiver:
    """What a receiver process runs for its callbacks: the gate, the group-commit intake, the batch applier.

    ``take`` answers one callback (whichever way it came in); ``start`` / ``stop`` belong in the
    application's lifespan. ``start`` runs the receivers' start-up check (``check_callback_setup``) and
    raises ``CallbackConfigError``, so the application does not start, when a provider's callback
    credentials are not in order (an unreachable database only skips the check); ``stop`` answers every
    request still waiting for its commit, then applies what was stored last. Building it touches no database.
    """

    def __init__(self, engine: Engine, *, insecure: bool = False) -> None:
        ctx = engine.ctx
        self._ctx = ctx
        self.insecure = insecure
        policy = CallbackPolicy.from_settings(ctx.settings, insecure=insecure)
        self.gate = CallbackGate(ctx.session_factory, policy, resolve=ctx.secret_resolver)
        self.intake = CallbackIntake(ctx)
        self.applier = CallbackApplier(ctx)
        self._counters: dict[str, Any] = {}

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

    def _count(self, result: str) -> None:
        counter = self._counters.get(result)
        if counter is None:
            counter = self._counters[result] = CALLBACKS_RECEIVED.labels(result)
        counter.inc()

    async def take(
        self, source: str | None, service_provider_id: int, declared: str | None, chunks: AsyncIterator[bytes]
    ) -> tuple[int, bytes, bytes]:
        """One callback POSTed to the provider's URL: (status, body, media type) of the answer. A 200 goes out
        only once the callback is committed (with whatever else arrived meanwhile); it is applied later."""
        gate = self.gate
        try:
            gate.check_source(source, service_provider_id)
            payload = gate.parse(await _read_body(chunks, declared, gate))
            if gate.needs_lookup(service_provider_id):
                await asyncio.to_thread(gate.lookup, service_provider_id)
            message = gate.admit(service_provider_id, payload)
        except CallbackRefused as refused:
            self._count(refused.reason)
            return refused.status, problem_bytes(refused.status, refused.detail), _PROBLEM
        stored = await self.intake.store(payload, message, service_provider_id=service_provider_id)
        self.applier.notify()
        result = "stored" if stored is not None else "duplicate"
        self._count(result)
        log.debug("callback", result=result, request_id=message.request_id, service_provider_id=service_provider_id)
        return 200, _ANSWERS[result], _JSON


_PATH = re.compile(r"/callbacks/thingspace/([0-9]{1,10})")


class CallbackEndpoint:
    """``POST /callbacks/thingspace/{provider}`` answered straight from ASGI, before any middleware or routing.

    ThingSpace sends one callback per device, 10,000 in a burst, and the receiver's CPU per callback is
    what bounds the burst; FastAPI's middleware stack, routing and request objects were most of it
    (docs/benchmarks.md). Every check stays, in ``CallbackReceiver.take`` (the gate: source, size, JSON,
    credentials; the intake: deduplication and the commit before the 200); the answers carry the security
    headers every other answer carries. Only a well-formed provider id (plain digits, in range) comes
    here; anything else is left to the application's own route, whose validation answers (422) stay as
    documented.
    """

    def __init__(self, receiver: CallbackReceiver) -> None:
        self.receiver = receiver
        self._headers = {
            https: [
                (k.lower().encode("latin-1"), v.encode("latin-1"))
                for k, v in security_headers("/callbacks/", https=https)
            ]
            for https in (False, True)
        }

    @staticmethod
    def provider_of(scope: Scope) -> int | None:
        """The provider of a callback POST this endpoint answers, else None."""
        if scope["type"] != "http" or scope["method"] != "POST":
            return None
        match = _PATH.fullmatch(scope["path"])
        return provider_id_of(match.group(1)) if match else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send, service_provider_id: int) -> None:
        client = scope.get("client")
        declared = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"content-length"), None)
        try:
            status, body, media = await self.receiver.take(
                client[0] if client else None, service_provider_id, declared, _asgi_chunks(receive)
            )
        except ClientGone:
            return
        except Exception as exc:  # not stored (the database, or a bug): never a 2xx, the carrier sends it again
            if isinstance(exc, SQLAlchemyError):
                log.warning("callback not stored: database error", error=type(exc).__name__)
            else:
                log.exception("callback not stored", service_provider_id=service_provider_id)
            status, body, media = 503, problem_bytes(503, "callback not stored; send it again"), _PROBLEM
        headers = [
            (b"content-type", media),
            (b"content-length", str(len(body)).encode()),
            *self._headers[scope.get("scheme") == "https"],
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class ReceiverApp(FastAPI):
    """A FastAPI application whose callback POSTs ``callback_endpoint`` answers before the application's
    middleware and routing (everything else, and the callback route's documentation, is FastAPI's)."""

    callback_endpoint: CallbackEndpoint | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = self.callback_endpoint
        if endpoint is not None:
            provider = endpoint.provider_of(scope)
            if provider is not None:
                await endpoint(scope, receive, send, provider)
                return
        await super().__call__(scope, receive, send)


def callback_router(receiver: CallbackReceiver) -> APIRouter:
    """The callback route as the application documents it; it answers what ``CallbackEndpoint`` leaves to
    the application (a provider id FastAPI reads as a number though it is not plain digits, e.g. ``+7``)."""
    router = APIRouter(tags=["callbacks"])

    @router.post(
        "/callbacks/thingspace/{service_provider_id}",
        response_model=CallbackAck,
        summary="Receive a ThingSpace CarrierService callback",
        responses={
            400: {"model": Problem, "description": "not a CarrierService callback (or nested too deep)"},
            401: {"model": Problem, "description": "echoed username/password are not this provider's"},
            403: {"model": Problem, "description": "source address not allowed"},
            413: {"model": Problem, "description": "body too large"},
            503: {"model": Problem, "description": "not stored (database unavailable): send it again"},
        },
        openapi_extra={
            "requestBody": {"required": True, "content": {"application/json": {"schema": _CALLBACK_SCHEMA}}}
        },
    )
    async def receive(request: Request, service_provider_id: int = Path(ge=1, le=MAX_ID)) -> Response:
        status, body, media = await receiver.take(
            request.client.host if request.client else None,
            service_provider_id,
            request.headers.get("content-length"),
            request.stream(),
        )
        return Response(body, status_code=status, media_type=media.decode())

    return router


def mount_callbacks(app: ReceiverApp, receiver: CallbackReceiver) -> None:
    """The callback receiver in ``app``: its documented route, and the endpoint answering ahead of it."""
    app.include_router(callback_router(receiver))
    app.callback_endpoint = CallbackEndpoint(receiver)


def callback_app(engine: Engine, *, insecure: bool = False) -> ReceiverApp:
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

    app = ReceiverApp(title="bulkchange callbacks", docs_url=None, redoc_url=None, lifespan=lifespan)
    mount_callbacks(app, receiver)
    return app
