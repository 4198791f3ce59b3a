"""Get Device Details: the answer validates against the DeviceDetails schema and carries the example's fields."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from jsonschema import Draft202012Validator, FormatChecker

from bulkchange.simulator import luhn_valid

from .conftest import CCEnv
from .device_details_schema import DEVICE_DETAILS_SCHEMA, EXAMPLE_KEYS

VALIDATOR = Draft202012Validator(DEVICE_DETAILS_SCHEMA, format_checker=FormatChecker())


def _errors(body: object) -> list[str]:
    return [f"{'/'.join(map(str, e.path))}: {e.message}" for e in VALIDATOR.iter_errors(body)]


def test_the_schema_catches_what_it_should() -> None:
    # Guard against a schema that accepts anything: each of these breaks one fact.
    assert _errors({"iccid": None})
    assert _errors({"accountId": 100020620})
    assert _errors({"dateAdded": "2016-06-29T00:21:33.339+00:00"})
    assert _errors({"fixedIPAddress": "not-an-ip"})
    assert _errors({"modemID": None})
    assert not _errors({"customer": None, "dateAdded": "2016-06-29 00:21:33.339+0000"})


def test_activated_device_has_every_example_field_and_validates(cc: CCEnv) -> None:
    device = cc.sim.add_device(status="ACTIVATED", imei="359876100000017", fixed_ip="10.1.2.3")
    response = cc.api.get(f"/devices/{device.iccid}")
    assert response.status_code == 200
    body = response.json()
    assert [k for k in EXAMPLE_KEYS if k not in body] == []
    assert _errors(body) == []
    assert body["status"] == "ACTIVATED"
    assert body["accountId"] == "100020620"
    assert body["fixedIPAddress"] == "10.1.2.3"
    assert body["imei"] == "359876100000017"
    started = datetime.fromtimestamp(cc.clock(), tz=UTC)
    assert body["dateActivated"] == started.strftime("%Y-%m-%d %H:%M:%S.000+0000")


@pytest.mark.parametrize("status", ["INVENTORY", "ACTIVATION_READY", "TEST_READY", "DEACTIVATED"])
def test_never_activated_device_validates_without_date_activated(cc: CCEnv, status: str) -> None:
    device = cc.sim.add_device(status=status)
    body = cc.api.get(f"/devices/{device.iccid}").json()
    assert _errors(body) == []
    assert "dateActivated" not in body  # a non-null string in the schema: omitted rather than null
    assert [k for k in EXAMPLE_KEYS if k not in body] == ["dateActivated"]


def test_date_activated_is_the_first_activation(cc: CCEnv) -> None:
    device = cc.sim.add_device(status="ACTIVATION_READY")
    cc.clock.advance(60)
    assert cc.put(device.iccid, {"status": "ACTIVATED"}).status_code == 200
    first = cc.api.get(f"/devices/{device.iccid}").json()["dateActivated"]
    cc.clock.advance(3600)
    cc.put(device.iccid, {"status": "DEACTIVATED"})
    cc.clock.advance(3600)
    cc.put(device.iccid, {"status": "ACTIVATED"})
    body = cc.api.get(f"/devices/{device.iccid}").json()
    assert body["dateActivated"] == first
    assert body["dateUpdated"] > first
    assert _errors(body) == []


def test_fields_parameter_limits_the_answer(cc: CCEnv) -> None:
    device = cc.sim.add_device()
    body = cc.api.get(f"/devices/{device.iccid}", params={"fields": "iccid,status,deviceID"}).json()
    assert body == {"iccid": device.iccid, "status": "INVENTORY", "deviceID": None}


def test_unknown_iccid_is_404_with_error_body(cc: CCEnv) -> None:
    response = cc.api.get("/devices/89011700000000000999")
    assert response.status_code == 404
    assert set(response.json()) == {"errorMessage", "errorCode"}


def test_generated_iccids_are_unique_luhn_valid_att_numbers(cc: CCEnv) -> None:
    devices = cc.sim.preload(200)
    iccids = [d.iccid for d in devices]
    assert len(set(iccids)) == 200
    assert all(len(i) == 20 and i.startswith("890117") and luhn_valid(i) for i in iccids)
    assert len({d.imsi for d in devices}) == 200
    assert len({d.msisdn for d in devices}) == 200
