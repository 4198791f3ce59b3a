"""Device actions, the state machine, list paging and request status."""

from __future__ import annotations

from collections.abc import Callable

from bulkchange.simulator import luhn_valid

from .helpers import ACCOUNT, Env, wait_for


def test_preload_generates_valid_unique_identifiers(env: Env) -> None:
    devices = env.sim.preload(50)
    assert len({d.iccid for d in devices}) == 50 and len({d.imei for d in devices}) == 50
    for device in devices:
        assert device.iccid.startswith("89") and len(device.iccid) in (19, 20) and luhn_valid(device.iccid)
        assert device.imei is not None and len(device.imei) == 15 and luhn_valid(device.imei)
        assert device.state == "preactive" and device.account == ACCOUNT
    assert [d.internal_id for d in devices] == sorted(d.internal_id for d in devices)


def test_add_devices(env: Env) -> None:
    body = {
        "accountName": ACCOUNT,
        "state": "PreActive",
        "devicesToAdd": [
            {"deviceIds": [{"kind": "ICCID", "id": "89148000000800784259"}, {"kind": "imei", "id": "990013907835573"}]},
            {"deviceIds": [{"kind": "iccid", "id": "89148000000800784259"}]},
        ],
    }
    response = env.api.post("/devices/actions/add", body)
    assert response.status_code == 200
    assert [item["response"] for item in response.json()] == ["Success", "Error. Device already exists."]
    assert response.json()[0]["deviceIds"] == body["devicesToAdd"][0]["deviceIds"]  # type: ignore[index]
    device = env.sim.device("89148000000800784259")
    assert device is not None and device.state == "preactive" and device.imei == "990013907835573"
    assert env.sim.counters.actions["89148000000800784259"] == {"add": 1}
    bad_state = env.api.post("/devices/actions/add", body | {"state": "active"})
    assert bad_state.status_code == 400
    assert bad_state.json()["errorCode"] == "UnifiedWebService.REQUEST_FAILED.UnexpectedError"


def test_activation_goes_pending_then_active_with_line(env: Env) -> None:
    (device,) = env.sim.preload(1)
    response = env.api.action("activate", device.iccid)
    assert response.status_code == 200
    request_id = response.json()["requestId"]
    assert env.state(device.iccid) == "pending activation"
    assert env.api.status(request_id).json() == {"requestId": request_id, "status": "Pending"}
    env.advance(2.0)
    wait_for(lambda: env.state(device.iccid) == "active")
    active = env.sim.device(device.iccid)
    assert active is not None and active.mdn is not None and len(active.mdn) == 10 and active.mdn.isdigit()
    assert active.msisdn == "1" + active.mdn and active.ip_address and active.service_plan == "M2M_4G"
    assert env.api.status(request_id).json()["status"] == "Success"
    assert env.sim.counters.actions[device.iccid] == {"activate": 1}
    listed = env.api.post("/devices/actions/list", {"deviceId": {"kind": "MDN", "id": active.mdn}}).json()
    kinds = {i["kind"]: i["id"] for i in listed["devices"][0]["deviceIds"]}
    assert kinds == {
        "mdn": active.mdn,
        "msisdn": active.msisdn,
        "min": active.mdn,
        "iccid": device.iccid,
        "imei": device.imei,
    }
    assert listed["devices"][0]["ipAddress"] == active.ip_address


def test_mdns_and_ips_are_unique(make_env: Callable[..., Env]) -> None:
    env = make_env(activation_delay_s=0.0)
    devices = env.sim.preload(20)
    assert env.api.action("activate", *(d.iccid for d in devices)).status_code == 200
    env.sim.settle()
    active = env.sim.devices()
    assert all(d.state == "active" for d in active)
    assert len({d.mdn for d in active}) == 20 and len({d.ip_address for d in active}) == 20


