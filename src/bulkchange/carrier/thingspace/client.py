"""Production client for the Verizon ThingSpace Connectivity Management (M2M) REST API v1.

What this module is careful about, and why:

* **Two tokens.**  Every M2M call needs an OAuth access token (one hour, the server hands back the
  same token during that hour) and a VZ-M2M session token (sliding 20 minute idle timeout, no refresh
  endpoint: you log in again).  Both are cached; concurrent callers share one fetch / one login behind
  an :class:`asyncio.Lock` with a double check, so 20 parallel calls cost one token and one login.
* **Login lockout.**  ThingSpace locks the contact after 5 consecutive failed logins, and a locked
  contact stops every bulk change of the tenant until someone at Verizon unlocks it.  So after one
  refused login the client never logs in again until a :class:`LoginGuard` is cleared by an operator.
* **Never repeat a provisioning call that may have happened.**  Activating twice is not idempotent.
  The client knows (through httpx's trace hook) whether request bytes were sent; retries are limited
  to failures where the carrier certainly did nothing (connection refused, 429, 503...).  Otherwise a
  provisioning call raises :class:`OutcomeUnknown` and the engine reconciles from the device state.
  Read-only calls (list, request status, callbacks) can be repeated freely.
* **Typed errors** (see :mod:`bulkchange.carrier.errors`) carrying redacted request and response texts
  for the engine's log rows.  Secrets and tokens never appear in errors, texts or reprs.
* **A hard deadline** (optional ``deadline``, :class:`~bulkchange.domain.deadline.Deadline`): every
  attempt's timeout, the rate limiter's wait and the retry budget shrink to the time left, and no
  attempt is started with less than ``min_call_s`` left: :class:`DeadlineExceeded` (nothing was done at
  the carrier).  Without a deadline the client behaves as before.
"""

from __future__ import annotations

import asyncio
import email.utils
import inspect
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Protocol, TypeVar, runtime_checkable
from urllib.parse import quote

import httpx
from pydantic import BeforeValidator, TypeAdapter, ValidationError
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from bulkchange.carrier.errors import (
    AuthenticationFailed,
    CarrierError,
    DeadlineExceeded,
    DeviceNotFound,
    LoginLocked,
    OutcomeUnknown,
    PermanentError,
    RateLimited,
    SessionExpired,
    TransientError,
    error_for_code,
    strip_service_prefix,
)
from bulkchange.domain.deadline import Deadline, bounded
from bulkchange.security.redaction import mentions_any
from bulkchange.security.transport import outbound_limits, tls_context

from .models import (
    ActionAccepted,
    ActionRequest,
    ActivateRequest,
    AddDeviceResult,
    AddDevicesRequest,
    AddResult,
    CallbackListener,
    CallbackRegistration,
    CarrierDevice,
    CustomField,
    DeactivateRequest,
    DeleteDeviceResult,
    DeleteDevicesRequest,
    DeviceEntry,
    DeviceId,
    DeviceListPage,
    DeviceListRequest,
    LoginResponse,
    RequestAccepted,
    RequestStatusResponse,
    ThingSpaceConnection,
    TokenResponse,
)

__all__ = [
    "ENDPOINTS",
    "InMemoryLoginGuard",
    "Limiter",
    "LoginGuard",
    "ThingSpaceClient",
]

log = logging.getLogger(__name__)

_T = TypeVar("_T")

#: Endpoint names passed to the limiter and stored in errors (``CarrierError.endpoint``).
TOKEN = "oauth2/token"  # noqa: S105  # nosec B105 # an endpoint name, not a credential
LOGIN = "session/login"
LOGOUT = "session/logout"
ADD = "devices/actions/add"
ACTIVATE = "devices/actions/activate"
DEACTIVATE = "devices/actions/deactivate"
SUSPEND = "devices/actions/suspend"
RESTORE = "devices/actions/restore"
DELETE = "devices/actions/delete"
LIST = "devices/actions/list"
REQUEST_STATUS = "requests/status"
CALLBACKS_REGISTER = "callbacks/register"
CALLBACKS_LIST = "callbacks/list"
CALLBACKS_DELETE = "callbacks/delete"
ENDPOINTS = frozenset(
    {
        TOKEN,
        LOGIN,
        LOGOUT,
        ADD,
        ACTIVATE,
        DEACTIVATE,
        SUSPEND,
        RESTORE,
        DELETE,
        LIST,
        REQUEST_STATUS,
        CALLBACKS_REGISTER,
        CALLBACKS_LIST,
        CALLBACKS_DELETE,
    }
)

#: Awaited before every HTTP request with the endpoint name; a shared (DB) rate limiter plugs in here.
Limiter = Callable[[str], Awaitable[None]]

