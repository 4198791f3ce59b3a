"""The one FastAPI application of ``bulkchange serve``: REST API, callback receiver, dashboard, metrics,
health. With ``with_worker`` the engine's worker loop runs in the application's lifespan as a background
task (restarted after an unexpected error) and stops with the server. A database outage is not such an
error: the worker loop and the callback applier wait it out (logged once), ``/readyz`` answers 503 while it
lasts, and everything carries on when the database is back.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from bulkchange import __version__
from bulkchange.api import problems
from bulkchange.api.callbacks import CallbackReceiver, ReceiverApp, mount_callbacks
from bulkchange.api.dashboard import dashboard_router
from bulkchange.api.provider_callbacks import provider_callbacks_router
from bulkchange.api.rest import rest_router
from bulkchange.api.schemas import Health
from bulkchange.api.security import SecurityMiddleware
from bulkchange.api.settings import ApiSettings
from bulkchange.engine.worker import run_worker
from bulkchange.metrics import build_registry
from bulkchange.runtime import Runtime
from bulkchange.store.db import is_connection_lost, ping

log = structlog.get_logger("bulkchange.api")

STATIC_DIR = Path(__file__).parent / "static"

DESCRIPTION = (
    "Device bulk status changes against Verizon ThingSpace: REST API, CarrierService callback "
    "receiver, dashboard (/ui/), Prometheus metrics (/metrics). Every endpoint except /healthz, /readyz and "
    "the callback receiver needs an API key (`Authorization: Bearer <key>` or `X-API-Key`; "
    "`bulkchange apikeys create`)."
)
WORKER_STOP_TIMEOUT_S = 30
WORKER_RESTART_S = 5.0


@dataclass
class _Worker:
    """The worker task run in the application's lifespan (``with_worker``), which ``/readyz`` reports on."""

    enabled: bool
    poll_s: float
    task: asyncio.Task[None] | None = None

    @property
    def down(self) -> bool:
        """Enabled but not running (not started yet, or stopped)."""
        return self.enabled and (self.task is None or self.task.done())


async def _supervised_worker(rt: Runtime, stop: asyncio.Event, poll_s: float, restart_s: float) -> None:
    """Run the worker until ``stop``; an unexpected error is logged and the worker restarted."""
    while not stop.is_set():
        try:
            await run_worker(rt.engine, stop=stop, poll_s=poll_s)
        except Exception:
            log.exception("worker stopped unexpectedly; restarting", restart_in_s=restart_s)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=restart_s)


