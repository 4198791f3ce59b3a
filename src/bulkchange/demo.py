"""``bulkchange demo``: the main job end to end on one machine with nothing configured.

Starts the ThingSpace simulator and a callback receiver on free loopback ports, creates the database, a
service provider with the simulator's credentials and one bulk change of N devices across every target
status, runs the worker until nothing is left, and checks the database against the simulator. A Rev.io
stand-in and a webhook receiver run too: activations are billed (one Rev.io service each, numbered by the
MSISDN) and the finished bulk change is delivered as signed webhook documents. Then the same for Control
Center (AT&T POD 19): its simulator, a POD 19 provider and one bulk change across its target statuses
(``demo_controlcenter``); the demo succeeds only when both carriers' bulk changes do.
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

from bulkchange.api.callbacks import callback_app
from bulkchange.demo_controlcenter import CarrierDemo, run_controlcenter_demo
from bulkchange.demo_support import demo_billing
from bulkchange.domain.identifiers import random_luhn_number
from bulkchange.domain.statuses import DEVICE_STATUS_NAMES, ChangeStatus, DeviceStatusId
from bulkchange.engine import changes as ch
from bulkchange.engine.submit import create_bulk_change
from bulkchange.engine.worker import run_worker
from bulkchange.providers import add_provider, register_callback_listener
from bulkchange.runtime import build_runtime
from bulkchange.settings import Settings
from bulkchange.simulator import Simulator, SimulatorConfig
from bulkchange.simulator.server import serve_in_thread
from bulkchange.store.tables import Device, M2MDeviceChange

# Local statuses that agree with each carrier state.
AGREES = {
    "preactive": {"inventory", "pending activation"},
    "pending activation": {"pending activation"},
    "active": {"active"},
    "suspend": {"suspend"},
    "deactive": {"deactive"},
}
TARGETS = ["inventory", "pending activation", "active", "deactive", "suspend", "restore"]


def make_iccid(rng: random.Random) -> str:
    return random_luhn_number("8901260", 20, rng)


def make_imei(rng: random.Random) -> str:
    return random_luhn_number("35", 15, rng)


@dataclass
class DemoResult:
    bulk_change_id: int
    devices: int
    by_status: dict[str, int]
    errors: list[str]
    wall_s: float
    mismatches: list[str] = field(default_factory=list)
    controlcenter: CarrierDemo | None = None

    @property
    def ok(self) -> bool:
        thingspace = not self.errors and not self.mismatches and self.by_status.get("PROCESSED", 0) == self.devices
        return thingspace and (self.controlcenter is None or self.controlcenter.ok)

    def as_json(self) -> dict[str, Any]:
        return {
            "bulk_change_id": self.bulk_change_id,
            "devices": self.devices,
            "by_status": self.by_status,
            "errors": self.errors + self.mismatches,
            "wall_s": round(self.wall_s, 3),
            "controlcenter": self.controlcenter.as_json() if self.controlcenter is not None else None,
        }


def compare_with_carrier(session: Any, sim: Simulator, bulk_change_id: int, provider_id: int) -> list[str]:
    """Every device of the bulk change: does the local Device row agree with the simulator's state?"""
    problems = []
    for change in session.execute(
        select(M2MDeviceChange).where(M2MDeviceChange.bulk_change_id == bulk_change_id)
    ).scalars():
        carrier = sim.device(change.iccid)
        device = session.execute(
            select(Device).where(
                Device.iccid == change.iccid, Device.service_provider_id == provider_id, Device.is_deleted.is_(False)
            )
        ).scalar_one_or_none()
        if carrier is None or device is None:
            problems.append(
                f"{change.iccid}: carrier={'yes' if carrier else 'missing'} local={'yes' if device else 'missing'}"
            )
            continue
        local = DEVICE_STATUS_NAMES.get(device.device_status_id or 0)
        if local not in AGREES.get(carrier.state, set()):
            problems.append(f"{change.iccid}: carrier state {carrier.state!r}, local status {local!r}")
        if carrier.state == "active" and (device.msisdn != carrier.msisdn or device.ip_address != carrier.ip_address):
            problems.append(
                f"{change.iccid}: carrier msisdn/ip {carrier.msisdn}/{carrier.ip_address}, "
                f"local {device.msisdn}/{device.ip_address}"
            )
    return problems


def demo_rows(
    sim: Simulator, n: int, rng: random.Random
) -> tuple[list[dict[str, Any]], list[tuple[str, str, str | None]]]:
    """N rows across every target status, and the devices that must pre-exist (iccid, state, msisdn)."""
    rows: list[dict[str, Any]] = []
    existing: list[tuple[str, str, str | None]] = []
    for i in range(n):
        target = TARGETS[i % len(TARGETS)]
        iccid, imei = make_iccid(rng), make_imei(rng)
        row: dict[str, Any] = {"ICCID": iccid, "Status": target}
        if target in ("active", "pending activation", "inventory"):
            row["IMEI"] = imei
        if target == "active":
            row.update({"ServicePlan": "M2M_4G", "MdnZipCode": "98801"})
        if target == "deactive":
            row["ReasonCode"] = "FF"
        if target in ("deactive", "suspend"):
            existing.append((iccid, "active", imei))
        if target == "restore":
            existing.append((iccid, "suspend", imei))
        rows.append(row)
    return rows, existing


