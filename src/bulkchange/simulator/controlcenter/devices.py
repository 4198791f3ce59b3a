"""Simulated Control Center devices, their audit trails and the wire shapes of both.

The store is a dict keyed by ICCID (every per-device call is one lookup) that is kept in modification
order: a changed device moves to the end, so Search Devices ("oldest modification first") is one linear
pass without sorting. Not thread-safe by itself; the simulator's lock guards every call.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

from ..ids import IdAllocator

#: Device Details keys in the order of the published example answer, then the schema's other fields.
DETAIL_KEYS: tuple[str, ...] = (
    "iccid",
    "imsi",
    "msisdn",
    "imei",
    "status",
    "ratePlan",
    "communicationPlan",
    "customer",
    "endConsumerId",
    "dateActivated",
    "dateAdded",
    "dateUpdated",
    "dateShipped",
    "accountId",
    "fixedIPAddress",
    "fixedIpv6Address",
    *(f"accountCustom{i}" for i in range(1, 11)),
    "simNotes",
    "deviceID",
    "modemID",
    "globalSimType",
    *(f"operatorCustom{i}" for i in range(1, 6)),
    *(f"customerCustom{i}" for i in range(1, 6)),
    "eid",
    "simProfileId",
)

#: Device Details fields that are null until set (the others default to "").
NULLABLE_TEXT: frozenset[str] = frozenset({"customer", "simNotes", "deviceID", "eid"})

#: Editable plain-text fields (besides status and the plans).
TEXT_FIELDS: tuple[str, ...] = (
    "customer",
    "deviceID",
    "modemID",
    *(f"accountCustom{i}" for i in range(1, 11)),
    *(f"operatorCustom{i}" for i in range(1, 6)),
    *(f"customerCustom{i}" for i in range(1, 6)),
)


def device_date(ts: float | None) -> str | None:
    """Device date fields: ``2016-06-29 00:21:33.339+0000`` (a space, not a ``T``)."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "+0000"


def audit_date(ts: float) -> str:
    """Audit trail timestamps: ``yyyy-MM-ddTHH:mm:ss.SSSZ`` (Java's ``Z`` is ``+0000``)."""
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "+0000"


def parse_date(text: str) -> float:
    """An ISO 8601 date-time (``T`` or space, ``Z``, ``+00:00`` or ``+0000``); no offset means UTC.

    Raises ``ValueError`` for anything else.
    """
    value = datetime.fromisoformat(text.strip())
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


@dataclasses.dataclass
class AuditRecord:
    """One change record: a field's prior and new value, when it took effect and whether it did."""

    field: str
    prior_value: str
    value: str
    effective_at: float
    status: str
    user_name: str

    def wire(self) -> dict[str, Any]:
        return {
            "field": self.field,
            "priorValue": self.prior_value,
            "value": self.value,
            "effectiveDate": audit_date(self.effective_at),
            "status": self.status,
            "userName": self.user_name,
        }


@dataclasses.dataclass
class CCDevice:
    """One SIM as Control Center knows it. Public accessors of the simulator return copies."""

    iccid: str
    imsi: str
    msisdn: str
    imei: str
    status: str
    rate_plan: str
    communication_plan: str
    account_id: str
    date_added: float
    date_shipped: float
    date_updated: float
    date_activated: float | None = None
    text: dict[str, str | None] = dataclasses.field(default_factory=dict)
    fixed_ip: str | None = None
    test_ready_target: str | None = None
    audit: list[AuditRecord] = dataclasses.field(default_factory=list)

    def copy(self) -> CCDevice:
        return dataclasses.replace(self, text=dict(self.text), audit=list(self.audit))

    def get(self, field: str) -> str | None:
        """The current wire value of an editable field."""
        if field == "status":
            return self.status
        if field == "ratePlan":
            return self.rate_plan
        if field == "communicationPlan":
            return self.communication_plan
        return self.text.get(field)

    def set(self, field: str, value: str) -> None:
        if field == "status":
            self.status = value
        elif field == "ratePlan":
            self.rate_plan = value
        elif field == "communicationPlan":
            self.communication_plan = value
        else:
            self.text[field] = value

    def details(self, fields: Iterable[str] | None = None) -> dict[str, Any]:
        """The Get Device Details answer; ``fields`` limits it to those keys (the ``fields=`` parameter).

        ``dateActivated`` is left out until the first activation: the schema types it as a non-null string.
        """
        body: dict[str, Any] = {
            "iccid": self.iccid,
            "imsi": self.imsi,
            "msisdn": self.msisdn,
            "imei": self.imei,
            "status": self.status,
            "ratePlan": self.rate_plan,
            "communicationPlan": self.communication_plan,
            "customer": self.text.get("customer"),
            "endConsumerId": None,
            "dateActivated": device_date(self.date_activated),
            "dateAdded": device_date(self.date_added),
            "dateUpdated": device_date(self.date_updated),
            "dateShipped": device_date(self.date_shipped),
            "accountId": self.account_id,
            "fixedIPAddress": self.fixed_ip,
            "fixedIpv6Address": None,
        }
        for key in DETAIL_KEYS:
            if key not in body:
                body[key] = self.text.get(key, None if key in NULLABLE_TEXT else "")
        if self.date_activated is None:
            del body["dateActivated"]
        if fields is not None:
            wanted = set(fields)
            return {k: v for k, v in body.items() if k in wanted}
        return body

    def summary(self) -> dict[str, Any]:
        """A device in a Search Devices answer: four fields only."""
        return {
            "iccid": self.iccid,
            "status": self.status,
            "ratePlan": self.rate_plan,
            "communicationPlan": self.communication_plan,
        }


class ControlCenterIds(IdAllocator):
    """Identifiers shaped like an AT&T SIM's: ICCID 89 01 170…, IMSI 310 170…, an 11-digit MSISDN."""

    ICCID_PREFIX = "890117"
    IMSI_PREFIX = "310170"

    def __init__(self) -> None:
        super().__init__()
        self._imsi_serial = 0

    def next_imsi(self) -> str:
        self._imsi_serial += 1
        return f"{self.IMSI_PREFIX}{self._imsi_serial:09d}"


class DeviceStore:
    """Devices by ICCID, iterated from the least to the most recently modified."""

    def __init__(self) -> None:
        self._devices: OrderedDict[str, CCDevice] = OrderedDict()
        self.ids = ControlCenterIds()

    def __len__(self) -> int:
        return len(self._devices)

    def __iter__(self) -> Iterator[CCDevice]:
        return iter(self._devices.values())

    def get(self, iccid: str) -> CCDevice | None:
        return self._devices.get(iccid)

    def unused_iccid(self) -> str:
        while True:
            candidate = self.ids.next_iccid()
            if candidate not in self._devices:
                return candidate

    def add(self, device: CCDevice) -> CCDevice:
        if device.iccid in self._devices:
            raise ValueError(f"device {device.iccid} already exists")
        self._devices[device.iccid] = device
        return device

    def touch(self, device: CCDevice, now: float) -> None:
        """Record a modification: ``dateUpdated`` moves and the device becomes the newest in search order."""
        device.date_updated = now
        self._devices.move_to_end(device.iccid)

    def modified(self, *, since: float, till: float | None, account_id: str, status: str | None) -> Iterator[CCDevice]:
        """Devices of ``account_id`` modified in [since, till], oldest modification first."""
        for device in self._devices.values():
            if device.date_updated < since or device.account_id != account_id:
                continue
            if till is not None and device.date_updated > till:
                continue
            if status is not None and device.status != status:
                continue
            yield device