def test_full_lifecycle_and_request_status(env: Env) -> None:
    (device,) = env.sim.preload(1)
    env.api.action("activate", device.iccid)
    env.advance(2)
    env.sim.settle()
    for action, expected in (("suspend", "suspend"), ("restore", "active"), ("deactivate", "deactive")):
        request_id = env.api.action(action, device.iccid).json()["requestId"]
        env.sim.settle()
        assert env.state(device.iccid) == expected
        assert env.api.status(request_id).json()["status"] == "Success"
    gone = env.sim.device(device.iccid)
    assert gone is not None and gone.mdn is None  # a deactivated line gives its MDN back
    env.api.action("activate", device.iccid)  # deactive -> active is legal
    env.advance(2)
    env.sim.settle()
    assert env.state(device.iccid) == "active"
    assert env.sim.counters.actions[device.iccid] == {"activate": 2, "suspend": 1, "restore": 1, "deactivate": 1}


def test_illegal_transition_fails_without_state_change(env: Env) -> None:
    (device,) = env.sim.preload(1)
    request_id = env.api.action("suspend", device.iccid).json()["requestId"]
    env.sim.settle()
    assert env.state(device.iccid) == "preactive"
    assert env.api.status(request_id).json()["status"] == "Failure"
    assert device.iccid not in env.sim.counters.actions


def test_activate_unknown_device_adds_it_first(env: Env) -> None:
    iccid = "89148000000800784259"
    env.api.post(
        "/devices/actions/activate",
        {
            "devices": [{"deviceIds": [{"kind": "Iccid", "id": iccid}, {"kind": "IMEI", "id": "990013907835573"}]}],
            "servicePlan": "plan-a",
            "mdnZipCode": "98801",
        },
    )
    assert env.state(iccid) == "pending activation"
    env.advance(2)
    wait_for(lambda: env.state(iccid) == "active")
    assert env.sim.counters.actions[iccid] == {"add": 1, "activate": 1}


def test_required_fields(env: Env) -> None:
    (device,) = env.sim.preload(1)
    ids = [{"deviceIds": [{"kind": "iccid", "id": device.iccid}]}]
    for body in (
        {"devices": ids, "servicePlan": "p"},
        {"devices": ids, "mdnZipCode": "98801"},
        {"servicePlan": "p", "mdnZipCode": "98801"},
    ):
        response = env.api.post("/devices/actions/activate", body)
        assert response.status_code == 400
        assert response.json()["errorCode"] == "UnifiedWebService.REQUEST_FAILED.UnexpectedError"
    for body in ({"devices": ids, "reasonCode": "FF"}, {"accountName": ACCOUNT, "devices": ids}):
        assert env.api.post("/devices/actions/deactivate", body).status_code == 400
    unknown_account = env.api.action("suspend", device.iccid, accountName="9999999999-00001")
    assert unknown_account.json()["errorCode"] == "UnifiedWebService.REQUEST_FAILED.AccountNotFound"
    not_json = env.api.http.post("/api/m2m/v1/devices/actions/suspend", content=b"{nope", headers=env.api.headers())
    assert not_json.status_code == 400


def test_delete(env: Env) -> None:
    pre, act = env.sim.preload(2)
    env.sim.add_device("89148000000000009998", state="active")
    body = {
        "devicesToDelete": [
            {"deviceIds": [{"kind": "iccid", "id": pre.iccid}]},
            {"deviceIds": [{"kind": "iccid", "id": "89148000000000009998"}]},
            {"deviceIds": [{"kind": "iccid", "id": "89000000000000000000"}]},
        ]
    }
    result = env.api.post("/devices/actions/delete", body).json()
    assert [r["status"] for r in result] == ["Success", "Failed", "Failed"]
    assert result[1]["message"] == "The device is not in deactive state."
    assert env.sim.device(pre.iccid) is None and env.sim.device(act.iccid) is not None
    assert env.sim.counters.actions[pre.iccid] == {"delete": 1}


