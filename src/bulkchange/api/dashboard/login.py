"""Logging in and out of the dashboard: an API key checked once and kept in an HttpOnly, SameSite=Strict
session cookie; ``/`` leads to the dashboard."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from bulkchange.api.dashboard.common import CSRF
from bulkchange.api.deps import RuntimeDep
from bulkchange.api.security import SESSION_COOKIE
from bulkchange.api.templating import render
from bulkchange.services.apikeys import principal_of

SESSION_MAX_AGE_S = 12 * 3600

router = APIRouter(include_in_schema=False)


def safe_next(target: str | None) -> str:
    """Only a path of this dashboard (never another site) to go to after logging in."""
    if target and target.startswith("/ui/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/ui/"


@router.get("/")
def root() -> RedirectResponse:
    return RedirectResponse("/ui/", status_code=307)


@router.get("/ui/login", response_class=HTMLResponse)
def login_form(request: Request, next: Annotated[str | None, Query(max_length=2000)] = None) -> HTMLResponse:
    return render(request, "login.html", {"next": safe_next(next), "error": None})


@router.post("/ui/login", response_model=None)
def login(
    request: Request,
    rt: RuntimeDep,
    key: Annotated[str, Form(max_length=200)],
    next: Annotated[str | None, Form(max_length=2000)] = None,
) -> Response:
    principal = principal_of(rt.session_factory, key.strip())
    if principal is None:
        context = {"next": safe_next(next), "error": "That API key is not valid."}
        return render(request, "login.html", context, status_code=401)
    response = RedirectResponse(safe_next(next), status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        key.strip(),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
        max_age=SESSION_MAX_AGE_S,
    )
    return response


@router.post("/ui/logout", dependencies=CSRF)
def logout() -> RedirectResponse:
    response = RedirectResponse("/ui/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return response
