"""Keeping the local database in step with the carrier once carrier steps have taken effect.

* ``Device`` — the device as every carrier shares it (status, MSISDN, IP address, IMEI, rate plan), matched by
  ServiceProviderId + ICCID + IsDeleted = 0: an archived device is never resurrected, a new one is created.
* the carrier's own tables (``ThingSpaceDevice*``, ``JasperDevice``) — what the carrier adapter's ``mirror``
  says, written by ``store.mirror``.
* ``M2M_DeviceChange`` — the change's MSISDN / IP address and its ``DeviceId``.

Set-based: one batch of devices costs a handful of statements (one SELECT per table, one executemany
INSERT for new rows — on SQLite followed by a SELECT of their ids —, one executemany UPDATE for known ones), not a
round trip per device.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, bindparam, select
from sqlalchemy.orm import Session

from bulkchange.carrier.port import Carrier, CarrierAccount, ChangeView
from bulkchange.domain.outcomes import CarrierFacts, LogEntry
from bulkchange.domain.statuses import DEVICE_STATUS_NAMES
from bulkchange.store.core import column_keys, insert_many, insert_returning, table_of, table_rows, update_by_id
from bulkchange.store.mirror import write_table_rows
from bulkchange.store.tables import Device, M2MDeviceChange

_CHUNK = 500  # bound on IN lists


@dataclass(frozen=True)
class DeviceUpdate:
    """One device's new local state after ``view.step`` took effect (``change`` is the row to update)."""

    change: M2MDeviceChange
    view: ChangeView
    status_id: int
    facts: CarrierFacts


@functools.cache
def _existing_query() -> Select[str, int]:
    """Built once: building and keying the statement cost more than running it for a pass's devices."""
    core, keys = table_of(Device), column_keys(Device)
    iccid, row_id, provider = core.c[keys["iccid"]], core.c[keys["id"]], core.c[keys["service_provider_id"]]
    return (
        select(iccid, row_id)
        .where(
            provider == bindparam("provider"),
            iccid.in_(bindparam("iccids", expanding=True)),
            core.c[keys["is_deleted"]].is_(False),
        )
        .order_by(row_id)
    )


def _existing(session: Session, provider_id: int, iccids: list[str]) -> dict[str, int]:
    """ICCID → id of the live ``Device`` rows of this provider (the newest when several)."""
    found: dict[str, int] = {}
    query = _existing_query()
    for start in range(0, len(iccids), _CHUNK):
        for found_iccid, found_id in session.execute(
            query, {"provider": provider_id, "iccids": iccids[start : start + _CHUNK]}
        ):
            found[found_iccid] = found_id
    return found


def _device_values(u: DeviceUpdate, now: datetime, process_by: str) -> dict[str, Any]:
    values: dict[str, Any] = {
        "device_status_id": u.status_id,
        "status": DEVICE_STATUS_NAMES[u.status_id],
        "modified_by": process_by,
        "modified_date": now,
    }
    imei = u.change.imei or u.facts.imei
    if imei:  # never blank an IMEI we know
        values["imei"] = imei
    if u.facts.msisdn:
        values["msisdn"] = u.facts.msisdn
    if u.facts.ip_address:
        values["ip_address"] = u.facts.ip_address
    rate_plan = u.facts.rate_plan or u.view.request.request.rate_plan_code
    if rate_plan:
        values["rate_plan"] = rate_plan
    return values


def write_devices(
    session: Session,
    updates: Sequence[DeviceUpdate],
    *,
    carrier: Carrier,
    account: CarrierAccount,
    tenant_id: int | None,
    process_by: str,
    now: datetime,
) -> list[LogEntry]:
    """Write each device's new status (and what the carrier told us) to every local table; return the log
    entries (a row created or updated per device, plus one per carrier table row created)."""
    if not updates:
        return []
    by_iccid = {u.change.iccid: u for u in updates}  # a device named twice: the last update wins
    provider_id = account.provider_id
    devices = _existing(session, provider_id, list(by_iccid))
    created = _create_devices(session, by_iccid, devices, provider_id, tenant_id, process_by, now)
    update_by_id(
        session,
        Device,
        [{"id": devices[i], **_device_values(u, now, process_by)} for i, u in by_iccid.items() if i not in created],
    )
    rows = carrier.mirror(account, [(u.view, u.facts) for u in by_iccid.values()], now=now)
    carrier_created = write_table_rows(session, provider_id, rows, process_by=process_by, now=now)
    described = {r.table: r.insert_description for r in rows if r.insert_description}
    logs: list[LogEntry] = []
    for iccid, u in by_iccid.items():
        logs.append(_device_log(u, devices[iccid], created=iccid in created))
        logs.extend(
            LogEntry(u.change.bulk_change_id, u.change.id, text, True)
            for table, text in described.items()
            if iccid in carrier_created.get(table, set())
        )
    return logs


def _create_devices(
    session: Session,
    by_iccid: dict[str, DeviceUpdate],
    devices: dict[str, int],
    provider_id: int,
    tenant_id: int | None,
    process_by: str,
    now: datetime,
) -> set[str]:
    """INSERT the ``Device`` rows of devices new to us (filling ``devices``); their ICCIDs."""
    blank = {"imei": None, "msisdn": None, "ip_address": None, "rate_plan": None}
    shared = {
        "service_provider_id": provider_id,
        "tenant_id": tenant_id,
        "created_by": process_by,
        "created_date": now,
        "provider_date_added": now,
        "is_active": True,
        "is_deleted": False,
    }
    new_rows = [
        {"iccid": iccid, **blank, **_device_values(u, now, process_by)}
        for iccid, u in by_iccid.items()
        if iccid not in devices
    ]
    if not new_rows:
        return set()
    iccids = [row["iccid"] for row in new_rows]
    if session.get_bind().dialect.name == "sqlite":
        # One executemany through the driver (``insert_many``), then the new rows' ids read back by ICCID: the
        # RETURNING form costs SQLAlchemy's per-row parameter handling. The same ids: none of these devices had
        # a live row, and the transaction holds SQLite's write lock, so each one's live row is the one made here.
        insert_many(session, table_of(Device), table_rows(Device, new_rows), shared=table_rows(Device, [shared])[0])
        devices.update(_existing(session, provider_id, iccids))
        return set(iccids)
    for start in range(0, len(new_rows), _CHUNK):
        made = insert_returning(
            session, Device, [{**shared, **r} for r in new_rows[start : start + _CHUNK]], "id", "iccid"
        )
        devices.update({iccid: row_id for row_id, iccid in made})
    return set(iccids)


def _device_log(u: DeviceUpdate, device_id: int, *, created: bool) -> LogEntry:
    """The change row's MSISDN / IP address and device (seed's M2M_DeviceChange update), and its log row."""
    change = u.change
    change.device_id = device_id
    if u.facts.msisdn:
        change.msisdn = u.facts.msisdn
    if u.facts.ip_address:
        change.ip_address = u.facts.ip_address
    name = DEVICE_STATUS_NAMES[u.status_id]
    return LogEntry(
        change.bulk_change_id,
        change.id,
        "Insert M2M Device: AMOP DB" if created else "Update M2M Device Status: AMOP DB",
        True,
        request_text=f"ICCID {change.iccid} → {name}",
        response_text=f"Device {device_id}: status {name}, MSISDN {u.facts.msisdn or change.msisdn or '-'}, "
        f"IP {u.facts.ip_address or change.ip_address or '-'}",
    )
