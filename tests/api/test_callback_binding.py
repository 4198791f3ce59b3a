"""Who may settle a change by callback, over real HTTP against the served application.

A callback settles a change only when it echoes its provider's own callback credentials, was posted to that
provider's URL, carries the change's requestId and answers its current step. A change whose requestId was
lost (outcome unknown after a crash) is settled by a carrier read, never by a callback's word. A body nested
too deep is a 400, not a 500.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from bulkchange.providers import add_provider, callback_listener
from bulkchange.store.tables import Device, DeviceBulkChangeLog, M2MDeviceChange, ThingSpaceCallBackResponseLog

from .conftest import ACCOUNT, CALLBACK_PASSWORD, CALLBACK_USER, Api, activation_row, make_api, new_iccid

FAKE_MSISDN = "15550001111"
FAKE_IP = "6.6.6.6"


@pytest.fixture
def quiet_api(tmp_path: Path) -> Iterator[Api]:
    """Worker running, no listener registered and the deferred check far away: changes stay AWAITING until a
    test's callback (or a read it causes) moves them. Unmatched callbacks are marked at once."""
    yield from make_api(tmp_path, callbacks=False, activation_check_delay_s=600, callback_match_grace_s=0)


def _callback(request_id: str, iccid: str, credentials: tuple[str, str] | None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "requestId": request_id,
        "deviceIds": [{"id": iccid, "kind": "Iccid"}],
        "deviceResponse": {
            "activateResponse": {
                "deviceIds": [{"id": iccid, "kind": "iccid"}, {"id": FAKE_MSISDN, "kind": "msisdn"}],
                "ipAddress": FAKE_IP,
                "state": "active",
            }
        },
        "status": "Success",
        "callbackCount": 1,
        "maxCallbackThreshold": 4,
    }
    if credentials is not None:
        body["username"], body["password"] = credentials
    body.update(extra)
    return body


