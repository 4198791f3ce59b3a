"""The Control Center half of ``bulkchange demo``: a POD 19 provider against the Control Center simulator.

Starts the simulator on a free loopback port with devices in the status each change starts from, adds a POD 19
provider with the simulator's credentials, submits one bulk change across every Control Center target status,
runs the worker until nothing is left and checks the local ``Device`` rows against the simulator.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from bulkchange.domain.identifiers import random_luhn_number
from bulkchange.domain.statuses import ChangeStatus, DeviceStatusId
from bulkchange.engine import changes as ch
from bulkchange.engine.submit import create_bulk_change
from bulkchange.engine.worker import run_worker
from bulkchange.providers import add_controlcenter_provider
from bulkchange.runtime import Runtime
from bulkchange.simulator import run_in_thread
from bulkchange.simulator.controlcenter import API_ROOT, ControlCenterConfig, ControlCenterSimulator
from bulkchange.store.tables import Device, M2MDeviceChange

DEMO_TPS = 100.0
"""The demo account's calls per second (a real POD 19 account has 1 to 5; the limiter is the same)."""

# (operator's status, the device's status before, Control Center's status after, local status after)
CC_TARGETS: list[tuple[str, str, str, int]] = [
    ("active", "INVENTORY", "ACTIVATED", DeviceStatusId.ACTIVE),
    ("pending activation", "INVENTORY", "ACTIVATION_READY", DeviceStatusId.PENDING_ACTIVATION),
    ("inventory", "ACTIVATED", "INVENTORY", DeviceStatusId.INVENTORY),
    ("deactive", "ACTIVATED", "DEACTIVATED", DeviceStatusId.DEACTIVE),
    ("retired", "DEACTIVATED", "RETIRED", DeviceStatusId.RETIRED),
]


@dataclass
class CarrierDemo:
    """One carrier's bulk change in the demo."""

    carrier: str
    bulk_change_id: int
    devices: int
    by_status: dict[str, int]
    errors: list[str] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors and not self.mismatches and self.by_status.get("PROCESSED", 0) == self.devices

    def as_json(self) -> dict[str, Any]:
        return {
            "bulk_change_id": self.bulk_change_id,
            "devices": self.devices,
            "by_status": self.by_status,
            "errors": self.errors + self.mismatches,
        }


def run_controlcenter_demo(rt: Runtime, n: int, say: Callable[[str], None]) -> CarrierDemo:
    """One bulk change of ``n`` devices for a POD 19 provider, end to end against the simulator."""
    sim = ControlCenterSimulator(ControlCenterConfig(tps=DEMO_TPS, tps_burst=1))
    with run_in_thread(sim) as server:
        base_url = server.base_url + API_ROOT
        say(f"Control Center simulator on {base_url} (POD 19 account {sim.config.account_id}, {DEMO_TPS:g} TPS)")
        expected: dict[str, tuple[str, int]] = {}
        rows: list[dict[str, Any]] = []
        # New AT&T-shaped ICCIDs every run: the demo's database is the user's, where a previous demo's devices
        # belong to that demo's provider (a submission naming them for a new one is refused).
        rng = random.Random()
        for i in range(n):
            status, before, after, local = CC_TARGETS[i % len(CC_TARGETS)]
            device = sim.add_device(iccid=random_luhn_number("890117", 20, rng), status=before)
            expected[device.iccid] = (after, local)
            rows.append({"ICCID": device.iccid, "Status": status})
        with rt.session_factory() as session:
            provider_id = add_controlcenter_provider(
                session,
                name=f"demo-pod19-{uuid.uuid4().hex[:8]}",
                base_url=base_url,
                username=sim.config.username,
                api_key=sim.config.api_key,
                tps=DEMO_TPS,
                pod19=True,
            )
            bulk_id = create_bulk_change(
                session, rt.transport, rows, status="active", service_provider_id=provider_id, created_by="demo"
            )
        names = ", ".join(t[0] for t in CC_TARGETS)
        say(f"submitted Control Center bulk change {bulk_id} with {n} devices across {names}")
        started = time.monotonic()
        asyncio.run(run_worker(rt.engine, until_idle=True))
        say(f"Control Center bulk change {bulk_id} finished in {time.monotonic() - started:.1f}s")
        return _result(rt, sim, bulk_id, expected)


def _result(
    rt: Runtime, sim: ControlCenterSimulator, bulk_id: int, expected: dict[str, tuple[str, int]]
) -> CarrierDemo:
    """The bulk change's counts, its unfinished changes, and where the database and the carrier disagree."""
    with rt.session_factory() as session:
        counts = ch.counts_by_status(session, bulk_id)
        changes = list(session.scalars(select(M2MDeviceChange).where(M2MDeviceChange.bulk_change_id == bulk_id)))
        local = {d.iccid: d for d in session.scalars(select(Device).where(Device.iccid.in_(list(expected))))}
    errors = [f"{c.iccid}: {c.status} {c.status_details}" for c in changes if c.status != ChangeStatus.PROCESSED.value]
    mismatches = []
    for iccid, (after, status_id) in expected.items():
        shown, row = sim.device(iccid), local.get(iccid)
        if shown is None or shown.status != after:
            mismatches.append(f"{iccid}: Control Center shows {shown.status if shown else 'nothing'}, asked {after}")
        if row is None or row.device_status_id != status_id:
            mismatches.append(
                f"{iccid}: local status {row.device_status_id if row else 'missing'}, expected {status_id}"
            )
    return CarrierDemo(
        carrier="controlcenter",
        bulk_change_id=bulk_id,
        devices=len(expected),
        by_status={s.value: k for s, k in counts.items()},
        errors=errors,
        mismatches=mismatches,
    )
