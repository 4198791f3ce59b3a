"""The operator dashboard: server-rendered pages (Jinja2) and live parts polled by a little plain JS.

* ``/ui/`` and ``/ui/bulk-changes/{id}`` — the list and one bulk change (``listing``, ``detail``; their
  filters in ``filters``); cancel unsent, pause, resume, retry failed and rerun billing are posted from the
  bulk change's page to ``actions``.
* ``/ui/upload`` — a CSV / xlsx / JSON upload whose dry-run preview is shown before anything is created
  (``upload``); ``/ui/confirm`` creates it (``confirm``): the confirmation carries an Idempotency-Key, so a
  double submit creates one bulk change, and a destructive submission (deactivations, suspensions of active
  lines) first shows its consequences summed up and is created only when the operator types the number of
  lines it changes destructively. ``/ui/template.csv?status=…`` downloads the columns a target status needs
  with one example row.
* ``/ui/providers`` — the providers' CarrierService listeners, registered and deleted (``providers``).
* ``/ui/login`` and ``/ui/logout`` (``login``).

The routes are module-level functions; each takes the application's runtime through
``bulkchange.api.deps.RuntimeDep`` (``app.state.runtime``, set by ``create_app``).

No front-end build step, no third-party script: the pages work without JavaScript (the live parts just
stop refreshing) and the JS only fetches live parts.
"""

from __future__ import annotations

from fastapi import APIRouter

from bulkchange.api.dashboard import actions, confirm, detail, listing, login, providers, upload


def bulk_pages_router() -> APIRouter:
    """The list of bulk changes and one bulk change's page, with their live endpoints."""
    router = APIRouter(include_in_schema=False)
    router.include_router(listing.router)
    router.include_router(detail.router)
    return router


def dashboard_router() -> APIRouter:
    """Every dashboard route (for an application whose ``app.state.runtime`` is set, as ``create_app`` does)."""
    router = APIRouter(include_in_schema=False)
    router.include_router(bulk_pages_router())
    for part in (login, actions, upload, confirm, providers):
        router.include_router(part.router)
    return router
