"""Answers the simulator cannot produce (gateway timeouts, empty requestId, dropped connections...).

These few tests use httpx.MockTransport on purpose: the main paths are covered over real HTTP in the
other modules.  Note that a MockTransport emits no trace events, so the client cannot prove that nothing
was sent: it must then assume the request went out (the conservative choice for provisioning).
"""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from bulkchange.carrier.errors import (
    AuthenticationFailed,
    LoginLocked,
    OutcomeUnknown,
    PermanentError,
    RateLimited,
    TransientError,
)
from bulkchange.carrier.thingspace.client import InMemoryLoginGuard, ThingSpaceClient, redact_text
from bulkchange.carrier.thingspace.models import DeviceId

from .conftest import ICCID, connection

DEVICE = [[DeviceId(kind="iccid", id=ICCID)]]
Handler = Callable[[httpx.Request], httpx.Response]


class Fake:
    """Token and login answered normally; every M2M call goes to ``handler``."""

    def __init__(self, handler: Handler, login: Handler | None = None) -> None:
        self.handler = handler
        self.login = login
        self.calls: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        self.calls.append(path.rsplit("/v1/", 1)[-1])
        if path.endswith("/oauth2/token"):
            return httpx.Response(200, json={"access_token": "tok-1", "expires_in": 3600})
        if path.endswith("/session/login"):
            if self.login is not None:
                return self.login(request)
            return httpx.Response(200, json={"sessionToken": "sess-1"})
        return self.handler(request)

    def client(self, **kwargs: Any) -> ThingSpaceClient:
        http = httpx.AsyncClient(transport=httpx.MockTransport(self))
        kwargs.setdefault("backoff_initial_s", 0.001)
        return ThingSpaceClient(connection("http://ts.test"), http=http, **kwargs)


def count(fake: Fake, suffix: str) -> int:
    return sum(c.endswith(suffix) for c in fake.calls)


async def test_empty_request_id_is_permanent() -> None:
    fake = Fake(lambda r: httpx.Response(200, json={"requestId": ""}))
    with pytest.raises(PermanentError, match="without a requestId"):
        await fake.client().activate(DEVICE, service_plan="p", mdn_zip_code="1")
    assert count(fake, "actions/activate") == 1


async def test_gateway_timeout_on_provisioning_is_outcome_unknown() -> None:
    fake = Fake(lambda r: httpx.Response(504, text="<html>Gateway Timeout</html>"))
    with pytest.raises(OutcomeUnknown) as info:
        await fake.client().suspend(DEVICE)
    assert info.value.http_status == 504
    assert count(fake, "actions/suspend") == 1


async def test_gateway_timeout_on_read_is_retried() -> None:
    fake = Fake(lambda r: httpx.Response(504, text="Gateway Timeout"))
    with pytest.raises(TransientError):
        await fake.client(max_attempts=3).list_page()
    assert count(fake, "actions/list") == 3


async def test_connection_dropped_after_sending_provisioning() -> None:
    def drop(request: httpx.Request) -> httpx.Response:
        raise httpx.RemoteProtocolError("Server disconnected without sending a response.", request=request)

    fake = Fake(drop)
    with pytest.raises(OutcomeUnknown):
        await fake.client().deactivate(DEVICE)
    assert count(fake, "actions/deactivate") == 1
    with pytest.raises(TransientError):
        await fake.client(max_attempts=2).list_page()
    assert count(fake, "actions/list") == 2


async def test_connect_error_on_provisioning_is_retried() -> None:
    attempts = {"n": 0}

    def flaky(request: httpx.Request) -> httpx.Response:
        attempts["n"] += 1
        if attempts["n"] < 3:
            raise httpx.ConnectError("connection refused", request=request)
        return httpx.Response(200, json={"requestId": "r-1"})

    accepted = await Fake(flaky).client().restore(DEVICE)
    assert accepted.request_id == "r-1" and attempts["n"] == 3


async def test_persistent_401_after_one_refresh() -> None:
    fault = {"fault": {"code": "900901", "message": "Invalid Credentials", "description": "x"}}
    fake = Fake(lambda r: httpx.Response(401, json=fault))
    with pytest.raises(AuthenticationFailed) as info:
        await fake.client().list_page()
    assert info.value.code == "900901"
    assert count(fake, "oauth2/token") == 2 and count(fake, "actions/list") == 2


