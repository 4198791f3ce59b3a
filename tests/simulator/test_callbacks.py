"""Callback registration and CarrierService delivery to a real HTTP listener."""

from __future__ import annotations

import time
from collections.abc import Callable

from .helpers import ACCOUNT, Env, Receiver, register, wait_for


def wait_for_quiet(condition: Callable[[], bool], period: float = 0.1) -> bool:
    """True if ``condition`` becomes true within ``period`` (used to assert that nothing happens)."""
    deadline = time.monotonic() + period
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return False


def test_register_list_delete(env: Env, receiver: Receiver) -> None:
    response = register(env.api, receiver.url, username="zaffod", password="drowssap")
    assert response.status_code == 200
    assert response.json() == {"accountName": ACCOUNT, "serviceName": "CarrierService"}
    listed = env.api.get(f"/callbacks/{ACCOUNT}").json()
    assert listed == [
        {
            "accountName": ACCOUNT,
            "serviceName": "CarrierService",
            "url": receiver.url,
            "username": "zaffod",
            "password": "drowssap",
        }
    ]
    deleted = env.api.delete(f"/callbacks/{ACCOUNT}/name/CarrierService")
    assert deleted.status_code == 200 and deleted.json()["serviceName"] == "CarrierService"
    assert env.api.get(f"/callbacks/{ACCOUNT}").json() == []
    assert env.api.delete(f"/callbacks/{ACCOUNT}/name/CarrierService").status_code == 400
    assert env.api.post(f"/callbacks/{ACCOUNT}", {"name": "CarrierService"}).status_code == 400


def test_callback_ports_enforced_when_asked(make_env: Callable[..., Env]) -> None:
    env = make_env(enforce_callback_ports=True)
    assert register(env.api, "http://127.0.0.1:12345/cb").status_code == 400
    assert register(env.api, "https://listener.example.com/cb").status_code == 200
    assert register(env.api, "http://listener.example.com:9003/cb").status_code == 200


def test_activate_callback_shape(env: Env, receiver: Receiver) -> None:
    register(env.api, receiver.url)
    (device,) = env.sim.preload(1)
    request_id = env.api.action("activate", device.iccid).json()["requestId"]
    env.advance(2)
    (body,) = wait_for(receiver.bodies)
    active = env.sim.device(device.iccid)
    assert active is not None
    assert body == {
        "username": "",
        "password": "",
        "requestId": request_id,
        "deviceIds": [{"id": device.iccid, "kind": "Iccid"}, {"id": device.imei, "kind": "Imei"}],
        "deviceResponse": {
            "activateResponse": {
                "deviceIds": [
                    {"id": active.mdn, "kind": "mdn"},
                    {"id": active.msisdn, "kind": "msisdn"},
                    {"id": active.mdn, "kind": "min"},
                    {"id": device.iccid, "kind": "iccid"},
                    {"id": device.imei, "kind": "imei"},
                ],
                "ipAddress": active.ip_address,
                "state": "active",
                "servicePlan": "M2M_4G",
            }
        },
        "status": "Success",
        "callbackCount": 1,
        "maxCallbackThreshold": 4,
    }
    env.sim.settle()
    counters = env.sim.counters
    assert (counters.callbacks_sent, counters.callbacks_acked, counters.callbacks_failed) == (1, 1, 0)


def test_one_callback_per_device_with_credentials_echoed(env: Env, receiver: Receiver) -> None:
    register(env.api, receiver.url, username="u", password="p")
    devices = env.sim.preload(3)
    env.api.action("activate", *(d.iccid for d in devices))
    env.advance(2)
    env.sim.settle()
    request_id = env.api.action("suspend", *(d.iccid for d in devices)).json()["requestId"]
    env.sim.settle()
    bodies = receiver.bodies()
    assert len(bodies) == 6
    suspends = [b for b in bodies if b["requestId"] == request_id]
    assert {b["deviceIds"][0]["id"] for b in suspends} == {d.iccid for d in devices}
    for body in suspends:
        assert (body["username"], body["password"]) == ("u", "p")
        assert body["deviceResponse"]["suspendResponse"]["state"] == "suspend"


