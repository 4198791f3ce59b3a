"""Fault injection: each kind, its scope, determinism with a seed, and the /_sim endpoints."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from bulkchange.simulator import FaultConfig

from .helpers import Env, Receiver, register, wait_for


def test_server_error_before_doing_anything(env: Env) -> None:
    (device,) = env.sim.preload(1)
    env.sim.faults = FaultConfig(p_server_error=1.0)
    response = env.api.action("activate", device.iccid)
    assert response.status_code == 503
    assert response.json()["errorCode"] == "UnifiedWebService.REQUEST_FAILED.ServiceUnavailable"
    assert env.state(device.iccid) == "preactive"
    assert env.sim.counters.faults == {"server_error": 1}
    assert env.api.login().status_code == 200  # login is not in the default fault scope


def test_rate_limited_before_doing_anything(env: Env) -> None:
    (device,) = env.sim.preload(1)
    env.sim.faults = FaultConfig(p_rate_limited=1.0, retry_after_s=7)
    response = env.api.action("activate", device.iccid)
    assert response.status_code == 429 and response.headers["Retry-After"] == "7"
    assert env.state(device.iccid) == "preactive"


def test_slow_response_after_doing_the_work(env: Env) -> None:
    (device,) = env.sim.preload(1)
    env.sim.faults = FaultConfig(p_slow=1.0, slow_s=2.0)
    with pytest.raises(httpx.ReadTimeout):
        env.api.post(
            "/devices/actions/activate",
            {
                "devices": [{"deviceIds": [{"kind": "iccid", "id": device.iccid}]}],
                "servicePlan": "p",
                "mdnZipCode": "1",
            },
            timeout=0.3,
        )
    assert env.state(device.iccid) == "pending activation"  # the outcome-unknown case
    assert env.sim.counters.faults == {"slow": 1}


def test_malformed_body_after_doing_the_work(env: Env) -> None:
    (device,) = env.sim.preload(1)
    env.sim.faults = FaultConfig(p_malformed=1.0)
    response = env.api.action("activate", device.iccid)
    assert response.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.text)
    assert env.state(device.iccid) == "pending activation"


def test_session_expire_every(env: Env) -> None:
    env.sim.faults = FaultConfig(session_expire_every=3)
    codes = [env.api.post("/devices/actions/list", {}).status_code for _ in range(3)]
    assert codes == [200, 200, 400]
    assert env.api.post("/devices/actions/list", {}).status_code == 400  # the old session stays dead
    env.api.login()
    assert env.api.post("/devices/actions/list", {}).status_code == 200


def test_endpoint_scope_can_include_login(env: Env) -> None:
    env.sim.faults = FaultConfig(p_server_error=1.0, endpoints=frozenset({"session/login"}))
    assert env.api.login().status_code == 503
    assert env.api.post("/devices/actions/list", {}).status_code == 200


def test_fault_sequence_is_deterministic_with_seed(make_env: Callable[..., Env]) -> None:
    def run() -> list[int]:
        env = make_env()
        env.sim.faults = FaultConfig(seed=42, p_server_error=0.3, p_rate_limited=0.2)
        return [env.api.post("/devices/actions/list", {}).status_code for _ in range(30)]

    first, second = run(), run()
    assert first == second
    assert {200, 429, 503} <= set(first)


def test_callback_lost_and_duplicate(env: Env, receiver: Receiver) -> None:
    register(env.api, receiver.url)
    devices = env.sim.preload(2)
    env.sim.faults = FaultConfig(p_callback_lost=1.0)
    env.api.action("activate", devices[0].iccid)
    env.advance(2)
    env.sim.settle()
    assert receiver.bodies() == [] and env.state(devices[0].iccid) == "active"
    env.sim.faults = FaultConfig(p_callback_duplicate=1.0)
    env.api.action("activate", devices[1].iccid)
    env.advance(2)
    env.sim.settle()
    bodies = receiver.bodies()
    assert len(bodies) == 2 and bodies[0]["requestId"] == bodies[1]["requestId"]
    assert env.sim.counters.faults == {"callback_lost": 1, "callback_duplicate": 1}


def test_callback_delayed(env: Env, receiver: Receiver) -> None:
    register(env.api, receiver.url)
    (device,) = env.sim.preload(1)
    env.sim.faults = FaultConfig(p_callback_delayed=1.0, callback_delay_s=100)
    env.api.action("activate", device.iccid)
    env.advance(2)
    wait_for(lambda: env.state(device.iccid) == "active")
    assert receiver.bodies() == []
    env.advance(100)
    wait_for(receiver.bodies)


def test_callbacks_out_of_order(make_env: Callable[..., Env], receiver: Receiver) -> None:
    env = make_env(action_delay_s=0.0)
    register(env.api, receiver.url)
    devices = env.sim.preload(40, state="active")
    env.sim.faults = FaultConfig(seed=1, callback_out_of_order=True)
    env.api.action("suspend", *(d.iccid for d in devices))
    env.sim.settle()
    order = [b["deviceIds"][0]["id"] for b in receiver.bodies()]
    assert sorted(order) == sorted(d.iccid for d in devices)
    assert order != [d.iccid for d in devices]


def test_sim_endpoints(env: Env) -> None:
    http = env.api.http
    created = http.post("/_sim/devices", json={"n": 3, "state": "active"}).json()
    assert created["created"] == 3
    listed = http.get("/_sim/devices").json()
    assert [d["iccid"] for d in listed] == created["iccids"] and {d["state"] for d in listed} == {"active"}
    assert http.post("/_sim/faults", json={"p_server_error": 1.0}).status_code == 200
    assert env.sim.faults.p_server_error == 1.0
    assert env.api.post("/devices/actions/list", {}).status_code == 503
    assert http.post("/_sim/faults", json={"p_typo": 1}).status_code == 400
    counters = http.get("/_sim/counters").json()
    assert counters["requests"]["devices/actions/list"] == 1 and counters["faults"] == {"server_error": 1}


def test_scripted_faults_hit_exactly_the_next_requests(env: Env) -> None:
    (device,) = env.sim.preload(1)
    env.sim.fail_next("refused", count=2)
    first, second = env.api.action("suspend", device.iccid), env.api.action("suspend", device.iccid)
    assert [first.status_code, second.status_code] == [400, 400]
    assert first.json()["errorCode"] == "UnifiedWebService.REQUEST_FAILED.UnexpectedError"
    assert env.state(device.iccid) == "preactive" and env.sim.counters.faults == {"refused": 2}
    assert env.api.post("/devices/actions/list", {}).status_code == 200  # the script is used up
    env.sim.fail_next("rate_limited", endpoints=frozenset({"devices/actions/activate"}))
    assert env.api.post("/devices/actions/list", {}).status_code == 200  # not in the script's scope
    assert env.api.action("activate", device.iccid).status_code == 429
    with pytest.raises(ValueError):
        env.sim.fail_next("gremlins")


def test_scripted_faults_draw_nothing_from_the_seeded_sequence(make_env: Callable[..., Env]) -> None:
    def run(scripted: bool) -> list[int]:
        env = make_env()
        env.sim.faults = FaultConfig(seed=7, p_server_error=0.5)
        if scripted:
            env.sim.fail_next("server_error", count=3)
        return [env.api.post("/devices/actions/list", {}).status_code for _ in range(23)]

    assert run(True) == [503, 503, 503, *run(False)[:20]]


def test_changed_credentials_end_every_token_and_session(env: Env) -> None:
    assert env.api.post("/devices/actions/list", {}).status_code == 200
    env.sim.change_credentials(client_secret="rotated-secret", password="rotated-pass")
    assert env.api.post("/devices/actions/list", {}).status_code == 401  # the access token is gone
    assert env.api.get_token().status_code == 401  # the old secret is refused
    env.api.token = env.api.get_token(secret="rotated-secret").json()["access_token"]
    assert env.api.post("/devices/actions/list", {}).status_code == 400  # and so is the session
    assert env.api.login().status_code == 400
    assert env.api.login(password="rotated-pass").status_code == 200
