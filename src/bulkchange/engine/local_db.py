"""Keeping the local database in step with the carrier once carrier steps have taken effect.

Matching follows the seed (§5.1/§5.2): ``Device`` by ServiceProviderId + ICCID + IsDeleted = 0 (an archived
device is never resurrected, B12); ``M2M_DeviceChange`` by BulkChangeId + ICCID.

Set-based: one batch of devices costs a handful of statements (one SELECT per table, one executemany
INSERT for new rows, one executemany UPDATE for known ones), not a round trip per device.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bulkchange.domain.outcomes import CarrierFacts, LogEntry
from bulkchange.domain.statuses import DEVICE_STATUS_NAMES
from bulkchange.store.core import column_keys, insert_returning, insert_rows, table_of, update_by_id
from bulkchange.store.tables import (
    Device,
    M2MDeviceChange,
    ThingSpaceDevice,
    ThingSpaceDeviceDetail,
    ThingSpaceDeviceUsage,
    utcnow,
)

_CHUNK = 500  # bound on IN lists


@dataclass(frozen=True)
class DeviceUpdate:
    """One device's new local state."""

    change: M2MDeviceChange
    status_id: int
    facts: CarrierFacts
    rate_plan: str | None
    rev_account_number: str | None


def _existing(session: Session, table: Any, provider_id: int, iccids: list[str], *, live_only: bool) -> dict[str, int]:
    """ICCID → id of the rows of ``table`` for this provider (the newest when several).

    A Core SELECT of two columns, not an ORM one: the ORM's statement handling cost more than the query
    itself, four times per batch in both the worker and the callback applier."""
    core, keys = table_of(table), column_keys(table)
    iccid, row_id, provider = core.c[keys["iccid"]], core.c[keys["id"]], core.c[keys["service_provider_id"]]
    found: dict[str, int] = {}
    for start in range(0, len(iccids), _CHUNK):
        query = select(iccid, row_id).where(provider == provider_id, iccid.in_(iccids[start : start + _CHUNK]))
        if live_only:
            query = query.where(core.c[keys["is_deleted"]].is_(False))
        for found_iccid, found_id in session.execute(query.order_by(row_id)):
            found[found_iccid] = found_id
    return found


def _device_values(u: DeviceUpdate, now: Any, process_by: str) -> dict[str, Any]:
    values: dict[str, Any] = {
        "device_status_id": u.status_id,
        "status": DEVICE_STATUS_NAMES[u.status_id],
        "modified_by": process_by,
        "modified_date": now,
    }
    if u.change.imei:  # never blank an IMEI we know (B12)
        values["imei"] = u.change.imei
    if u.facts.msisdn:
        values["msisdn"] = u.facts.msisdn
    if u.facts.ip_address:
        values["ip_address"] = u.facts.ip_address
    if u.rate_plan:
        values["rate_plan"] = u.rate_plan
    return values


