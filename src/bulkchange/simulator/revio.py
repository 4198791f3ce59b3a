"""A Rev.io billing stand-in served over real HTTP (``revio_app``), for tests and the demo.

The shape is Rev.io's, as far as bulkchange uses it; where Rev.io's behaviour is not documented this
stand-in picks one and the client tolerates the others:

* ``POST /v1/Services`` — create a service line; ``201 {"ok": true, "id": N}``.
* ``POST /v1/ServiceProduct`` — attach a product to a service; ``201 {"ok": true, "id": N}``.
* ``GET /v1/Services?number=…`` and ``GET /v1/ServiceProduct?service_id=…`` — lookups, so a caller that
  does not know whether its create went through can reconcile instead of creating a duplicate.
* Errors: non-2xx with ``{"ok": false, "message": …}``; 401 without valid Basic
  (``username@clientcode:password``) and ``Ocp-Apim-Subscription-Key``.

Fault injection is deterministic for a seed (one ``random.Random``) and can also be scripted
(``fail_next``): 503 before doing anything, 500 *after* doing the work (outcome unknown to the caller),
a slow answer (work done, answer late), a malformed answer (work done), or the whole API down.
``counters`` count services created per number and products per service, for "exactly one" assertions.

Control endpoints (no auth): ``GET /_sim/counters``, ``POST /_sim/faults`` (a ``RevioFaults`` JSON),
``POST /_sim/down`` ``{"down": true}``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import random
import threading
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

FaultKind = Literal["server_error", "error_after_create", "slow", "malformed", "rate_limited"]

#: Endpoints faults apply to by default: the two creates (lookups stay reliable unless listed).
DEFAULT_FAULT_ENDPOINTS = frozenset({"POST /Services", "POST /ServiceProduct"})


class RevioFaults(BaseModel):
    """Probabilistic faults, drawn from one ``random.Random(seed)`` per eligible request."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int | None = None
    p_server_error: float = Field(default=0.0, ge=0.0, le=1.0)  # 503, nothing done
    p_error_after_create: float = Field(default=0.0, ge=0.0, le=1.0)  # 500 after the work: outcome unknown
    p_slow: float = Field(default=0.0, ge=0.0, le=1.0)  # work done, answer after slow_s
    slow_s: float = Field(default=30.0, ge=0.0)
    p_malformed: float = Field(default=0.0, ge=0.0, le=1.0)  # work done, body is not JSON
    p_rate_limited: float = Field(default=0.0, ge=0.0, le=1.0)  # 429 with Retry-After, nothing done
    retry_after_s: int = Field(default=1, ge=0)
    endpoints: frozenset[str] = DEFAULT_FAULT_ENDPOINTS


class RevioConfig(BaseModel):
    """Credentials of the simulated tenant and optional validation."""

    model_config = ConfigDict(extra="forbid")

    username: str = "rev-user"
    client_code: str = "rev-client"
    password: str = "rev-pass"  # noqa: S105 - stand-in fixture credential
    subscription_key: str = "rev-subscription-key"
    customers: frozenset[int] | None = None  # when set, other customer ids are refused with 400
    faults: RevioFaults = Field(default_factory=RevioFaults)


@dataclass
class RevioCounters:
    requests: Counter[str] = field(default_factory=Counter)  # "POST /Services" → n
    services_created: Counter[str] = field(default_factory=Counter)  # number → services created
    products_created: Counter[int] = field(default_factory=Counter)  # service id → products created
    unauthorized: int = 0
    faults: Counter[str] = field(default_factory=Counter)


