"""What the dashboard's route modules share: the id path parameter, the CSRF check, ownership, notices,
paging and the live rows the page script takes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, TypeVar
from urllib.parse import urlencode

from fastapi import Depends, HTTPException, Path
from fastapi.responses import RedirectResponse
from sqlalchemy.orm import Session

from bulkchange.api.schemas import MAX_ID
from bulkchange.api.security import verify_csrf
from bulkchange.runtime import Runtime
from bulkchange.services import bulk_changes as svc
from bulkchange.services.apikeys import Principal, owned_bulk

IdPath = Annotated[int, Path(ge=1, le=MAX_ID)]
CSRF = [Depends(verify_csrf)]
T = TypeVar("T")


def providers_of(session: Session, principal: Principal) -> list[svc.ProviderChoice]:
    """The service providers the principal may submit for."""
    return svc.providers_in(session, principal.service_provider_ids)


def who(principal: Principal) -> str:
    """Who acted, for the audit rows: the dashboard and the API key's id (never the key)."""
    return f"dashboard (api-key {principal.key_id})"


def with_notice(bulk_change_id: int, notice: str) -> RedirectResponse:
    """Back to the bulk change's page, with ``notice`` (at most 300 characters) shown on it."""
    return RedirectResponse(f"/ui/bulk-changes/{bulk_change_id}?{urlencode({'notice': notice[:300]})}", status_code=303)


def require_bulk(rt: Runtime, principal: Principal, bulk_change_id: int) -> None:
    """A 404 unless the bulk change exists and the principal may see it (another tenant's is not found)."""
    with rt.reading() as session:
        if owned_bulk(session, principal, bulk_change_id) is None:
            raise HTTPException(status_code=404, detail="no such bulk change")


def page_of(fetch: Callable[[int], svc.Page[T]], number: int, size: int) -> svc.Page[T]:
    """Page ``number``; past the last page (the rows shrank, or a typed number), the last page."""
    page = fetch((number - 1) * size)
    if not page.items and page.total and page.offset:
        page = fetch((page.count - 1) * size)
    return page


def done(bulk: svc.BulkChangeSummary) -> bool:
    """Nothing more will change on its own: finished, or failed at bulk level (until resumed)."""
    return bulk.status in svc.FINISHED


def live_rows(html: list[tuple[int, str, str]]) -> list[dict[str, str]]:
    """Rows as the page script takes them: key, digest and HTML."""
    return [{"key": str(key), "sig": digest, "html": row} for key, digest, row in html]


def require_provider(principal: Principal, service_provider_id: int) -> None:
    """A 403 unless the principal may submit for the service provider."""
    if not principal.may_use(service_provider_id):
        raise HTTPException(status_code=403, detail="not a service provider this API key may use")
