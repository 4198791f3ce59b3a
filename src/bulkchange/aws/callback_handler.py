"""ThingSpace CarrierService callbacks through API Gateway (HTTP API, payload format 2.0) on Lambda.

``bulkchange.aws.callback_handler.handler(event, context)`` serves the route
``POST /callbacks/thingspace/{service_provider_id}`` like ``api/callbacks.py`` does behind uvicorn, and
admits a callback through the same ``engine.callbacks.gate``: the caller's address
(``requestContext.http.sourceIp``) against ``BULKCHANGE_CALLBACK_ALLOWED_SOURCES`` (403), the body size
(413) and JSON nesting (400), the URL's provider and its own callback credentials (401), the callback's
fields (400) — the same statuses and problem-details bodies (RFC 9457) as the uvicorn receiver. The first event of a
Lambda instance runs the receivers' start-up check (``check_callback_setup``): a retired setting, or a
provider with missing or half-configured credentials, fails every invocation with that one line in the log
until it is fixed (there is no insecure mode here).

An admitted callback is first *stored* (deduplicated by requestId + device: a replay is a no-op), then
whatever is stored and not yet applied is applied by ``Engine.apply_pending_callbacks`` (in batches;
concurrent instances skip each other's rows on PostgreSQL). The answer is 200 ``{"result": "applied" |
"duplicate" | "stored"}`` as soon as the callback is stored: when applying fails or the change is not
ready for it yet, the callback stays stored and the next application (the queue function after its
records, its scheduled tick, another callback) applies it, so ThingSpace never needs to re-send. Only a
failure to *store* is a 5xx (ThingSpace re-sends).

The event, as API Gateway sends it (only these fields are read)::

    {"version": "2.0",
     "requestContext": {"http": {"method": "POST", "sourceIp": "3.87.163.45"}},
     "pathParameters": {"service_provider_id": "7"},
     "body": "{\"username\": …, \"requestId\": …}", "isBase64Encoded": false}

A direct adapter rather than Mangum + the FastAPI router: one route, no ASGI lifespan, no extra
dependency in the deployment package, and the same runtime cache as the SQS handler.
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
from collections.abc import Mapping
from typing import Any

import structlog

from bulkchange.aws.lambda_handler import LambdaContext, get_runtime
from bulkchange.domain.problem_details import MEDIA_TYPE as PROBLEM_MEDIA_TYPE
from bulkchange.domain.problem_details import problem_body
from bulkchange.engine.callbacks.gate import CallbackGate, CallbackPolicy, CallbackRefused, check_callback_setup
from bulkchange.engine.callbacks.store import settled_its_change
from bulkchange.runtime import Runtime
from bulkchange.store.tables import ThingSpaceCallBackResponseLog

log = structlog.get_logger("bulkchange.aws.callbacks")

_lock = threading.Lock()
_gate: tuple[Runtime, CallbackGate] | None = None


def handler(event: Mapping[str, Any], context: LambdaContext | None) -> dict[str, Any]:
    """The Lambda entry point for the HTTP API route."""
    return process_callback_event(get_runtime(), event)


def gate_for(rt: Runtime) -> CallbackGate:
    """The runtime's gate, built (after the start-up check) on the first event of this instance."""
    global _gate
    with _lock:
        if _gate is None or _gate[0] is not rt:
            ctx = rt.ctx
            check_callback_setup(ctx.session_factory, ctx.settings, resolve=ctx.secret_resolver)
            policy = CallbackPolicy.from_settings(ctx.settings)
            _gate = (rt, CallbackGate(ctx.session_factory, policy, resolve=ctx.secret_resolver))
        return _gate[1]


def process_callback_event(rt: Runtime, event: Mapping[str, Any]) -> dict[str, Any]:
    """One API Gateway v2 event → the HTTP response (statusCode, headers, body)."""
    http = event.get("requestContext", {}).get("http", {})
    if str(http.get("method", "POST")).upper() != "POST":
        return _problem(405, "method not allowed")
    params = event.get("pathParameters") or {}
    raw_id = params.get("service_provider_id") if isinstance(params, Mapping) else None
    if not isinstance(raw_id, str) or not raw_id.isascii() or not raw_id.isdigit() or len(raw_id) > 10:
        return _problem(404, "unknown service provider path")
    service_provider_id = int(raw_id)
    gate = gate_for(rt)
    try:
        gate.check_source(http.get("sourceIp"), service_provider_id)
        payload = gate.parse(_body(event, gate))
        message = gate.admit(service_provider_id, payload)
    except CallbackRefused as refused:
        return _problem(refused.status, refused.detail)
    stored_id = rt.engine.ingest_callbacks([(payload, message, service_provider_id)])[0]
    result = "duplicate" if stored_id is None else _apply_stored(rt, stored_id)
    log.info("callback", result=result, request_id=message.request_id, service_provider_id=service_provider_id)
    return _response(200, {"result": result})


def _body(event: Mapping[str, Any], gate: CallbackGate) -> bytes:
    """The raw body; its size is checked before a base64 body is decoded."""
    body = event.get("body") or ""
    if not isinstance(body, str):
        raise CallbackRefused(400, "body is not UTF-8 JSON", "malformed")
    if event.get("isBase64Encoded"):
        gate.check_size(len(body) * 3 // 4)
        try:
            return base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise CallbackRefused(400, "body is not UTF-8 JSON", "malformed") from None
    gate.check_size(len(body))  # characters: never more than the UTF-8 bytes
    return body.encode("utf-8", errors="surrogatepass")


def _apply_stored(rt: Runtime, stored_id: int) -> str:
    """Apply what is stored (this callback among them); ``applied`` when this one settled its change."""
    try:
        rt.engine.apply_pending_callbacks()
        with rt.session_factory() as session:
            row = session.get(ThingSpaceCallBackResponseLog, stored_id)
            applied = row is not None and settled_its_change(row)
    except Exception:
        log.exception("applying stored callbacks failed; this one stays stored and is applied later")
        return "stored"
    return "applied" if applied else "stored"


def _response(status: int, body: dict[str, Any], content_type: str = "application/json") -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": {"content-type": content_type},
        "body": json.dumps(body),
        "isBase64Encoded": False,
    }


def _problem(status: int, detail: str) -> dict[str, Any]:
    return _response(status, problem_body(status, detail), PROBLEM_MEDIA_TYPE)
