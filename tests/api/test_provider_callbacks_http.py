"""A provider's callback listener over REST (``/api/v1/providers/{id}/callbacks``) and on the dashboard's
providers page, against the simulator over real HTTP; and "next check at" wherever a bulk change whose
changes await the deferred check is shown (REST, `bulkchange status`, the dashboard)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from bulkchange.api.security import SESSION_COOKIE, csrf_token_for
from bulkchange.cli.main import app
from bulkchange.providers import add_controlcenter_provider
from bulkchange.services.apikeys import create_key

from .conftest import ACCOUNT, CALLBACK_USER, Api, activation_row, make_api


@pytest.fixture
def bare_api(tmp_path: Path) -> Iterator[Api]:
    """The application with its worker, its provider's listener not registered at the carrier."""
    yield from make_api(tmp_path, callbacks=False, activation_check_delay_s=600)


def _other_tenant_key(api: Api) -> str:
    with api.rt.session_factory() as session:
        return create_key(session, tenant_id=2, name="tenant B").key


def _controlcenter(api: Api) -> int:
    with api.rt.session_factory() as session:
        return add_controlcenter_provider(
            session, name="pod19", base_url="https://restapi19.att.com/rws/api", username="u", api_key="k-1"
        )


def test_rest_registers_lists_and_deletes_the_listener_at_the_carrier(bare_api: Api) -> None:
    api, path = bare_api, f"/api/v1/providers/{bare_api.provider_id}/callbacks"
    listed = api.http.get(path)
    assert listed.status_code == 200, listed.text
    assert listed.json() == {"service_provider_id": api.provider_id, "registered_url": None, "registrations": []}

    registered = api.http.post(path, json={"url": api.base_url})
    assert registered.status_code == 201, registered.text
    url = f"{api.base_url}/callbacks/thingspace/{api.provider_id}"
    assert registered.json()["registered_url"] == url
    assert registered.json()["registrations"] == [{"service": "CarrierService", "url": url, "username": CALLBACK_USER}]
    at_carrier = api.sim.listeners.get(ACCOUNT, "CarrierService")
    assert at_carrier is not None and at_carrier.url == url and at_carrier.username == CALLBACK_USER
    assert api.http.get(path).json()["registrations"][0]["url"] == url
    assert api.http.get("/api/v1/service-providers").json()[0]["callbacks"] is True

    assert api.http.post(path, json={"url": "http://example.com"}).status_code == 400  # plain http off loopback
    deleted = api.http.delete(path)
    assert deleted.status_code == 204, deleted.text
    assert api.sim.listeners.get(ACCOUNT, "CarrierService") is None
    assert api.http.get(path).json() == {
        "service_provider_id": api.provider_id,
        "registered_url": None,
        "registrations": [],
    }


def test_rest_refuses_without_a_key_another_tenant_and_a_control_center_provider(bare_api: Api) -> None:
    api, path = bare_api, f"/api/v1/providers/{bare_api.provider_id}/callbacks"
    assert httpx.get(api.base_url + path).status_code == 401
    other = {"Authorization": f"Bearer {_other_tenant_key(api)}"}
    assert api.http.get(path, headers=other).status_code == 403
    assert api.http.post(path, json={"url": api.base_url}, headers=other).status_code == 403
    assert api.http.delete(path, headers=other).status_code == 403
    assert api.sim.listeners.get(ACCOUNT, "CarrierService") is None

    cc = _controlcenter(api)
    refused = api.http.post(f"/api/v1/providers/{cc}/callbacks", json={"url": api.base_url})
    assert refused.status_code == 409 and "read back" in refused.json()["detail"]


def test_dashboard_shows_and_changes_the_registration(bare_api: Api) -> None:
    api = bare_api
    cc = _controlcenter(api)
    with httpx.Client(base_url=api.base_url, cookies={SESSION_COOKIE: api.key}) as browser:
        page = browser.get("/ui/providers")
        assert page.status_code == 200
        assert "not registered" in page.text and "every change waits for the deferred check" in page.text
        assert f'data-provider="{cc}" data-callbacks="read-back"' in page.text
        form = f"/ui/providers/{api.provider_id}/callbacks"
        assert browser.post(form, data={"url": api.base_url}).status_code == 403  # no CSRF token
        assert api.sim.listeners.get(ACCOUNT, "CarrierService") is None
        done = browser.post(form, data={"url": api.base_url, "csrf_token": csrf_token_for(api.key)})
        assert done.status_code == 303 and done.headers["location"].startswith("/ui/providers?notice=")
        page = browser.get("/ui/providers")
        url = f"{api.base_url}/callbacks/thingspace/{api.provider_id}"
        assert f'data-provider="{api.provider_id}" data-callbacks="registered"' in page.text and url in page.text
        assert api.sim.listeners.get(ACCOUNT, "CarrierService") is not None
        done = browser.post(f"{form}/delete", data={"csrf_token": csrf_token_for(api.key)})
        assert done.status_code == 303
        assert api.sim.listeners.get(ACCOUNT, "CarrierService") is None
        assert "not registered" in browser.get("/ui/providers").text


def test_next_check_at_is_shown_for_a_bulk_change_awaiting_the_deferred_check(
    bare_api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = bare_api
    bulk_id = api.create([activation_row() for _ in range(3)]).json()["id"]
    body = api.wait_for(bulk_id, lambda b: b["next_check_at"] is not None and b["counts"].get("AWAITING_RESULT") == 3)
    at = datetime.fromisoformat(body["next_check_at"])
    assert at.tzinfo is not None

    page = api.http.get(f"/ui/bulk-changes/{bulk_id}")
    assert 'id="next-check"' in page.text and "next check at" in page.text and at.strftime("%H:%M:%S") in page.text

    monkeypatch.setenv("BULKCHANGE_DATABASE_URL", api.rt.settings.database_url)
    shown = CliRunner().invoke(app, ["status", str(bulk_id), "--json"])
    assert shown.exit_code == 0, shown.output
    assert datetime.fromisoformat(json.loads(shown.stdout)["next_check_at"]) == at
    text = CliRunner().invoke(app, ["status", str(bulk_id)], env={"COLUMNS": "200"})
    assert "3 change(s) await the carrier's result: next check at" in text.output


def test_no_next_check_once_nothing_awaits(tmp_path: Path) -> None:
    for api in make_api(tmp_path):  # callbacks registered: each change is settled by its callback
        bulk_id = api.create([activation_row()]).json()["id"]
        assert api.wait_processed(bulk_id)["next_check_at"] is None
