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
  before each attempt, retries included.
* **Typed errors** (see :mod:`.errors`) carrying the ICCID, the carrier's ``errorCode`` and its message.
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
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ValidationError
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from bulkchange.security.transport import outbound_limits, tls_context

from ..errors import CarrierError, OutcomeUnknown, RateLimited, TransientError
from .errors import error_for_answer
from .models import (
    AuditRecord,
    AuditTrailPage,
    ControlCenterConnection,
    ControlCenterDevice,
    DeviceSearchPage,
    EditAccepted,
    normalise_status,
)

__all__ = ["AUDIT_TRAILS", "EDIT", "GET_DEVICE", "SEARCH", "ControlCenterClient", "Limiter"]

log = logging.getLogger(__name__)

_M = TypeVar("_M", bound=BaseModel)
_T = TypeVar("_T")

#: Endpoint names passed to the limiter and stored in errors (``CarrierError.endpoint``).
GET_DEVICE = "devices/get"
EDIT = "devices/edit"
SEARCH = "devices/search"
AUDIT_TRAILS = "devices/auditTrails"

#: Awaited before every HTTP request with the endpoint name; the per-account rate limiter plugs in here.
Limiter = Callable[[str], Awaitable[None]]

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
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
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
        if self._limiter is not None:
            await self._limiter(call.endpoint)
        url = f"{self.conn.api_url}{call.path}"
        request_text = call.request_text(url)
        events: list[str] = []

        async def trace(name: str, info: Mapping[str, Any]) -> None:
            events.append(name)

        ctx: dict[str, Any] = {"endpoint": call.endpoint, "device": call.iccid, "request_text": request_text}
        try:
            async with asyncio.timeout(self._timeout):
                resp = await self._http.request(
                    call.method,
                    url,
                    params=call.params,
                    json=call.body,
                    headers={"Accept": "application/json"},
                    auth=self._auth,
                    timeout=self._timeout,
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
            state = "after sending" if sent else "before sending"
            raise TransientError(f"Control Center unreachable {state} the request ({what})", **ctx) from exc
        text = resp.text
        try:
            body: Any = json.loads(text) if text.strip() else None
        except ValueError:
            body = None
        log.debug("controlcenter %s %s -> %s", call.method, call.endpoint, resp.status_code)
        reply = _Reply(resp.status_code, resp.headers, text, body, request_text)
        if not 200 <= reply.status < 300:
            raise self._error(call, reply)
        return reply

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
        return isinstance(exc, TransientError)

    def _wait(self, state: RetryCallState) -> float:
        """Capped exponential backoff with full jitter, never shorter than ``Retry-After``."""
        ceiling = min(self._backoff_cap, self._backoff_initial * 2 ** (state.attempt_number - 1))
        delay = random.uniform(0, ceiling)
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, RateLimited) and exc.retry_after is not None:
            delay = max(delay, exc.retry_after)
        return delay

    async def _with_retries(self, fn: Callable[[], Awaitable[_T]]) -> _T:
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._max_attempts),
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
        params = {"fields": ",".join(fields)} if fields else None
        call = _Call(GET_DEVICE, "GET", f"/devices/{quote(iccid, safe='')}", iccid=iccid, params=params)
        try:
            return (await self._call(call, ControlCenterDevice))[1]
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
        if since is not None:
            age_s = self._clock() - since.timestamp()
            days_of_history = max(1, min(AUDIT_DAYS_MAX, math.ceil(age_s / 86400) + 1))
        records: list[AuditRecord] = []
        number = 1
        while max_pages is None or number <= max_pages:
            page = await self.audit_trail_page(iccid, days_of_history=days_of_history, page_number=number)
            fresh = [r for r in page.device_audit_trails if since is None or not _before(r, since)]
            records.extend(fresh)
            if page.last_page or not page.device_audit_trails or len(fresh) < len(page.device_audit_trails):
                break
            number += 1
        return records


def _before(record: AuditRecord, since: datetime) -> bool:
    return record.effective_date is not None and record.effective_date < since