async def test_retry_after_http_date() -> None:
    when = email.utils.formatdate(time.time() + 1, usegmt=True)
    body = {"errorCode": "UnifiedWebService.REQUEST_FAILED.RateLimitExceeded", "errorMessage": "slow"}
    fake = Fake(lambda r: httpx.Response(429, json=body, headers={"Retry-After": when}))
    with pytest.raises(RateLimited) as info:
        await fake.client(max_attempts=1).list_page()
    assert info.value.retry_after is not None and 0 <= info.value.retry_after <= 2


async def test_unknown_login_refusal_counts_as_failed_login() -> None:
    guard = InMemoryLoginGuard()
    body = {"errorCode": "UnifiedWebService.REQUEST_FAILED.SomethingNew", "errorMessage": "no"}
    fake = Fake(lambda r: httpx.Response(200, json={}), login=lambda r: httpx.Response(400, json=body))
    client = fake.client(login_guard=guard)
    with pytest.raises(AuthenticationFailed) as info:
        await client.list_page()
    assert info.value.code == "REQUEST_FAILED.SomethingNew"
    with pytest.raises(LoginLocked):
        await client.list_page()
    assert count(fake, "session/login") == 1


async def test_login_server_error_is_transient_and_not_a_failed_login() -> None:
    guard = InMemoryLoginGuard()
    logins = {"n": 0}

    def login(request: httpx.Request) -> httpx.Response:
        logins["n"] += 1
        if logins["n"] == 1:
            return httpx.Response(503, text="busy")
        return httpx.Response(200, json={"sessionToken": "s"})

    fake = Fake(lambda r: httpx.Response(200, json={"hasMoreData": False, "devices": []}), login=login)
    page = await fake.client(login_guard=guard).list_page()
    assert page.devices == [] and guard.failure is None and logins["n"] == 2


async def test_202_without_has_more_data_means_more() -> None:
    fake = Fake(lambda r: httpx.Response(202, json={"devices": []}))
    page = await fake.client().list_page()
    assert page.has_more_data


async def test_paging_without_cursor_stops_with_an_error() -> None:
    device = {"deviceIds": [{"kind": "iccid", "id": ICCID}], "carrierInformations": [{"state": "active"}]}
    fake = Fake(lambda r: httpx.Response(202, json={"hasMoreData": True, "devices": [device]}))
    client = fake.client()
    seen = []
    with pytest.raises(PermanentError, match="DeviceId"):
        async for d in client.list_devices():
            seen.append(d.iccid)
    assert seen == [ICCID]


async def test_async_login_guard_is_awaited() -> None:
    events: list[str] = []

    class AsyncGuard:
        async def check(self) -> None:
            events.append("check")

        async def record_failure(self, message: str) -> None:
            events.append("failure")

        async def record_success(self) -> None:
            events.append("success")

    fake = Fake(lambda r: httpx.Response(200, json={"hasMoreData": False, "devices": []}))
    await fake.client(login_guard=AsyncGuard()).list_page()
    assert events == ["check", "success"]


async def test_request_text_sent_is_what_is_logged() -> None:
    sent: list[bytes] = []

    def capture(request: httpx.Request) -> httpx.Response:
        sent.append(request.content)
        return httpx.Response(200, json={"requestId": "r"})

    accepted = await Fake(capture).client().activate(DEVICE, service_plan="p", mdn_zip_code="1")
    assert sent[0].decode() == accepted.request_text


def test_redact_text() -> None:
    text = json.dumps({"sessionToken": "abc", "nested": [{"password": "pw", "url": "u"}], "access_token": "t"})
    out = redact_text(text) or ""
    assert "abc" not in out and "pw" not in out and '"t"' not in out and '"u"' in out
    assert redact_text("plain text") == "plain text"
    assert redact_text('{"requestId":"r"}') == '{"requestId":"r"}'  # untouched byte for byte
    # A key spelt with JSON escapes is still a secret key (the quick "nothing to redact" check must not miss it).
    escaped = redact_text('{"pass\\u0077ord":"hunter22","id":"1"}') or ""
    assert "hunter22" not in escaped and "***" in escaped
    assert "tok123456" not in (redact_text('{"sessionToken":"tok123456"}') or "")