_ACCESS_SKEW_S = 60.0
_DEFAULT_ACCESS_TTL_S = 3600.0
_SESSION_EXPIRED = "REQUEST_FAILED.SessionToken.Expired"
_GATEWAY_AUTH_FAULTS = frozenset({"900901", "900902"})
_SECRET_KEYS = frozenset(
    {
        "password",
        "oldpassword",
        "newpassword",
        "access_token",
        "accesstoken",
        "refresh_token",
        "sessiontoken",
        "session_token",
        "client_secret",
        "token",
    }
)
_REDACTED = "***"
# Every secret key contains one of these (case-insensitively): a text without any, and without JSON
# escapes that could spell one, has nothing to redact — no need to parse a 2,000-device answer to know it.
_SECRET_HINTS = ("password", "token", "secret", "\\u")
_ADD_RESULTS = TypeAdapter(list[AddDeviceResult])
_DELETE_RESULTS = TypeAdapter(list[DeleteDeviceResult])


def _unwrap_listeners(value: Any) -> Any:
    """Tolerate ``{"callbacks": [...]}`` or a single listener object instead of a bare array."""
    if isinstance(value, dict):
        lists = [v for v in value.values() if isinstance(v, list)]
        return lists[0] if lists else ([value] if value else [])
    return value


_LISTENERS = TypeAdapter(Annotated[list[CallbackListener], BeforeValidator(_unwrap_listeners)])
# Exceptions raised before any byte of the request could have left this process.
_NOT_SENT_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)


# ------------------------------------------------------------------------------------- login guard


@runtime_checkable
class LoginGuard(Protocol):
    """Decides whether the client may try to log in, and remembers failed logins.

    Methods may be plain or ``async`` (a DB-backed guard can await its queries); the client awaits
    whatever they return.
    """

    def check(self) -> Awaitable[None] | None:
        """Raise :class:`LoginLocked` when logging in must not be attempted."""

    def record_failure(self, message: str) -> Awaitable[None] | None:
        """Remember that the carrier refused a login (``message`` has no secrets)."""

    def record_success(self) -> Awaitable[None] | None:
        """Forget earlier failures: the credentials work."""


class InMemoryLoginGuard:
    """Process-local :class:`LoginGuard`: after one refused login, refuse to try again until
    :meth:`clear` is called (by an operator, after fixing the credentials)."""

    def __init__(self) -> None:
        self.failure: str | None = None

    def check(self) -> None:
        if self.failure is not None:
            raise LoginLocked(
                "ThingSpace login not attempted: the previous login was refused "
                f"({self.failure}). ThingSpace locks the user after 5 consecutive failed logins, so "
                "no further login is tried until an operator fixes the credentials and clears the "
                "login guard.",
                endpoint=LOGIN,
            )

    def record_failure(self, message: str) -> None:
        self.failure = message

    def record_success(self) -> None:
        self.failure = None

    def clear(self) -> None:
        """Operator action: allow logging in again."""
        self.failure = None


async def _maybe_await(value: object) -> None:
    if inspect.isawaitable(value):
        await value


# ------------------------------------------------------------------------------------------ helpers


def _redact(value: Any) -> tuple[Any, bool]:
    if isinstance(value, dict):
        changed = False
        out: dict[str, Any] = {}
        for key, item in value.items():
            if isinstance(key, str) and key.lower() in _SECRET_KEYS and item not in (None, ""):
                out[key] = _REDACTED
                changed = True
            else:
                out[key], sub = _redact(item)
                changed = changed or sub
        return out, changed
    if isinstance(value, list):
        items = [_redact(v) for v in value]
        return [v for v, _ in items], any(c for _, c in items)
    return value, False


def redact_text(text: str | None) -> str | None:
    """The text with secret JSON fields (passwords, tokens) replaced by ``***``; other text unchanged."""
    if not text or not mentions_any(text, _SECRET_HINTS):
        return text
    try:
        data = json.loads(text)
    except ValueError:
        return text
    redacted, changed = _redact(data)
    return json.dumps(redacted, separators=(",", ":")) if changed else text


def _dumps(body: Any) -> str:
    return json.dumps(body, separators=(",", ":"))


