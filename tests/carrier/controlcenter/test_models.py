"""Wire models, status spelling, dates in every known form, and the connection settings."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from bulkchange.carrier.controlcenter import (
    POD19_BASE_URL,
    AuditTrailPage,
    ControlCenterClient,
    ControlCenterConnection,
    ControlCenterDevice,
    DeviceSearchPage,
    normalise_status,
    parse_cc_datetime,
)

# Shaped like the published Device Details example answer (its field names and value forms).
EXAMPLE = {
    "iccid": "8988216716970004975",
    "imsi": "901161697004975",
    "msisdn": "882351697004975",
    "imei": "",
    "status": "ACTIVATED",
    "ratePlan": "hphlr rp1",
    "communicationPlan": "CP_Basic_ON",
    "customer": None,
    "endConsumerId": None,
    "dateActivated": "2016-06-29 00:21:33.339+0000",
    "dateAdded": "2014-07-22 23:31:46.571+0000",
    "dateUpdated": "2016-07-06 22:04:04.380+0000",
    "dateShipped": "2016-06-27 07:00:00.000+0000",
    "accountId": "100020620",
    "fixedIPAddress": None,
    "fixedIpv6Address": None,
    "accountCustom1": "78",
    "accountCustom2": "",
    "simNotes": None,
    "deviceID": None,
    "modemID": "2221",
    "globalSimType": "",
}


def test_device_details_example() -> None:
    device = ControlCenterDevice.model_validate(EXAMPLE)
    assert (device.iccid, device.status, device.rate_plan, device.communication_plan) == (
        "8988216716970004975",
        "ACTIVATED",
        "hphlr rp1",
        "CP_Basic_ON",
    )
    assert device.date_activated == datetime(2016, 6, 29, 0, 21, 33, 339000, tzinfo=UTC)
    assert device.date_shipped == datetime(2016, 6, 27, 7, 0, tzinfo=UTC)
    assert (device.account_id, device.modem_id, device.device_id, device.customer) == ("100020620", "2221", None, None)
    assert device.model_extra == {"accountCustom1": "78", "accountCustom2": ""}


def test_device_details_tolerates_other_shapes() -> None:
    device = ControlCenterDevice.model_validate(
        {"iccid": 8988216716970004975, "accountId": 100020620, "status": "activated", "dateAdded": "", "new": 1}
    )
    assert (device.iccid, device.account_id, device.status, device.date_added) == (
        "8988216716970004975",
        "100020620",
        "ACTIVATED",
        None,
    )


@pytest.mark.parametrize(
    "text",
    [
        "2016-06-29 00:21:33.339+0000",
        "2016-06-29T00:21:33.339+0000",
        "2016-06-29T00:21:33.339+00:00",
        "2016-06-29T00:21:33.339Z",
        "2016-06-29T02:21:33.339+02:00",
        "2016-06-29T00:21:33.339",
    ],
)
def test_every_known_date_form(text: str) -> None:
    assert parse_cc_datetime(text) == datetime(2016, 6, 29, 0, 21, 33, 339000, tzinfo=UTC)


@pytest.mark.parametrize("text", ["", "   ", "yesterday", None, 12])
def test_empty_or_unreadable_dates_are_none(text: object) -> None:
    assert parse_cc_datetime(text) is None


@pytest.mark.parametrize(
    ("given", "value"),
    [
        ("activated", "ACTIVATED"),
        ("Deactivated", "DEACTIVATED"),
        ("activation ready", "ACTIVATION_READY"),
        ("Activation-Ready", "ACTIVATION_READY"),
        ("  test_ready ", "TEST_READY"),
        ("global in transfer", "GLOBAL_IN_TRANSFER"),
    ],
)
def test_normalise_status(given: str, value: str) -> None:
    assert normalise_status(given) == value


@pytest.mark.parametrize("given", ["", "active", "suspend", "ACTIVATIONREADY", "deactive"])
def test_unknown_statuses_are_refused(given: str) -> None:
    with pytest.raises(ValueError, match="not a Control Center status"):
        normalise_status(given)


def test_pages_need_last_page() -> None:
    with pytest.raises(ValidationError):
        DeviceSearchPage.model_validate({"devices": [], "pageNumber": 1})
    page = AuditTrailPage.model_validate({"iccid": "1", "lastPage": True, "deviceAuditTrails": None})
    assert page.device_audit_trails == []
    record = AuditTrailPage.model_validate(
        {
            "lastPage": True,
            "deviceAuditTrails": [{"field": "status", "status": "ERROR: not allowed", "ipAddress": "10.0.0.1"}],
        }
    ).device_audit_trails[0]
    assert record.is_error
    assert record.model_extra == {"ipAddress": "10.0.0.1"}


def test_pod19_default_is_a_named_constant() -> None:
    assert POD19_BASE_URL == "https://restapi19.att.com/rws/api"
    conn = ControlCenterConnection(base_url=POD19_BASE_URL, username="u", api_key="k")
    assert conn.api_url == "https://restapi19.att.com/rws/api/v1"


@pytest.mark.parametrize(
    ("given", "root"),
    [
        ("https://restapi1.jasper.com/rws/api/", "https://restapi1.jasper.com/rws/api"),
        ("https://restapi19.att.com/rws/api/v1", "https://restapi19.att.com/rws/api"),
        ("http://127.0.0.1:8765/rws/api", "http://127.0.0.1:8765/rws/api"),
    ],
)
def test_connection_base_url(given: str, root: str) -> None:
    assert ControlCenterConnection(base_url=given, username="u", api_key="k").base_url == root


@pytest.mark.parametrize("url", ["http://restapi19.att.com/rws/api", "https://user:pw@restapi19.att.com/rws/api"])
def test_connection_refuses_clear_text_and_credentials_in_the_url(url: str) -> None:
    with pytest.raises(ValidationError, match="base URL"):
        ControlCenterConnection(base_url=url, username="u", api_key="k")


async def test_the_api_key_never_shows() -> None:
    conn = ControlCenterConnection(base_url=POD19_BASE_URL, username="pod19-api", api_key="very-secret-key")
    async with ControlCenterClient(conn) as client:
        assert "very-secret-key" not in repr(client) + repr(conn) + str(conn)