def _documented_openapi(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """FastAPI's OpenAPI document, with every error answer documented as ``application/problem+json``."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = problems.document_problems(generate())
        return app.openapi_schema

    return openapi


def _lifespan(
    rt: Runtime, receiver: CallbackReceiver, worker: _Worker
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """Start-up and shut-down: the callback receiver, and the worker task when enabled."""

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        stop = asyncio.Event()
        await receiver.start()
        if worker.enabled:
            worker.task = asyncio.create_task(_supervised_worker(rt, stop, worker.poll_s, WORKER_RESTART_S))
            log.info("worker started in the application")
        try:
            yield
        finally:
            stop.set()
            await _stop_worker(worker)
            await receiver.stop()

    return lifespan


async def _stop_worker(worker: _Worker) -> None:
    """Wait for the worker task to finish (``stop`` is set); cancel it after the timeout."""
    task = worker.task
    if task is None:
        return
    try:
        await asyncio.wait_for(task, timeout=WORKER_STOP_TIMEOUT_S)
    except TimeoutError:
        log.warning("worker did not stop in 30 s; cancelled (its claims are reconciled later)")
    worker.task = None


def _secure(app: FastAPI, rt: Runtime, settings: ApiSettings) -> None:
    """Problem answers, their OpenAPI documentation, and the security middleware (keys, sessions, limits)."""
    problems.install(app)
    app.openapi = _documented_openapi(app)  # type: ignore[method-assign]
    app.add_middleware(
        SecurityMiddleware,
        session_factory=rt.session_factory,
        max_body_bytes=settings.max_body_bytes,
        callback_max_body_bytes=rt.settings.callback_max_body_bytes,
        metrics_token=settings.metrics_token.get_secret_value() if settings.metrics_token else None,
    )


def _include_routers(app: ReceiverApp, rt: Runtime, settings: ApiSettings, receiver: CallbackReceiver) -> None:
    """REST API (its routes read ``app.state.runtime``), provider callbacks, the callback receiver, the
    dashboard and its static files."""
    app.state.runtime = rt
    app.include_router(rest_router())
    app.include_router(provider_callbacks_router())
    app.state.callback_receiver = receiver
    mount_callbacks(app, receiver)
    app.include_router(dashboard_router())
    app.mount("/static", StaticFiles(directory=str(STATIC_DIR)), name="static")


def _readiness(rt: Runtime, worker: _Worker) -> Health | JSONResponse:
    """``/readyz``: 503 while the database does not answer or the enabled worker is not running.

    The probe shares the process's view of the database with its loops (``EngineContext.db_outage``):
    a failed probe starts (or continues) the outage they log once, a working one ends it.
    """
    outage = rt.ctx.db_outage
    try:
        ping(rt.db)
    except Exception as exc:
        if not is_connection_lost(exc):
            body = Health(status="unavailable", detail=f"database: {type(exc).__name__}")
            return JSONResponse(status_code=503, content=body.model_dump())
        outage.failed(exc)
        down = outage.down_for_s() or 0.0
        body = Health(status="unavailable", detail=f"database unavailable for {down:.0f} s")
        return JSONResponse(status_code=503, content=body.model_dump())
    outage.recovered()
    if worker.down:
        return JSONResponse(status_code=503, content=Health(status="unavailable", detail="worker").model_dump())
    return Health(status="ok")


def _add_probes(app: FastAPI, rt: Runtime, worker: _Worker) -> None:
    """``/metrics`` (Prometheus), ``/healthz`` and ``/readyz``."""
    registry = build_registry(rt.session_factory, rt.transport)

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz", response_model=Health, tags=["health"])
    def healthz() -> Health:
        """The process answers."""
        return Health(status="ok")

    @app.get("/readyz", response_model=Health, responses={503: {"model": Health}}, tags=["health"])
    def readyz() -> Health | JSONResponse:
        """The database answers (and, with --with-worker, the worker task is running).

        The probe shares the process's view of the database with its loops (``EngineContext.db_outage``):
        a failed probe starts (or continues) the outage they log once, a working one ends it.
        """
        return _readiness(rt, worker)


def create_app(
    rt: Runtime,
    *,
    api_settings: ApiSettings | None = None,
    with_worker: bool = False,
    worker_poll_s: float = 0.5,
    insecure_callbacks: bool = False,
) -> FastAPI:
    """The application. Its start-up (lifespan) fails with ``CallbackConfigError`` when a service provider's
    callback credentials are not in order (``app.state.callback_receiver.check()`` tells beforehand);
    ``insecure_callbacks`` admits callbacks of providers that have none (``serve --insecure-callbacks``,
    loopback only)."""
    settings = api_settings or ApiSettings()
    receiver = CallbackReceiver(rt.engine, insecure=insecure_callbacks)
    worker = _Worker(enabled=with_worker, poll_s=worker_poll_s)
    app = ReceiverApp(
        title="bulkchange",
        version=__version__,
        description=DESCRIPTION,
        lifespan=_lifespan(rt, receiver, worker),
        openapi_url="/openapi.json",
        docs_url="/docs",
        redoc_url=None,
    )
    _secure(app, rt, settings)
    _include_routers(app, rt, settings, receiver)
    _add_probes(app, rt, worker)
    return app
