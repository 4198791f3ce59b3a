"""HTTP surface of the Control Center simulator.

Order of checks for every API call, as a client sees them: Basic authentication (401), the account's
concurrency (a second call while one is open: 429 / ``40000029``), the account's calls per second (the
same answer), injected failures that happen before any work (5xx, 429), then the work, the configured
latency, and injected failures of the answer (a late or unreadable answer; the work is done). The call
counts as open from its arrival after authentication until its answer is ready.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from pydantic import ValidationError

from ..auth import basic_credentials
from ..errors import ApiError
from . import errors, handlers
from .config import STATUSES, ControlCenterFaults
from .faults import RequestFaults

if TYPE_CHECKING:
    from .simulator import ControlCenterSimulator, User

API = "/rws/api/v1"
ALL_METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]
_VERSION = re.compile(r"^v(\d+)(/|$)")
#: Control Center labels its JSON error answers ISO-8859-1.
ERROR_MEDIA_TYPE = "application/json;charset=ISO-8859-1"

Work = Callable[["User", Any, RequestFaults], handlers.Reply]


def _json_response(status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
    media = "application/json" if status < 400 else ERROR_MEDIA_TYPE
    return Response(json.dumps(payload), status_code=status, media_type=media, headers=headers)


async def _api_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return _json_response(exc.status, exc.body, exc.headers)


async def _json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    try:
        body = json.loads(raw) if raw.strip() else None
    except ValueError:
        raise errors.invalid_request("The request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise errors.invalid_request("The request body must be a JSON object")
    return body


def _authenticate(sim: ControlCenterSimulator, request: Request) -> User:
    creds = basic_credentials(request.headers.get("authorization", ""))
    user = sim.authenticate(*creds) if creds else None
    if user is None:
        with sim.lock:
            sim.count().unauthorized += 1
        raise errors.authentication_required() if creds is None else errors.invalid_credentials()
    return user


def _admit(
    sim: ControlCenterSimulator, user: User, open_calls: int, endpoint: str, iccid: str | None, edit: bool
) -> RequestFaults:
    """Rate limits and early faults; ``open_calls`` counts the account's open calls, this one included."""
    cfg = sim.config
    with sim.lock:
        if open_calls > cfg.max_in_flight:
            sim.count().throttle("in_flight")
            raise errors.rate_limited(cfg.rate_limit_http_status)
        if not sim.take_token(user.account_id):
            sim.count().throttle("tps")
            raise errors.rate_limited(cfg.rate_limit_http_status)
        faults = sim.request_faults(endpoint, iccid, edit)
        if faults.server_error:
            sim.count().fault("server_error")
            raise errors.server_error(sim.faults.server_error_status)
        if faults.rate_limited:
            sim.count().throttle("injected")
            raise errors.rate_limited(cfg.rate_limit_http_status, sim.faults.retry_after_s)
        return faults


