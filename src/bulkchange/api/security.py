"""The HTTP surface's guards, in one ASGI middleware and a few dependencies.

* **Authentication.** Every path except ``PUBLIC_PATHS`` / ``PUBLIC_PREFIXES`` (health checks, the API's
  description, the callback receiver — it has its own credentials —, the login page and static files) needs
  an API key:
  ``Authorization: Bearer <key>``, ``X-API-Key: <key>`` or, for the dashboard, the ``bulkchange_session``
  cookie (HttpOnly, SameSite=Strict, Secure on https) set by the login form. Without one: 401 (a
  dashboard page redirects to the login form; a live part its script fetches, ``/ui/fragments/…``, gets
  a 401 whose ``login`` the script follows with the whole page). The key's ``Principal`` is in
  ``request.state.principal``. Fail closed: a new route is protected without doing anything.
* **Tenant scoping.** Handlers use ``Principal.service_provider_ids``; another tenant's bulk change is
  "not found" (``services.apikeys.owned_bulk``).
* **CSRF.** Dashboard forms carry ``csrf_token`` = HMAC(session key, "csrf"), checked by
  ``verify_csrf`` when the request was authenticated by the cookie; and an ``Origin`` (or ``Referer``)
  of another site is refused for every unsafe method under ``/ui/``.
* **Body size.** ``Content-Length`` and the bytes actually received are bounded
  (``BULKCHANGE_MAX_BODY_BYTES``, ``BULKCHANGE_CALLBACK_MAX_BODY_BYTES`` for the callback receiver): 413.
* **Headers.** CSP without ``unsafe-inline`` (the dashboard has no inline script or style),
  ``X-Content-Type-Options``, ``X-Frame-Options`` + ``frame-ancestors``, ``Referrer-Policy``, HSTS on https.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated
from urllib.parse import quote, urlsplit

import structlog
from fastapi import Depends, Form, HTTPException, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bulkchange.api.problems import MEDIA_TYPE as PROBLEM_MEDIA_TYPE
from bulkchange.api.problems import problem_bytes
from bulkchange.security.redaction import register_secret
from bulkchange.services.apikeys import Principal, principal_of

log = structlog.get_logger("bulkchange.api.security")

SESSION_COOKIE = "bulkchange_session"
# The API's description (/openapi.json, /docs) is public: it describes, it reveals no data, and client
# generators fetch it without a key.
PUBLIC_PATHS = frozenset(
    {"/healthz", "/readyz", "/ui/login", "/", "/favicon.ico", "/openapi.json", "/docs", "/docs/oauth2-redirect"}
)
PUBLIC_PREFIXES = ("/callbacks/", "/static/")
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
LOGIN_PATH = "/ui/login"
LIVE_PREFIX = "/ui/fragments/"
"""What the dashboard's scripts fetch: without a session, a 401 naming the login page (never a redirect)."""

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
# Swagger UI (/docs) is FastAPI's page: scripts and styles from its CDN and one inline bootstrap script.
DOCS_CSP = (
    "default-src 'self'; script-src 'self' https://cdn.jsdelivr.net 'unsafe-inline'; "
    "style-src 'self' https://cdn.jsdelivr.net; img-src 'self' data: https://fastapi.tiangolo.com; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)


def security_headers(path: str, *, https: bool) -> list[tuple[str, str]]:
    """The headers every answer to ``path`` carries (unless the answer set its own)."""
    headers = [
        ("Content-Security-Policy", DOCS_CSP if path in ("/docs", "/docs/oauth2-redirect") else CSP),
        ("X-Content-Type-Options", "nosniff"),
        ("X-Frame-Options", "DENY"),
        ("Referrer-Policy", "same-origin"),
        ("Cross-Origin-Opener-Policy", "same-origin"),
    ]
    if path.startswith(("/ui/", "/api/")):
        headers.append(("Cache-Control", "no-store"))
    if https:
        headers.append(("Strict-Transport-Security", "max-age=31536000; includeSubDomains"))
    return headers


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


def csrf_token_for(key: str) -> str:
    return hmac.new(key.encode("utf-8"), b"bulkchange-csrf", hashlib.sha256).hexdigest()


def presented_key(conn: HTTPConnection) -> tuple[str | None, str]:
    """The API key of the request and how it came: ``header`` or ``cookie`` (or None, "")."""
    auth = conn.headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip(), "header"
    header_key = conn.headers.get("x-api-key")
    if header_key:
        return header_key.strip(), "header"
    cookie = conn.cookies.get(SESSION_COOKIE)
    if cookie:
        return cookie, "cookie"
    return None, ""


def _same_origin(conn: HTTPConnection) -> bool:
    """An unsafe request's Origin (or Referer) names this host, or is absent (non-browser clients)."""
    origin = conn.headers.get("origin") or conn.headers.get("referer")
    if not origin:
        return True
    if origin == "null":
        return False
    host = conn.headers.get("host", "")
    return urlsplit(origin).netloc.lower() == host.lower()


class SecurityMiddleware:
    """Authentication, body size limits, CSRF origin check and security headers (see the module doc)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        session_factory: sessionmaker[Session],
        max_body_bytes: int,
        callback_max_body_bytes: int,
        metrics_token: str | None = None,
    ) -> None:
        self.app = app
        self.metrics_token = metrics_token
        register_secret(metrics_token)
        self.session_factory = session_factory
        self.max_body_bytes = max_body_bytes
        self.callback_max_body_bytes = callback_max_body_bytes

    def _metrics_token_ok(self, path: str, conn: HTTPConnection) -> bool:
        if path != "/metrics" or not self.metrics_token:
            return False
        key, _how = presented_key(conn)
        return key is not None and hmac.compare_digest(key.encode("utf-8"), self.metrics_token.encode("utf-8"))

    def _authenticate(self, key: str) -> Principal | None:
        return principal_of(self.session_factory, key)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        https = scope.get("scheme") == "https"
        send = self._with_headers(send, path, https)
        conn = HTTPConnection(scope)

        limit = self.callback_max_body_bytes if path.startswith("/callbacks/") else self.max_body_bytes
        declared = conn.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await _problem(send, 413, f"request body larger than {limit} bytes")
            return

        if scope["method"] in UNSAFE_METHODS and path.startswith("/ui/") and not _same_origin(conn):
            await _problem(send, 403, "cross-site request refused")
            return

        if not is_public(path) and not self._metrics_token_ok(path, conn):
            key, how = presented_key(conn)
            try:
                principal = await run_in_threadpool(self._authenticate, key) if key else None
            except Exception:  # the database is down: say so, never let the request through
                log.exception("API key check failed")
                await _problem(send, 503, "authentication unavailable (database)")
                return
            if principal is None:
                if path.startswith(LIVE_PREFIX):
                    await _login_required(send)
                elif path.startswith("/ui/") and scope["method"] == "GET":
                    target = path + (("?" + scope["query_string"].decode("latin-1")) if scope["query_string"] else "")
                    await _redirect(send, f"/ui/login?next={quote(target, safe='')}")
                else:
                    await _problem(send, 401, "an API key is required (Authorization: Bearer <key> or X-API-Key)")
                return
            state = scope.setdefault("state", {})
            state["principal"] = principal
            state["auth_method"] = how
            state["csrf_token"] = csrf_token_for(key) if key else ""

        await self.app(scope, _bounded(receive, limit), send)

    def _with_headers(self, send: Send, path: str, https: bool) -> Send:
        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in security_headers(path, https=https):
                    headers.setdefault(name, value)
            await send(message)

        return wrapped


class _TooLarge(Exception):
    pass


def _bounded(receive: Receive, limit: int) -> Receive:
    """A receive that refuses (413) a body growing past ``limit`` even without Content-Length."""
    received = 0

    async def wrapped() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise HTTPException(status_code=413, detail=f"request body larger than {limit} bytes")
        return message

    return wrapped


async def _problem(send: Send, status: int, detail: str) -> None:
    body = problem_bytes(status, detail)
    headers = [(b"content-type", PROBLEM_MEDIA_TYPE.encode()), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _login_required(send: Send) -> None:
    """401 for a dashboard page's script: ``login`` says where the page itself must go (the script then
    leaves the page for it, coming back with ``next``), instead of a redirect the script would follow and
    draw the login page inside the page."""
    body = problem_bytes(401, "the session has expired; log in again", login=LOGIN_PATH)
    headers = [
        (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
        (b"content-length", str(len(body)).encode()),
        (b"x-login-url", LOGIN_PATH.encode("ascii")),
        (b"www-authenticate", b"Bearer"),
    ]
    await send({"type": "http.response.start", "status": 401, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _redirect(send: Send, location: str) -> None:
    headers = [(b"location", location.encode("latin-1")), (b"content-length", b"0")]
    await send({"type": "http.response.start", "status": 303, "headers": headers})
    await send({"type": "http.response.body", "body": b""})


# ------------------------------------------------------------------------------------------ dependencies

_bearer = HTTPBearer(auto_error=False, description="an API key (`bulkchange apikeys create`)")
_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="an API key, as a header")


def current_principal(
    request: Request,
    _bearer_credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)] = None,
    _header_key: Annotated[str | None, Depends(_api_key_header)] = None,
) -> Principal:
    """The caller (authenticated by the middleware; the two security schemes document it in OpenAPI)."""
    principal = getattr(request.state, "principal", None)
    if not isinstance(principal, Principal):
        raise HTTPException(status_code=401, detail="an API key is required", headers={"WWW-Authenticate": "Bearer"})
    return principal


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


def verify_csrf(
    request: Request,
    csrf_token: Annotated[str, Form(max_length=128)] = "",  # nosec B107 # a form field's empty default
) -> None:
    """A dashboard form's token must match its session (only a cookie-authenticated request needs one)."""
    if getattr(request.state, "auth_method", "") != "cookie":
        return
    expected = str(getattr(request.state, "csrf_token", ""))
    if not expected or not hmac.compare_digest(csrf_token.encode("utf-8"), expected.encode("utf-8")):
        raise HTTPException(status_code=403, detail="the form is stale or was not sent by this dashboard; reload it")


def scoped_idempotency_key(principal: Principal, key: str | None) -> str | None:
    """Idempotency keys are per tenant (one tenant's key never replays or conflicts with another's)."""
    if key is None:
        return None
    scoped = f"t{principal.tenant_id}:{key}"
    if len(scoped) > 255:
        scoped = f"t{principal.tenant_id}:sha256:{hashlib.sha256(key.encode('utf-8')).hexdigest()}"
    return scoped