def test_list_single_device_and_kind_case_insensitivity(env: Env) -> None:
    (device,) = env.sim.preload(1)
    for kind, value in (("ICCID", device.iccid), ("Imei", device.imei), ("iccId", device.iccid)):
        body = env.api.post("/devices/actions/list", {"deviceId": {"kind": kind, "id": value}}).json()
        assert body["hasMoreData"] is False and len(body["devices"]) == 1
        shown = body["devices"][0]
        assert shown["carrierInformations"] == [
            {"carrierName": "Verizon Wireless", "servicePlan": "", "state": "preactive"}
        ]
        assert shown["extendedAttributes"] == [{"key": "DeviceId", "value": str(device.internal_id)}]
        assert shown["accountName"] == ACCOUNT and "createdAt" in shown
    unknown = env.api.post("/devices/actions/list", {"deviceId": {"kind": "iccid", "id": "8900"}})
    assert unknown.status_code == 200 and unknown.json() == {"hasMoreData": False, "devices": []}
    env.api.action("ACTIVATE".lower(), device.iccid)
    listed = env.api.post("/devices/actions/list", {"currentState": "Pending Activation"}).json()
    assert [d["extendedAttributes"][0]["value"] for d in listed["devices"]] == [str(device.internal_id)]


def test_list_pages_over_2000_with_202(env: Env) -> None:
    devices = env.sim.preload(4500)
    env.sim.add_device("89148000000000009998", state="active")
    seen: list[str] = []
    statuses: list[int] = []
    cursor = 0
    while True:
        response = env.api.post(
            "/devices/actions/list",
            {"accountName": ACCOUNT, "currentState": "PREACTIVE", "largestDeviceIdSeen": cursor},
        )
        statuses.append(response.status_code)
        body = response.json()
        assert len(body["devices"]) <= 2000
        assert body["hasMoreData"] is (response.status_code == 202)
        seen += [d["deviceIds"][0]["id"] for d in body["devices"]]
        if not body["hasMoreData"]:
            break
        cursor = int(body["devices"][-1]["extendedAttributes"][0]["value"])
    assert statuses == [202, 202, 200]
    assert seen == [d.iccid for d in devices]
    small = env.api.post("/devices/actions/list", {"maxNumberOfDevices": 10})
    assert small.status_code == 202 and len(small.json()["devices"]) == 10


def test_request_status_errors(env: Env) -> None:
    a, b = env.sim.preload(2)
    multi = env.api.action("activate", a.iccid, b.iccid).json()["requestId"]
    response = env.api.status(multi)
    assert response.status_code == 400
    assert response.json()["errorCode"] == "UnifiedWebService.INPUT_INVALID.RequestId.MultipleDevices"
    unknown = env.api.status("00000000-0000-0000-0000-000000000000")
    assert unknown.status_code == 400
    assert unknown.json()["errorCode"] == "UnifiedWebService.INPUT_INVALID.RequestId.Invalid"


def test_device_list_names_each_device_once_in_first_named_order(env: Env) -> None:
    a, b = env.sim.preload(2)
    entries = [
        {"kind": "iccid", "id": b.iccid},
        {"kind": "imei", "id": a.imei},
        {"kind": "iccid", "id": b.iccid},
        {"kind": "iccid", "id": a.iccid},
        {"kind": "iccid", "id": "8900"},
    ]
    body = env.api.post("/devices/actions/list", {"deviceList": entries}).json()
    assert [d["extendedAttributes"][0]["value"] for d in body["devices"]] == [
        str(b.internal_id),
        str(a.internal_id),
    ]


def test_list_pages_skip_deleted_devices_and_resume_after_any_id(env: Env) -> None:
    devices = env.sim.preload(5)
    deleted = env.api.post(
        "/devices/actions/delete", {"devicesToDelete": [{"deviceIds": [{"kind": "iccid", "id": devices[1].iccid}]}]}
    )
    assert deleted.json()[0]["status"] == "Success"
    listed = env.api.post("/devices/actions/list", {"largestDeviceIdSeen": 0}).json()
    assert [d["extendedAttributes"][0]["value"] for d in listed["devices"]] == [
        str(d.internal_id) for d in devices if d is not devices[1]
    ]
    # A cursor that is the id of the deleted device still resumes right after it.
    after = env.api.post("/devices/actions/list", {"largestDeviceIdSeen": devices[1].internal_id}).json()
    assert [d["extendedAttributes"][0]["value"] for d in after["devices"]] == [str(d.internal_id) for d in devices[2:]]
    assert env.sim.known_accounts() == {ACCOUNT}
