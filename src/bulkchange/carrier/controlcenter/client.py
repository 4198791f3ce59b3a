"""Production client for the Cisco IoT Control Center REST API v1 (AT&T POD 19 and other pods).

What this module is careful about, and why:

* **Basic auth on every call.** No token, no session, no login call: the user name and API key go in
  every request's Authorization header, built once by httpx. They never appear in errors or texts.
* **The pod is configuration.** Every URL is built from :class:`ControlCenterConnection.base_url`.
* **Only known status values, upper case.** Control Center's values are upper-case REST names; a
  lower-case or display spelling is normalised before sending, an unknown one is never sent.
* **Never repeat an edit that may have happened.** Through httpx's trace hook the client knows whether
  request bytes left; an edit whose answer was lost raises :class:`OutcomeUnknown` and is not retried (the
  engine reconciles by reading the device). Reads, and anything refused before the carrier acted (429,
  5xx, connection refused), are retried with capped, jittered backoff, waiting at least ``Retry-After``.
* **Every call goes through the limiter hook.** Control Center allows a few calls per second per account
  and asks for one call at a time; a shared (database) limiter plugs in as ``limiter`` and is awaited
  before each attempt, retries included. A limiter that also has ``release(endpoint)``
  (:class:`ReleasingLimiter`) is told when each attempt is over (answered, failed or cancelled), so it can
  hold an "in flight" lease for exactly the time the carrier is busy with the call.
* **Typed errors** (see :mod:`.errors`) carrying the ICCID, the carrier's ``errorCode`` and its message.
* **A hard deadline** (optional ``deadline``, :class:`~bulkchange.domain.deadline.Deadline`): every
  attempt's timeout, the limiter's wait and the retry budget shrink to the time left, and no attempt is
  started with less than ``min_call_s`` left: :class:`DeadlineExceeded` (nothing was done at the carrier).
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import math
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar, runtime_checkable
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ValidationError
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from bulkchange.domain.deadline import Deadline, bounded
from bulkchange.security.transport import outbound_limits, tls_context

from ..errors import CarrierError, DeadlineExceeded, OutcomeUnknown, RateLimited, TransientError
from .errors import error_for_answer
from .models import (
    AuditRecord,
    AuditTrailPage,
    ControlCenterConnection,
    ControlCenterDevice,
    DeviceSearchPage,
    DeviceUsage,
    EditAccepted,
    normalise_status,
)

__all__ = [
    "AUDIT_TRAILS",
    "EDIT",
    "GET_DEVICE",
    "SEARCH",
    "USAGE",
    "AuditAnswer",
    "ControlCenterClient",
    "DeviceAnswer",
    "Limiter",
    "ReleasingLimiter",
]

log = logging.getLogger(__name__)

_M = TypeVar("_M", bound=BaseModel)
_T = TypeVar("_T")

#: Endpoint names passed to the limiter and stored in errors (``CarrierError.endpoint``).
GET_DEVICE = "devices/get"
EDIT = "devices/edit"
SEARCH = "devices/search"
AUDIT_TRAILS = "devices/auditTrails"
USAGE = "devices/ctdUsages"

#: Awaited before every HTTP request with the endpoint name; the per-account rate limiter plugs in here.
Limiter = Callable[[str], Awaitable[None]]


@runtime_checkable
class ReleasingLimiter(Protocol):
    """A limiter that also wants to know when each request is over (an in-flight lease).

    The client awaits ``limiter(endpoint)`` before an attempt and ``limiter.release(endpoint)`` once that
    attempt ended, whatever its result (an answer, an error, a timeout, a cancellation): every call that
    returned from ``__call__`` is released exactly once, by the same task.
    """

    def __call__(self, endpoint: str) -> Awaitable[None]: ...

    def release(self, endpoint: str) -> Awaitable[None]: ...


@dataclass(frozen=True)
class DeviceAnswer:
    """Get Device Details with the texts of the exchange (for log rows): ``device`` None when Control Center
    does not know the ICCID in this account (404)."""

    device: ControlCenterDevice | None
    request_text: str
    response_text: str


@dataclass(frozen=True)
class AuditAnswer:
    """A device's audit records (most recent first) with the texts of the exchange: the first page's request
    line and every page's body as received, one per line."""

    records: list[AuditRecord]
    request_text: str
    response_text: str


