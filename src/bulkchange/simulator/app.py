"""HTTP surface of the simulator: gateway auth, session checks, fault injection, routing.

The order of checks mirrors the real stack: the WSO2 gateway validates the
Bearer token (401 faults) before the M2M service validates the session token
(400 errorCode), and only then does the service do work. Injected request
faults sit between session validation and the work (503/429/400 refusal,
nothing done) or after the work (slow / malformed response, work done).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from . import errors, handlers
from .auth import basic_credentials
from .config import FaultConfig
from .devices import STATES, device_json

if TYPE_CHECKING:
    from .simulator import Simulator

M2M = "/api/m2m/v1"
OAUTH = "/api/ts/v1/oauth2"
ALL_METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]

Handler = Callable[[dict[str, Any]], handlers.Reply]


def _json_response(status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(payload), status_code=status, media_type="application/json", headers=headers)


async def _api_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, errors.ApiError)
    return _json_response(exc.status, exc.body, exc.headers)


async def _form(request: Request) -> dict[str, str]:
    raw = (await request.body()).decode(errors="replace")
    return {key: values[0] for key, values in parse_qs(raw).items()}


async def _json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        raise errors.unexpected("The request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise errors.unexpected("The request body must be a JSON object.")
    return body


def build_app(sim: Simulator) -> FastAPI:
    """Create the FastAPI app bound to ``sim`` (its lifespan runs the background worker)."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        sim.ensure_worker()
        try:
            yield
        finally:
            worker = sim.worker
            if worker is not None:
                await worker.stop()

    app = FastAPI(title="ThingSpace simulator", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.add_exception_handler(errors.ApiError, _api_error)

    def check_bearer(request: Request) -> None:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise errors.missing_bearer()
        if not sim.auth.token_valid(token.strip(), sim.now()):
            raise errors.invalid_credentials()

    async def m2m_call(
        request: Request, endpoint: str, handler: Handler, *, session: bool = True, body: bool = True
    ) -> Response:
        """Common pipeline of every M2M endpoint (see module docstring for the order)."""
        sim.ensure_worker()
        with sim.lock:
            sim.count().request(endpoint)
            check_bearer(request)
            if session:
                token = request.headers.get("vz-m2m-token", "")
                if not sim.auth.touch_session(token, sim.now()):
                    raise errors.session_expired()
                if sim.injector.session_should_expire(endpoint):
                    sim.count().fault("session_expired")
                    sim.auth.end_session(token)
                    raise errors.session_expired()
            faults = sim.injector.for_request(endpoint)
            if faults.server_error:
                sim.count().fault("server_error")
                raise errors.service_unavailable()
            if faults.rate_limited:
                sim.count().fault("rate_limited")
                raise errors.rate_limited(sim.injector.config.retry_after_s)
            if faults.refused:
                sim.count().fault("refused")
                raise errors.unexpected("The request was refused.")
            slow_s = sim.injector.config.slow_s
        parsed = await _json_body(request) if body else {}
        with sim.lock:
            sim.in_flight += 1
            sim.count().saw_in_flight(sim.in_flight)
        try:
            if sim.config.latency_s:
                await asyncio.sleep(sim.config.latency_s)
            with sim.lock:
                status, payload = handler(parsed)
                if faults.malformed:
                    sim.count().fault("malformed")
                if faults.slow:
                    sim.count().fault("slow")
        finally:
            with sim.lock:
                sim.in_flight -= 1
        if faults.malformed:
            text = json.dumps(payload)
            return Response(text[: max(1, len(text) // 2)], status_code=200, media_type="application/json")
        if faults.slow:
            await asyncio.sleep(slow_s)
        return _json_response(status, payload)

    # --- OAuth (gateway) ---------------------------------------------------------------------------------

    def check_basic(request: Request) -> None:
        creds = basic_credentials(request.headers.get("authorization", ""))
        if creds is None:
            raise errors.missing_basic()
        if creds != (sim.config.client_id, sim.config.client_secret):
            raise errors.invalid_client()

    @app.post(f"{OAUTH}/token")
    async def oauth_token(request: Request) -> Response:
        with sim.lock:
            sim.count().request("oauth2/token")
            # The token endpoint takes 503/429 faults only when "oauth2/token" is listed in the fault
            # endpoints, so a client's transient-authentication handling can be exercised.
            faults = sim.injector.for_request("oauth2/token")
            if faults.server_error:
                sim.count().fault("server_error")
                raise errors.service_unavailable()
            if faults.rate_limited:
                sim.count().fault("rate_limited")
                raise errors.rate_limited(sim.injector.config.retry_after_s)
        check_basic(request)
        form = await _form(request)
        if form.get("grant_type") != "client_credentials":
            raise errors.missing_grant_type()
        with sim.lock:
            token, expires_in = sim.auth.issue_token(sim.now())
        body: dict[str, Any] = {"access_token": token, "token_type": "Bearer", "expires_in": expires_in}  # nosec B105 # the OAuth token type
        if form.get("scope"):
            body["scope"] = form["scope"]
        return _json_response(200, body)

    @app.post(f"{OAUTH}/revoke")
    async def oauth_revoke(request: Request) -> Response:
        with sim.lock:
            sim.count().request("oauth2/revoke")
        check_basic(request)
        form = await _form(request)
        with sim.lock:
            sim.auth.revoke_token(form.get("token", ""))
        return _json_response(200, {})

    # --- session -------------------------------------------------------------------------------------------

    @app.post(f"{M2M}/session/login")
    async def session_login(request: Request) -> Response:
        return await m2m_call(request, "session/login", lambda b: handlers.login(sim, b), session=False)

    @app.post(f"{M2M}/session/logout")
    async def session_logout(request: Request) -> Response:
        token = request.headers.get("vz-m2m-token", "")

        def logout(_body: dict[str, Any]) -> handlers.Reply:
            sim.auth.end_session(token)
            return 200, {"sessionToken": token}

        return await m2m_call(request, "session/logout", logout, body=False)

    # --- devices ---------------------------------------------------------------------------------------------

    @app.post(f"{M2M}/devices/actions/add")
    async def devices_add(request: Request) -> Response:
        return await m2m_call(request, "devices/actions/add", lambda b: handlers.add(sim, b))

    def provisioning_route(action: str) -> None:
        async def route(request: Request) -> Response:
            return await m2m_call(request, f"devices/actions/{action}", lambda b: handlers.provisioning(sim, action, b))

        app.add_api_route(f"{M2M}/devices/actions/{action}", route, methods=["POST"], name=action)

    for action in ("activate", "deactivate", "suspend", "restore"):
        provisioning_route(action)

    @app.post(f"{M2M}/devices/actions/delete")
    async def devices_delete(request: Request) -> Response:
        return await m2m_call(request, "devices/actions/delete", lambda b: handlers.delete(sim, b))

    @app.post(f"{M2M}/devices/actions/list")
    async def devices_list(request: Request) -> Response:
        return await m2m_call(request, "devices/actions/list", lambda b: handlers.list_devices(sim, b))

    @app.get(f"{M2M}/accounts/{{account}}/requests/{{request_id}}/status")
    async def request_status(request: Request, account: str, request_id: str) -> Response:
        return await m2m_call(
            request, "requests/status", lambda _b: handlers.request_status(sim, account, request_id), body=False
        )

    # --- callbacks -------------------------------------------------------------------------------------------

    @app.post(f"{M2M}/callbacks/{{account}}")
    async def callbacks_register(request: Request, account: str) -> Response:
        return await m2m_call(request, "callbacks/register", lambda b: handlers.register_callback(sim, account, b))

    @app.get(f"{M2M}/callbacks/{{account}}")
    async def callbacks_list(request: Request, account: str) -> Response:
        return await m2m_call(request, "callbacks/list", lambda _b: handlers.list_callbacks(sim, account), body=False)

    @app.delete(f"{M2M}/callbacks/{{account}}/name/{{service}}")
    async def callbacks_delete(request: Request, account: str, service: str) -> Response:
        return await m2m_call(
            request, "callbacks/delete", lambda _b: handlers.delete_callback(sim, account, service), body=False
        )

    # --- inspection (not part of ThingSpace) ------------------------------------------------------------

    @app.get("/_sim/devices")
    async def sim_devices() -> Response:
        with sim.lock:
            devices = [device_json(d) | {"state": d.state, "iccid": d.iccid} for d in sim.store]
        return _json_response(200, devices)

    @app.get("/_sim/counters")
    async def sim_counters() -> Response:
        body = sim.counters.as_json()
        body["pending"] = sim.pending()
        return _json_response(200, body)

    @app.get("/_sim/faults")
    async def sim_get_faults() -> Response:
        return _json_response(200, sim.faults.model_dump(mode="json"))

    @app.post("/_sim/faults")
    async def sim_set_faults(request: Request) -> Response:
        try:
            config = FaultConfig.model_validate(await _json_body(request))
        except ValidationError as exc:
            return JSONResponse({"error": "invalid FaultConfig", "detail": json.loads(exc.json())}, 400)
        sim.faults = config
        return _json_response(200, config.model_dump(mode="json"))

    @app.post("/_sim/devices")
    async def sim_preload(request: Request) -> Response:
        body = await _json_body(request)
        n, state = body.get("n", body.get("count", 0)), body.get("state", "preactive")
        if not isinstance(n, int) or n < 0 or state not in STATES:
            return _json_response(400, {"error": "expected {n: int >= 0, state: one of " + ", ".join(STATES) + "}"})
        created = sim.preload(n, state)
        return _json_response(200, {"created": len(created), "iccids": [d.iccid for d in created]})

    @app.post("/_sim/unlock")
    async def sim_unlock() -> Response:
        sim.unlock_user()
        return _json_response(200, {})

    # --- anything else: gateway "no matching resource" --------------------------------------------------

    @app.api_route(f"{M2M}/{{rest:path}}", methods=ALL_METHODS)
    async def unknown(request: Request, rest: str) -> Response:
        with sim.lock:
            sim.count().request("unknown")
            check_bearer(request)
        raise errors.no_resource()

    return app
