"""The per-account rate limit and the one-call-in-flight rule both answer 429 / 40000029, and are counted."""

from __future__ import annotations

import threading
from collections.abc import Callable

import httpx

from ..helpers import wait_for
from .conftest import API, USER, CCEnv

LIMITED = {"errorMessage": "Rate limit exceeded", "errorCode": "40000029"}


def test_calls_beyond_the_tps_get_429_and_change_nothing(make_cc: Callable[..., CCEnv]) -> None:
    cc = make_cc(tps=1, tps_burst=1)
    a, b = cc.sim.preload(2)
    assert cc.put(a.iccid, {"status": "ACTIVATED"}).status_code == 200
    refused = cc.put(b.iccid, {"status": "ACTIVATED"})
    assert (refused.status_code, refused.json()) == (429, LIMITED)
    assert "Retry-After" not in refused.headers  # Control Center is not known to send one
    assert cc.status(b.iccid) == "INVENTORY"
    cc.ticks.advance(0.6)
    assert cc.api.get(f"/devices/{b.iccid}").status_code == 429  # reads count too
    cc.ticks.advance(0.4)
    assert cc.put(b.iccid, {"status": "ACTIVATED"}).status_code == 200
    counters = cc.sim.counters
    assert counters.throttled == {"tps": 2}
    assert counters.rate_limited == 2
    assert counters.puts == {a.iccid: 1, b.iccid: 1}  # a refused call never reaches the device


def test_tps_5_allows_five_calls_a_second(make_cc: Callable[..., CCEnv]) -> None:
    cc = make_cc(tps=5, tps_burst=1)
    device = cc.sim.add_device()
    for _ in range(5):
        assert cc.api.get(f"/devices/{device.iccid}").status_code == 200
        cc.ticks.advance(0.2)
    assert cc.api.get(f"/devices/{device.iccid}").status_code == 200
    assert cc.api.get(f"/devices/{device.iccid}").status_code == 429


def test_burst_setting_allows_calls_back_to_back(make_cc: Callable[..., CCEnv]) -> None:
    cc = make_cc(tps=1, tps_burst=3)
    device = cc.sim.add_device()
    codes = [cc.api.get(f"/devices/{device.iccid}").status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]


def test_each_account_has_its_own_budget(make_cc: Callable[..., CCEnv]) -> None:
    cc = make_cc(tps=1, tps_burst=1)
    mine = cc.sim.add_device()
    theirs = cc.sim.add_device(account_id="200000001")
    cc.sim.add_user("other", "other-key", "200000001")
    assert cc.api.get(f"/devices/{mine.iccid}").status_code == 200
    other = httpx.get(f"{cc.base_url}{API}/devices/{theirs.iccid}", auth=("other", "other-key"))
    assert other.status_code == 200
    assert cc.api.get(f"/devices/{mine.iccid}").status_code == 429


def test_throttle_status_is_configurable(make_cc: Callable[..., CCEnv]) -> None:
    cc = make_cc(tps=1, tps_burst=1, rate_limit_http_status=400)
    device = cc.sim.add_device()
    cc.api.get(f"/devices/{device.iccid}")
    refused = cc.api.get(f"/devices/{device.iccid}")
    assert (refused.status_code, refused.json()) == (400, LIMITED)


def test_a_second_call_while_one_is_open_gets_429(make_cc: Callable[..., CCEnv]) -> None:
    cc = make_cc(latency_s=2.0)
    slow, other = cc.sim.preload(2)
    results: list[httpx.Response] = []

    def first_call() -> None:
        with httpx.Client(base_url=cc.base_url + API, auth=USER, timeout=10.0) as client:
            results.append(client.put(f"/devices/{slow.iccid}", json={"status": "ACTIVATED"}))

    thread = threading.Thread(target=first_call)
    thread.start()
    wait_for(lambda: cc.sim.open_calls() == 1)
    refused = cc.put(other.iccid, {"status": "ACTIVATED"})
    thread.join(10)
    assert (refused.status_code, refused.json()) == (429, LIMITED)
    assert results[0].status_code == 200
    assert (cc.status(slow.iccid), cc.status(other.iccid)) == ("ACTIVATED", "INVENTORY")
    counters = cc.sim.counters
    assert counters.max_in_flight == 2
    assert counters.throttled == {"in_flight": 1}
    assert cc.sim.open_calls() == 0


def test_sequential_calls_never_count_two_in_flight(make_cc: Callable[..., CCEnv]) -> None:
    cc = make_cc(latency_s=0.01)
    device = cc.sim.add_device()
    for _ in range(5):
        assert cc.api.get(f"/devices/{device.iccid}").status_code == 200
    assert cc.sim.counters.max_in_flight == 1
    assert httpx.get(f"{cc.base_url}/_sim/counters").json()["max_in_flight"] == 1