class RevioStandIn:
    """The stand-in's state; ``app`` serves it. Thread-safe: uvicorn runs on another thread."""

    def __init__(self, config: RevioConfig | None = None) -> None:
        self.config = config or RevioConfig()
        self.counters = RevioCounters()
        self.services: dict[int, dict[str, Any]] = {}
        self.products: dict[int, dict[str, Any]] = {}
        self.down = False
        self._lock = threading.Lock()
        self._rng = random.Random(self.config.faults.seed)
        self._script: deque[FaultKind] = deque()
        self._next_service_id = 700_001
        self._next_product_id = 900_001
        self.app = revio_app(self)

    # -------------------------------------------------------------------------- test controls

    def set_faults(self, faults: RevioFaults) -> None:
        with self._lock:
            self.config = self.config.model_copy(update={"faults": faults})
            self._rng = random.Random(faults.seed)

    def fail_next(self, kind: FaultKind, times: int = 1) -> None:
        """Script the next ``times`` eligible requests to fail with ``kind`` (before any random fault)."""
        with self._lock:
            self._script.extend([kind] * times)

    def services_for(self, number: str) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(s) for s in self.services.values() if s["number"] == number]

    def products_for(self, service_id: int) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(p) for p in self.products.values() if p["service_id"] == service_id]

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": dict(self.counters.requests),
                "services_created": dict(self.counters.services_created),
                "products_created": {str(k): v for k, v in self.counters.products_created.items()},
                "unauthorized": self.counters.unauthorized,
                "faults": dict(self.counters.faults),
                "services": len(self.services),
                "products": len(self.products),
                "down": self.down,
            }

    # ------------------------------------------------------------------------------ internals

    def _fault(self, endpoint: str) -> FaultKind | None:
        with self._lock:
            faults = self.config.faults
            if endpoint not in faults.endpoints:
                return None
            kind: FaultKind | None = self._script.popleft() if self._script else None
            if kind is None:
                for name, p in (
                    ("server_error", faults.p_server_error),
                    ("rate_limited", faults.p_rate_limited),
                    ("error_after_create", faults.p_error_after_create),
                    ("slow", faults.p_slow),
                    ("malformed", faults.p_malformed),
                ):
                    if p > 0 and self._rng.random() < p:
                        kind = name  # type: ignore[assignment]
                        break
            if kind is not None:
                self.counters.faults[kind] += 1
            return kind

    def authorized(self, request: Request) -> bool:
        cfg = self.config
        if request.headers.get("ocp-apim-subscription-key") != cfg.subscription_key:
            return False
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return user == f"{cfg.username}@{cfg.client_code}" and password == cfg.password

    def create_service(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        customer = _int(body.get("customer_id"))
        service_type = _int(body.get("service_type_id"))
        number = body.get("number")
        if customer is None or service_type is None or not isinstance(number, str) or not number:
            return 400, {"ok": False, "message": "customer_id, number and service_type_id are required"}
        if self.config.customers is not None and customer not in self.config.customers:
            return 400, {"ok": False, "message": f"customer {customer} not found"}
        with self._lock:
            service_id = self._next_service_id
            self._next_service_id += 1
            self.services[service_id] = {
                "service_id": service_id,
                "customer_id": customer,
                "number": number,
                "number2": body.get("number2"),
                "service_type_id": service_type,
                "provider_id": body.get("provider_id"),
                "effective_date": body.get("effective_date"),
                "activated_date": body.get("activated_date"),
                "usage_plan_group_id": body.get("usage_plan_group_id"),
                "package_id": body.get("package_id"),
                "created_date": datetime.now(UTC).isoformat(),
            }
            self.counters.services_created[number] += 1
        return 201, {"ok": True, "id": service_id}

    def create_product(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        service_id = _int(body.get("service_id"))
        product_id = _int(body.get("product_id"))
        if service_id is None or product_id is None:
            return 400, {"ok": False, "message": "service_id and product_id are required"}
        with self._lock:
            if service_id not in self.services:
                return 404, {"ok": False, "message": f"service {service_id} not found"}
            product_row_id = self._next_product_id
            self._next_product_id += 1
            self.products[product_row_id] = {
                "service_product_id": product_row_id,
                "service_id": service_id,
                "product_id": product_id,
                "rate": body.get("rate"),
                "prorate": body.get("prorate"),
                "customer_id": body.get("customer_id"),
                "quantity": body.get("quantity", 1),
                "effective_date": body.get("effective_date"),
                "activated_date": body.get("activated_date"),
                "package_id": body.get("package_id"),
            }
            self.counters.products_created[service_id] += 1
        return 201, {"ok": True, "id": product_row_id}


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def _json(status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(payload), status_code=status, media_type="application/json", headers=headers)


def revio_app(stand_in: RevioStandIn | None = None) -> FastAPI:
    """The Rev.io stand-in as its own ASGI app (serve with ``simulator.server.serve_in_thread``).

    Point a client at ``{base_url}/v1``. ``app.state.revio`` is the ``RevioStandIn``.
    """
    if stand_in is None:
        return RevioStandIn().app  # its constructor builds the app around itself
    state = stand_in
    app = FastAPI(title="Rev.io stand-in", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.revio = state

    def get_state() -> RevioStandIn:
        return state

    async def guarded(request: Request, endpoint: str, work: Any) -> Response:
        s = get_state()
        with s._lock:
            s.counters.requests[endpoint] += 1
        if s.down:
            return _json(503, {"ok": False, "message": "service unavailable"})
        if not s.authorized(request):
            with s._lock:
                s.counters.unauthorized += 1
            return _json(401, {"ok": False, "message": "unauthorized"})
        fault = s._fault(endpoint)
        if fault == "server_error":
            return _json(503, {"ok": False, "message": "injected: service unavailable"})
        if fault == "rate_limited":
            retry = str(s.config.faults.retry_after_s)
            return _json(429, {"ok": False, "message": "injected: rate limited"}, {"Retry-After": retry})
        status, payload = await work()
        if fault == "error_after_create":
            return _json(500, {"ok": False, "message": "injected: internal error after the work was done"})
        if fault == "slow":
            await asyncio.sleep(s.config.faults.slow_s)
        if fault == "malformed":
            return Response(b'{"ok": true, "id": ', status_code=status, media_type="application/json")
        return _json(status, payload)

    async def body_of(request: Request) -> dict[str, Any] | None:
        try:
            body = await request.json()
        except ValueError:
            return None
        return body if isinstance(body, dict) else None

    @app.post("/v1/Services")
    async def create_service(request: Request) -> Response:
        async def work() -> tuple[int, dict[str, Any]]:
            body = await body_of(request)
            if body is None:
                return 400, {"ok": False, "message": "body must be a JSON object"}
            return get_state().create_service(body)

        return await guarded(request, "POST /Services", work)

    @app.get("/v1/Services")
    async def find_services(request: Request) -> Response:
        async def work() -> tuple[int, dict[str, Any]]:
            number = request.query_params.get("number", "")
            return 200, {"ok": True, "records": get_state().services_for(number)}

        return await guarded(request, "GET /Services", work)

    @app.post("/v1/ServiceProduct")
    async def create_product(request: Request) -> Response:
        async def work() -> tuple[int, dict[str, Any]]:
            body = await body_of(request)
            if body is None:
                return 400, {"ok": False, "message": "body must be a JSON object"}
            return get_state().create_product(body)

        return await guarded(request, "POST /ServiceProduct", work)

    @app.get("/v1/ServiceProduct")
    async def find_products(request: Request) -> Response:
        async def work() -> tuple[int, dict[str, Any]]:
            service_id = _int(request.query_params.get("service_id"))
            if service_id is None:
                return 400, {"ok": False, "message": "service_id is required"}
            return 200, {"ok": True, "records": get_state().products_for(service_id)}

        return await guarded(request, "GET /ServiceProduct", work)

    @app.get("/_sim/counters")
    async def counters() -> Response:
        return _json(200, get_state().snapshot())

    @app.post("/_sim/faults")
    async def set_faults(request: Request) -> Response:
        body = await body_of(request)
        get_state().set_faults(RevioFaults.model_validate(body or {}))
        return _json(200, {"ok": True})

    @app.post("/_sim/down")
    async def set_down(request: Request) -> Response:
        body = await body_of(request) or {}
        get_state().down = bool(body.get("down", True))
        return _json(200, {"ok": True, "down": get_state().down})

    return app
