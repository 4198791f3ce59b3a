"""The Rev.io client (httpx): create a service line and its products, and look them up.

Authentication: HTTP Basic ``username@clientcode:password`` plus ``Ocp-Apim-Subscription-Key``.
The base URL (``https://api.revioapi.com/v1``) comes from the change's ``IntegrationAuthentication`` row.

The client makes exactly one HTTP request per call: retries belong to the billing step, which records
its intent first and looks the service up before creating it again. Errors are typed by what the
caller may do next:

* ``RevioRefused`` — a clean 4xx answer: the request is wrong, retrying will not help.
* ``RevioTransient`` — 5xx, 408/429, timeouts, connection errors, unreadable answers: try again later.
  ``outcome_unknown`` says whether the request may have taken effect (it left and no clean answer came).
* ``RevioDeadlineExceeded`` (a ``RevioTransient``) — with a ``deadline`` (``domain.deadline``): the call
  was not made because less than ``min_call_s`` was left, or a lookup was cut short by it. Every call's
  timeout is bounded by the time left; a write cut short after it left is an ordinary ``outcome_unknown``.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import httpx

from bulkchange.domain.deadline import Deadline, OutOfTime, bounded
from bulkchange.engine.logbook import redact
from bulkchange.security.transport import outbound_limits, tls_context


@dataclass(frozen=True)
class RevioConnection:
    base_url: str
    username: str
    client_code: str
    password: str
    subscription_key: str

    def __repr__(self) -> str:  # never print the secrets
        return f"RevioConnection(base_url={self.base_url!r}, username={self.username!r}, client_code=***)"


class RevioError(Exception):
    def __init__(
        self,
        message: str,
        *,
        http_status: int | None = None,
        request_text: str | None = None,
        response_text: str | None = None,
        retry_after_s: float | None = None,
        outcome_unknown: bool = False,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.http_status = http_status
        self.request_text = request_text
        self.response_text = response_text
        self.retry_after_s = retry_after_s
        self.outcome_unknown = outcome_unknown


class RevioRefused(RevioError):
    """Rev.io answered 4xx: permanent for this request."""


class RevioCredentialsRefused(RevioRefused):
    """Rev.io answered 401 or 403: the credential is wrong or lacks the right, not the request. Every call
    made with it fails the same way until an operator fixes it (``credentials set --billing N``)."""


class RevioTransient(RevioError):
    """No usable answer: retry later (after a lookup when ``outcome_unknown``)."""


class RevioDeadlineExceeded(RevioTransient, OutOfTime):
    """Not made (or a lookup cut short) for lack of time before the caller's deadline: nothing happened."""


@dataclass(frozen=True)
class RevioCall:
    """A successful call, with the texts for its DeviceBulkChangeLog row."""

    payload: dict[str, Any]
    request_text: str
    response_text: str


