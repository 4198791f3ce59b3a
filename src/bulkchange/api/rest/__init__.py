"""The REST API, ``/api/v1``: create (JSON rows or an uploaded file, ``Idempotency-Key``, ``?dry_run=true``),
list and read bulk changes, their device changes with log entries, CSV export, cancel, pause, resume, retry
failed, re-run billing.

The routes are module-level functions, one module per concern (``providers``, ``submit``, ``reads``,
``controls``); each gets the process's ``Runtime`` through the ``access.Rt`` dependency, which reads
``app.state.runtime`` (set by ``create_app``). Handlers are plain ``def``: FastAPI runs them in its thread
pool, so the synchronous database work never blocks the event loop that serves callbacks (and, with
``--with-worker``, runs the worker).
"""

from __future__ import annotations

from fastapi import APIRouter

from bulkchange.api.rest import controls, providers, reads, submit


def rest_router() -> APIRouter:
    """Every ``/api/v1`` route, in the order the OpenAPI document lists them. The application must hold its
    ``Runtime`` in ``app.state.runtime``."""
    router = APIRouter()
    for part in (providers.router, submit.router, reads.router, controls.router):
        router.include_router(part)
    return router
