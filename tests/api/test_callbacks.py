"""The CarrierService callback receiver of the served application: credentials, source allow-list,
duplicates, malformed bodies, and the bulk change finished by the simulator's real callbacks."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select

from bulkchange.api.callbacks import MAX_ID, provider_id_of
from bulkchange.engine.callbacks.gate import credentials_match, json_depth_exceeds, parse_networks, source_allowed
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
    yield from make_api(
        tmp_path, with_worker=False, callbacks=False, callback_allowed_sources="3.87.163.45, 10.0.0.0/8"
    )


def test_source_allow_list_refuses_other_addresses(fenced_api: Api) -> None:
    r = fenced_api.http.post(f"/callbacks/thingspace/{fenced_api.provider_id}", json=_callback("r", new_iccid()))
    assert r.status_code == 403
    assert _stored(fenced_api) == []


def test_credential_and_source_checks() -> None:
    assert credentials_match({"username": "u", "password": "p"}, ("u", "p"))
    assert not credentials_match({"username": "u", "password": "q"}, ("u", "p"))
    assert not credentials_match({"username": "v", "password": "p"}, ("u", "p"))
    assert not credentials_match({"username": 1, "password": None}, ("u", "p"))
    assert credentials_match({}, ("", ""))
    networks = parse_networks("3.87.163.45,10.0.0.0/8,::1")
    assert source_allowed("3.87.163.45", networks)
    assert source_allowed("10.2.3.4", networks)
    assert source_allowed("::1", networks)
    assert not source_allowed("127.0.0.1", networks)
    assert not source_allowed("not-an-ip", networks)
    assert not source_allowed(None, networks)
    assert source_allowed("127.0.0.1", [])


def test_every_callback_answer_carries_the_security_headers(api: Api) -> None:
    """The lean endpoint answers before the security middleware: its answers carry the same headers."""
    url = f"/callbacks/thingspace/{api.provider_id}"
    iccid = new_iccid()
    ok = api.http.post(url, json=_callback("r-headers", iccid))
    refused = api.http.post(url, json=_callback("r-headers", new_iccid(), password="guess"))
    too_large = api.http.post(
        url, content=b"{" + b" " * (70 * 1024) + b"}", headers={"content-type": "application/json"}
    )
    malformed = api.http.post(url, content=b"[1, 2]", headers={"content-type": "application/json"})
    expected = [(ok, 200, "application/json"), (refused, 401, "application/problem+json")]
    expected += [(too_large, 413, "application/problem+json"), (malformed, 400, "application/problem+json")]
    for answer, status, media in expected:
        assert (answer.status_code, answer.headers["content-type"]) == (status, media)
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["x-frame-options"] == "DENY"
        assert answer.headers["content-security-policy"].startswith("default-src 'self'")
    assert refused.json()["detail"] == "callback credentials do not match"
    assert [row.iccid for row in _stored(api) if row.request_id == "r-headers"] == [iccid]


@pytest.mark.parametrize("raw", ["0", "-1", "abc", "2147483648", "99999999999999999999", "٣", "1.5"])
def test_a_malformed_provider_id_gets_fastapis_validation_answer(api: Api, raw: str) -> None:
    """The lean callback route hands anything but plain in-range digits to FastAPI's own handler: the
    answer is the documented validation error, and nothing is stored."""
    r = api.http.post(f"/callbacks/thingspace/{raw}", json=_callback("r-bad-id", new_iccid()))
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "path.service_provider_id"
    assert not [row for row in _stored(api) if row.request_id == "r-bad-id"]


def test_a_well_formed_provider_id_is_stored_under_that_provider(api: Api) -> None:
    iccid = new_iccid()
    r = api.http.post(f"/callbacks/thingspace/{api.provider_id}", json=_callback("r-lean", iccid))
    assert r.status_code == 200 and r.json() == {"result": "stored"}
    (row,) = [row for row in _stored(api) if row.request_id == "r-lean"]
    assert (row.iccid, row.service_provider_id) == (iccid, api.provider_id)


@pytest.mark.parametrize("form", ["+{}", " {}", "{}.0"])
def test_other_forms_fastapi_accepts_still_reach_the_provider(api: Api, form: str) -> None:
    """Not plain digits, so not the lean path: FastAPI's handler parses them as it always did."""
    iccid = new_iccid()
    r = api.http.post(f"/callbacks/thingspace/{form.format(api.provider_id)}", json=_callback("r-form", iccid))
    assert r.status_code == 200 and r.json() == {"result": "stored"}
    stored = [row for row in _stored(api) if row.request_id == "r-form"]
    assert [(row.iccid, row.service_provider_id) for row in stored] == [(iccid, api.provider_id)]


@given(st.text(max_size=12))
def test_provider_id_of_accepts_exactly_plain_digits_in_range(raw: str) -> None:
    parsed = provider_id_of(raw)
    plain = raw.isascii() and raw.isdigit()
    if plain and 1 <= int(raw) <= MAX_ID:
        assert parsed == int(raw)
    else:
        assert parsed is None


def test_provider_id_of_bounds() -> None:
    assert [provider_id_of(s) for s in ("1", "0001", str(MAX_ID), str(MAX_ID + 1), "")] == [1, 1, MAX_ID, None, None]


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='[]{}"\\ab,:'),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(alphabet='[]{}"\\a'), children, max_size=3)
    ),
    max_leaves=40,
)


def _depth(value: object) -> int:
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    return 0


@given(_json, st.integers(min_value=0, max_value=6))
def test_the_depth_check_counts_nesting_not_brackets_in_strings(value: object, limit: int) -> None:
    body = json.dumps(value).encode()
    assert json_depth_exceeds(body, limit) == (_depth(value) > limit)
