"""Each target status end to end over real HTTP against the simulator (issue 3)."""

from __future__ import annotations

from sqlalchemy import select

from bulkchange.domain.statuses import DeviceStatusId
from bulkchange.store.tables import DeviceBulkChange, DeviceBulkChangeLog, ThingSpaceDevice

from .conftest import Harness, activation_row, new_iccid, new_imei


async def test_inventory_adds_the_device_to_the_carrier_inventory(harness: Harness) -> None:
    iccid, imei = new_iccid(), new_imei()
    bulk = harness.submit([{"ICCID": iccid, "IMEI": imei}], status="inventory")
    await harness.run()
    [change] = harness.changes(bulk)
    assert change.status == "PROCESSED", change.status_details
    assert harness.sim.device(iccid).state == "preactive"
    assert harness.actions(iccid) == {"add": 1}
    device = harness.device(iccid)
    assert device is not None and device.device_status_id == DeviceStatusId.INVENTORY and device.imei == imei
    with harness.rt.session_factory() as s:
        assert s.execute(select(ThingSpaceDevice).where(ThingSpaceDevice.iccid == iccid)).scalar_one().imei == imei
        bulk_row = s.get(DeviceBulkChange, bulk)
        assert bulk_row is not None and bulk_row.status == "PROCESSED" and not bulk_row.has_errors


async def test_pending_activation_adds_only(harness: Harness) -> None:
    iccid = new_iccid()
    bulk = harness.submit([{"ICCID": iccid, "IMEI": new_imei()}], status="pending activation")
    await harness.run()
    [change] = harness.changes(bulk)
    assert change.status == "PROCESSED"
    assert harness.actions(iccid) == {"add": 1}
    assert harness.device(iccid).device_status_id == DeviceStatusId.PENDING_ACTIVATION  # type: ignore[union-attr]


async def test_active_with_imei_adds_then_activates_and_records_msisdn_and_ip(harness: Harness) -> None:
    iccid, imei = new_iccid(), new_imei()
    bulk = harness.submit([activation_row(iccid, imei)])
    await harness.run()
    [change] = harness.changes(bulk)
    assert change.status == "PROCESSED", change.status_details
    carrier = harness.sim.device(iccid)
    assert carrier is not None and carrier.state == "active"
    assert harness.actions(iccid) == {"add": 1, "activate": 1}
    device = harness.device(iccid)
    assert device is not None
    assert (device.device_status_id, device.msisdn, device.ip_address) == (
        DeviceStatusId.ACTIVE,
        carrier.msisdn,
        carrier.ip_address,
    )
    assert device.modified_by == "bulkchange" and device.modified_date is not None
    assert (change.msisdn, change.ip_address) == (carrier.msisdn, carrier.ip_address)  # seed §5.2


async def test_active_without_imei_uses_the_sku_number(harness: Harness) -> None:
    iccid = new_iccid()
    bulk = harness.submit([activation_row(iccid, SkuNumber="VZW-SKU-4G")])
    await harness.run()
    [change] = harness.changes(bulk)
    assert change.status == "PROCESSED", change.status_details
    assert harness.sim.device(iccid).state == "active"  # type: ignore[union-attr]


async def test_ignore_current_status_activates_directly(harness: Harness) -> None:
    iccid, imei = new_iccid(), new_imei()
    harness.sim.add_device(iccid, imei=imei, state="preactive")
    bulk = harness.submit([activation_row(iccid, imei)], ignore=True)
    await harness.run()
    [change] = harness.changes(bulk)
    assert change.status == "PROCESSED"
    assert change.plan == "ACTIVATE"
    assert harness.actions(iccid) == {"activate": 1}  # no Add
    assert harness.sim.counters.requests.get("devices/actions/add", 0) == 0


async def test_add_answering_already_exists_counts_as_success(harness: Harness) -> None:
    iccid = new_iccid()
    harness.sim.add_device(iccid, state="preactive")
    bulk = harness.submit([{"ICCID": iccid}], status="inventory")
    await harness.run()
    [change] = harness.changes(bulk)
    assert change.status == "PROCESSED"
    assert "already" in (change.status_details or "")
    with harness.rt.session_factory() as s:
        texts = [
            r.response_text
            for r in s.execute(
                select(DeviceBulkChangeLog).where(DeviceBulkChangeLog.m2m_device_change_id == change.id)
            ).scalars()
        ]
    assert any("Device already exists" in (t or "") for t in texts)


async def test_deactivate_suspend_restore(harness: Harness) -> None:
    to_deactivate, to_suspend, to_restore = new_iccid(), new_iccid(), new_iccid()
    harness.seed_device(to_deactivate, "active")
    harness.seed_device(to_suspend, "active")
    harness.seed_device(to_restore, "suspend")
    bulk = harness.submit(
        [
            {"ICCID": to_deactivate, "Status": "deactivated"},  # the seed's alias
            {"ICCID": to_suspend, "Status": "suspend"},
            {"ICCID": to_restore, "Status": "restore"},
        ],
        status="deactive",
    )
    await harness.run()
    assert harness.counts(bulk) == {"PROCESSED": 3}
    assert harness.sim.device(to_deactivate).state == "deactive"  # type: ignore[union-attr]
    assert harness.sim.device(to_suspend).state == "suspend"  # type: ignore[union-attr]
    assert harness.sim.device(to_restore).state == "active"  # type: ignore[union-attr]
    assert harness.device(to_deactivate).device_status_id == DeviceStatusId.DEACTIVE  # type: ignore[union-attr]
    assert harness.device(to_suspend).device_status_id == DeviceStatusId.SUSPEND  # type: ignore[union-attr]
    assert harness.device(to_restore).device_status_id == DeviceStatusId.ACTIVE  # type: ignore[union-attr]
    for iccid, action in ((to_deactivate, "deactivate"), (to_suspend, "suspend"), (to_restore, "restore")):
        assert harness.actions(iccid) == {action: 1}


async def test_every_carrier_call_and_db_step_is_logged_with_the_seed_fields(harness: Harness) -> None:
    iccid = new_iccid()
    bulk = harness.submit([activation_row(iccid, new_imei())])
    await harness.run()
    with harness.rt.session_factory() as s:
        rows = list(s.execute(select(DeviceBulkChangeLog).where(DeviceBulkChangeLog.bulk_change_id == bulk)).scalars())
    descriptions = {r.log_entry_description for r in rows}
    assert {
        "Add ThingSpace Device: ThingSpace API",
        "Activate ThingSpace Device: ThingSpace API",
        "Insert M2M Device: AMOP DB",
    } <= descriptions
    for row in rows:
        assert row.process_by == "bulkchange" and row.processed_date is not None
        assert row.response_status in ("PROCESSED", "ERROR")
    add = next(r for r in rows if r.log_entry_description.startswith("Add ThingSpace"))
    assert iccid in (add.request_text or "") and "Success" in (add.response_text or "")
