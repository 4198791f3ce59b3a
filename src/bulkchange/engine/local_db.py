"""Keeping the local database in step with the carrier once a carrier step has taken effect.

Matching follows the seed (§5.1/§5.2): ``Device`` by ServiceProviderId + ICCID + IsDeleted = 0 (an archived
device is never resurrected, B12); ``M2M_DeviceChange`` by BulkChangeId + ICCID.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from bulkchange.domain.statuses import DEVICE_STATUS_NAMES
from bulkchange.engine.logbook import LogEntry
from bulkchange.store.tables import (
    Device,
    M2MDeviceChange,
    ThingSpaceDevice,
    ThingSpaceDeviceDetail,
    ThingSpaceDeviceUsage,
    utcnow,
)


@dataclass(frozen=True)
class CarrierFacts:
    """What the carrier told us about a device after a step (callback or list)."""

    msisdn: str | None = None
    ip_address: str | None = None


def _live_device(session: Session, provider_id: int, iccid: str) -> Device | None:
    return session.execute(
        select(Device).where(
            Device.service_provider_id == provider_id, Device.iccid == iccid, Device.is_deleted.is_(False)
        )
    ).scalar_one_or_none()


def apply_device_status(
    session: Session,
    change: M2MDeviceChange,
    *,
    provider_id: int,
    tenant_id: int | None,
    account_number: str | None,
    status_id: int,
    facts: CarrierFacts,
    rate_plan: str | None,
    rev_account_number: str | None,
    process_by: str,
) -> list[LogEntry]:
    """Write the device's new status (and MSISDN / IP when known) to every local table; return log entries.

    Creates the Device and ThingSpaceDevice / Detail / Usage rows when the device is new to us.
    """
    now = utcnow()
    status_name = DEVICE_STATUS_NAMES[status_id]
    logs: list[LogEntry] = []
    device = _live_device(session, provider_id, change.iccid)
    if device is None:
        device = Device(
            service_provider_id=provider_id,
            tenant_id=tenant_id,
            iccid=change.iccid,
            imei=change.imei,
            created_by=process_by,
            created_date=now,
            provider_date_added=now,
            rate_plan=rate_plan,
        )
        session.add(device)
        description = "Insert M2M Device: AMOP DB"
    else:
        description = "Update M2M Device Status: AMOP DB"
    if change.imei:  # never blank an IMEI we know (B12)
        device.imei = change.imei
    device.device_status_id = status_id
    device.status = status_name
    if facts.msisdn:
        device.msisdn = facts.msisdn
    if facts.ip_address:
        device.ip_address = facts.ip_address
    if rate_plan:
        device.rate_plan = rate_plan
    device.modified_by = process_by
    device.modified_date = now
    session.flush()
    change.device_id = device.id
    if facts.msisdn:
        change.msisdn = facts.msisdn
    if facts.ip_address:
        change.ip_address = facts.ip_address
    logs.append(
        LogEntry(
            change.bulk_change_id,
            change.id,
            description,
            True,
            request_text=f"ICCID {change.iccid} → {status_name}",
            response_text=f"Device {device.id}: status {status_name}, MSISDN {device.msisdn or '-'}, "
            f"IP {device.ip_address or '-'}",
        )
    )

    ts_device = session.execute(
        select(ThingSpaceDevice).where(
            ThingSpaceDevice.service_provider_id == provider_id, ThingSpaceDevice.iccid == change.iccid
        )
    ).scalar_one_or_none()
    if ts_device is None:
        ts_device = ThingSpaceDevice(service_provider_id=provider_id, iccid=change.iccid, created_by=process_by)
        session.add(ts_device)
        logs.append(LogEntry(change.bulk_change_id, change.id, "Insert ThingSpace Device: AMOP DB", True))
    ts_device.is_deleted = False
    ts_device.is_active = True
    if change.imei:
        ts_device.imei = change.imei
    ts_device.status = status_name
    ts_device.device_status_id = status_id
    if facts.msisdn:
        ts_device.msisdn = facts.msisdn
    if facts.ip_address:
        ts_device.ip_address = facts.ip_address
    if rate_plan:
        ts_device.rate_plan = rate_plan
    ts_device.modified_by = process_by
    ts_device.modified_date = now

    detail = session.execute(
        select(ThingSpaceDeviceDetail).where(
            ThingSpaceDeviceDetail.service_provider_id == provider_id, ThingSpaceDeviceDetail.iccid == change.iccid
        )
    ).scalar_one_or_none()
    if detail is None:
        session.add(
            ThingSpaceDeviceDetail(
                service_provider_id=provider_id,
                iccid=change.iccid,
                account_number=rev_account_number or account_number,
                thing_space_date_added=now,
                created_by=process_by,
            )
        )
        logs.append(LogEntry(change.bulk_change_id, change.id, "Insert ThingSpace Device Detail: AMOP DB", True))

    usage = session.execute(
        select(ThingSpaceDeviceUsage).where(
            ThingSpaceDeviceUsage.service_provider_id == provider_id, ThingSpaceDeviceUsage.iccid == change.iccid
        )
    ).scalar_one_or_none()
    if usage is None:
        usage = ThingSpaceDeviceUsage(service_provider_id=provider_id, iccid=change.iccid, created_by=process_by)
        session.add(usage)
        logs.append(LogEntry(change.bulk_change_id, change.id, "Insert ThingSpace Device Usage: AMOP DB", True))
    if change.imei:
        usage.imei = change.imei
    usage.status = status_name
    usage.device_status_id = status_id
    if rate_plan:
        usage.rate_plan = rate_plan
    usage.modified_by = process_by
    usage.modified_date = now
    return logs
