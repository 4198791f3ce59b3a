"""Search Devices (modifiedSince, pages of at most 50, oldest first) and Get Device Audit History."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from .conftest import CCEnv

DAY = 86400.0


def _since(cc: CCEnv, seconds_ago: float) -> str:
    return (datetime.fromtimestamp(cc.clock(), tz=UTC) - timedelta(seconds=seconds_ago)).isoformat()


def _search(cc: CCEnv, **params: Any) -> dict[str, Any]:
    response = cc.api.get("/devices", params=params)
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_modified_since_is_required(cc: CCEnv) -> None:
    response = cc.api.get("/devices")
    assert response.status_code == 400
    assert response.json() == {"errorMessage": "ModifiedSince is required.", "errorCode": "10000003"}


@pytest.mark.parametrize("value", ["yesterday", "2016-13-45T00:00:00Z"])
def test_modified_since_must_be_a_date(cc: CCEnv, value: str) -> None:
    assert cc.api.get("/devices", params={"modifiedSince": value}).status_code == 400


def test_modified_since_not_in_the_future_nor_older_than_a_year(cc: CCEnv) -> None:
    assert cc.api.get("/devices", params={"modifiedSince": _since(cc, -60)}).status_code == 400
    assert cc.api.get("/devices", params={"modifiedSince": _since(cc, 366 * DAY)}).status_code == 400
    assert cc.api.get("/devices", params={"modifiedSince": _since(cc, 364 * DAY)}).status_code == 200


def test_pages_of_at_most_50_until_last_page(cc: CCEnv) -> None:
    cc.sim.preload(120)
    seen: list[str] = []
    pages = []
    for number in (1, 2, 3):
        page = _search(cc, modifiedSince=_since(cc, DAY), pageSize=500, pageNumber=number)
        pages.append((len(page["devices"]), page["pageNumber"], page["lastPage"]))
        seen += [d["iccid"] for d in page["devices"]]
    assert pages == [(50, 1, False), (50, 2, False), (20, 3, True)]
    assert seen == [d.iccid for d in cc.sim.devices()]
    assert set(_search(cc, modifiedSince=_since(cc, DAY))["devices"][0]) == {
        "iccid",
        "status",
        "ratePlan",
        "communicationPlan",
    }
    small = _search(cc, modifiedSince=_since(cc, DAY), pageSize=7, pageNumber=18)
    assert (len(small["devices"]), small["lastPage"]) == (1, True)
    assert _search(cc, modifiedSince=_since(cc, DAY), pageNumber=9) == {
        "devices": [],
        "pageNumber": 9,
        "lastPage": True,
    }


@pytest.mark.parametrize("params", [{"pageSize": "0"}, {"pageNumber": "0"}, {"pageSize": "ten"}])
def test_bad_paging_is_400(cc: CCEnv, params: dict[str, str]) -> None:
    response = cc.api.get("/devices", params={"modifiedSince": _since(cc, DAY), **params})
    assert response.status_code == 400


def test_oldest_modification_first_and_only_modified_since(cc: CCEnv) -> None:
    a, b, c = cc.sim.preload(3)
    cc.clock.advance(3600)
    mark = _since(cc, 0)
    cc.clock.advance(60)
    cc.put(c.iccid, {"status": "ACTIVATED"})
    cc.clock.advance(60)
    cc.put(a.iccid, {"status": "ACTIVATED"})
    found = _search(cc, modifiedSince=mark)["devices"]
    assert [(d["iccid"], d["status"]) for d in found] == [(c.iccid, "ACTIVATED"), (a.iccid, "ACTIVATED")]
    everything = [d["iccid"] for d in _search(cc, modifiedSince=_since(cc, DAY))["devices"]]
    assert everything == [b.iccid, c.iccid, a.iccid]
    till = (datetime.fromtimestamp(cc.clock(), tz=UTC) - timedelta(seconds=30)).isoformat()
    assert [d["iccid"] for d in _search(cc, modifiedSince=mark, modifiedTill=till)["devices"]] == [c.iccid]


def test_status_and_account_filters(cc: CCEnv) -> None:
    active = cc.sim.preload(2, "ACTIVATED")
    cc.sim.preload(3, "INVENTORY")
    cc.sim.add_device(status="ACTIVATED", account_id="200000001")
    found = _search(cc, modifiedSince=_since(cc, DAY), status="ACTIVATED")["devices"]
    assert [d["iccid"] for d in found] == [d.iccid for d in active]
    assert _search(cc, modifiedSince=_since(cc, DAY), accountId="200000001")["devices"] == []
    assert len(_search(cc, modifiedSince=_since(cc, DAY), accountId="100020620")["devices"]) == 5


# --- audit trails ---------------------------------------------------------------------------------------------


def test_audit_trail_newest_first_and_paged(cc: CCEnv) -> None:
    device = cc.sim.add_device(status="ACTIVATED")
    statuses = ["DEACTIVATED", "ACTIVATED"] * 30  # 60 records
    for status in statuses:
        cc.clock.advance(60)
        assert cc.put(device.iccid, {"status": status}).status_code == 200
    first = cc.api.get(f"/devices/{device.iccid}/auditTrails").json()
    second = cc.api.get(f"/devices/{device.iccid}/auditTrails", params={"pageNumber": 2}).json()
    assert (first["iccid"], first["pageNumber"], first["lastPage"]) == (device.iccid, 1, False)
    assert (len(first["deviceAuditTrails"]), len(second["deviceAuditTrails"]), second["lastPage"]) == (50, 10, True)
    dates = [r["effectiveDate"] for r in first["deviceAuditTrails"] + second["deviceAuditTrails"]]
    assert dates == sorted(dates, reverse=True) and len(set(dates)) == 60
    assert first["deviceAuditTrails"][0]["value"] == "ACTIVATED"
    assert second["deviceAuditTrails"][-1]["priorValue"] == "ACTIVATED"  # the oldest: the first change
    small = cc.api.get(f"/devices/{device.iccid}/auditTrails", params={"pageSize": 7, "pageNumber": 9}).json()
    assert (len(small["deviceAuditTrails"]), small["lastPage"]) == (4, True)
    assert first["timestamp"] == datetime.fromtimestamp(cc.clock(), tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.000+0000")


def test_days_of_history_defaults_to_30_and_stops_at_365(make_cc: Callable[..., CCEnv]) -> None:
    cc = make_cc(modified_since_max_age_days=None)
    device = cc.sim.add_device(status="ACTIVATED")
    cc.put(device.iccid, {"status": "DEACTIVATED"})
    cc.clock.advance(40 * DAY)
    cc.put(device.iccid, {"status": "ACTIVATED"})
    trail = f"/devices/{device.iccid}/auditTrails"
    assert [r["value"] for r in cc.api.get(trail).json()["deviceAuditTrails"]] == ["ACTIVATED"]
    both = cc.api.get(trail, params={"daysOfHistory": 41}).json()["deviceAuditTrails"]
    assert [r["value"] for r in both] == ["ACTIVATED", "DEACTIVATED"]
    assert cc.api.get(trail, params={"daysOfHistory": 365}).status_code == 200
    assert cc.api.get(trail, params={"daysOfHistory": 366}).status_code == 400
    assert cc.api.get(trail, params={"daysOfHistory": 0}).status_code == 400


def test_audit_trail_of_unknown_device_is_404(cc: CCEnv) -> None:
    assert cc.api.get("/devices/89011700000000000999/auditTrails").status_code == 404
