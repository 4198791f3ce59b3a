"""What the REST routes share in their signatures and documentation: bounded path, paging and header
parameters, and the error answers several routes document."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query

from bulkchange.api.schemas import MAX_ID, Problem

PREFIX = "/api/v1"
MAX_PAGE = 500

IdPath = Annotated[int, Path(ge=1, le=MAX_ID)]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE)]
Offset = Annotated[int, Query(ge=0, le=MAX_ID)]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        description="same key and same request → the same bulk change; same key, other request → 409",
    ),
]
DryRun = Annotated[bool, Query(description="validate and plan only; nothing is written")]

Responses = dict[int | str, dict[str, Any]]

NOT_FOUND: Responses = {404: {"model": Problem, "description": "no such bulk change"}}
AUTH: Responses = {401: {"model": Problem, "description": "no valid API key"}}
FORBIDDEN_PROVIDER: Responses = {
    403: {"model": Problem, "description": "the service provider is not one this API key may use"}
}


def upper(value: Any) -> Any:
    """Filter values are matched whatever their case (``processing`` is ``PROCESSING``)."""
    if isinstance(value, str):
        return value.strip().upper()
    if isinstance(value, list):
        return [upper(v) for v in value]
    return value


def api_router() -> APIRouter:
    """A router of ``/api/v1`` routes, each documenting the 401 of a missing key. The prefix sits on each
    module's router (not only on the one that composes them) so every route carries its full path."""
    return APIRouter(prefix=PREFIX, responses=AUTH)
