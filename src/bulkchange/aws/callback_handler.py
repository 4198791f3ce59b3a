"""ThingSpace CarrierService callbacks through API Gateway (HTTP API, payload format 2.0) on Lambda.

``bulkchange.aws.callback_handler.handler(event, context)`` serves the route
``POST /callbacks/thingspace/{service_provider_id}`` like ``api/callbacks.py`` does behind uvicorn: the
body is one callback document, first *stored* by ``Processor.ingest_callback`` (deduplicated by requestId
+ device: a replay is a no-op), then whatever is stored and not yet applied is applied by
``Processor.apply_pending_callbacks`` (in batches; concurrent instances skip each other's rows on
PostgreSQL). The answer is 200 ``{"result": "applied" | "duplicate" | "stored"}`` as soon as the callback
is stored: when applying fails or the change is not ready for it yet, the callback stays stored and the
next application (the queue function after its records, its scheduled tick, another callback) applies
it, so ThingSpace never needs to re-send. Only a failure to *store* is a 5xx (ThingSpace re-sends). A body
that is not a callback gets 400 and changes nothing.

A direct adapter rather than Mangum + the FastAPI router: one route, no ASGI lifespan, no extra
dependency in the deployment package, and the same runtime cache as the SQS handler.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

import structlog
from pydantic import ValidationError

from bulkchange.aws.lambda_handler import LambdaContext, get_runtime
from bulkchange.runtime import Runtime
from bulkchange.store.tables import ThingSpaceCallBackResponseLog

log = structlog.get_logger("bulkchange.aws.callbacks")


def handler(event: Mapping[str, Any], context: LambdaContext | None) -> dict[str, Any]:
    """The Lambda entry point for the HTTP API route."""
    return process_callback_event(get_runtime(), event)


def process_callback_event(rt: Runtime, event: Mapping[str, Any]) -> dict[str, Any]:
    """One API Gateway v2 event → the HTTP response (statusCode, headers, body)."""
    method = str(event.get("requestContext", {}).get("http", {}).get("method", "POST")).upper()
    if method != "POST":
        return _response(405, {"detail": "method not allowed"})
    params = event.get("pathParameters") or {}
    raw_id = params.get("service_provider_id") if isinstance(params, Mapping) else None
    if not isinstance(raw_id, str) or not raw_id.isascii() or not raw_id.isdigit():
        return _response(404, {"detail": "unknown service provider path"})
    service_provider_id = int(raw_id)
    body = event.get("body") or ""
    if event.get("isBase64Encoded"):
        try:
            body = base64.b64decode(body).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return _response(400, {"detail": "body is not UTF-8 JSON"})
    try:
        payload = json.loads(body)
    except ValueError:
        return _response(400, {"detail": "body is not JSON"})
    if not isinstance(payload, dict):
        return _response(400, {"detail": "body is not a JSON object"})
    try:
        stored_id = rt.processor.ingest_callback(payload, service_provider_id=service_provider_id)
    except ValidationError as exc:
        return _response(400, {"detail": f"not a CarrierService callback: {exc.error_count()} errors"})
    result = "duplicate" if stored_id is None else _apply_stored(rt, stored_id)
    log.info("callback", result=result, request_id=payload.get("requestId"), service_provider_id=service_provider_id)
    return _response(200, {"result": result})


def _apply_stored(rt: Runtime, stored_id: int) -> str:
    """Apply what is stored (this callback among them); ``applied`` when this one settled its change."""
    try:
        rt.processor.apply_pending_callbacks()
        with rt.session_factory() as session:
            row = session.get(ThingSpaceCallBackResponseLog, stored_id)
            applied = row is not None and row.m2m_device_change_id is not None
    except Exception:
        log.exception("applying stored callbacks failed; this one stays stored and is applied later")
        return "stored"
    return "applied" if applied else "stored"


def _response(status: int, body: dict[str, Any]) -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": {"content-type": "application/json"},
        "body": json.dumps(body),
        "isBase64Encoded": False,
    }
