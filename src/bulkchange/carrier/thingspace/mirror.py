"""ThingSpace's local tables once steps took effect: ``ThingSpaceDevice``, ``ThingSpaceDeviceDetail`` and
``ThingSpaceDeviceUsage``, one row per service provider + ICCID.

The adapter says which columns hold what (table and column names as in the database); the store matches
rows by ServiceProviderId + ICCID, creates the missing ones, and adds the audit columns itself:
CreatedBy / CreatedDate / IsActive / IsDeleted on a created row, ModifiedBy / ModifiedDate on every row
it writes values to. What each table receives:

* ThingSpaceDevice: the local status (DeviceStatusId, Status), the IMEI when the change has one, MSISDN
  and IP address when the carrier gave them, the rate plan when the request names one (a value we know is
  never blanked), and IsActive / IsDeleted set back to a live row.
* ThingSpaceDeviceDetail: written only when created — the date the device was first seen
  (ThingSpaceDateAdded) and its account (the request's RevAccountNumber, else the carrier account).
* ThingSpaceDeviceUsage: the local status, IMEI and rate plan (no line numbers).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from bulkchange.carrier.port import CarrierAccount, ChangeView
from bulkchange.carrier.thingspace.steps import is_last, local_status, step_of
from bulkchange.domain.outcomes import CarrierFacts, TableRows
from bulkchange.domain.statuses import DEVICE_STATUS_NAMES

DEVICE_TABLE = "ThingSpaceDevice"
DETAIL_TABLE = "ThingSpaceDeviceDetail"
USAGE_TABLE = "ThingSpaceDeviceUsage"


def status_after(change: ChangeView) -> int:
    """The local ``DeviceStatusId`` once ``change.step`` took effect."""
    step = step_of(change.step)
    return local_status(step, change.target, last=is_last(step, change.target))


def mirror_rows(
    account: CarrierAccount, updates: Sequence[tuple[ChangeView, CarrierFacts]], *, now: datetime
) -> list[TableRows]:
    """The three tables' rows for ``updates``, keyed by ICCID (a device named twice: the last one wins)."""
    devices: dict[str, dict[str, Any]] = {}
    details: dict[str, dict[str, Any]] = {}
    usage: dict[str, dict[str, Any]] = {}
    for change, facts in updates:
        status_id = status_after(change)
        common: dict[str, Any] = {"DeviceStatusId": status_id, "Status": DEVICE_STATUS_NAMES[status_id]}
        if change.imei:
            common["IMEI"] = change.imei
        if change.request.request.rate_plan_code:
            common["RatePlan"] = change.request.request.rate_plan_code
        line: dict[str, Any] = {}
        if facts.msisdn:
            line["MSISDN"] = facts.msisdn
        if facts.ip_address:
            line["IpAddress"] = facts.ip_address
        devices[change.iccid] = {**common, **line, "IsActive": True, "IsDeleted": False}
        usage[change.iccid] = common
        details[change.iccid] = {
            "ThingSpaceDateAdded": now,
            "AccountNumber": change.request.request.rev_account_number or account.account,
        }
    return [
        TableRows(DEVICE_TABLE, devices, insert_description="Insert ThingSpace Device: AMOP DB"),
        TableRows(
            DETAIL_TABLE,
            {iccid: {} for iccid in details},
            insert_only=details,
            insert_description="Insert ThingSpace Device Detail: AMOP DB",
        ),
        TableRows(USAGE_TABLE, usage, insert_description="Insert ThingSpace Device Usage: AMOP DB"),
    ]
