"""The HTTP guards of the served application: dashboard login and CSRF, security headers, body size
limits, and a replayed callback that changes nothing."""

from __future__ import annotations

import re

import httpx
import pytest
from sqlalchemy import select

from bulkchange.store.tables import M2MDeviceChange, ThingSpaceCallBackResponseLog

from .conftest import CALLBACK_PASSWORD, CALLBACK_USER, Api, activation_row


def _login(api: Api) -> httpx.Client:
    """A browser-like client: logged in through the form, authenticated by the session cookie only."""
    client = httpx.Client(base_url=api.base_url, timeout=10)
    r = client.post("/ui/login", data={"key": api.key, "next": "/ui/upload"})
    assert r.status_code == 303 and r.headers["location"] == "/ui/upload"
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    assert "Secure" not in cookie, "plain http on loopback: no Secure flag (it is set on https)"
    return client


def _csrf(page: str) -> str:
    match = re.search(r'name="csrf_token" value="([0-9a-f]{64})"', page)
    assert match, "every dashboard form carries the CSRF token"
    return match.group(1)


def test_login_refuses_a_wrong_key_and_never_redirects_off_site(api: Api) -> None:
    with httpx.Client(base_url=api.base_url, timeout=10) as client:
        assert client.post("/ui/login", data={"key": "bck_wrong"}).status_code == 401
        for target in ("https://evil.example/", "//evil.example/x", "/\\evil.example"):
            r = client.post("/ui/login", data={"key": api.key, "next": target})
            assert r.status_code == 303 and r.headers["location"] == "/ui/"


def test_dashboard_forms_need_the_csrf_token_and_the_same_origin(idle_api: Api) -> None:
    api = idle_api
    bulk_id = api.create([activation_row() for _ in range(2)]).json()["id"]
    browser = _login(api)
    try:
        page = browser.get(f"/ui/bulk-changes/{bulk_id}")
        assert page.status_code == 200
        token = _csrf(page.text)
        url = f"/ui/bulk-changes/{bulk_id}/cancel"
        assert browser.post(url, data={}).status_code == 403, "no token"
        assert browser.post(url, data={"csrf_token": "0" * 64}).status_code == 403, "a wrong token"
        cross = browser.post(url, data={"csrf_token": token}, headers={"Origin": "https://evil.example"})
        assert cross.status_code == 403, "another site's form"
        counts = api.http.get(f"/api/v1/bulk-changes/{bulk_id}").json()["counts"]
        assert counts == {"READY": 2}, "nothing was cancelled by the refused posts"
        ok = browser.post(url, data={"csrf_token": token}, headers={"Origin": api.base_url})
        assert ok.status_code == 303
        assert api.http.get(f"/api/v1/bulk-changes/{bulk_id}").json()["counts"] == {"CANCELLED": 2}
        # Logging out needs the token too, then the cookie is gone.
        assert browser.post("/ui/logout", data={"csrf_token": token}).status_code == 303
        assert browser.get("/ui/").status_code == 303
    finally:
        browser.close()


def test_security_headers(api: Api) -> None:
    for path in ("/ui/", "/api/v1/bulk-changes", "/healthz", "/ui/login", "/static/app.js"):
        headers = api.http.get(path).headers
        csp = headers["content-security-policy"]
        assert "unsafe-inline" not in csp and "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["x-frame-options"] == "DENY"
        assert headers["referrer-policy"] == "same-origin"
        assert "strict-transport-security" not in headers, "HSTS only on https"
    assert api.http.get("/api/v1/bulk-changes").headers["cache-control"] == "no-store"
    # The dashboard's pages have no inline script or style (so the CSP needs no unsafe-inline).
    page = api.http.get("/ui/upload").text
    assert "<script>" not in page and "style=" not in page and "onclick" not in page.lower()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_https_requests_get_hsts(api: Api) -> None:
    from starlette.testclient import TestClient

    from bulkchange.api.app import create_app
    from bulkchange.api.settings import ApiSettings

    with TestClient(create_app(api.rt, api_settings=ApiSettings()), base_url="https://testserver") as client:
        assert client.get("/healthz").headers["strict-transport-security"].startswith("max-age=")


def test_body_size_limits(api: Api) -> None:
    url = f"/callbacks/thingspace/{api.provider_id}"
    big = b'{"requestId": "' + b"x" * (70 * 1024) + b'"}'
    r = api.http.post(url, content=big, headers={"Content-Type": "application/json"})
    assert r.status_code == 413

    def chunks():  # type: ignore[no-untyped-def]
        for _ in range(80):
            yield b" " * 1024

    streamed = api.http.post(url, content=chunks(), headers={"Content-Type": "application/json"})
    assert streamed.status_code == 413, "no Content-Length: counted as it arrives"
    with api.rt.session_factory() as session:
        assert session.execute(select(ThingSpaceCallBackResponseLog)).first() is None


def test_a_replayed_callback_changes_nothing(api: Api) -> None:
    bulk_id = api.create([activation_row()]).json()["id"]
    api.wait_processed(bulk_id)
    with api.rt.session_factory() as session:
        stored = session.execute(select(ThingSpaceCallBackResponseLog)).scalars().first()
        assert stored is not None
        change = session.get(M2MDeviceChange, stored.m2m_device_change_id)
        assert change is not None
        before = (change.status, change.status_details, change.processed_date, change.attempt_count)
        count = len(session.execute(select(ThingSpaceCallBackResponseLog)).all())
        request_id, iccid = stored.request_id, stored.iccid
    replay = {
        "username": CALLBACK_USER,
        "password": CALLBACK_PASSWORD,
        "requestId": request_id,
        "deviceIds": [{"id": iccid, "kind": "Iccid"}],
        "deviceResponse": {"activateResponse": {"deviceIds": [{"id": iccid, "kind": "iccid"}], "state": "deactive"}},
        "status": "Failed",
        "faultResponse": {"faultcode": "X", "faultstring": "replayed with another verdict"},
        "callbackCount": 2,
    }
    r = httpx.post(f"{api.base_url}/callbacks/thingspace/{api.provider_id}", json=replay)
    assert r.status_code == 200 and r.json() == {"result": "duplicate"}
    with api.rt.session_factory() as session:
        change = session.get(M2MDeviceChange, change.id)
        assert change is not None
        assert (change.status, change.status_details, change.processed_date, change.attempt_count) == before
        assert len(session.execute(select(ThingSpaceCallBackResponseLog)).all()) == count