async def _api_call(
    sim: ControlCenterSimulator, request: Request, endpoint: str, work: Work, iccid: str | None, edit: bool
) -> Response:
    """The pipeline of every API call (see the module docstring for the order)."""
    with sim.lock:
        sim.count().request(endpoint)
    sim.run_due()
    user = _authenticate(sim, request)
    open_calls = sim.begin_call(user.account_id)
    try:
        faults = _admit(sim, user, open_calls, endpoint, iccid, edit)
        body = await _json_body(request) if edit else dict(request.query_params)
        if sim.config.latency_s:
            await asyncio.sleep(sim.config.latency_s)
        with sim.lock:
            status, payload = work(user, body, faults)
        if faults.malformed:
            with sim.lock:
                sim.count().fault("malformed")
            text = json.dumps(payload)
            return Response(text[: max(1, len(text) // 2)], status_code=status, media_type="application/json")
        if faults.slow:
            with sim.lock:
                sim.count().fault("slow")
            await asyncio.sleep(sim.faults.slow_s)
        return _json_response(status, payload)
    finally:
        sim.end_call(user.account_id)


def build_app(sim: ControlCenterSimulator) -> FastAPI:
    """The FastAPI app bound to ``sim``."""
    app = FastAPI(title="Control Center simulator", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_exception_handler(ApiError, _api_error)
    _api_routes(app, sim)
    _admin_routes(app, sim)
    return app


def _api_routes(app: FastAPI, sim: ControlCenterSimulator) -> None:
    async def call(
        request: Request, endpoint: str, work: Work, iccid: str | None = None, edit: bool = False
    ) -> Response:
        return await _api_call(sim, request, endpoint, work, iccid, edit)

    @app.get(f"{API}/devices")
    async def search(request: Request) -> Response:
        return await call(request, "devices/search", lambda u, q, _f: handlers.search_devices(sim, u, q))

    @app.get(f"{API}/devices/{{iccid}}")
    async def get_device(request: Request, iccid: str) -> Response:
        return await call(request, "devices/get", lambda u, q, _f: handlers.get_device(sim, u, iccid, q), iccid)

    @app.put(f"{API}/devices/{{iccid}}")
    async def edit_device(request: Request, iccid: str) -> Response:
        return await call(
            request, "devices/edit", lambda u, b, f: handlers.edit_device(sim, u, iccid, b, f), iccid, edit=True
        )

    @app.get(f"{API}/devices/{{iccid}}/auditTrails")
    async def audit_trails(request: Request, iccid: str) -> Response:
        return await call(
            request, "devices/auditTrails", lambda u, q, _f: handlers.audit_trails(sim, u, iccid, q), iccid
        )

    @app.api_route("/rws/api/{rest:path}", methods=ALL_METHODS)
    async def unknown(request: Request, rest: str) -> Response:
        with sim.lock:
            sim.count().request("unknown")
        _authenticate(sim, request)
        version = _VERSION.match(rest)
        if version and version.group(1) != "1":
            raise errors.invalid_api_version()
        raise errors.cc_error(404, errors.SIM_NOT_FOUND, "Resource not found")


def _admin_routes(app: FastAPI, sim: ControlCenterSimulator) -> None:
    """Inspection and control for tests and people (not part of Control Center; no authentication)."""

    def device_or_404(iccid: str) -> Any:
        device = sim.device(iccid)
        if device is None:
            raise ApiError(404, {"error": f"no device {iccid}"})
        return device

    @app.get("/_sim/devices")
    async def sim_devices() -> Response:
        return _json_response(200, [d.details() for d in sim.devices()])

    @app.post("/_sim/devices")
    async def sim_preload(request: Request) -> Response:
        body = await _json_body(request)
        n, status = body.get("n", 0), body.get("status", "INVENTORY")
        if not isinstance(n, int) or n < 0 or status not in STATUSES:
            return _json_response(422, {"error": "expected {n: int >= 0, status: one of " + ", ".join(STATUSES) + "}"})
        created = sim.preload(n, status)
        return _json_response(200, {"created": len(created), "iccids": [d.iccid for d in created]})

    @app.get("/_sim/devices/{iccid}")
    async def sim_device(iccid: str) -> Response:
        device = device_or_404(iccid)
        return _json_response(200, device.details() | {"auditTrail": [r.wire() for r in reversed(device.audit)]})

    @app.post("/_sim/devices/{iccid}/use")
    async def sim_use(iccid: str) -> Response:
        device_or_404(iccid)
        return _json_response(200, {"changed": sim.use_device(iccid), "status": device_or_404(iccid).status})

    @app.post("/_sim/devices/{iccid}/test-quota-used")
    async def sim_test_quota(iccid: str) -> Response:
        device_or_404(iccid)
        return _json_response(200, {"changed": sim.exhaust_test_quota(iccid), "status": device_or_404(iccid).status})

    @app.post("/_sim/run-due")
    async def sim_run_due() -> Response:
        return _json_response(200, {"applied": sim.run_due(), "waiting": sim.scheduled()})

    @app.get("/_sim/counters")
    async def sim_counters() -> Response:
        return _json_response(200, sim.counters.as_json() | {"scheduled": sim.scheduled()})

    @app.get("/_sim/faults")
    async def sim_get_faults() -> Response:
        return _json_response(200, sim.faults.model_dump(mode="json"))

    @app.post("/_sim/faults")
    async def sim_set_faults(request: Request) -> Response:
        try:
            config = ControlCenterFaults.model_validate(await _json_body(request))
        except ValidationError as exc:
            return _json_response(422, {"error": "invalid fault settings", "detail": json.loads(exc.json())})
        sim.faults = config
        return _json_response(200, config.model_dump(mode="json"))
