"""The stored-callback applier: batches, early callbacks, and callbacks that can never match."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from bulkchange.cli.main import app
from bulkchange.store.tables import DeviceBulkChangeLog, ThingSpaceCallBackResponseLog

from .conftest import Harness, activation_row, new_iccid, new_imei, success_callback


def _callback(request_id: str, iccid: str) -> dict[str, Any]:
    return success_callback(request_id, iccid, action="suspend", state="suspend")


async def test_callbacks_waiting_for_their_change_never_hide_the_ones_behind_them(polling_harness: Harness) -> None:
    h = polling_harness
    iccid = new_iccid()
    h.seed_device(iccid, "active")
    bulk = h.submit([{"ICCID": iccid}], status="suspend")
    await h.run_once()  # sends Suspend; no listener, so the change awaits its result
    [change] = h.changes(bulk)
    assert change.status == "AWAITING_RESULT" and change.carrier_request_id
    for n in range(3):  # callbacks that match nothing yet (they may be early): kept pending, at the head
        assert (
            h.rt.engine.ingest_callback(_callback(f"unknown-{n}", new_iccid()), service_provider_id=h.provider_id)
            is not None
        )
    h.rt.engine.ingest_callback(_callback(change.carrier_request_id, iccid), service_provider_id=h.provider_id)
    assert h.rt.engine.apply_pending_callbacks(limit=2) == 1
    assert h.changes(bulk)[0].status == "PROCESSED"
    with h.rt.session_factory() as s:
        waiting = s.execute(
            select(ThingSpaceCallBackResponseLog).where(ThingSpaceCallBackResponseLog.outcome.is_(None))
        ).scalars()
        assert sorted(r.request_id for r in waiting) == ["unknown-0", "unknown-1", "unknown-2"]


async def test_a_callback_for_a_change_already_settled_is_recorded_as_such(polling_harness: Harness) -> None:
    h = polling_harness
    iccid = new_iccid()
    h.seed_device(iccid, "active")
    bulk = h.submit([{"ICCID": iccid}], status="suspend")
    await h.run()  # no listener: the deferred check settles it
    [change] = h.changes(bulk)
    assert change.status == "PROCESSED"
    late = _callback(change.carrier_request_id or "", iccid)
    h.rt.engine.ingest_callback(late, service_provider_id=h.provider_id)  # the late callback
    assert h.rt.engine.apply_pending_callbacks() == 0
    with h.rt.session_factory() as s:
        stored = s.execute(select(ThingSpaceCallBackResponseLog)).scalar_one()
    assert stored.outcome == "not applied: the change was already PROCESSED"
    assert stored.m2m_device_change_id == change.id
    assert h.changes(bulk)[0].status == "PROCESSED"


async def test_a_refusal_for_a_change_a_check_already_settled_is_recorded_and_shown(
    polling_harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The carrier's "already active" arrives after the deferred check found the device active and settled the
    change: it does not vanish. It is on the change's log, flagged on the change, and `bulkchange status`
    shows it."""
    h = polling_harness
    iccid = new_iccid()
    bulk = h.submit([activation_row(iccid, new_imei())])
    await h.run()  # no listener: the deferred check settles it
    [change] = h.changes(bulk)
    assert change.status == "PROCESSED" and change.carrier_request_id and not change.has_errors
    refusal = {
        "username": "",
        "password": "",
        "requestId": change.carrier_request_id,
        "deviceIds": [{"id": iccid, "kind": "Iccid"}],
        "faultResponse": {
            "faultcode": "UnifiedWebService.REQUEST_FAILED.DeviceAlreadyActive",
            "faultstring": "REQUEST_FAILED. Device is already active",
        },
        "status": "Failed",
        "callbackCount": 1,
        "maxCallbackThreshold": 4,
    }
    h.rt.engine.ingest_callback(refusal, service_provider_id=h.provider_id)
    assert h.rt.engine.apply_pending_callbacks() == 0  # never a verdict on a settled change

    [after] = h.changes(bulk)
    assert after.status == "PROCESSED"
    assert after.has_errors and after.last_error_code == "REQUEST_FAILED.DeviceAlreadyActive"
    assert "the carrier later refused this request [REQUEST_FAILED.DeviceAlreadyActive]" in (after.status_details or "")
    with h.rt.session_factory() as s:
        logs = list(
            s.execute(select(DeviceBulkChangeLog).where(DeviceBulkChangeLog.m2m_device_change_id == change.id))
            .scalars()
            .all()
        )
    [late] = [row for row in logs if row.log_entry_description == "ThingSpace Callback: CarrierService"]
    assert late.has_errors and "DeviceAlreadyActive" in (late.error_text or "")

    monkeypatch.setenv("BULKCHANGE_DATABASE_URL", h.rt.settings.database_url)
    shown = CliRunner().invoke(app, ["status", str(bulk), "--json"])
    assert shown.exit_code == 0, shown.output
    [device] = json.loads(shown.stdout)["devices"]
    assert device["has_errors"] and device["last_error_code"] == "REQUEST_FAILED.DeviceAlreadyActive"
    assert "later refused" in device["details"]
    table = CliRunner().invoke(app, ["status", str(bulk)], env={"COLUMNS": "200"})
    assert "1 PROCESSED change(s) were later refused by the carrier" in table.stdout


async def test_a_late_success_for_a_processed_change_is_logged_but_flags_nothing(polling_harness: Harness) -> None:
    h = polling_harness
    iccid = new_iccid()
    h.seed_device(iccid, "active")
    bulk = h.submit([{"ICCID": iccid}], status="suspend")
    await h.run()
    [change] = h.changes(bulk)
    late = _callback(change.carrier_request_id or "", iccid)
    h.rt.engine.ingest_callback(late, service_provider_id=h.provider_id)
    h.rt.engine.apply_pending_callbacks()
    [after] = h.changes(bulk)
    assert after.status == "PROCESSED" and not after.has_errors and after.status_details == change.status_details
    with h.rt.session_factory() as s:
        descriptions = s.execute(
            select(DeviceBulkChangeLog.log_entry_description, DeviceBulkChangeLog.error_text).where(
                DeviceBulkChangeLog.m2m_device_change_id == change.id
            )
        ).all()
    assert ("ThingSpace Callback: CarrierService", "arrived after the change was PROCESSED; not applied") in [
        tuple(row) for row in descriptions
    ]