def _retry_after_seconds(value: str | None, now: float) -> float | None:
    """``Retry-After`` as seconds: either a number or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


def _entries(devices: Sequence[Sequence[DeviceId]]) -> list[DeviceEntry]:
    if not devices:
        raise ValueError("at least one device is required")
    entries = []
    for ids in devices:
        if isinstance(ids, DeviceId):  # a common slip: a flat list of ids, one per device
            entries.append(DeviceEntry(device_ids=[ids]))
        else:
            if not ids:
                raise ValueError("every device needs at least one identifier")
            entries.append(DeviceEntry(device_ids=list(ids)))
    return entries


def _label(devices: Sequence[Sequence[DeviceId]]) -> str | None:
    """The device id to put on errors: only when the call is about exactly one device."""
    if len(devices) != 1:
        return None
    ids = [devices[0]] if isinstance(devices[0], DeviceId) else list(devices[0])
    for d in ids:
        if d.kind == "iccid":
            return d.id
    return ids[0].id if ids else None


def _custom(fields: Mapping[str, str] | Sequence[CustomField] | None) -> list[CustomField] | None:
    if fields is None:
        return None
    if isinstance(fields, Mapping):
        return [CustomField(key=k, value=v) for k, v in fields.items()]
    return list(fields)


@dataclass
class _Reply:
    """One HTTP answer with its redacted texts and, if it was JSON, the decoded body."""

    status: int
    headers: httpx.Headers
    text: str
    body: Any
    is_json: bool
    request_text: str

    @property
    def error_code(self) -> str | None:
        if isinstance(self.body, dict):
            code = self.body.get("errorCode")
            if isinstance(code, str) and code:
                return code
            fault = self.body.get("fault")
            if isinstance(fault, dict) and fault.get("code") is not None:
                return str(fault["code"])
            err = self.body.get("error")
            if isinstance(err, str) and err:
                return err
        return None

    @property
    def error_message(self) -> str:
        if isinstance(self.body, dict):
            for key in ("errorMessage", "error_description"):
                if isinstance(self.body.get(key), str):
                    return str(self.body[key])
            fault = self.body.get("fault")
            if isinstance(fault, dict):
                return str(fault.get("description") or fault.get("message") or "gateway fault")
        return f"HTTP {self.status}"

    @property
    def gateway_fault(self) -> str | None:
        if isinstance(self.body, dict) and isinstance(self.body.get("fault"), dict):
            code = self.body["fault"].get("code")
            return str(code) if code is not None else None
        return None


@dataclass
class _Call:
    """Everything needed to make (and report) one M2M call."""

    endpoint: str
    method: str
    path: str
    body: Any = None
    provisioning: bool = False
    device: str | None = None
    ok_statuses: frozenset[int] = frozenset({200, 201, 202, 204})

    @property
    def request_text(self) -> str:
        if self.body is None:
            return f"{self.method} {self.path}"
        return redact_text(_dumps(self.body)) or ""


@dataclass
class _Token:
    value: str
    valid_until: float


@dataclass
class _Session:
    value: str
    idle_s: float | None
    last_used: float


@dataclass
class ThingSpaceAuth:
    """The access token and the session token of one set of credentials.

    A client keeps its own unless it is given one; given one, it reads and replaces the tokens there, so
    the next client of the same credentials (the engine's next slice or bulk change in this process) uses
    them until they expire or the carrier refuses them — one token and one login per process, not per
    message. A refused token or session is dropped from here as it would be from the client's own.
    """

    token: _Token | None = None
    session: _Session | None = None


# ------------------------------------------------------------------------------------------- client


class ThingSpaceClient:
    """Async client of one ThingSpace account (one set of credentials).

    Use as ``async with ThingSpaceClient(conn) as client: ...`` or call :meth:`aclose`.  All methods
    raise :class:`~bulkchange.carrier.errors.CarrierError` subclasses only (plus ``ValueError`` for
    calls that cannot be sent, such as an empty device list).
    """

    def __init__(
        self,
        conn: ThingSpaceConnection,
        *,
        http: httpx.AsyncClient | None = None,
        timeout: float = 30.0,
        max_attempts: int = 4,
        backoff_initial_s: float = 0.5,
        backoff_cap_s: float = 30.0,
        limiter: Limiter | None = None,
        login_guard: LoginGuard | None = None,
        clock: Callable[[], float] = time.time,
        deadline: Deadline | None = None,
        min_call_s: float = 2.0,
        auth: ThingSpaceAuth | None = None,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if min_call_s < 0:
            raise ValueError("min_call_s must be >= 0")
        self.conn = conn
        self._owns_http = http is None
        self._http = http or httpx.AsyncClient(
            timeout=timeout, headers={"Accept": "application/json"}, verify=tls_context(), limits=outbound_limits()
        )
        self._timeout = timeout
        self._max_attempts = max_attempts
        self._backoff_initial = backoff_initial_s
        self._backoff_cap = backoff_cap_s
        self._limiter = limiter
        self.login_guard: LoginGuard = login_guard or InMemoryLoginGuard()
        self._clock = clock
        self.auth = auth if auth is not None else ThingSpaceAuth()
        self._token_lock = asyncio.Lock()
        self._login_lock = asyncio.Lock()
        self.deadline = deadline
        """Bounds every call made from now on (settable: one client may serve several deadlines)."""
        self._min_call_s = min_call_s

    def __repr__(self) -> str:
        return (
            f"ThingSpaceClient(base_url={self.conn.base_url!r}, account={self.conn.account_name!r}, "
            f"username={self.conn.username!r})"
        )

    async def __aenter__(self) -> ThingSpaceClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP client if this client created it (the session is left to idle out)."""
        if self._owns_http:
            await self._http.aclose()

    # ------------------------------------------------------------------------------- transport

    async def _send(
        self,
        endpoint: str,
        method: str,
        url: str,
        *,
        provisioning: bool,
        device: str | None,
        request_text: str,
        headers: dict[str, str],
        content: str | None = None,
        data: dict[str, str] | None = None,
        auth: httpx.Auth | None = None,
    ) -> _Reply:
        """One HTTP exchange, no retries.  Transport failures become typed errors depending on whether
        the request may have reached the carrier."""
        ctx: dict[str, Any] = {"endpoint": endpoint, "device": device, "request_text": request_text}
        await self._limit(endpoint, ctx)
        events: list[str] = []

        async def trace(name: str, info: Mapping[str, Any]) -> None:
            events.append(name)

        timeout = bounded(self.deadline, self._timeout)
        try:
            async with asyncio.timeout(timeout):
                resp = await self._http.request(
                    method,
                    url,
                    headers=headers,
                    content=content,
                    data=data,
                    auth=auth if auth is not None else httpx.USE_CLIENT_DEFAULT,
                    timeout=timeout,
                    extensions={"trace": trace},
                )
        except (httpx.HTTPError, TimeoutError) as exc:
            what = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            # Without trace events we cannot prove nothing was sent, so assume it was.
            sent = not isinstance(exc, _NOT_SENT_ERRORS) and (
                not events or any("send_request_headers" in e for e in events)
            )
            if sent and provisioning:
                raise OutcomeUnknown(
                    f"no answer from ThingSpace after the request was sent ({what}); "
                    "the change may or may not have been made",
                    **ctx,
                ) from exc
            if timeout < self._timeout and isinstance(exc, TimeoutError | httpx.TimeoutException):
                raise DeadlineExceeded(
                    f"ThingSpace call cut short by the deadline after {timeout:.1f}s; nothing was changed",
                    **ctx,
                ) from exc
            state = "after sending" if sent else "before sending"
            raise TransientError(f"ThingSpace unreachable {state} the request ({what})", **ctx) from exc

        text = resp.text
        try:
            body: Any = json.loads(text) if text.strip() else None
            is_json = bool(text.strip())
        except ValueError:
            body, is_json = None, False
        log.debug("thingspace %s %s -> %s", method, endpoint, resp.status_code)
        return _Reply(resp.status_code, resp.headers, redact_text(text) or "", body, is_json, request_text)

    def _require_time(self, ctx: dict[str, Any]) -> None:
        """Refuse to start a call with less than ``min_call_s`` before the deadline (nothing is sent)."""
        deadline = self.deadline
        if deadline is not None and not deadline.allows(self._min_call_s):
            raise DeadlineExceeded(
                f"ThingSpace call not made: {deadline.usable_s():.1f}s left before the deadline, "
                f"{self._min_call_s:.1f}s needed",
                **ctx,
            )

    async def _limit(self, endpoint: str, ctx: dict[str, Any]) -> None:
        """The time check and the limiter's wait, which may not run past the point a call could start."""
        self._require_time(ctx)
        if self._limiter is None:
            return
        deadline = self.deadline
        if deadline is None:
            await self._limiter(endpoint)
            return
        try:
            async with asyncio.timeout(max(0.0, deadline.usable_s() - self._min_call_s)):
                await self._limiter(endpoint)
        except TimeoutError:
            raise DeadlineExceeded(
                "ThingSpace call not made: the rate limit allows it only after the deadline", **ctx
            ) from None
        self._require_time(ctx)

    def _error_for_reply(self, call: _Call, reply: _Reply) -> CarrierError:
        """Map a non-success HTTP answer to its typed error."""
        ctx: dict[str, Any] = {
            "endpoint": call.endpoint,
            "http_status": reply.status,
            "device": call.device,
            "request_text": reply.request_text,
            "response_text": reply.text,
        }
        code = reply.error_code
        if reply.status == 429:
            retry_after = _retry_after_seconds(reply.headers.get("Retry-After"), self._clock())
            stripped = strip_service_prefix(code) if code else None
            return RateLimited(
                f"ThingSpace rate limit: {reply.error_message}", retry_after=retry_after, code=stripped, **ctx
            )
        if reply.status >= 500:
            stripped = strip_service_prefix(code) if code else None
            if reply.status == 504 and call.provisioning:
                return OutcomeUnknown(
                    "ThingSpace gateway timed out; the change may or may not have been made",
                    code=stripped,
                    **ctx,
                )
            return TransientError(f"ThingSpace server error: {reply.error_message}", code=stripped, **ctx)
        if reply.status == 401 and reply.gateway_fault is not None:
            return AuthenticationFailed(
                f"ThingSpace refused the access token: {reply.error_message}", code=reply.gateway_fault, **ctx
            )
        if code is not None and 400 <= reply.status < 500:
            err = error_for_code(code, reply.error_message, **ctx)
            if isinstance(err, RateLimited) and err.retry_after is None:
                err.retry_after = _retry_after_seconds(reply.headers.get("Retry-After"), self._clock())
            return err
        return PermanentError(f"unexpected HTTP {reply.status} from ThingSpace", **ctx)

    def _malformed(self, call: _Call, reply: _Reply, why: str) -> CarrierError:
        ctx: dict[str, Any] = {
            "endpoint": call.endpoint,
            "http_status": reply.status,
            "device": call.device,
            "request_text": reply.request_text,
            "response_text": reply.text,
        }
        if call.provisioning:
            return OutcomeUnknown(
                f"ThingSpace accepted the request but its answer is unreadable ({why}); "
                "the change may or may not have been made",
                **ctx,
            )
        return TransientError(f"unreadable answer from ThingSpace ({why})", **ctx)

    def _parse(self, call: _Call, reply: _Reply, model: type[_T] | TypeAdapter[_T]) -> _T:
        if not reply.is_json:
            raise self._malformed(call, reply, "not JSON")
        try:
            adapter = model if isinstance(model, TypeAdapter) else TypeAdapter(model)
            return adapter.validate_python(reply.body)
        except ValidationError as exc:
            raise self._malformed(call, reply, f"{exc.error_count()} schema error(s)") from exc

    # ------------------------------------------------------------------------------- retries

    def _retryable(self, exc: BaseException) -> bool:
        if isinstance(exc, RateLimited):
            # A long Retry-After is the caller's to schedule; do not sit on a worker for it.
            return exc.retry_after is None or exc.retry_after <= self._backoff_cap
        return isinstance(exc, TransientError) and not isinstance(exc, SessionExpired | DeadlineExceeded)

    def _out_of_retry_time(self, state: RetryCallState) -> bool:
        """Stop retrying when the backoff plus a minimal call would end past the deadline (the last
        error is raised as it is: the carrier's own answer says more than "no time left")."""
        deadline = self.deadline
        return deadline is not None and not deadline.allows(state.upcoming_sleep + self._min_call_s)

    def _wait(self, state: RetryCallState) -> float:
        """Capped exponential backoff with full jitter, but never shorter than ``Retry-After``."""
        ceiling = min(self._backoff_cap, self._backoff_initial * 2 ** (state.attempt_number - 1))
        delay = random.uniform(0, ceiling)
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, RateLimited) and exc.retry_after is not None:
            delay = max(delay, exc.retry_after)
        return delay

    async def _with_retries(self, fn: Callable[[], Awaitable[_T]]) -> _T:
        attempts = stop_after_attempt(self._max_attempts)
        retrying = AsyncRetrying(
            stop=lambda state: attempts(state) or self._out_of_retry_time(state),
            wait=self._wait,
            retry=retry_if_exception(self._retryable),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await fn()
        raise AssertionError("unreachable: tenacity either returns or re-raises")  # pragma: no cover

    async def authenticate(self) -> None:
        """Obtain the access token and the session token now (the seed's steps E and F).

        The engine calls this before claiming any change, so refused credentials fail the bulk change
        before a single device is touched.
        """
        await self._with_retries(self._session_token)

    # ------------------------------------------------------------------------------- access token

    async def _access_token(self) -> str:
        token = self.auth.token
        if token is not None and self._clock() < token.valid_until:
            return token.value
        async with self._token_lock:
            token = self.auth.token
            if token is not None and self._clock() < token.valid_until:
                return token.value
            token = await self._fetch_token()
            self.auth.token = token
            return token.value

    def _invalidate_token(self, used: str) -> None:
        # Only drop the token that was refused: a concurrent caller may already have a fresh one.
        if self.auth.token is not None and self.auth.token.value == used:
            self.auth.token = None

    async def _fetch_token(self) -> _Token:
        call = _Call(TOKEN, "POST", self.conn.token_url)
        request_text = "grant_type=client_credentials"
        now = self._clock()
        reply = await self._send(
            TOKEN,
            "POST",
            self.conn.token_url,
            provisioning=False,
            device=None,
            request_text=request_text,
            headers={"Accept": "application/json"},
            data={"grant_type": "client_credentials"},
            auth=httpx.BasicAuth(self.conn.client_id, self.conn.client_secret.get_secret_value()),
        )
        if reply.status == 200:
            parsed = self._parse(call, reply, TokenResponse)
            ttl = parsed.expires_in if parsed.expires_in and parsed.expires_in > 0 else _DEFAULT_ACCESS_TTL_S
            # Keep the 60 s skew, but a token handed back near its end is still used for half of what
            # is left rather than re-fetched on every call.
            usable = ttl - _ACCESS_SKEW_S if ttl > 2 * _ACCESS_SKEW_S else ttl / 2
            return _Token(parsed.access_token, now + usable)
        if reply.status in (400, 401, 403):
            return_code = reply.error_code
            raise AuthenticationFailed(
                f"ThingSpace refused the API key/secret: {reply.error_message}",
                code=strip_service_prefix(return_code) if return_code else None,
                http_status=reply.status,
                endpoint=TOKEN,
                request_text=request_text,
                response_text=reply.text,
            )
        raise self._error_for_reply(call, reply)

    # ------------------------------------------------------------------------------- session

    def _session_usable(self, session: _Session | None) -> bool:
        if session is None:
            return False
        return session.idle_s is None or self._clock() - session.last_used < session.idle_s

    async def _session_token(self) -> str:
        session = self.auth.session
        if session is not None and self._session_usable(session):
            return session.value
        async with self._login_lock:
            session = self.auth.session
            if session is not None and self._session_usable(session):
                return session.value
            session = await self._login()
            self.auth.session = session
            return session.value

    def _invalidate_session(self, used: str) -> None:
        if self.auth.session is not None and self.auth.session.value == used:
            self.auth.session = None

    def _touch_session(self, used: str) -> None:
        if self.auth.session is not None and self.auth.session.value == used:
            self.auth.session.last_used = self._clock()

    async def _login(self) -> _Session:
        """Log in once (called under the login lock).  A refused login is recorded in the guard."""
        await _maybe_await(self.login_guard.check())
        call = _Call(LOGIN, "POST", self.conn.login_url)
        body = {"username": self.conn.username, "password": self.conn.password.get_secret_value()}
        request_text = redact_text(_dumps(body)) or ""
        refreshed = False
        while True:
            access = await self._access_token()
            reply = await self._send(
                LOGIN,
                "POST",
                self.conn.login_url,
                provisioning=False,
                device=None,
                request_text=request_text,
                headers={
                    "Authorization": f"Bearer {access}",
                    "Content-Type": "application/json",
                    "Accept": "application/json",
                },
                content=_dumps(body),
            )
            if reply.status == 401 and reply.gateway_fault in _GATEWAY_AUTH_FAULTS and not refreshed:
                refreshed = True
                self._invalidate_token(access)
                continue
            break
        if 200 <= reply.status < 300:
            parsed = self._parse(call, reply, LoginResponse)
            await _maybe_await(self.login_guard.record_success())
            idle = parsed.expires_in if parsed.expires_in and parsed.expires_in > 0 else None
            return _Session(parsed.session_token, idle, self._clock())
        err = self._error_for_reply(call, reply)
        if reply.status == 400 and not isinstance(err, RateLimited | TransientError):
            # Any refusal of the login itself counts toward Verizon's lockout: the exact code for a
            # wrong password is not documented, so do not bet on it.
            await _maybe_await(self.login_guard.record_failure(f"{err.code or 'HTTP 400'}: {err.message}"))
            if not isinstance(err, AuthenticationFailed):
                err = AuthenticationFailed(
                    f"ThingSpace refused the login: {err.message}",
                    code=err.code,
                    http_status=err.http_status,
                    endpoint=LOGIN,
                    request_text=request_text,
                    response_text=reply.text,
                )
        raise err

    # ------------------------------------------------------------------------------- M2M calls

    def _headers(self, access: str, session: str) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {access}",
            "VZ-M2M-Token": session,
            "Content-Type": "application/json",
            "Accept": "application/json",
        }

    async def _m2m_once(self, call: _Call) -> _Reply:
        """One attempt: tokens, send, and the single allowed refresh of each token.

        Re-sending after a 401 fault or an expired session is safe even for provisioning calls: the
        gateway refused the request before the carrier acted on it.
        """
        url = f"{self.conn.m2m_url}{call.path}"
        content = _dumps(call.body) if call.body is not None else None
        token_refreshed = session_renewed = False
        while True:
            access = await self._access_token()
            session = await self._session_token()
            reply = await self._send(
                call.endpoint,
                call.method,
                url,
                provisioning=call.provisioning,
                device=call.device,
                request_text=call.request_text,
                headers=self._headers(access, session),
                content=content,
            )
            if reply.status == 401 and reply.gateway_fault in _GATEWAY_AUTH_FAULTS:
                if not token_refreshed:
                    token_refreshed = True
                    self._invalidate_token(access)
                    continue
                raise self._error_for_reply(call, reply)
            code = reply.error_code
            if code is not None and strip_service_prefix(code) == _SESSION_EXPIRED:
                self._invalidate_session(session)
                if not session_renewed:
                    session_renewed = True
                    continue
                raise SessionExpired(
                    "ThingSpace session expired again right after a fresh login",
                    code=_SESSION_EXPIRED,
                    http_status=reply.status,
                    endpoint=call.endpoint,
                    device=call.device,
                    request_text=reply.request_text,
                    response_text=reply.text,
                )
            self._touch_session(session)
            if reply.status not in call.ok_statuses:
                raise self._error_for_reply(call, reply)
            return reply

    async def _m2m(self, call: _Call) -> _Reply:
        return await self._with_retries(lambda: self._m2m_once(call))

    async def _m2m_parsed(self, call: _Call, model: type[_T] | TypeAdapter[_T]) -> tuple[_Reply, _T]:
        """Call and parse inside the same attempt, so an unreadable answer to a read-only call is
        retried like any other transient failure (for provisioning it is OutcomeUnknown, not retried)."""

        async def attempt() -> tuple[_Reply, _T]:
            reply = await self._m2m_once(call)
            return reply, self._parse(call, reply, model)

        return await self._with_retries(attempt)

    def _account(self, account_name: str | None) -> str:
        return account_name or self.conn.account_name

    # ------------------------------------------------------------------------------- provisioning

    async def add_devices(
        self,
        devices: Sequence[Sequence[DeviceId]],
        *,
        account_name: str | None = None,
        state: str = "preactive",
        sku_number: str | None = None,
        group_name: str | None = None,
        custom_fields: Mapping[str, str] | Sequence[CustomField] | None = None,
    ) -> AddResult:
        """Add devices to the account inventory (synchronous).  Per-device lines are returned as-is:
        a line other than Success / already exists is for the caller to judge, not an exception."""
        body = AddDevicesRequest(
            account_name=self._account(account_name),
            state=state,
            devices_to_add=_entries(devices),
            sku_number=sku_number,
            group_name=group_name,
            custom_fields=_custom(custom_fields),
        ).wire()
        call = _Call(ADD, "POST", "/devices/actions/add", body, provisioning=True, device=_label(devices))
        reply, results = await self._m2m_parsed(call, _ADD_RESULTS)
        return AddResult(
            devices=results, request_text=reply.request_text, response_text=reply.text, http_status=reply.status
        )

    async def _action(
        self, endpoint: str, body: dict[str, Any], devices: Sequence[Sequence[DeviceId]]
    ) -> ActionAccepted:
        call = _Call(endpoint, "POST", f"/{endpoint}", body, provisioning=True, device=_label(devices))
        reply, accepted = await self._m2m_parsed(call, RequestAccepted)
        if not accepted.request_id or not accepted.request_id.strip():
            raise PermanentError(
                "ThingSpace answered without a requestId: the request was not accepted",
                http_status=reply.status,
                endpoint=endpoint,
                device=call.device,
                request_text=reply.request_text,
                response_text=reply.text,
            )
        return ActionAccepted(
            request_id=accepted.request_id.strip(),
            request_text=reply.request_text,
            response_text=reply.text,
            http_status=reply.status,
        )

    async def activate(
        self,
        devices: Sequence[Sequence[DeviceId]],
        *,
        service_plan: str,
        mdn_zip_code: str,
        account_name: str | None = None,
        sku_number: str | None = None,
        public_ip_restriction: str | None = None,
        primary_place_of_use: dict[str, Any] | None = None,
        carrier_ip_pool_name: str | None = None,
        group_name: str | None = None,
        custom_fields: Mapping[str, str] | Sequence[CustomField] | None = None,
    ) -> ActionAccepted:
        """Ask for activation; the result arrives later (CarrierService callback or polling)."""
        body = ActivateRequest(
            account_name=self._account(account_name),
            devices=_entries(devices),
            service_plan=service_plan,
            mdn_zip_code=mdn_zip_code,
            sku_number=sku_number,
            public_ip_restriction=public_ip_restriction,
            primary_place_of_use=primary_place_of_use,
            carrier_ip_pool_name=carrier_ip_pool_name,
            group_name=group_name,
            custom_fields=_custom(custom_fields),
        ).wire()
        return await self._action(ACTIVATE, body, devices)

    async def deactivate(
        self,
        devices: Sequence[Sequence[DeviceId]],
        *,
        reason_code: str = "FF",
        etf_waiver: bool = False,
        account_name: str | None = None,
        delete_after_deactivation: bool | None = None,
    ) -> ActionAccepted:
        body = DeactivateRequest(
            account_name=self._account(account_name),
            devices=_entries(devices),
            reason_code=reason_code,
            etf_waiver=etf_waiver,
            delete_after_deactivation=delete_after_deactivation,
        ).wire()
        return await self._action(DEACTIVATE, body, devices)

    async def suspend(
        self,
        devices: Sequence[Sequence[DeviceId]],
        *,
        account_name: str | None = None,
        with_billing: bool | None = None,
    ) -> ActionAccepted:
        body = ActionRequest(
            account_name=self._account(account_name), devices=_entries(devices), with_billing=with_billing
        ).wire()
        return await self._action(SUSPEND, body, devices)

    async def restore(
        self, devices: Sequence[Sequence[DeviceId]], *, account_name: str | None = None
    ) -> ActionAccepted:
        body = ActionRequest(account_name=self._account(account_name), devices=_entries(devices)).wire()
        return await self._action(RESTORE, body, devices)

    async def delete_devices(self, devices: Sequence[Sequence[DeviceId]]) -> list[DeleteDeviceResult]:
        """Delete devices from the account (synchronous, per-device status returned as-is)."""
        body = DeleteDevicesRequest(devices_to_delete=_entries(devices)).wire()
        call = _Call(DELETE, "POST", "/devices/actions/delete", body, provisioning=True, device=_label(devices))
        return (await self._m2m_parsed(call, _DELETE_RESULTS))[1]

    # ------------------------------------------------------------------------------- reads

    async def list_page(
        self,
        *,
        account_name: str | None = None,
        current_state: str | None = None,
        largest_device_id_seen: int | None = None,
        max_number_of_devices: int | None = None,
    ) -> DeviceListPage:
        """One page of the account's devices.  HTTP 202 (more pages) and 200 (last page) both succeed."""
        body = DeviceListRequest(
            account_name=self._account(account_name),
            current_state=current_state,
            largest_device_id_seen=largest_device_id_seen,
            max_number_of_devices=max_number_of_devices,
        ).wire()
        return await self._list(body, device=None)

    async def _list(self, body: dict[str, Any], device: str | None) -> DeviceListPage:
        call = _Call(LIST, "POST", "/devices/actions/list", body, device=device)
        reply, page = await self._m2m_parsed(call, DeviceListPage)
        if reply.status == 202 and isinstance(reply.body, dict) and "hasMoreData" not in reply.body:
            page = page.model_copy(update={"has_more_data": True})
        return page

    async def list_devices(
        self,
        *,
        account_name: str | None = None,
        current_state: str | None = None,
        max_number_of_devices: int | None = None,
    ) -> AsyncIterator[CarrierDevice]:
        """All devices, page after page, using ``largestDeviceIdSeen`` from the last device's
        ``DeviceId`` extended attribute (the carrier's recommended device-id ordering)."""
        cursor = 0
        while True:
            page = await self.list_page(
                account_name=account_name,
                current_state=current_state,
                largest_device_id_seen=cursor,
                max_number_of_devices=max_number_of_devices,
            )
            for device in page.devices:
                yield device
            if not page.has_more_data or not page.devices:
                return
            nxt = page.devices[-1].internal_id
            if nxt is None or nxt <= cursor:
                raise PermanentError(
                    "cannot continue listing: the last device of the page has no usable DeviceId "
                    f"extended attribute (cursor {cursor}, got {nxt})",
                    endpoint=LIST,
                )
            cursor = nxt

    async def get_device(self, device_id: DeviceId) -> CarrierDevice | None:
        """The carrier's view of one device, or None when the carrier does not know it."""
        body = DeviceListRequest(device_id=device_id).wire()
        try:
            page = await self._list(body, device=device_id.id)
        except DeviceNotFound:
            return None
        for device in page.devices:
            if any(d.kind == device_id.kind and d.id == device_id.id for d in device.device_ids):
                return device
        return page.devices[0] if len(page.devices) == 1 else None

    async def get_devices(self, device_ids: Sequence[DeviceId], *, per_request: int = 2000) -> list[CarrierDevice]:
        """The carrier's view of many devices, ``per_request`` (at most a list page, 2,000) per call.

        Uses the list request's ``deviceList`` filter, so verifying 10,000 devices costs five requests
        instead of 10,000. Devices the carrier does not know are simply absent from the result.
        """
        size = max(1, min(per_request, 2000))
        found: list[CarrierDevice] = []
        for start in range(0, len(device_ids), size):
            chunk = device_ids[start : start + size]
            body = {"deviceList": [{"kind": d.kind, "id": d.id} for d in chunk]}
            page = await self._list(body, device=chunk[0].id if len(chunk) == 1 else None)
            found.extend(page.devices)
        return found

    async def request_status(self, request_id: str, *, account_name: str | None = None) -> str:
        """Status of a single-device asynchronous request: ``Pending``, ``Success`` or ``Failure``."""
        account = quote(self._account(account_name), safe="")
        path = f"/accounts/{account}/requests/{quote(request_id, safe='')}/status"
        call = _Call(REQUEST_STATUS, "GET", path)
        status = (await self._m2m_parsed(call, RequestStatusResponse))[1].status.strip()
        for canonical in ("Pending", "Success", "Failure"):
            if status.lower() == canonical.lower():
                return canonical
        return status

    # ------------------------------------------------------------------------------- callbacks

    async def register_callback(
        self,
        service_name: str,
        url: str,
        *,
        username: str | None = None,
        password: str | None = None,
        account_name: str | None = None,
    ) -> None:
        """Register (or replace) the listener URL of a callback service such as ``CarrierService``."""
        body = CallbackRegistration.model_validate(
            {"name": service_name, "url": url, "username": username, "password": password}
        ).wire()
        path = f"/callbacks/{quote(self._account(account_name), safe='')}"
        await self._m2m(_Call(CALLBACKS_REGISTER, "POST", path, body))

    async def list_callbacks(self, account_name: str | None = None) -> list[CallbackListener]:
        path = f"/callbacks/{quote(self._account(account_name), safe='')}"
        call = _Call(CALLBACKS_LIST, "GET", path)
        return (await self._m2m_parsed(call, _LISTENERS))[1]

    async def delete_callback(self, service_name: str, account_name: str | None = None) -> None:
        account = quote(self._account(account_name), safe="")
        path = f"/callbacks/{account}/name/{quote(service_name, safe='')}"
        await self._m2m(_Call(CALLBACKS_DELETE, "DELETE", path))

    # ------------------------------------------------------------------------------- session end

    async def logout(self) -> None:
        """End the current session, if any.  Never logs in just to log out; an already expired
        session counts as logged out."""
        async with self._login_lock:
            session = self.auth.session
            if session is None:
                return
            self.auth.session = None
            call = _Call(LOGOUT, "POST", "/session/logout")
            access = await self._access_token()
            reply = await self._send(
                LOGOUT,
                "POST",
                f"{self.conn.m2m_url}/session/logout",
                provisioning=False,
                device=None,
                request_text=call.request_text,
                headers=self._headers(access, session.value),
            )
            code = reply.error_code
            if 200 <= reply.status < 300 or (code and strip_service_prefix(code) == _SESSION_EXPIRED):
                return
            raise self._error_for_reply(call, reply)