def _wait(what: str, predicate: Callable[[], Any], timeout_s: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {timeout_s}s")


def _change(api: Api, change_id: int) -> M2MDeviceChange:
    with api.rt.session_factory() as session:
        change = session.get(M2MDeviceChange, change_id)
        assert change is not None
        return change


def _awaiting_change(api: Api, provider_id: int | None = None) -> M2MDeviceChange:
    """Submit one activation and wait until it awaits the carrier's result with a requestId."""
    body = {"service_provider_id": provider_id or api.provider_id, "status": "active", "rows": [activation_row()]}
    created = api.http.post("/api/v1/bulk-changes", json=body)
    assert created.status_code == 201, created.text
    bulk_id = created.json()["id"]

    def awaiting() -> M2MDeviceChange | None:
        with api.rt.session_factory() as session:
            change = session.execute(select(M2MDeviceChange).where(M2MDeviceChange.bulk_change_id == bulk_id)).scalar()
        ok = change is not None and change.status == "AWAITING_RESULT" and change.carrier_request_id
        return change if ok else None

    change: M2MDeviceChange = _wait("the activation awaits its result", awaiting)
    return change


def _stored(api: Api, request_id: str) -> ThingSpaceCallBackResponseLog | None:
    with api.rt.session_factory() as session:
        return session.execute(
            select(ThingSpaceCallBackResponseLog).where(ThingSpaceCallBackResponseLog.request_id == request_id)
        ).scalar_one_or_none()


def _post(api: Api, provider_id: int, body: Any) -> httpx.Response:
    return httpx.post(f"{api.base_url}/callbacks/thingspace/{provider_id}", json=body, timeout=10)


def _devices_with_fake_numbers(api: Api) -> int:
    with api.rt.session_factory() as session:
        rows = session.execute(select(Device).where((Device.msisdn == FAKE_MSISDN) | (Device.ip_address == FAKE_IP)))
        return len(rows.all())


def test_an_unauthenticated_callback_settles_nothing_and_rewrites_no_device(quiet_api: Api) -> None:
    api = quiet_api
    change = _awaiting_change(api)
    assert change.carrier_request_id is not None
    for credentials in (None, ("", ""), (CALLBACK_USER, ""), (CALLBACK_USER, "guess")):
        r = _post(api, api.provider_id, _callback(change.carrier_request_id, change.iccid, credentials))
        assert r.status_code == 401, (credentials, r.text)
        assert r.json()["detail"] == "callback credentials do not match"
    assert _stored(api, change.carrier_request_id) is None
    assert _change(api, change.id).status == "AWAITING_RESULT"
    assert _devices_with_fake_numbers(api) == 0


def test_a_callback_to_another_providers_url_settles_nothing(quiet_api: Api) -> None:
    api = quiet_api
    with api.rt.session_factory() as session:
        other = add_provider(
            session,
            name="other",
            base_url=api.carrier.base_url,
            client_id="sim-client",
            client_secret="sim-secret",
            username="sim-user",
            password="sim-pass",
            account=ACCOUNT,
        )
        other_listener = callback_listener(session, other)
    assert other_listener.username and other_listener.password
    change = _awaiting_change(api, provider_id=other)  # provider B's change
    request_id = change.carrier_request_id
    assert request_id is not None

    # B's own credentials are worthless on A's URL …
    refused = _post(api, api.provider_id, _callback(request_id, change.iccid, (other_listener.username, "x")))
    assert refused.status_code == 401
    stolen = (other_listener.username, other_listener.password)
    assert _post(api, api.provider_id, _callback(request_id, change.iccid, stolen)).status_code == 401
    # … and A's genuine credentials on A's URL do not reach B's change.
    r = _post(api, api.provider_id, _callback(request_id, change.iccid, (CALLBACK_USER, CALLBACK_PASSWORD)))
    assert r.status_code == 200 and r.json() == {"result": "stored"}
    stored = _wait("the callback was examined", lambda: (s := _stored(api, request_id)) and s.outcome and s)
    assert stored.outcome.startswith("unmatched"), stored.outcome
    assert stored.service_provider_id == api.provider_id and stored.m2m_device_change_id is None
    assert _change(api, change.id).status == "AWAITING_RESULT"
    assert _devices_with_fake_numbers(api) == 0


def test_a_made_up_request_id_never_settles_a_change_without_one(quiet_api: Api) -> None:
    """After a crash the reconcile saw the step under way but never learnt its requestId. A callback with
    any requestId for that device (here a made-up one claiming a refusal) only makes the device be read: the
    carrier's view — the activation went through — decides."""
    api = quiet_api
    change = _awaiting_change(api)
    _wait("the carrier finished the activation", lambda: (d := api.sim.device(change.iccid)) and d.state == "active")
    with api.rt.session_factory.begin() as session:  # what a reconcile that never learnt the requestId leaves
        session.execute(update(M2MDeviceChange).where(M2MDeviceChange.id == change.id).values(carrier_request_id=None))
    refusal = _callback(
        "made-up-1",
        change.iccid,
        (CALLBACK_USER, CALLBACK_PASSWORD),
        status="Failed",
        faultResponse={"faultcode": "UnifiedWebService.REQUEST_FAILED.DeviceNotFound", "faultstring": "no"},
    )
    del refusal["deviceResponse"]
    r = _post(api, api.provider_id, refusal)
    assert r.status_code == 200

    _wait("the change is settled", lambda: _change(api, change.id).status in ("PROCESSED", "ERROR"))
    settled = _change(api, change.id)
    assert settled.status == "PROCESSED", settled.status_details  # the read, not the made-up refusal
    carrier = api.sim.device(change.iccid)
    assert carrier is not None
    with api.rt.session_factory() as session:
        device = session.execute(select(Device).where(Device.iccid == change.iccid)).scalar_one()
        logs = [
            (row.log_entry_description, row.error_text or "")
            for row in session.execute(
                select(DeviceBulkChangeLog).where(DeviceBulkChangeLog.m2m_device_change_id == change.id)
            ).scalars()
        ]
    assert device.msisdn == carrier.msisdn
    assert any(d.startswith("Reconcile ThingSpace Device") for d, _ in logs), logs
    assert any(d.startswith("ThingSpace Callback") and "not a verdict" in e for d, e in logs), logs
    stored = _stored(api, "made-up-1")
    assert stored is not None and stored.outcome is not None and stored.outcome.startswith("not a verdict")


def test_a_callback_that_answers_another_step_settles_nothing(quiet_api: Api) -> None:
    api = quiet_api
    change = _awaiting_change(api)
    assert change.carrier_request_id is not None
    body = _callback(change.carrier_request_id, change.iccid, (CALLBACK_USER, CALLBACK_PASSWORD))
    body["deviceResponse"] = {"deactivateResponse": {"deviceIds": [{"id": change.iccid, "kind": "iccid"}]}}
    assert _post(api, api.provider_id, body).status_code == 200
    request_id = change.carrier_request_id
    stored = _wait("the callback was examined", lambda: (s := _stored(api, request_id)) and s.outcome and s)
    assert "answers 'deactivate'" in (stored.outcome or "")
    assert _change(api, change.id).status == "AWAITING_RESULT"


@pytest.mark.parametrize("depth", [33, 30_000])
def test_a_body_nested_too_deep_is_a_400(api: Api, depth: int) -> None:
    deep = b"[" * depth + b"]" * depth
    r = httpx.post(
        f"{api.base_url}/callbacks/thingspace/{api.provider_id}",
        content=deep,
        headers={"content-type": "application/json"},
        timeout=10,
    )
    assert r.status_code == 400
    assert r.json()["detail"] == "body nests deeper than 32 levels"
    # A genuine callback nests five levels: well within the limit.
    ok = _callback("nested-ok", new_iccid(), (CALLBACK_USER, CALLBACK_PASSWORD))
    assert _post(api, api.provider_id, ok).status_code == 200