def apply_device_statuses(
    session: Session,
    updates: Sequence[DeviceUpdate],
    *,
    provider_id: int,
    tenant_id: int | None,
    account_number: str | None,
    process_by: str,
) -> list[LogEntry]:
    """Write each device's new status (and MSISDN / IP when known) to every local table; return log entries.

    Creates the Device and ThingSpaceDevice / Detail / Usage rows of devices new to us.
    """
    if not updates:
        return []
    # One update per device: the last one wins when a batch mentions a device twice.
    by_iccid = {u.change.iccid: u for u in updates}
    iccids = list(by_iccid)
    now = utcnow()
    logs: list[LogEntry] = []

    devices = _existing(session, Device, provider_id, iccids, live_only=True)
    new_devices = [
        {
            "service_provider_id": provider_id,
            "tenant_id": tenant_id,
            "iccid": iccid,
            "created_by": process_by,
            "created_date": now,
            "provider_date_added": now,
            "is_active": True,
            "is_deleted": False,
            "imei": None,
            "msisdn": None,
            "ip_address": None,
            "rate_plan": None,
            **_device_values(u, now, process_by),
        }
        for iccid, u in by_iccid.items()
        if iccid not in devices
    ]
    if new_devices:
        for start in range(0, len(new_devices), _CHUNK):
            created = insert_returning(session, Device, new_devices[start : start + _CHUNK], "id", "iccid")
            devices.update({iccid: row_id for row_id, iccid in created})
    created_iccids = {d["iccid"] for d in new_devices}
    update_by_id(
        session,
        Device,
        [
            {"id": devices[iccid], **_device_values(u, now, process_by)}
            for iccid, u in by_iccid.items()
            if iccid not in created_iccids
        ],
    )

    ts_rows = _existing(session, ThingSpaceDevice, provider_id, iccids, live_only=False)
    ts_values = {
        iccid: {
            k: v
            for k, v in _device_values(u, now, process_by).items()
            if k
            in {
                "device_status_id",
                "status",
                "imei",
                "msisdn",
                "ip_address",
                "rate_plan",
                "modified_by",
                "modified_date",
            }
        }
        for iccid, u in by_iccid.items()
    }

    def insert_missing(table: Any, existing: dict[str, int], values: dict[str, dict[str, Any]]) -> list[str]:
        """INSERT (one executemany) the rows of ``table`` the devices do not have yet; return their ICCIDs."""
        missing = [i for i in iccids if i not in existing]
        if missing:
            audit = {
                "service_provider_id": provider_id,
                "created_by": process_by,
                "created_date": now,
                "is_active": True,
                "is_deleted": False,
            }
            insert_rows(session, table, [{**audit, "iccid": i, **values[i]} for i in missing])
        return missing

    blank = {"imei": None, "msisdn": None, "ip_address": None, "rate_plan": None}
    missing_ts = insert_missing(ThingSpaceDevice, ts_rows, {i: {**blank, **ts_values[i]} for i in iccids})
    update_by_id(
        session,
        ThingSpaceDevice,
        [{"id": ts_rows[i], "is_deleted": False, "is_active": True, **ts_values[i]} for i in iccids if i in ts_rows],
    )

    details = _existing(session, ThingSpaceDeviceDetail, provider_id, iccids, live_only=False)
    missing_detail = insert_missing(
        ThingSpaceDeviceDetail,
        details,
        {
            i: {"thing_space_date_added": now, "account_number": by_iccid[i].rev_account_number or account_number}
            for i in iccids
        },
    )

    usage = _existing(session, ThingSpaceDeviceUsage, provider_id, iccids, live_only=False)
    usage_values = {i: {k: v for k, v in ts_values[i].items() if k not in {"msisdn", "ip_address"}} for i in iccids}
    missing_usage = insert_missing(
        ThingSpaceDeviceUsage, usage, {i: {"imei": None, "rate_plan": None, **usage_values[i]} for i in iccids}
    )
    update_by_id(session, ThingSpaceDeviceUsage, [{"id": usage[i], **usage_values[i]} for i in iccids if i in usage])

    # The change rows (seed §5.2) and the log rows.
    missing_ts_set, missing_detail_set, missing_usage_set = set(missing_ts), set(missing_detail), set(missing_usage)
    for iccid, u in by_iccid.items():
        change = u.change
        change.device_id = devices[iccid]
        if u.facts.msisdn:
            change.msisdn = u.facts.msisdn
        if u.facts.ip_address:
            change.ip_address = u.facts.ip_address
        name = DEVICE_STATUS_NAMES[u.status_id]
        bulk_id = change.bulk_change_id
        logs.append(
            LogEntry(
                bulk_id,
                change.id,
                "Insert M2M Device: AMOP DB" if iccid in created_iccids else "Update M2M Device Status: AMOP DB",
                True,
                request_text=f"ICCID {iccid} → {name}",
                response_text=f"Device {devices[iccid]}: status {name}, "
                f"MSISDN {u.facts.msisdn or change.msisdn or '-'}, IP {u.facts.ip_address or change.ip_address or '-'}",
            )
        )
        if iccid in missing_ts_set:
            logs.append(LogEntry(bulk_id, change.id, "Insert ThingSpace Device: AMOP DB", True))
        if iccid in missing_detail_set:
            logs.append(LogEntry(bulk_id, change.id, "Insert ThingSpace Device Detail: AMOP DB", True))
        if iccid in missing_usage_set:
            logs.append(LogEntry(bulk_id, change.id, "Insert ThingSpace Device Usage: AMOP DB", True))
    return logs
