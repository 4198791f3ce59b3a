"""The ThingSpace CarrierService callback receiver: ThingSpace POSTs one JSON document per device here.

* **Who may call.** ThingSpace has no other authentication than echoing, in plain text in the body, the
  username and password given when the listener was registered (thingspace-api.md §5.3). When
  ``BULKCHANGE_CALLBACK_USERNAME`` / ``_PASSWORD`` are set, both are compared in constant time
  (``hmac.compare_digest``, both always compared) and a mismatch is 401. When
  ``BULKCHANGE_CALLBACK_ALLOWED_SOURCES`` is set, a caller outside it gets 403 before the body is read.
* **Duplicates.** ThingSpace re-sends a callback it thinks was not acknowledged (``callbackCount``); the
  engine records each in ``ThingSpaceCallBackResponseLog`` (unique requestId + ICCID) so a replay is a
  no-op answered 200 with ``result: duplicate``.
* **Quickly.** One short transaction in a worker thread (``Processor.apply_callback``), then 200. Anything
  not a callback (not JSON, no requestId, no device) is 400 and changes nothing.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import threading
from collections.abc import AsyncIterator, Sequence
from typing import Any

import structlog
from fastapi import APIRouter, FastAPI, HTTPException, Path, Request
from pydantic import BaseModel, ValidationError
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from bulkchange.api.settings import IpNetwork
from bulkchange.carrier.models import CallbackMessage
from bulkchange.engine.callback_applier import CallbackApplier
from bulkchange.engine.processor import Processor
from bulkchange.metrics import CALLBACKS_RECEIVED
from bulkchange.store.tables import M2MDeviceChange, ThingSpaceCallBackResponseLog

log = structlog.get_logger("bulkchange.callbacks")

MAX_ID = 2**31 - 1


class CallbackAck(BaseModel):
    """What the receiver did with the callback."""

    result: str  # applied | duplicate | unmatched


class Problem(BaseModel):
    detail: str


_CALLBACK_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "A CarrierService callback as ThingSpace POSTs it (one per device), thingspace-api.md §5.2.",
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


def _same(given: str | None, expected: str) -> bool:
    return hmac.compare_digest((given or "").encode("utf-8"), expected.encode("utf-8"))


def credentials_match(payload: dict[str, Any], expected: tuple[str, str]) -> bool:
    """Both fields compared in constant time, always both (no early exit that would tell which was wrong)."""
    user = payload.get("username")
    password = payload.get("password")
    user_ok = _same(user if isinstance(user, str) else None, expected[0])
    password_ok = _same(password if isinstance(password, str) else None, expected[1])
    return user_ok & password_ok


def source_allowed(host: str | None, networks: Sequence[IpNetwork]) -> bool:
    if not networks:
        return True
    if not host:
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(address in net for net in networks)


def _apply(
    processor: Processor,
    lock: threading.Lock,
    payload: dict[str, Any],
    service_provider_id: int,
    request_id: str,
    iccid: str,
) -> tuple[str, int | None, int | None]:
    """Apply through the engine; return the result and the change / bulk change it settled (for the log)."""
    # Stored at once; applied in batches by whichever thread is free (Processor.apply_callback).
    del lock
    result = processor.apply_callback(payload, service_provider_id=service_provider_id)
    with processor.ctx.session_factory() as session:
        change_id = session.execute(
            select(ThingSpaceCallBackResponseLog.m2m_device_change_id).where(
                ThingSpaceCallBackResponseLog.request_id == request_id, ThingSpaceCallBackResponseLog.iccid == iccid
            )
        ).scalar_one_or_none()
        change = session.get(M2MDeviceChange, change_id) if change_id is not None else None
        return result, change_id, change.bulk_change_id if change is not None else None


def callback_router(
    processor: Processor,
    *,
    credentials: tuple[str, str] | None = None,
    allowed_sources: Sequence[IpNetwork] = (),
    applier: CallbackApplier | None = None,
) -> APIRouter:
    router = APIRouter(tags=["callbacks"])
    networks = list(allowed_sources)
    # One application of callbacks at a time in this process: the engine's batch applier reads pending
    # callbacks without a lock on SQLite, so concurrent receivers could apply one callback twice.
    applying = threading.Lock()

    @router.post(
        "/callbacks/thingspace/{service_provider_id}",
        response_model=CallbackAck,
        summary="Receive a ThingSpace CarrierService callback",
        responses={
            400: {"model": Problem, "description": "not a CarrierService callback"},
            401: {"model": Problem, "description": "echoed username/password do not match"},
            403: {"model": Problem, "description": "source address not allowed"},
        },
        openapi_extra={
            "requestBody": {"required": True, "content": {"application/json": {"schema": _CALLBACK_SCHEMA}}}
        },
    )
    async def receive(request: Request, service_provider_id: int = Path(ge=1, le=MAX_ID)) -> CallbackAck:
        client = request.client.host if request.client else None
        if not source_allowed(client, networks):
            CALLBACKS_RECEIVED.labels("refused_source").inc()
            log.warning("callback refused: source not allowed", source=client, service_provider_id=service_provider_id)
            raise HTTPException(status_code=403, detail="source address not allowed")
        try:
            payload = await request.json()
        except ValueError as exc:
            CALLBACKS_RECEIVED.labels("malformed").inc()
            raise HTTPException(status_code=400, detail="body is not JSON") from exc
        if not isinstance(payload, dict):
            CALLBACKS_RECEIVED.labels("malformed").inc()
            raise HTTPException(status_code=400, detail="body is not a JSON object")
        if credentials is not None and not credentials_match(payload, credentials):
            CALLBACKS_RECEIVED.labels("refused_auth").inc()
            log.warning("callback refused: credentials do not match", service_provider_id=service_provider_id)
            raise HTTPException(status_code=401, detail="callback credentials do not match")
        try:
            message = CallbackMessage.model_validate(payload)
        except ValidationError as exc:
            CALLBACKS_RECEIVED.labels("malformed").inc()
            raise HTTPException(
                status_code=400, detail=f"not a CarrierService callback: {exc.error_count()} errors"
            ) from exc
        if not message.request_id or not message.iccid:
            CALLBACKS_RECEIVED.labels("malformed").inc()
            raise HTTPException(
                status_code=400, detail="not a CarrierService callback: requestId and an ICCID are required"
            )
        if applier is not None:  # store only; the background applier applies in batches
            stored = await run_in_threadpool(
                processor.ingest_callback, payload, service_provider_id=service_provider_id
            )
            applier.notify()
            result, change_id, bulk_id = ("stored" if stored is not None else "duplicate"), None, None
        else:
            result, change_id, bulk_id = await run_in_threadpool(
                _apply, processor, applying, payload, service_provider_id, message.request_id, message.iccid
            )
        CALLBACKS_RECEIVED.labels(result).inc()
        log.info(
            "callback",
            result=result,
            request_id=message.request_id,
            service_provider_id=service_provider_id,
            bulk_change_id=bulk_id,
            change_id=change_id,
        )
        return CallbackAck(result=result)

    return router


def callback_app(
    processor: Processor,
    *,
    credentials: tuple[str, str] | None = None,
    allowed_sources: Sequence[IpNetwork] = (),
) -> FastAPI:
    """A minimal application serving only the callback receiver (the demo, the benchmarks, engine tests).

    It stores each callback and answers at once; a background applier applies them in batches.
    """
    applier = CallbackApplier(processor)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await applier.start()
        try:
            yield
        finally:
            await applier.stop()

    app = FastAPI(title="bulkchange callbacks", docs_url=None, redoc_url=None, lifespan=lifespan)
    app.include_router(
        callback_router(processor, credentials=credentials, allowed_sources=allowed_sources, applier=applier)
    )
    return app
