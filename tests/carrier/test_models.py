"""Tolerance of the wire models to the shapes the real service and its documents show."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from bulkchange.carrier.errors import DeviceNotFound, InvalidTransition, error_for_code
from bulkchange.carrier.thingspace.models import (
    AddDeviceResult,
    CallbackListener,
    CallbackMessage,
    CarrierDevice,
    DeleteDeviceResult,
    DeviceId,
    DeviceListPage,
    LoginResponse,
    ThingSpaceConnection,
    TokenResponse,
)


@pytest.mark.parametrize("kind", ["iccid", "ICCID", "Iccid", "iccId", " ICCID "])
def test_device_id_kind_any_case(kind: str) -> None:
    assert DeviceId.model_validate({"kind": kind, "id": "8914"}).kind == "iccid"


def test_device_id_numeric_id_kept_as_text() -> None:
    assert DeviceId.model_validate({"kind": "imei", "id": 990013907835573}).id == "990013907835573"


def test_add_result_ok_and_already_exists() -> None:
    ok = AddDeviceResult.model_validate({"deviceIds": [{"kind": "ICCID", "id": "1"}], "response": "Success"})
    dup = AddDeviceResult.model_validate(
        {"deviceIds": {"kind": "iccid", "id": "1"}, "response": "Error. Device already exists."}
    )
    bad = AddDeviceResult.model_validate({"deviceIds": [], "response": "Error. Something else."})
    assert ok.ok and not ok.already_exists and ok.iccid == "1"
    assert dup.ok and dup.already_exists and dup.iccid == "1"
    assert not bad.ok and not bad.already_exists


def test_delete_result_device_ids_object_or_array() -> None:
    one = DeleteDeviceResult.model_validate({"deviceIds": {"kind": "iccid", "id": "1"}, "status": "Success"})
    many = DeleteDeviceResult.model_validate(
        {
            "deviceIds": [{"kind": "iccid", "id": "1"}],
            "status": "Failed",
            "message": "The device is not in deactive state.",
        }
    )
    assert one.ok and one.device_ids[0].id == "1"
    assert not many.ok and many.message


DEVICE = {
    "accountName": "0000123456-00001",
    "billingCycleEndDate": "2020-05-09T20:00:00-04:00",
    "carrierInformations": [{"carrierName": "Verizon Wireless", "servicePlan": "m2m4G", "state": "Active"}],
    "connected": False,
    "createdAt": "2019-08-07T10:42:15-04:00",
    "deviceIds": [
        {"id": "5095551234", "kind": "MDN"},
        {"id": "990013907835573", "kind": "imei"},
        {"id": "89148000000800784259", "kind": "ICCID"},
        {"id": "15095551234", "kind": "msisdn"},
        {"id": "311480000000001", "kind": "imsi"},
    ],
    "extendedAttributes": [{"key": "DeviceId", "value": "123456789"}, {"key": "PrimaryPlaceOfUseFirstName"}],
    "groupNames": ["southwest"],
    "ipAddress": "10.0.0.1",
    "someFutureField": {"x": 1},
}


def test_carrier_device_properties() -> None:
    d = CarrierDevice.model_validate(DEVICE)
    assert (d.iccid, d.imei, d.mdn, d.msisdn) == (
        "89148000000800784259",
        "990013907835573",
        "5095551234",
        "15095551234",
    )
    assert d.state == "active"
    assert d.service_plan == "m2m4G"
    assert d.internal_id == 123456789
    assert d.ip_address == "10.0.0.1"
    assert d.attribute("primaryplaceofusefirstname") is None


def test_carrier_device_sparse() -> None:
    d = CarrierDevice.model_validate({"deviceIds": [{"kind": "iccid", "id": "1"}], "carrierInformations": None})
    assert d.state is None and d.internal_id is None and d.msisdn is None


def test_list_page_shapes() -> None:
    page = DeviceListPage.model_validate({"hasMoreData": True, "devices": [DEVICE]})
    assert page.has_more_data and len(page.devices) == 1
    assert DeviceListPage.model_validate({"devices": None}).devices == []


def test_login_expires_in_optional() -> None:
    assert LoginResponse.model_validate({"sessionToken": "s"}).expires_in is None
    assert LoginResponse.model_validate({"sessionToken": "s", "expiresIn": 1200}).expires_in == 1200
    with pytest.raises(ValidationError):
        LoginResponse.model_validate({"sessionToken": ""})


def test_token_response_snake_case() -> None:
    t = TokenResponse.model_validate({"access_token": "a", "token_type": "Bearer", "expires_in": 3600, "extra": 1})
    assert t.access_token == "a" and t.expires_in == 3600


@pytest.mark.parametrize("key", ["name", "serviceName"])
def test_callback_listener_name_alias(key: str) -> None:
    listener = CallbackListener.model_validate(
        {"accountName": "a", key: "CarrierService", "url": "http://x", "password": "pw"}
    )
    assert listener.service_name == "CarrierService"
    assert "pw" not in repr(listener)


ACTIVATE_CB = {
    "username": "",
    "password": "",
    "requestId": "595f5c44-c31c-4552-8670-020a1545a84d",
    "deviceIds": [{"id": "89148000000800784259", "kind": "Iccid"}, {"id": "990013907835573", "kind": "IMEI"}],
    "deviceResponse": {
        "activateResponse": {
            "deviceIds": [
                {"id": "5095551234", "kind": "mdn"},
                {"id": "15095551234", "kind": "msisdn"},
                {"id": "89148000000800784259", "kind": "iccid"},
            ],
            "ipAddress": "10.1.2.3",
            "state": "Active",
            "servicePlan": "m2m_4G",
        }
    },
    "status": "Success",
    "callbackCount": 1,
    "maxCallbackThreshold": 4,
    "unknownThing": True,
}


def test_callback_activate_success() -> None:
    m = CallbackMessage.parse(json.dumps(ACTIVATE_CB))
    assert m.succeeded and m.operation == "activate"
    assert (m.iccid, m.imei, m.msisdn, m.mdn, m.ip_address, m.state) == (
        "89148000000800784259",
        "990013907835573",
        "15095551234",
        "5095551234",
        "10.1.2.3",
        "active",
    )
    assert (m.callback_count, m.max_callback_threshold) == (1, 4)
    assert m.fault_code is None


@pytest.mark.parametrize("fault_key", ["faultcode", "faultCode"])
def test_callback_fault_shapes(fault_key: str) -> None:
    body = {
        "requestId": "076f7ea9",
        "deviceIds": [{"id": "20180903000000000009", "kind": "Iccid"}, {"id": "201809030000009", "kind": "Imei"}],
        "faultResponse": {
            fault_key: "UnifiedWebService.REQUEST_FAILED.DeviceAlreadyActive",
            "faultstring": "REQUEST_FAILED. Device is already active",
        },
        "status": "Failed",
        "callbackCount": 1,
        "maxCallbackThreshold": 4,
    }
    m = CallbackMessage.parse(body)
    assert not m.succeeded and m.operation is None
    assert m.fault_code == "UnifiedWebService.REQUEST_FAILED.DeviceAlreadyActive"
    assert m.fault_string == "REQUEST_FAILED. Device is already active"
    assert m.iccid == "20180903000000000009"
    err = error_for_code(m.fault_code, m.fault_string or "", device=m.iccid, endpoint="callback")
    assert isinstance(err, InvalidTransition) and err.device == m.iccid


def test_callback_not_in_account_maps_to_device_not_found() -> None:
    m = CallbackMessage.parse(
        {
            "requestId": "r",
            "deviceIds": {"id": "1", "kind": "ICCID"},
            "status": "Failed",
            "faultResponse": {
                "faultCode": "UnifiedWebService.INPUT_INVALID.Device.Account.Invalid",
                "faultString": "x",
            },
        }
    )
    assert m.fault_code is not None
    assert isinstance(error_for_code(m.fault_code, m.fault_string or ""), DeviceNotFound)


@pytest.mark.parametrize("op", ["deactivate", "suspend", "restore"])
def test_callback_other_operations(op: str) -> None:
    m = CallbackMessage.parse(
        {"requestId": "r", "status": "Success", "deviceResponse": {f"{op}Response": {"state": "x"}}}
    )
    assert m.operation == op and m.succeeded


def test_callback_unknown_operation_keeps_name() -> None:
    m = CallbackMessage.parse(
        {"requestId": "r", "status": "Success", "deviceResponse": {"changeIdentifierResponse": {}}}
    )
    assert m.operation == "changeIdentifier"


def test_callback_success_status_with_fault_is_not_success() -> None:
    m = CallbackMessage.parse({"status": "Success", "faultResponse": {"faultcode": "X.REQUEST_FAILED.Y"}})
    assert not m.succeeded


def test_connection_defaults_and_secrets() -> None:
    c = ThingSpaceConnection(
        base_url="http://h:1/",
        client_id="id",
        client_secret="topsecret",
        username="u",
        password="hunter2",
        account_name="0000123456-00001",
    )
    assert c.token_url == "http://h:1/api/ts/v1/oauth2/token"
    assert c.login_url == "http://h:1/api/m2m/v1/session/login"
    assert "topsecret" not in repr(c) and "hunter2" not in repr(c)
    c2 = ThingSpaceConnection(
        base_url="http://h",
        token_url="http://t/tok",
        client_id="id",
        client_secret="s",
        username="u",
        password="p",
        account_name="a",
    )
    assert c2.token_url == "http://t/tok"
