"""Edit Device Details: the transition matrix, plans, validation, scheduled changes and the audit trail."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from bulkchange.simulator.controlcenter import ACCOUNT_SETTABLE, STATUSES, default_transitions

from .conftest import CCEnv

DAY = 86400.0


def _iso(cc: CCEnv, seconds_ahead: float) -> str:
    return (datetime.fromtimestamp(cc.clock(), tz=UTC) + timedelta(seconds=seconds_ahead)).isoformat()


def _audit(cc: CCEnv, iccid: str) -> list[dict[str, str]]:
    response = cc.api.get(f"/devices/{iccid}/auditTrails")
    assert response.status_code == 200
    return list(response.json()["deviceAuditTrails"])


@pytest.mark.parametrize("current", STATUSES)
def test_default_matrix_every_pair(cc: CCEnv, current: str) -> None:
    """From every status to every status: allowed pairs answer 200 and change it, others 400 and do not."""
    for target in STATUSES:
        device = cc.sim.add_device(status=current)
        response = cc.put(device.iccid, {"status": target})
        allowed = current == target or (current != "PURGED" and target in ACCOUNT_SETTABLE)
        if allowed:
            assert response.status_code == 200, (current, target, response.text)
            assert response.json() == {"iccid": device.iccid}
            assert cc.status(device.iccid) == target
        else:
            assert response.status_code == 400, (current, target)
            assert response.json()["errorMessage"] == f"Status change from {current} to {target} is not allowed"
            assert cc.status(device.iccid) == current
            assert _audit(cc, device.iccid) == []


def test_default_matrix_as_configured() -> None:
    matrix = default_transitions()
    assert matrix["PURGED"] == frozenset()
    assert matrix["ACTIVATED"] == {"INVENTORY", "ACTIVATION_READY", "ACTIVATED", "DEACTIVATED", "RETIRED"}
    assert all("TEST_READY" not in targets and "PURGED" not in targets for targets in matrix.values())


def test_a_configured_matrix_replaces_the_default(make_cc: Callable[..., CCEnv]) -> None:
    cc = make_cc(transitions={"ACTIVATED": {"DEACTIVATED"}, "DEACTIVATED": {"ACTIVATED", "PURGED"}})
    device = cc.sim.add_device(status="ACTIVATED")
    assert cc.put(device.iccid, {"status": "RETIRED"}).status_code == 400
    assert cc.put(device.iccid, {"status": "DEACTIVATED"}).status_code == 200
    assert cc.put(device.iccid, {"status": "PURGED"}).status_code == 200
    assert cc.put(device.iccid, {"status": "ACTIVATED"}).status_code == 400
    assert cc.status(device.iccid) == "PURGED"


def test_status_change_writes_an_executed_audit_record(cc: CCEnv) -> None:
    device = cc.sim.add_device(status="ACTIVATION_READY")
    assert cc.put(device.iccid, {"status": "ACTIVATED"}).status_code == 200
    [record] = _audit(cc, device.iccid)
    assert record == {
        "field": "status",
        "priorValue": "ACTIVATION_READY",
        "value": "ACTIVATED",
        "effectiveDate": datetime.fromtimestamp(cc.clock(), tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.000+0000"),
        "status": "Executed",
        "userName": "sim-user",
    }
    assert cc.sim.counters.changes == {device.iccid: {"status": 1}}
    assert cc.sim.counters.puts == {device.iccid: 1}


@pytest.mark.parametrize(("audit_same", "records"), [(True, 1), (False, 0)])
def test_setting_the_same_status_again(make_cc: Callable[..., CCEnv], audit_same: bool, records: int) -> None:
    cc = make_cc(audit_same_status=audit_same)
    device = cc.sim.add_device(status="ACTIVATED")
    before = cc.api.get(f"/devices/{device.iccid}").json()["dateUpdated"]
    cc.clock.advance(60)
    response = cc.put(device.iccid, {"status": "ACTIVATED"})
    assert response.status_code == 200
    assert cc.api.get(f"/devices/{device.iccid}").json()["dateUpdated"] == before  # nothing changed
    assert len(_audit(cc, device.iccid)) == records
    assert cc.sim.counters.changes == {}


@pytest.mark.parametrize("spelling", ["activated", "Activated", " ACTIVATED"])
def test_status_values_are_case_sensitive_by_default(cc: CCEnv, spelling: str) -> None:
    device = cc.sim.add_device()
    response = cc.put(device.iccid, {"status": spelling})
    assert response.status_code == 400
    assert response.json()["errorMessage"] == f"Invalid status: {spelling}"
    assert cc.status(device.iccid) == "INVENTORY"


def test_case_insensitive_statuses_when_configured(make_cc: Callable[..., CCEnv]) -> None:
    cc = make_cc(status_case_sensitive=False)
    device = cc.sim.add_device()
    assert cc.put(device.iccid, {"status": "Activated"}).status_code == 200
    assert cc.status(device.iccid) == "ACTIVATED"


def test_plans_change_with_the_status_in_one_call(cc: CCEnv) -> None:
    device = cc.sim.add_device(status="ACTIVATED")
    body = {"status": "DEACTIVATED", "ratePlan": "POD19 Suspend", "communicationPlan": "POD19 Data+SMS"}
    assert cc.put(device.iccid, body).status_code == 200
    details = cc.api.get(f"/devices/{device.iccid}").json()
    assert (details["status"], details["ratePlan"], details["communicationPlan"]) == tuple(body.values())
    fields = {r["field"]: (r["priorValue"], r["value"]) for r in _audit(cc, device.iccid)}
    assert fields == {
        "status": ("ACTIVATED", "DEACTIVATED"),
        "ratePlan": ("POD19 1GB", "POD19 Suspend"),
        "communicationPlan": ("POD19 Data", "POD19 Data+SMS"),
    }


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"ratePlan": "No Such Plan"}, "Invalid rate plan: No Such Plan"),
        ({"communicationPlan": "Nope"}, "Invalid communication plan: Nope"),
        ({"status": "ACTIVATED", "ratePlan": "No Such Plan"}, "Invalid rate plan: No Such Plan"),
        ({}, "At least one device field to change is required"),
        ({"effectiveDate": "2030-01-01T00:00:00Z"}, "At least one device field to change is required"),
        ({"iccid": "x", "apn": "y"}, "At least one device field to change is required"),
        ({"status": 3}, "status must be a string"),
        ({"status": "BOGUS"}, "Invalid status: BOGUS"),
    ],
)
def test_invalid_edits_change_nothing(cc: CCEnv, body: dict[str, object], message: str) -> None:
    device = cc.sim.add_device()
    response = cc.put(device.iccid, body)
    assert response.status_code == 400
    assert response.json()["errorMessage"] == message
    after = cc.sim.device(device.iccid)
    assert after is not None
    assert (after.status, after.rate_plan, after.audit) == ("INVENTORY", "POD19 1GB", [])
    assert (cc.sim.counters.puts, cc.sim.counters.changes) == ({device.iccid: 1}, {})


@pytest.mark.parametrize("raw", [b"not json", b"[1, 2]", b""])
def test_a_body_that_is_not_a_json_object_is_400(cc: CCEnv, raw: bytes) -> None:
    device = cc.sim.add_device()
    response = cc.api.put(f"/devices/{device.iccid}", content=raw, headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert cc.status(device.iccid) == "INVENTORY"


def test_unknown_iccid_edit_is_404(cc: CCEnv) -> None:
    assert cc.put("89011700000000000999", {"status": "ACTIVATED"}).status_code == 404


def test_custom_fields_are_editable(cc: CCEnv) -> None:
    device = cc.sim.add_device()
    assert cc.put(device.iccid, {"deviceID": "truck-7", "accountCustom1": "78"}).status_code == 200
    details = cc.api.get(f"/devices/{device.iccid}").json()
    assert (details["deviceID"], details["accountCustom1"]) == ("truck-7", "78")


# --- scheduled changes ----------------------------------------------------------------------------------------


def test_future_effective_date_answers_202_and_applies_after_the_date(cc: CCEnv) -> None:
    device = cc.sim.add_device(status="ACTIVATED")
    when = _iso(cc, 3 * DAY)
    response = cc.put(device.iccid, {"status": "DEACTIVATED", "effectiveDate": when})
    assert response.status_code == 202
    assert response.json() == {"iccid": device.iccid}
    assert cc.api.get(f"/devices/{device.iccid}").json()["status"] == "ACTIVATED"
    assert cc.sim.scheduled() == 1
    cc.clock.advance(3 * DAY - 1)
    assert cc.api.get(f"/devices/{device.iccid}").json()["status"] == "ACTIVATED"
    cc.clock.advance(2)
    assert cc.api.get(f"/devices/{device.iccid}").json()["status"] == "DEACTIVATED"
    [record] = _audit(cc, device.iccid)
    expected = datetime.fromisoformat(when).strftime("%Y-%m-%dT%H:%M:%S.000+0000")
    assert (record["value"], record["status"], record["effectiveDate"]) == ("DEACTIVATED", "Executed", expected)
    assert cc.sim.scheduled() == 0


def test_run_due_applies_without_an_api_call(cc: CCEnv) -> None:
    device = cc.sim.add_device(status="ACTIVATED")
    cc.put(device.iccid, {"status": "RETIRED", "effectiveDate": _iso(cc, DAY)})
    cc.clock.advance(DAY)
    assert cc.sim.run_due() == 1
    assert cc.status(device.iccid) == "RETIRED"


def test_effective_date_at_most_180_days_ahead(cc: CCEnv) -> None:
    device = cc.sim.add_device(status="ACTIVATED")
    too_far = cc.put(device.iccid, {"status": "DEACTIVATED", "effectiveDate": _iso(cc, 180 * DAY + 60)})
    assert too_far.status_code == 400
    assert "180 days" in too_far.json()["errorMessage"]
    assert cc.put(device.iccid, {"status": "DEACTIVATED", "effectiveDate": _iso(cc, 180 * DAY)}).status_code == 202
    bad = cc.put(device.iccid, {"status": "DEACTIVATED", "effectiveDate": "next tuesday"})
    assert bad.status_code == 400
    assert cc.sim.scheduled() == 1


def test_past_effective_date_applies_now(cc: CCEnv) -> None:
    device = cc.sim.add_device(status="ACTIVATED")
    response = cc.put(device.iccid, {"status": "DEACTIVATED", "effectiveDate": _iso(cc, -DAY)})
    assert response.status_code == 200
    assert cc.status(device.iccid) == "DEACTIVATED"


def test_scheduled_change_no_longer_allowed_on_its_date_is_an_audit_error(make_cc: Callable[..., CCEnv]) -> None:
    cc = make_cc(transitions={"ACTIVATED": {"DEACTIVATED", "RETIRED"}, "RETIRED": set()})
    device = cc.sim.add_device(status="ACTIVATED")
    assert cc.put(device.iccid, {"status": "DEACTIVATED", "effectiveDate": _iso(cc, DAY)}).status_code == 202
    assert cc.put(device.iccid, {"status": "RETIRED"}).status_code == 200
    cc.clock.advance(DAY)
    records = _audit(cc, device.iccid)
    assert cc.status(device.iccid) == "RETIRED"
    assert [(r["value"], r["status"]) for r in records] == [("DEACTIVATED", "Error"), ("RETIRED", "Executed")]
