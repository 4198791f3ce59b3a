"""Device records, identifier indexes and the list-response device shape.

The store is not thread-safe by itself: the :class:`~.simulator.Simulator`
lock guards every call, which keeps a single locking discipline for the whole
simulator instead of one lock per component.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from .ids import IdAllocator

DeviceState = Literal["preactive", "pending activation", "active", "suspend", "deactive"]
STATES: tuple[str, ...] = ("preactive", "pending activation", "active", "suspend", "deactive")
LOOKUP_KINDS: frozenset[str] = frozenset({"iccid", "imei", "mdn", "msisdn", "min"})
CARRIER_NAME = "Verizon Wireless"
DEFAULT_SERVICE_PLAN = "M2M_4G"


@dataclasses.dataclass
class SimDevice:
    """One line as the simulator sees it. Public accessors return copies."""

    iccid: str
    imei: str | None
    state: str
    account: str
    service_plan: str | None
    internal_id: int
    created_at: float
    mdn: str | None = None
    msisdn: str | None = None
    ip_address: str | None = None
    last_activation_at: float | None = None
    group_names: list[str] = dataclasses.field(default_factory=list)

    @property
    def min(self) -> str | None:
        """The MIN equals the MDN for simulated lines."""
        return self.mdn

    def copy(self) -> SimDevice:
        return dataclasses.replace(self, group_names=list(self.group_names))

    def identifiers(self) -> list[tuple[str, str]]:
        """(lower-case kind, value) pairs in the order list responses use."""
        pairs: list[tuple[str, str]] = []
        if self.mdn:
            pairs.append(("mdn", self.mdn))
        if self.msisdn:
            pairs.append(("msisdn", self.msisdn))
        if self.mdn:
            pairs.append(("min", self.mdn))
        pairs.append(("iccid", self.iccid))
        if self.imei:
            pairs.append(("imei", self.imei))
        return pairs


def iso(ts: float | None) -> str | None:
    """Timestamp in the ThingSpace style: ISO 8601 with an explicit offset."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="seconds")


def device_json(device: SimDevice) -> dict[str, Any]:
    """The device object of a ``/devices/actions/list`` response (doc §4.5)."""
    body: dict[str, Any] = {
        "accountName": device.account,
        "billingCycleEndDate": None,
        "carrierInformations": [
            {"carrierName": CARRIER_NAME, "servicePlan": device.service_plan or "", "state": device.state}
        ],
        "connected": device.state == "active",
        "createdAt": iso(device.created_at),
        "customFields": [],
        "deviceIds": [{"id": value, "kind": kind} for kind, value in device.identifiers()],
        "extendedAttributes": [{"key": "DeviceId", "value": str(device.internal_id)}],
        "groupNames": list(device.group_names) or ["Default: " + device.account],
        "ipAddress": device.ip_address or "0.0.0.0",  # noqa: S104  # nosec B104 # wire value, not a bind address
        "lastActivationBy": "sim-user" if device.last_activation_at else None,
        "lastActivationDate": iso(device.last_activation_at),
        "lastConnectionDate": None,
    }
    return body


def request_ids(raw: Any) -> list[tuple[str, str]]:
    """Normalise a ``deviceIds`` value (list, or a single object as Verizon sometimes sends)."""
    items = raw if isinstance(raw, list) else [raw] if isinstance(raw, dict) else []
    out: list[tuple[str, str]] = []
    for item in items:
        if isinstance(item, dict) and isinstance(item.get("kind"), str) and item.get("id") is not None:
            out.append((item["kind"].strip().lower(), str(item["id"]).strip()))
    return out