PAGE_SIZE_MAX = 50
AUDIT_DAYS_MAX = 365
# Exceptions raised before any byte of the request could have left this process.
_NOT_SENT_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)


def _retry_after_seconds(value: str | None, now: float) -> float | None:
    """``Retry-After`` as seconds: a number or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value.strip()))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value.strip())
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


def _query_date(value: datetime) -> str:
    """A date for a query or body: ISO 8601 with an explicit offset, e.g. ``2016-04-18T17:31:34+00:00``."""
    if value.tzinfo is None:
        raise ValueError("dates sent to Control Center must be timezone-aware")
    return value.astimezone(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class _Call:
    """One API call: what to send and how to report it."""

    endpoint: str
    method: str
    path: str
    iccid: str | None = None
    params: Mapping[str, str] | None = None
    body: dict[str, Any] | None = None

    @property
    def edit(self) -> bool:
        return self.method == "PUT"

    def request_text(self, url: str) -> str:
        line = f"{self.method} {url}"
        if self.params:
            line += "?" + "&".join(f"{k}={v}" for k, v in self.params.items())
        return line if self.body is None else f"{line}\n{json.dumps(self.body, separators=(',', ':'))}"


@dataclass
class _Reply:
    status: int
    headers: httpx.Headers
    text: str
    body: Any
    request_text: str

    @property
    def error_code(self) -> str | None:
        code = self.body.get("errorCode") if isinstance(self.body, dict) else None
        return str(code) if code not in (None, "") else None

    @property
    def error_message(self) -> str | None:
        message = self.body.get("errorMessage") if isinstance(self.body, dict) else None
        return str(message) if message not in (None, "") else None


class ControlCenterClient:
    """Async client of one Control Center user (one account).

    Use as ``async with ControlCenterClient(conn) as client: ...`` or call :meth:`aclose`. Methods raise
    :class:`~bulkchange.carrier.errors.CarrierError` subclasses only (plus ``ValueError`` for a call that
    cannot be sent, such as an unknown status value or no field to change).
    """

    def __init__(
        self,
        conn: ControlCenterConnection,
        *,
        http: httpx.AsyncClient | None = None,
        timeout: float = 30.0,
        max_attempts: int = 4,
        backoff_initial_s: float = 0.5,
        backoff_cap_s: float = 30.0,
        limiter: Limiter | None = None,
        clock: Callable[[], float] = time.time,
        deadline: Deadline | None = None,
        min_call_s: float = 2.0,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if min_call_s < 0:
            raise ValueError("min_call_s must be >= 0")
        self.conn = conn
        self._owns_http = http is None
        self._http = http or httpx.AsyncClient(timeout=timeout, verify=tls_context(), limits=outbound_limits())
        self._auth = httpx.BasicAuth(conn.username, conn.api_key.get_secret_value())
        self._timeout = timeout
        self._max_attempts = max_attempts
        self._backoff_initial = backoff_initial_s
        self._backoff_cap = backoff_cap_s
        self._limiter = limiter
        self._clock = clock
        self.deadline = deadline
        """Bounds every call made from now on (settable: one client may serve several deadlines)."""
        self._min_call_s = min_call_s

    def __repr__(self) -> str:
        return f"ControlCenterClient(base_url={self.conn.base_url!r}, username={self.conn.username!r})"

    async def __aenter__(self) -> ControlCenterClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP client if this client created it."""
        if self._owns_http:
            await self._http.aclose()

    # ------------------------------------------------------------------------------- transport

    async def _send(self, call: _Call) -> _Reply:
        """One HTTP exchange, no retries. Transport failures become typed errors depending on whether the
        request may have reached the carrier."""
        url = f"{self.conn.api_url}{call.path}"
        ctx: dict[str, Any] = {"endpoint": call.endpoint, "device": call.iccid, "request_text": call.request_text(url)}
        await self._limit(call.endpoint, ctx)
        try:
            return await self._exchange(call, url, ctx)
        finally:
            if isinstance(self._limiter, ReleasingLimiter):  # the in-flight lease ends with the exchange
                await self._limiter.release(call.endpoint)

    async def _exchange(self, call: _Call, url: str, ctx: dict[str, Any]) -> _Reply:
        events: list[str] = []

        async def trace(name: str, info: Mapping[str, Any]) -> None:
            events.append(name)

        timeout = bounded(self.deadline, self._timeout)
        try:
            async with asyncio.timeout(timeout):
                resp = await self._http.request(
                    call.method,
                    url,
                    params=call.params,
                    json=call.body,
                    headers={"Accept": "application/json"},
                    auth=self._auth,
                    timeout=timeout,
                    extensions={"trace": trace},
                )
        except (httpx.HTTPError, TimeoutError) as exc:
            what = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            # Without trace events nothing proves the request stayed here, so assume it left.
            sent = not isinstance(exc, _NOT_SENT_ERRORS) and (
                not events or any("send_request_headers" in e for e in events)
            )
            if sent and call.edit:
                raise OutcomeUnknown(
                    f"no answer from Control Center after the edit was sent ({what}); "
                    "the change may or may not have been made",
                    **ctx,
                ) from exc
            if timeout < self._timeout and isinstance(exc, TimeoutError | httpx.TimeoutException):
                raise DeadlineExceeded(
                    f"Control Center call cut short by the deadline after {timeout:.1f}s; nothing was changed",
                    **ctx,
                ) from exc
            state = "after sending" if sent else "before sending"
            raise TransientError(f"Control Center unreachable {state} the request ({what})", **ctx) from exc
        text = resp.text
        try:
            body: Any = json.loads(text) if text.strip() else None
        except ValueError:
            body = None
        log.debug("controlcenter %s %s -> %s", call.method, call.endpoint, resp.status_code)
        reply = _Reply(resp.status_code, resp.headers, text, body, ctx["request_text"])
        if not 200 <= reply.status < 300:
            raise self._error(call, reply)
        return reply

    def _require_time(self, ctx: dict[str, Any]) -> None:
        """Refuse to start a call with less than ``min_call_s`` before the deadline (nothing is sent)."""
        deadline = self.deadline
        if deadline is not None and not deadline.allows(self._min_call_s):
            raise DeadlineExceeded(
                f"Control Center call not made: {deadline.usable_s():.1f}s left before the deadline, "
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
                "Control Center call not made: the rate limit allows it only after the deadline", **ctx
            ) from None
        self._require_time(ctx)

    def _error(self, call: _Call, reply: _Reply) -> CarrierError:
        return error_for_answer(
            reply.status,
            reply.error_code,
            reply.error_message,
            edit=call.edit,
            retry_after=_retry_after_seconds(reply.headers.get("Retry-After"), self._clock()),
            endpoint=call.endpoint,
            device=call.iccid,
            request_text=reply.request_text,
            response_text=reply.text,
        )

    def _unreadable(self, call: _Call, reply: _Reply, why: str) -> CarrierError:
        ctx: dict[str, Any] = {
            "endpoint": call.endpoint,
            "http_status": reply.status,
            "device": call.iccid,
            "request_text": reply.request_text,
            "response_text": reply.text,
        }
        if call.edit:
            return OutcomeUnknown(
                f"Control Center answered the edit {reply.status} {why}; the change may or may not have been made",
                **ctx,
            )
        return TransientError(f"unreadable answer from Control Center ({why})", **ctx)

    def _parse(self, call: _Call, reply: _Reply, model: type[_M]) -> _M:
        if not isinstance(reply.body, dict):
            raise self._unreadable(call, reply, "the body is not a JSON object")
        try:
            return model.model_validate(reply.body)
        except ValidationError as exc:
            raise self._unreadable(call, reply, f"{exc.error_count()} schema error(s)") from exc

    # ------------------------------------------------------------------------------- retries

    def _retryable(self, exc: BaseException) -> bool:
        if isinstance(exc, RateLimited):
            # A long Retry-After is the caller's to schedule; do not sit on a worker for it.
            return exc.retry_after is None or exc.retry_after <= self._backoff_cap
        return isinstance(exc, TransientError) and not isinstance(exc, DeadlineExceeded)

    def _out_of_retry_time(self, state: RetryCallState) -> bool:
        """Stop retrying when the backoff plus a minimal call would end past the deadline (the last
        error is raised as it is)."""
        deadline = self.deadline
        return deadline is not None and not deadline.allows(state.upcoming_sleep + self._min_call_s)

    def _wait(self, state: RetryCallState) -> float:
        """Capped exponential backoff with full jitter, never shorter than ``Retry-After``."""
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

    async def _call(self, call: _Call, model: type[_M]) -> tuple[_Reply, _M]:
        """Send and parse inside one attempt, so an unreadable answer to a read is retried like any other
        transient failure (for an edit it is OutcomeUnknown, never retried)."""

        async def attempt() -> tuple[_Reply, _M]:
            reply = await self._send(call)
            return reply, self._parse(call, reply, model)

        return await self._with_retries(attempt)

    # ------------------------------------------------------------------------------- API

    async def authenticate(self) -> None:
        """Prove the credentials work with one cheap read (a one-device search of the last day).

        The engine calls this before touching any device, so refused credentials (``10000001``) stop a
        bulk change before its first edit. Raises :class:`AuthenticationFailed` for refused credentials.
        """
        since = datetime.fromtimestamp(self._clock(), tz=UTC) - timedelta(days=1)
        await self.search_page(since, page_size=1)

    async def get_device(self, iccid: str, *, fields: list[str] | None = None) -> ControlCenterDevice | None:
        """Get Device Details, or None when Control Center does not know the ICCID in this account."""
        return (await self.get_device_answer(iccid, fields=fields)).device

    async def get_device_answer(self, iccid: str, *, fields: list[str] | None = None) -> DeviceAnswer:
        """Get Device Details with the request and response texts (a 404 gives ``device`` None)."""
        params = {"fields": ",".join(fields)} if fields else None
        call = _Call(GET_DEVICE, "GET", f"/devices/{quote(iccid, safe='')}", iccid=iccid, params=params)
        try:
            reply, device = await self._call(call, ControlCenterDevice)
        except CarrierError as exc:
            if exc.http_status == 404:
                return DeviceAnswer(None, exc.request_text or "", exc.response_text or "")
            raise
        return DeviceAnswer(device, reply.request_text, reply.text)

    async def get_usage(self, iccid: str) -> DeviceUsage | None:
        """Get Device Usage: the cycle-to-date usage (``ctdDataUsage`` in bytes …), None for an unknown ICCID.

        Control Center calls usage "big data" (refreshed every few hours): good enough to pick a rate plan,
        not an exact meter.
        """
        call = _Call(USAGE, "GET", f"/devices/{quote(iccid, safe='')}/ctdUsages", iccid=iccid)
        try:
            return (await self._call(call, DeviceUsage))[1]
        except CarrierError as exc:
            if exc.http_status == 404:
                return None
            raise

    async def edit_device(
        self,
        iccid: str,
        *,
        status: str | None = None,
        rate_plan: str | None = None,
        communication_plan: str | None = None,
        effective_date: datetime | None = None,
    ) -> EditAccepted:
        """Edit Device Details: any of status, rate plan and communication plan in one call.

        ``status`` is normalised to its upper-case REST value (``ValueError`` if unknown). With a future
        ``effective_date`` Control Center answers 202 and makes the change on that date (at most 180 days
        ahead). An answer without the ICCID, or one that cannot be read, raises :class:`OutcomeUnknown`.
        """
        body: dict[str, Any] = {}
        if status is not None:
            body["status"] = normalise_status(status)
        if rate_plan is not None:
            body["ratePlan"] = rate_plan
        if communication_plan is not None:
            body["communicationPlan"] = communication_plan
        if not body:
            raise ValueError("edit_device needs at least one of status, rate_plan, communication_plan")
        if effective_date is not None:
            body["effectiveDate"] = _query_date(effective_date)
        call = _Call(EDIT, "PUT", f"/devices/{quote(iccid, safe='')}", iccid=iccid, body=body)

        async def attempt() -> EditAccepted:
            reply = await self._send(call)
            answered = reply.body.get("iccid") if isinstance(reply.body, dict) else None
            if not isinstance(answered, str | int) or str(answered).strip() != iccid:
                if not reply.text.strip():
                    why = "with an empty body"
                elif reply.body is None:
                    why = "with a body that is not JSON"
                else:
                    why = f"for another ICCID ({answered})" if answered else "without the ICCID"
                raise self._unreadable(call, reply, why)
            return EditAccepted(
                iccid=iccid,
                http_status=reply.status,
                scheduled=reply.status == 202,
                request_text=reply.request_text,
                response_text=reply.text,
            )

        return await self._with_retries(attempt)

    async def search_page(
        self,
        modified_since: datetime,
        *,
        modified_till: datetime | None = None,
        status: str | None = None,
        account_id: str | None = None,
        page_number: int = 1,
        page_size: int = PAGE_SIZE_MAX,
    ) -> DeviceSearchPage:
        """One page of Search Devices (devices modified since a date, oldest first, at most 50 a page)."""
        params = {"modifiedSince": _query_date(modified_since)}
        if modified_till is not None:
            params["modifiedTill"] = _query_date(modified_till)
        if status is not None:
            params["status"] = normalise_status(status)
        if account_id is not None:
            params["accountId"] = account_id
        params["pageSize"] = str(max(1, min(page_size, PAGE_SIZE_MAX)))
        params["pageNumber"] = str(max(1, page_number))
        return (await self._call(_Call(SEARCH, "GET", "/devices", params=params), DeviceSearchPage))[1]

    async def search_devices(
        self,
        modified_since: datetime,
        *,
        modified_till: datetime | None = None,
        status: str | None = None,
        account_id: str | None = None,
        page_size: int = PAGE_SIZE_MAX,
        first_page: int = 1,
    ) -> AsyncIterator[DeviceSearchPage]:
        """Every page of Search Devices from ``first_page`` until ``lastPage`` (or an empty page)."""
        number = max(1, first_page)
        while True:
            page = await self.search_page(
                modified_since,
                modified_till=modified_till,
                status=status,
                account_id=account_id,
                page_number=number,
                page_size=page_size,
            )
            yield page
            if page.last_page or not page.devices:
                return
            number += 1

    async def audit_trail_page(
        self, iccid: str, *, days_of_history: int = 30, page_number: int = 1, page_size: int = PAGE_SIZE_MAX
    ) -> AuditTrailPage:
        """One page of the device's audit history (most recent first); ``days_of_history`` 1–365."""
        params = {
            "daysOfHistory": str(max(1, min(days_of_history, AUDIT_DAYS_MAX))),
            "pageSize": str(max(1, min(page_size, PAGE_SIZE_MAX))),
            "pageNumber": str(max(1, page_number)),
        }
        path = f"/devices/{quote(iccid, safe='')}/auditTrails"
        return (await self._call(_Call(AUDIT_TRAILS, "GET", path, iccid=iccid, params=params), AuditTrailPage))[1]

    async def audit_trails(
        self, iccid: str, *, since: datetime | None = None, days_of_history: int = 30, max_pages: int | None = None
    ) -> list[AuditRecord]:
        """The device's audit records, most recent first, back to ``since`` (inclusive) if given.

        With ``since`` the history asked for covers it (whole days, at most 365) and paging stops at the
        first page that reaches back before it. Records without a readable date are kept. ``since`` is
        compared with Control Center's own clock: allow for skew when passing the time of a call.
        """
        found = await self.audit_trails_answer(iccid, since=since, days_of_history=days_of_history, max_pages=max_pages)
        return found.records

    async def audit_trails_answer(
        self, iccid: str, *, since: datetime | None = None, days_of_history: int = 30, max_pages: int | None = None
    ) -> AuditAnswer:
        """:meth:`audit_trails` with the texts of the exchange (for log rows)."""
        if since is not None:
            age_s = self._clock() - since.timestamp()
            days_of_history = max(1, min(AUDIT_DAYS_MAX, math.ceil(age_s / 86400) + 1))
        records: list[AuditRecord] = []
        request_text = ""
        bodies: list[str] = []
        number = 1
        days = str(max(1, min(days_of_history, AUDIT_DAYS_MAX)))
        path = f"/devices/{quote(iccid, safe='')}/auditTrails"
        while max_pages is None or number <= max_pages:
            params = {"daysOfHistory": days, "pageSize": str(PAGE_SIZE_MAX), "pageNumber": str(number)}
            call = _Call(AUDIT_TRAILS, "GET", path, iccid=iccid, params=params)
            reply, page = await self._call(call, AuditTrailPage)
            request_text = request_text or reply.request_text
            bodies.append(reply.text)
            fresh = [r for r in page.device_audit_trails if since is None or not _before(r, since)]
            records.extend(fresh)
            if page.last_page or not page.device_audit_trails or len(fresh) < len(page.device_audit_trails):
                break
            number += 1
        return AuditAnswer(records, request_text, "\n".join(bodies))


def _before(record: AuditRecord, since: datetime) -> bool:
    return record.effective_date is not None and record.effective_date < since
