"""The CarrierService callback receiver of the served application: credentials, source allow-list,
duplicates, malformed bodies, and the bulk change finished by the simulator's real callbacks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import select

from bulkchange.api.callbacks import credentials_match, source_allowed
from bulkchange.api.settings import ApiSettings
from bulkchange.store.tables import ThingSpaceCallBackResponseLog

from .conftest import CALLBACK_PASSWORD, CALLBACK_USER, Api, activation_row, make_api, new_iccid


def _callback(request_id: str, iccid: str, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "username": CALLBACK_USER,
        "password": CALLBACK_PASSWORD,
        "requestId": request_id,
        "deviceIds": [{"id": iccid, "kind": "Iccid"}],
        "deviceResponse": {"activateResponse": {"deviceIds": [{"id": iccid, "kind": "iccid"}], "state": "active"}},
        "status": "Success",
        "callbackCount": 1,
        "maxCallbackThreshold": 4,
    }
    body.update(extra)
    return body


def _stored(api: Api) -> list[ThingSpaceCallBackResponseLog]:
    with api.rt.session_factory() as session:
        return list(session.execute(select(ThingSpaceCallBackResponseLog)).scalars())


def test_activations_are_verified_by_the_simulators_callbacks(api: Api) -> None:
    bulk_id = api.create([activation_row() for _ in range(3)]).json()["id"]
    api.wait_processed(bulk_id)
    stored = _stored(api)
    assert len(stored) >= 3
    assert all(row.m2m_device_change_id is not None for row in stored)
    assert all(CALLBACK_PASSWORD not in row.api_response for row in stored), "echoed secrets are not stored"
    changes = api.http.get(f"/api/v1/bulk-changes/{bulk_id}/changes").json()["items"]
    for change in changes:
        applied = [e for e in change["logs"] if e["description"].startswith("ThingSpace Callback")]
        assert len(applied) == 1, "each callback is applied once, however many receivers run at once"
    metrics = api.http.get("/metrics").text
    assert 'bulkchange_callbacks_received_total{result="stored"}' in metrics


def test_wrong_or_missing_credentials_are_refused_and_nothing_is_stored(api: Api) -> None:
    url = f"/callbacks/thingspace/{api.provider_id}"
    iccid = new_iccid()
    assert api.http.post(url, json=_callback("r-1", iccid, password="guess")).status_code == 401
    assert api.http.post(url, json=_callback("r-1", iccid, username="someone")).status_code == 401
    no_creds = _callback("r-1", iccid)
    del no_creds["username"], no_creds["password"]
    assert api.http.post(url, json=no_creds).status_code == 401
    assert _stored(api) == []


def test_duplicates_are_dropped_and_malformed_bodies_refused(api: Api) -> None:
    url = f"/callbacks/thingspace/{api.provider_id}"
    body = _callback("req-unknown", new_iccid())
    first = api.http.post(url, json=body)
    # No change awaits it (yet: a callback can beat our commit of its requestId), so it is kept pending.
    assert first.status_code == 200 and first.json() == {"result": "stored"}
    again = api.http.post(url, json={**body, "callbackCount": 2})
    assert again.status_code == 200 and again.json() == {"result": "duplicate"}
    assert len(_stored(api)) == 1
    assert api.http.post(url, content=b"not json", headers={"content-type": "application/json"}).status_code == 400
    assert api.http.post(url, json=[1, 2]).status_code == 400
    assert api.http.post(url, json={"username": CALLBACK_USER, "password": CALLBACK_PASSWORD}).status_code == 400
    assert api.http.post(url, json=_callback("", new_iccid())).status_code == 400
    assert len(_stored(api)) == 1


@pytest.fixture
def fenced_api(tmp_path: Path) -> Iterator[Api]:
    settings = ApiSettings(
        callback_username=SecretStr(CALLBACK_USER),
        callback_password=SecretStr(CALLBACK_PASSWORD),
        callback_allowed_sources="3.87.163.45, 10.0.0.0/8",
    )
    yield from make_api(tmp_path, with_worker=False, callbacks=False, api_settings=settings)


def test_source_allow_list_refuses_other_addresses(fenced_api: Api) -> None:
    r = fenced_api.http.post(f"/callbacks/thingspace/{fenced_api.provider_id}", json=_callback("r", new_iccid()))
    assert r.status_code == 403
    assert _stored(fenced_api) == []


def test_without_configured_credentials_callbacks_are_accepted(tmp_path: Path) -> None:
    for api in make_api(tmp_path, api_settings=ApiSettings(), listener_credentials=None):
        bulk_id = api.create([activation_row()]).json()["id"]
        api.wait_processed(bulk_id)
        r = httpx.post(
            f"{api.base_url}/callbacks/thingspace/{api.provider_id}", json=_callback("x", new_iccid(), password="")
        )
        assert r.status_code == 200


def test_credential_and_source_checks() -> None:
    assert credentials_match({"username": "u", "password": "p"}, ("u", "p"))
    assert not credentials_match({"username": "u", "password": "q"}, ("u", "p"))
    assert not credentials_match({"username": "v", "password": "p"}, ("u", "p"))
    assert not credentials_match({"username": 1, "password": None}, ("u", "p"))
    assert credentials_match({}, ("", ""))
    networks = ApiSettings(callback_allowed_sources="3.87.163.45,10.0.0.0/8,::1").callback_networks
    assert source_allowed("3.87.163.45", networks)
    assert source_allowed("10.2.3.4", networks)
    assert source_allowed("::1", networks)
    assert not source_allowed("127.0.0.1", networks)
    assert not source_allowed("not-an-ip", networks)
    assert not source_allowed(None, networks)
    assert source_allowed("127.0.0.1", [])
