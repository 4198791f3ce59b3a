"""Basic authentication: the two documented 401 answers, and one account cannot see another's devices."""

from __future__ import annotations

import base64
from collections.abc import Callable

import httpx
import pytest

from .conftest import API, CCEnv


def test_no_authorization_header_gets_the_challenge_without_error_code(cc: CCEnv) -> None:
    device = cc.sim.add_device()
    response = httpx.get(f"{cc.base_url}{API}/devices/{device.iccid}")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Basic realm="Jasper"'
    assert response.json() == {"errorMessage": "Full authentication is required to access this resource"}
    assert "ISO-8859-1" in response.headers["content-type"]


@pytest.mark.parametrize("header", ["Bearer abc", "Basic", "Digest username=sim-user"])
def test_a_header_that_is_not_basic_auth_counts_as_missing(cc: CCEnv, header: str) -> None:
    response = httpx.get(f"{cc.base_url}{API}/devices", headers={"Authorization": header})
    assert response.status_code == 401
    assert "errorCode" not in response.json()


@pytest.mark.parametrize("auth", [("sim-user", "wrong-key"), ("nobody", "sim-api-key"), ("sim-user", ""), ("", "")])
def test_wrong_credentials_get_10000001(cc: CCEnv, auth: tuple[str, str]) -> None:
    device = cc.sim.add_device()
    response = httpx.put(f"{cc.base_url}{API}/devices/{device.iccid}", auth=auth, json={"status": "ACTIVATED"})
    assert response.status_code == 401
    assert response.json() == {"errorMessage": "Invalid credentials", "errorCode": "10000001"}
    assert cc.status(device.iccid) == "INVENTORY"
    assert cc.sim.counters.puts == {}
    assert cc.sim.counters.unauthorized == 1


def test_undecodable_basic_value_is_invalid_credentials(cc: CCEnv) -> None:
    response = httpx.get(f"{cc.base_url}{API}/devices", headers={"Authorization": "Basic !!!not-base64"})
    assert response.status_code == 401
    assert response.json()["errorCode"] == "10000001"


def test_valid_credentials_and_raw_header(cc: CCEnv) -> None:
    device = cc.sim.add_device()
    token = base64.b64encode(b"sim-user:sim-api-key").decode()
    response = httpx.get(f"{cc.base_url}{API}/devices/{device.iccid}", headers={"Authorization": f"Basic {token}"})
    assert response.status_code == 200
    assert response.json()["iccid"] == device.iccid


def test_configured_credentials_replace_the_defaults(make_cc: Callable[..., CCEnv]) -> None:
    env = make_cc(username="pod19-api", api_key="k-123")
    device = env.sim.add_device()
    assert env.api.get(f"/devices/{device.iccid}").status_code == 401  # the fixture's client uses the defaults
    ok = httpx.get(f"{env.base_url}{API}/devices/{device.iccid}", auth=("pod19-api", "k-123"))
    assert ok.status_code == 200


def test_a_user_sees_only_its_own_accounts_devices(cc: CCEnv) -> None:
    mine = cc.sim.add_device()
    theirs = cc.sim.add_device(account_id="200000001")
    cc.sim.add_user("other-user", "other-key", "200000001")
    other = httpx.Client(base_url=cc.base_url + API, auth=("other-user", "other-key"))
    assert other.get(f"/devices/{theirs.iccid}").status_code == 200
    assert other.get(f"/devices/{mine.iccid}").status_code == 404
    assert other.put(f"/devices/{mine.iccid}", json={"status": "ACTIVATED"}).status_code == 404
    assert cc.api.get(f"/devices/{theirs.iccid}").status_code == 404
    listed = other.get("/devices", params={"modifiedSince": "2023-11-01T00:00:00Z"}).json()["devices"]
    assert [d["iccid"] for d in listed] == [theirs.iccid]
    other.close()


def test_wrong_api_version_and_unknown_paths(cc: CCEnv) -> None:
    wrong = httpx.get(f"{cc.base_url}/rws/api/v2/devices", auth=("sim-user", "sim-api-key"))
    assert wrong.status_code == 400
    assert wrong.json()["errorCode"] == "10000024"
    assert httpx.get(f"{cc.base_url}/rws/api/v2/devices").status_code == 401  # authentication comes first
    assert cc.api.get("/nothing-here").status_code == 404
