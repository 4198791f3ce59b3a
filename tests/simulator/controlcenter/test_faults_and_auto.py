"""Fault injection, automatic status transitions and the /_sim admin endpoints."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from bulkchange.simulator.controlcenter import ControlCenterFaults

from .conftest import CCEnv


def test_accepted_but_not_applied(cc: CCEnv) -> None:
    device = cc.sim.add_device(status="ACTIVATED")
    cc.sim.faults = ControlCenterFaults(iccid_faults={device.iccid: frozenset({"not_applied"})})
    response = cc.put(device.iccid, {"status": "DEACTIVATED", "ratePlan": "POD19 Suspend"})
    assert (response.status_code, response.json()) == (200, {"iccid": device.iccid})
    details = cc.api.get(f"/devices/{device.iccid}").json()
    assert (details["status"], details["ratePlan"]) == ("ACTIVATED", "POD19 1GB")
    trail = cc.api.get(f"/devices/{device.iccid}/auditTrails").json()["deviceAuditTrails"]
    assert sorted((r["field"], r["priorValue"], r["value"], r["status"]) for r in trail) == [
        ("ratePlan", "POD19 1GB", "POD19 Suspend", "Error"),
        ("status", "ACTIVATED", "DEACTIVATED", "Error"),
    ]
    counters = cc.sim.counters
    assert (counters.faults, counters.changes, counters.puts) == ({"not_applied": 1}, {}, {device.iccid: 1})
    assert counters.not_made == {device.iccid: 1}


def test_not_applied_only_hits_the_listed_device(cc: CCEnv) -> None:
    hit, spared = cc.sim.preload(2)
    cc.sim.faults = ControlCenterFaults(iccid_faults={hit.iccid: frozenset({"not_applied"})})
    cc.put(hit.iccid, {"status": "ACTIVATED"})
    cc.put(spared.iccid, {"status": "ACTIVATED"})
    assert (cc.status(hit.iccid), cc.status(spared.iccid)) == ("INVENTORY", "ACTIVATED")


def test_audit_error_status_is_configurable(make_cc: Callable[..., CCEnv]) -> None:
    cc = make_cc(audit_error_status="Failed", faults=ControlCenterFaults(p_not_applied=1.0))
    device = cc.sim.add_device()
    assert cc.put(device.iccid, {"status": "ACTIVATED"}).status_code == 200
    assert cc.sim.audit_trail(device.iccid)[0].status == "Failed"


def test_2xx_without_iccid_still_makes_the_change(cc: CCEnv) -> None:
    device = cc.sim.add_device()
    cc.sim.faults = ControlCenterFaults(p_missing_iccid=1.0)
    response = cc.put(device.iccid, {"status": "ACTIVATED"})
    assert (response.status_code, response.json()) == (200, {})
    assert cc.status(device.iccid) == "ACTIVATED"
    assert cc.api.get(f"/devices/{device.iccid}").json()["iccid"] == device.iccid  # reads are unaffected


@pytest.mark.parametrize("status", [500, 503])
def test_server_error_before_any_work(cc: CCEnv, status: int) -> None:
    device = cc.sim.add_device()
    cc.sim.faults = ControlCenterFaults(p_server_error=1.0, server_error_status=status)
    response = cc.put(device.iccid, {"status": "ACTIVATED"})
    assert response.status_code == status
    assert set(response.json()) == {"errorMessage", "errorCode"}
    assert cc.status(device.iccid) == "INVENTORY"
    assert cc.sim.counters.faults == {"server_error": 1}


def test_injected_rate_limit_with_optional_retry_after(cc: CCEnv) -> None:
    device = cc.sim.add_device()
    cc.sim.faults = ControlCenterFaults(p_rate_limited=1.0, retry_after_s=3)
    response = cc.put(device.iccid, {"status": "ACTIVATED"})
    assert (response.status_code, response.json()["errorCode"], response.headers["Retry-After"]) == (
        429,
        "40000029",
        "3",
    )
    assert cc.status(device.iccid) == "INVENTORY"
    assert cc.sim.counters.throttled == {"injected": 1}


def test_malformed_answer_after_the_work(cc: CCEnv) -> None:
    device = cc.sim.add_device()
    cc.sim.faults = ControlCenterFaults(p_malformed=1.0, endpoints=frozenset({"devices/edit"}))
    response = cc.put(device.iccid, {"status": "ACTIVATED"})
    assert response.status_code == 200
    with pytest.raises(ValueError):
        response.json()
    assert cc.status(device.iccid) == "ACTIVATED"
    assert cc.api.get(f"/devices/{device.iccid}").json()["status"] == "ACTIVATED"  # GET not in endpoints


def test_slow_answer_after_the_work(cc: CCEnv) -> None:
    device = cc.sim.add_device()
    cc.sim.faults = ControlCenterFaults(p_slow=1.0, slow_s=5.0)
    with pytest.raises(httpx.ReadTimeout):
        cc.api.put(f"/devices/{device.iccid}", json={"status": "ACTIVATED"}, timeout=0.3)
    assert cc.status(device.iccid) == "ACTIVATED"


def test_faults_replay_with_the_same_seed(cc: CCEnv) -> None:
    device = cc.sim.add_device()

    def run() -> list[int]:
        cc.sim.faults = ControlCenterFaults(seed=7, p_server_error=0.5)
        return [cc.api.get(f"/devices/{device.iccid}").status_code for _ in range(12)]

    first = run()
    assert first == run()
    assert {200, 500} == set(first)


# --- automatic transitions -------------------------------------------------------------------------------------


def test_activation_ready_becomes_activated_on_first_use(cc: CCEnv) -> None:
    device = cc.sim.add_device(status="ACTIVATION_READY")
    cc.clock.advance(90)
    assert cc.sim.use_device(device.iccid) is True
    details = cc.api.get(f"/devices/{device.iccid}").json()
    assert details["status"] == "ACTIVATED"
    assert "dateActivated" in details
    [record] = cc.api.get(f"/devices/{device.iccid}/auditTrails").json()["deviceAuditTrails"]
    assert (record["priorValue"], record["value"], record["userName"]) == ("ACTIVATION_READY", "ACTIVATED", "system")
    assert cc.sim.use_device(device.iccid) is False  # only the first use
    inventory = cc.sim.add_device(status="INVENTORY")
    assert cc.sim.use_device(inventory.iccid) is False
    assert cc.status(inventory.iccid) == "INVENTORY"


def test_test_ready_moves_to_its_target_when_the_quota_is_used(make_cc: Callable[..., CCEnv]) -> None:
    cc = make_cc(test_ready_target="INVENTORY")
    default = cc.sim.add_device(status="TEST_READY")
    own = cc.sim.add_device(status="TEST_READY", test_ready_target="ACTIVATED")
    assert cc.sim.exhaust_test_quota(default.iccid) and cc.sim.exhaust_test_quota(own.iccid)
    assert (cc.status(default.iccid), cc.status(own.iccid)) == ("INVENTORY", "ACTIVATED")


def test_admin_endpoints(cc: CCEnv) -> None:
    admin = httpx.Client(base_url=cc.base_url + "/_sim")
    created = admin.post("/devices", json={"n": 3, "status": "ACTIVATION_READY"}).json()
    assert created["created"] == 3
    first = created["iccids"][0]
    assert admin.post("/devices", json={"n": 1, "status": "nope"}).status_code == 422
    assert [d["iccid"] for d in admin.get("/devices").json()] == created["iccids"]
    assert admin.post(f"/devices/{first}/use").json() == {"changed": True, "status": "ACTIVATED"}
    assert admin.get(f"/devices/{first}").json()["auditTrail"][0]["value"] == "ACTIVATED"
    assert admin.post("/devices/89011700000000000999/use").status_code == 404
    assert admin.post(f"/devices/{first}/test-quota-used").json() == {"changed": False, "status": "ACTIVATED"}
    assert admin.post("/faults", json={"p_not_applied": 1.0}).status_code == 200
    assert admin.get("/faults").json()["p_not_applied"] == 1.0
    assert admin.post("/faults", json={"p_not_applied": 2}).status_code == 422
    cc.put(created["iccids"][1], {"status": "ACTIVATED"})
    counters = admin.get("/counters").json()
    assert counters["requests"] == {"devices/edit": 1}
    assert counters["faults"] == {"not_applied": 1}
    assert counters["puts"] == {created["iccids"][1]: 1}
    assert admin.post("/run-due").json() == {"applied": 0, "waiting": 0}
    admin.close()