class RevioClient:
    """One Rev.io tenant. Use as ``async with RevioClient(conn) as client``."""

    def __init__(
        self,
        connection: RevioConnection,
        *,
        timeout: float = 15.0,
        transport: httpx.AsyncBaseTransport | None = None,
        deadline: Deadline | None = None,
        min_call_s: float = 2.0,
    ) -> None:
        self.connection = connection
        self.deadline = deadline
        """Bounds every call made from now on (settable)."""
        self._timeout = timeout
        self._min_call_s = min_call_s
        self._http = httpx.AsyncClient(
            base_url=connection.base_url.rstrip("/"),
            auth=httpx.BasicAuth(f"{connection.username}@{connection.client_code}", connection.password),
            headers={"Ocp-Apim-Subscription-Key": connection.subscription_key, "Accept": "application/json"},
            timeout=timeout,
            transport=transport,
            verify=tls_context(),
            limits=outbound_limits(),
        )

    async def __aenter__(self) -> RevioClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # --------------------------------------------------------------------------------- endpoints

    async def create_service(self, body: dict[str, Any]) -> tuple[int, RevioCall]:
        """``POST /Services``: the new service id."""
        call = await self._request("POST", "/Services", body=body)
        return _id_of(call), call

    async def find_services(self, number: str) -> tuple[list[dict[str, Any]], RevioCall]:
        """``GET /Services?number=``: the services with this number (to reconcile an unknown outcome)."""
        call = await self._request("GET", "/Services", params={"number": number})
        return _records(call), call

    async def create_service_product(self, body: dict[str, Any]) -> tuple[int, RevioCall]:
        """``POST /ServiceProduct``: the new service product id."""
        call = await self._request("POST", "/ServiceProduct", body=body)
        return _id_of(call), call

    async def find_service_products(self, service_id: int) -> tuple[list[dict[str, Any]], RevioCall]:
        call = await self._request("GET", "/ServiceProduct", params={"service_id": service_id})
        return _records(call), call

    # ---------------------------------------------------------------------------------- plumbing

    async def _request(
        self, method: str, path: str, *, body: dict[str, Any] | None = None, params: dict[str, Any] | None = None
    ) -> RevioCall:
        url = f"{self.connection.base_url.rstrip('/')}{path}"
        query = "&".join(f"{k}={v}" for k, v in (params or {}).items())
        request_text = f"{method} {url}{'?' + query if query else ''}"
        if body is not None:
            request_text += "\n" + json.dumps(body, default=str)
        request_text = redact(request_text) or ""
        writes = method != "GET"
        deadline = self.deadline
        if deadline is not None and not deadline.allows(self._min_call_s):
            raise RevioDeadlineExceeded(
                f"Rev.io call not made: {deadline.usable_s():.1f}s left before the deadline", request_text=request_text
            )
        timeout = bounded(deadline, self._timeout)
        try:
            async with asyncio.timeout(timeout):  # a total bound: httpx's timeout is per read / write
                response = await self._http.request(method, path, json=body, params=params, timeout=timeout)
        except httpx.ConnectError as exc:
            raise RevioTransient(f"Rev.io unreachable: {exc}", request_text=request_text) from exc
        except (httpx.TimeoutException, TimeoutError) as exc:
            if timeout < self._timeout and (not writes or isinstance(exc, httpx.ConnectTimeout)):
                raise RevioDeadlineExceeded(
                    f"Rev.io call cut short by the deadline after {timeout:.1f}s ({type(exc).__name__})",
                    request_text=request_text,
                ) from exc
            raise RevioTransient(
                f"Rev.io did not answer in time ({type(exc).__name__})",
                request_text=request_text,
                outcome_unknown=writes and not isinstance(exc, httpx.ConnectTimeout),
            ) from exc
        except httpx.TransportError as exc:
            raise RevioTransient(
                f"Rev.io connection failed: {type(exc).__name__}: {exc}",
                request_text=request_text,
                outcome_unknown=writes,
            ) from exc
        text = redact(response.text) or ""
        status = response.status_code
        if status in (408, 429) or status >= 500:
            raise RevioTransient(
                f"Rev.io answered {status}: {_message(text)}",
                http_status=status,
                request_text=request_text,
                response_text=text,
                retry_after_s=_retry_after(response),
                outcome_unknown=writes and status not in (429, 503),
            )
        if status in (401, 403):
            raise RevioCredentialsRefused(
                f"Rev.io refused the credentials ({status}): {_message(text)}",
                http_status=status,
                request_text=request_text,
                response_text=text,
            )
        if status >= 400:
            raise RevioRefused(
                f"Rev.io refused the request ({status}): {_message(text)}",
                http_status=status,
                request_text=request_text,
                response_text=text,
            )
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if not isinstance(payload, dict) or payload.get("ok") is False:
            raise RevioTransient(
                f"Rev.io answer unreadable ({status})",
                http_status=status,
                request_text=request_text,
                response_text=text,
                outcome_unknown=writes,
            )
        return RevioCall(payload, request_text, text)


def _id_of(call: RevioCall) -> int:
    value = call.payload.get("id")
    if isinstance(value, bool) or not isinstance(value, int | str) or not str(value).isdigit():
        raise RevioTransient(
            "Rev.io answer has no id",
            request_text=call.request_text,
            response_text=call.response_text,
            outcome_unknown=True,
        )
    return int(value)


def _records(call: RevioCall) -> list[dict[str, Any]]:
    records = call.payload.get("records")
    if not isinstance(records, list):
        raise RevioTransient("Rev.io lookup answer has no records", response_text=call.response_text)
    return [r for r in records if isinstance(r, dict)]


def _message(text: str) -> str:
    try:
        data = json.loads(text)
    except ValueError:
        return text[:200] or "empty answer"
    if isinstance(data, dict) and data.get("message"):
        return str(data["message"])[:200]
    return text[:200]


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