def run_demo(
    n: int = 200,
    *,
    settings: Settings | None = None,
    on_progress: Callable[[str], None] | None = None,
    controlcenter: bool = True,
) -> tuple[DemoResult, Simulator]:
    """Run the demo (ThingSpace, then Control Center unless ``controlcenter`` is False); returns its result
    and the (stopped) ThingSpace simulator for inspection."""
    started = time.monotonic()
    base = settings or Settings()
    cfg = base.model_copy(
        update={
            "activation_check_delay_s": min(base.activation_check_delay_s, 2),
            "continuation_delay_s": 0,
            "retry_base_s": min(base.retry_base_s, 0.2),
            "retry_cap_s": min(base.retry_cap_s, 2.0),
            "reconcile_window_s": min(base.reconcile_window_s, 2),
            "reconcile_retry_s": min(base.reconcile_retry_s, 1),
        }
    )
    # New devices every run: the demo's database is the user's (the embedded default), and a device a previous
    # demo left there belongs to that demo's provider — submitting it again for a new one is refused.
    rng = random.Random()
    sim = Simulator(SimulatorConfig(activation_delay_s=0.3, callback_retry_interval_s=1.0))
    rt = build_runtime(cfg)
    say = on_progress or (lambda _msg: None)
    try:
        with (
            serve_in_thread(sim.app) as carrier,
            # Providers are checked as always (the demo's own has generated credentials, echoed by the
            # simulator); ``insecure`` only admits providers of a database from before callback credentials
            # existed — the demo's receiver listens on loopback only.
            serve_in_thread(callback_app(rt.engine, insecure=True)) as receiver,
            demo_billing(rt) as billing,
        ):
            say(f"ThingSpace simulator on {carrier.base_url}; callback receiver on {receiver.base_url}")
            say(billing.describe())
            rows, existing = demo_rows(sim, n, rng)
            billing.decorate(rows)  # activations also get a Rev.io service and a customer rate plan
            with rt.session_factory() as session:
                provider_id = add_provider(
                    session,
                    name=f"demo-{uuid.uuid4().hex[:8]}",
                    base_url=carrier.base_url,
                    client_id=sim.config.client_id,
                    client_secret=sim.config.client_secret,
                    username=sim.config.username,
                    password=sim.config.password,
                    account=sim.config.account,
                    register_callback=True,
                )
                for iccid, state, imei in existing:
                    shown = sim.add_device(iccid, imei=imei, state=state)
                    session.add(
                        Device(
                            service_provider_id=provider_id,
                            iccid=iccid,
                            imei=imei,
                            msisdn=shown.msisdn,
                            ip_address=shown.ip_address,
                            device_status_id=DeviceStatusId.ACTIVE if state == "active" else DeviceStatusId.SUSPEND,
                            status=state,
                            created_by="demo",
                        )
                    )
                session.commit()
                # Our URL and the provider's generated callback credentials, which the simulator echoes.
                url = asyncio.run(register_callback_listener(rt.ctx, provider_id, receiver.base_url))
            say(
                f"registered the CarrierService callback listener {url} (with its credentials) for account "
                f"{sim.config.account}"
            )
            with rt.session_factory() as session:
                bulk_id = create_bulk_change(
                    session, rt.transport, rows, status="active", service_provider_id=provider_id, created_by="demo"
                )
            say(f"submitted bulk change {bulk_id} with {n} devices across {', '.join(TARGETS)}")
            asyncio.run(run_worker(rt.engine, until_idle=True))
            with rt.session_factory() as session:
                counts = ch.counts_by_status(session, bulk_id)
                errors = [
                    f"{c.iccid}: {c.status} {c.status_details}"
                    for c in session.execute(
                        select(M2MDeviceChange).where(
                            M2MDeviceChange.bulk_change_id == bulk_id,
                            M2MDeviceChange.status != ChangeStatus.PROCESSED.value,
                        )
                    ).scalars()
                ]
                mismatches = compare_with_carrier(session, sim, bulk_id, provider_id)
                mismatches += billing.check(session, bulk_id)
            say(billing.summary(bulk_id))
            # Inside the block: the Control Center bulk change's webhook goes to the same receiver, which
            # must still be listening (a stopped one left the worker retrying the delivery until it gave up).
            cc = run_controlcenter_demo(rt, n, say) if controlcenter else None
            if cc is not None:
                with rt.session_factory() as session:
                    cc.mismatches += billing.check_webhook(session, cc.bulk_change_id)
    finally:
        rt.close()
    result = DemoResult(
        bulk_change_id=bulk_id,
        devices=n,
        by_status={s.value: k for s, k in counts.items()},
        errors=errors,
        wall_s=time.monotonic() - started,
        mismatches=mismatches,
        controlcenter=cc,
    )
    return result, sim