def test_fault_callbacks_for_illegal_transitions(env: Env, receiver: Receiver) -> None:
    register(env.api, receiver.url)
    pre = env.sim.add_device("89148000000000000019", state="preactive")
    act = env.sim.add_device("89148000000000000027", state="active")
    dead = env.sim.add_device("89148000000000000035", state="deactive")
    other = env.sim.add_device("89148000000000000043", state="active", account="0000999999-00001")
    env.api.action("activate", pre.iccid)  # now pending activation
    cases = [
        ("activate", act.iccid, "UnifiedWebService.REQUEST_FAILED.DeviceAlreadyActive"),
        ("activate", pre.iccid, "UnifiedWebService.REQUEST_FAILED.DeviceActivationInProgress"),
        ("deactivate", dead.iccid, "UnifiedWebService.REQUEST_FAILED.DeviceAlreadyDeactive"),
        ("restore", act.iccid, "UnifiedWebService.REQUEST_FAILED.InvalidStateTransition"),
        ("suspend", other.iccid, "UnifiedWebService.INPUT_INVALID.Device.Account.Invalid"),
        ("suspend", "89000000000000000000", "UnifiedWebService.INPUT_INVALID.Device.Account.Invalid"),
    ]
    expected = {env.api.action(action, iccid).json()["requestId"]: code for action, iccid, code in cases}
    env.advance(2)
    env.sim.settle()
    faults = {b["requestId"]: b for b in receiver.bodies() if b["status"] == "Failed"}
    assert {rid: b["faultResponse"]["faultcode"] for rid, b in faults.items()} == expected
    already = next(b for b in faults.values() if b["faultResponse"]["faultcode"].endswith("DeviceAlreadyActive"))
    assert already["faultResponse"]["faultstring"] == "REQUEST_FAILED. Device is already active"
    assert already["deviceIds"][0] == {"id": act.iccid, "kind": "Iccid"}
    assert env.state(act.iccid) == "active" and env.state(dead.iccid) == "deactive"
    assert env.state(pre.iccid) == "active"  # the first activation still completed
    assert env.sim.counters.actions == {pre.iccid: {"activate": 1}}


def test_retries_until_acknowledged(env: Env, receiver: Receiver) -> None:
    register(env.api, receiver.url)
    receiver.statuses = [500, 500]
    (device,) = env.sim.preload(1)
    env.api.action("activate", device.iccid)
    env.advance(2)
    wait_for(lambda: env.sim.counters.callbacks_sent == 1)  # the retry is scheduled once the 500 is seen
    env.advance(299)
    assert not wait_for_quiet(lambda: len(receiver.bodies()) > 1)
    env.advance(1)
    wait_for(lambda: env.sim.counters.callbacks_sent == 2)
    env.advance(300)
    env.sim.settle()
    assert [b["callbackCount"] for b in receiver.bodies()] == [1, 2, 3]
    counters = env.sim.counters
    assert (counters.callbacks_sent, counters.callbacks_acked, counters.callbacks_failed) == (3, 1, 0)


def test_gives_up_after_max_attempts(env: Env, receiver: Receiver) -> None:
    register(env.api, receiver.url)
    receiver.statuses = [500] * 10
    (device,) = env.sim.preload(1)
    env.api.action("activate", device.iccid)
    env.advance(2)
    for attempt in range(1, 5):
        wait_for(lambda n=attempt: env.sim.counters.callbacks_sent == n)
        env.advance(300)
    env.sim.settle()
    assert [b["callbackCount"] for b in receiver.bodies()] == [1, 2, 3, 4]
    assert {b["maxCallbackThreshold"] for b in receiver.bodies()} == {4}
    counters = env.sim.counters
    assert (counters.callbacks_sent, counters.callbacks_acked, counters.callbacks_failed) == (4, 0, 1)


def test_unreachable_listener_counts_as_failed_attempt(make_env: Callable[..., Env]) -> None:
    env = make_env(callback_max_attempts=1)
    register(env.api, "http://127.0.0.1:9/closed")
    (device,) = env.sim.preload(1)
    env.api.action("activate", device.iccid)
    env.advance(2)
    env.sim.settle()
    assert env.sim.counters.callbacks_failed == 1
    assert env.state(device.iccid) == "active"


def test_no_listener_no_callback(env: Env, receiver: Receiver) -> None:
    (device,) = env.sim.preload(1)
    env.api.action("activate", device.iccid)
    env.advance(2)
    env.sim.settle()
    assert env.state(device.iccid) == "active"
    assert receiver.bodies() == [] and env.sim.counters.callbacks_sent == 0