class DeviceStore:
    """All devices, ordered by internal id, with an index per identifier kind.

    Lookups are dict probes; a list page starts by bisecting the sorted internal ids, so listing every
    device page by page is linear in their number (not a scan from the first device per page).
    """

    FIRST_INTERNAL_ID = 100_001

    def __init__(self) -> None:
        self._by_id: dict[int, SimDevice] = {}
        self._order: list[int] = []  # internal ids, ascending (new ids are always the largest)
        self._accounts: Counter[str] = Counter()
        self._index: dict[tuple[str, str], int] = {}
        self._next_id = self.FIRST_INTERNAL_ID
        self.ids = IdAllocator()

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[SimDevice]:
        return iter(list(self._by_id.values()))

    def accounts(self) -> set[str]:
        return set(self._accounts)

    def find(self, kind: str, value: str) -> SimDevice | None:
        internal = self._index.get((kind.lower(), value))
        return None if internal is None else self._by_id.get(internal)

    def find_any(self, ids: Sequence[tuple[str, str]]) -> SimDevice | None:
        """First device matching any of the (kind, id) pairs; kinds are case-insensitive."""
        for kind, value in ids:
            if kind in LOOKUP_KINDS:
                found = self.find(kind, value)
                if found is not None:
                    return found
        return None

    def unused_iccid(self) -> str:
        while True:
            candidate = self.ids.next_iccid()
            if ("iccid", candidate) not in self._index:
                return candidate

    def unused_imei(self) -> str:
        while True:
            candidate = self.ids.next_imei()
            if ("imei", candidate) not in self._index:
                return candidate

    def add(
        self,
        *,
        iccid: str,
        imei: str | None,
        state: str,
        account: str,
        service_plan: str | None,
        now: float,
        group_names: Sequence[str] = (),
    ) -> SimDevice:
        """Insert a device; raises ``ValueError`` if an identifier is already used."""
        if state not in STATES:
            raise ValueError(f"unknown state {state!r}")
        if ("iccid", iccid) in self._index or (imei and ("imei", imei) in self._index):
            raise ValueError(f"device {iccid} already exists")
        device = SimDevice(
            iccid=iccid,
            imei=imei,
            state=state,
            account=account,
            service_plan=service_plan,
            internal_id=self._next_id,
            created_at=now,
            group_names=list(group_names),
        )
        self._next_id += 1
        self._by_id[device.internal_id] = device
        self._order.append(device.internal_id)
        self._accounts[account] += 1
        self._index[("iccid", iccid)] = device.internal_id
        if imei:
            self._index[("imei", imei)] = device.internal_id
        if state in ("active", "suspend"):
            self.assign_line(device, now)
        return device

    def remove(self, device: SimDevice) -> None:
        self.release_line(device)
        if self._by_id.pop(device.internal_id, None) is not None:
            at = bisect.bisect_left(self._order, device.internal_id)
            del self._order[at]
            self._accounts[device.account] -= 1
            if self._accounts[device.account] <= 0:
                del self._accounts[device.account]
        self._index.pop(("iccid", device.iccid), None)
        if device.imei:
            self._index.pop(("imei", device.imei), None)

    def assign_line(self, device: SimDevice, now: float) -> None:
        """Give an activated device a fresh unique MDN/MSISDN/MIN and IP address."""
        self.release_line(device)
        mdn = self.ids.next_mdn()
        while ("mdn", mdn) in self._index:
            mdn = self.ids.next_mdn()
        device.mdn = mdn
        device.msisdn = "1" + mdn
        device.ip_address = self.ids.next_ip()
        device.last_activation_at = now
        for kind, value in (("mdn", mdn), ("min", mdn), ("msisdn", device.msisdn)):
            self._index[(kind, value)] = device.internal_id

    def release_line(self, device: SimDevice) -> None:
        """Drop the MDN/MSISDN/IP of a disconnected line (they return to the pool)."""
        for kind, value in (("mdn", device.mdn), ("min", device.mdn), ("msisdn", device.msisdn)):
            if value:
                self._index.pop((kind, value), None)
        device.mdn = device.msisdn = device.ip_address = None

    def page(
        self,
        *,
        account: str | None,
        state: str | None,
        service_plan: str | None,
        group: str | None,
        after_id: int,
        limit: int,
    ) -> tuple[list[SimDevice], bool]:
        """Devices matching all filters with internal id > ``after_id``; returns (page, has_more)."""
        selected: list[SimDevice] = []
        for at in range(bisect.bisect_right(self._order, after_id), len(self._order)):
            device = self._by_id[self._order[at]]
            if account is not None and device.account != account:
                continue
            if state is not None and device.state != state:
                continue
            if service_plan is not None and (device.service_plan or "").lower() != service_plan:
                continue
            if group is not None and group not in device.group_names:
                continue
            if len(selected) == limit:
                return selected, True
            selected.append(device)
        return selected, False
