"""The Control Center (AT&T POD 19) part of ``bench/chaos.py``: simulator, faults, seeded devices, checks.

The same names as ``_chaos_ts`` (see there). What differs from ThingSpace:

* every device exists at the carrier before the run (Control Center has no Add): each change's device is
  seeded at the simulator in a status the change starts from, and locally (``Device`` and ``JasperDevice``,
  as a sync would have left them: status, MSISDN, rate plan);
* a POD 19 provider (every edit is verified by reading the device and its audit trail) at ``TPS`` calls per
  second (bulkchange keeps one call in flight), the simulator enforcing the same rate and two calls open per
  account (a slow answer keeps its call open after the client gave up on it), with the deactivation
  rate-plan pre-step on (the provider knows three carrier rate plans; an unused line moves to the smallest
  before it is deactivated, so deactivations make two edits);
* the aimed kills wait for an Edit Device Details (``PUT /devices/{iccid}``);
* "applied" is the simulator's ``changes`` counter: field changes really made, per device and field
  (setting a field to the value it already has is not a change).
"""

from __future__ import annotations

import argparse
import random
import uuid
from collections import Counter
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from bulkchange.domain.statuses import RESULT_DEVICE_STATUS, DeviceStatusId, TargetStatus
from bulkchange.providers import add_controlcenter_provider
from bulkchange.runtime import Runtime
from bulkchange.store.tables import Device, JasperCarrierRatePlan, JasperDevice, M2MDeviceChange

NAME = "controlcenter"
DEFAULT_CHANGES = 600
DEFAULT_KILLS = 10
NEEDS_RECEIVER = False
TPS = 50.0
"""The account's calls per second, at the simulator and in the provider (a real POD 19 account has 1 to 5)."""
API_ROOT = "/rws/api"
PROVISIONING = ("devices/edit",)
SLOW_S = 4.0  # a "slow" answer; the workers' carrier timeout (chaos.WORKER_ENV) is shorter

# Control Center's status once a change to the target is PROCESSED, and the statuses a change starts from.
CARRIER_STATUS = {
    "inventory": "INVENTORY",
    "pending activation": "ACTIVATION_READY",
    "active": "ACTIVATED",
    "deactive": "DEACTIVATED",
    "retired": "RETIRED",
}
STARTS_FROM = {
    "inventory": ("ACTIVATED", "DEACTIVATED"),
    "pending activation": ("INVENTORY", "DEACTIVATED"),
    "active": ("INVENTORY", "ACTIVATION_READY", "DEACTIVATED"),
    "deactive": ("ACTIVATED",),
    "retired": ("DEACTIVATED", "INVENTORY"),
}
LOCAL_STATUS = {
    "INVENTORY": DeviceStatusId.INVENTORY,
    "ACTIVATION_READY": DeviceStatusId.PENDING_ACTIVATION,
    "ACTIVATED": DeviceStatusId.ACTIVE,
    "DEACTIVATED": DeviceStatusId.DEACTIVE,
}
# The provider's carrier rate plans (code, MB, base rate) for the deactivation pre-step; the simulator knows
# the same three. An unused line's cheapest covering plan is "POD19 Suspend", so every deactivation moves.
RATE_PLANS = (("POD19 Suspend", "10", "1"), ("POD19 1GB", "1024", "10"), ("POD19 5GB", "5120", "20"))


@dataclass(frozen=True)
class Local:
    """What the database keeps of one device: the shared ``Device`` row and Control Center's ``JasperDevice``."""

    device: Device | None
    jasper: JasperDevice | None


def simulator_args(args: argparse.Namespace) -> list[str]:
    """``bulkchange simulator`` options after ``--host`` / ``--port`` (faults are switched on later)."""
    return [
        "--carrier",
        "controlcenter",
        "--tps",
        str(TPS),
        "--tps-burst",
        "1",
        "--max-in-flight",
        "2",  # an answer held back (slow) stays open after the client gave up: one more call may come in
        "--latency-ms",
        str(args.latency_ms),
    ]


def fault_config(seed: int) -> dict[str, Any]:
    """Faults on every API call (edits, device reads, audit trails, usage reads); the last two only on edits."""
    return {
        "seed": seed,
        "p_server_error": 0.05,
        "server_error_status": 503,
        "p_rate_limited": 0.03,
        "retry_after_s": 1,
        "p_slow": 0.02,
        "slow_s": SLOW_S,
        "p_malformed": 0.01,
        "p_missing_iccid": 0.02,  # the edit is made, the 200 body is {}
        "p_not_applied": 0.01,  # 200 with the iccid, nothing changed, an error record in the audit trail
    }


def setup(
    rt: Runtime, sim_url: str, receiver_url: str | None, changes: int, rng: random.Random
) -> tuple[int, list[dict[str, Any]]]:
    """A POD 19 provider and its rate plans, the devices seeded at the simulator and locally, and the rows."""
    with rt.session_factory() as session:
        provider_id = add_controlcenter_provider(
            session,
            name=f"chaos-cc-{uuid.uuid4().hex[:6]}",
            base_url=f"{sim_url}{API_ROOT}",
            username="sim-user",
            api_key="sim-api-key",
            tps=TPS,
            pod19=True,
            rate_plan_pre_step=True,
        )
    targets = list(CARRIER_STATUS)
    per_start = Counter(
        (target, rng.choice(STARTS_FROM[target])) for target in (targets[i % len(targets)] for i in range(changes))
    )
    rows: list[dict[str, Any]] = []
    for (target, start), n in sorted(per_start.items()):
        made = httpx.post(f"{sim_url}/_sim/devices", json={"n": n, "status": start}, timeout=60)
        made.raise_for_status()
        rows += [{"ICCID": iccid, "Status": target} for iccid in made.json()["iccids"]]
    _seed_locally(rt, provider_id, sim_devices(sim_url).values())
    rng.shuffle(rows)  # targets interleaved: batches of every kind are in flight together
    return provider_id, rows


def _seed_locally(rt: Runtime, provider_id: int, shown: Any) -> None:
    devices, jasper = [], []
    for d in shown:
        devices.append(
            {
                "service_provider_id": provider_id,
                "iccid": d["iccid"],
                "device_status_id": LOCAL_STATUS[d["status"]],
                "status": d["status"].lower(),
                "msisdn": d["msisdn"],
                "rate_plan": d["ratePlan"],
                "is_deleted": False,
                "is_active": True,
            }
        )
        jasper.append(
            {
                "service_provider_id": provider_id,
                "iccid": d["iccid"],
                "status": d["status"],
                "msisdn": d["msisdn"],
                "rate_plan": d["ratePlan"],
                "communication_plan": d["communicationPlan"],
            }
        )
    plans = [
        {"service_provider_id": provider_id, "rate_plan_code": code, "plan_mb": Decimal(mb), "base_rate": Decimal(r)}
        for code, mb, r in RATE_PLANS
    ]
    with rt.session_factory.begin() as session:
        session.execute(insert(JasperCarrierRatePlan), plans)
        for at in range(0, len(devices), 1000):
            session.execute(insert(Device), devices[at : at + 1000])
            session.execute(insert(JasperDevice), jasper[at : at + 1000])


def sim_devices(sim_url: str) -> dict[str, dict[str, Any]]:
    return {d["iccid"]: d for d in httpx.get(f"{sim_url}/_sim/devices", timeout=60).json()}


def faults(counters: dict[str, Any]) -> dict[str, int]:
    """Injected faults by kind; an injected 429 is counted among the throttled answers, as ``rate_limited``."""
    found = {kind: int(n) for kind, n in counters["faults"].items()}
    found["rate_limited"] = int(counters["throttled"].get("injected", 0))
    return found


def applied(counters: dict[str, Any]) -> dict[str, dict[str, int]]:
    """Per device, the field changes the simulator really made (``status``, ``ratePlan`` …)."""
    return {iccid: {k: int(n) for k, n in made.items()} for iccid, made in counters["changes"].items()}


def details(counters: dict[str, Any], changes: list[M2MDeviceChange]) -> dict[str, Any]:
    """Edits beyond the plan (one, two for a deactivation with its rate plan move): an edit sent again (the
    simulator counts every edit request that passed authentication and the rate limits, refused or not). An
    edit Control Center accepted and did not make is not an edit made: the one sent again to carry it out (the
    reconcile read shows it was not made) is within the plan. Setting a value a device already has changes
    nothing, so these do not show in ``applied``; they are reported, not failed."""
    planned = {c.iccid: (2 if c.target_status == "deactive" else 1) for c in changes}
    not_made = {i: int(n) for i, n in counters["not_made"].items()}
    extra = {i: n for i, n in counters["puts"].items() if int(n) > planned.get(i, 0) + not_made.get(i, 0)}
    return {
        "devices_edited_beyond_plan": len(extra),
        "examples_edited_beyond_plan": dict(list(extra.items())[:5]),
        "edits_not_made": sum(not_made.values()),
    }


def local_view(session: Session, provider_id: int) -> dict[str, Local]:
    devices = {
        d.iccid: d
        for d in session.scalars(
            select(Device).where(Device.service_provider_id == provider_id, Device.is_deleted.is_(False))
        )
    }
    jasper = {
        j.iccid: j
        for j in session.scalars(
            select(JasperDevice).where(
                JasperDevice.service_provider_id == provider_id, JasperDevice.is_deleted.is_(False)
            )
        )
    }
    return {iccid: Local(devices.get(iccid), jasper.get(iccid)) for iccid in devices.keys() | jasper.keys()}


def mismatch(change: M2MDeviceChange, shown: dict[str, Any] | None, local: Local | None) -> str | None:
    """Why a terminal change's device disagrees with Control Center, or None. PROCESSED: the status (at the
    carrier, in ``Device`` and in ``JasperDevice``), the MSISDN and the rate plan (in both tables). ERROR: the
    carrier must not show the target's status (an ERROR change is one that was not made)."""
    target = TargetStatus(change.target_status)
    if change.status == "ERROR":
        if shown is not None and shown["status"] == CARRIER_STATUS[target.value]:
            return f"ERROR, but the carrier shows {shown['status']!r}: the change was made"
        return None
    if change.status != "PROCESSED":
        return None
    if shown is None:
        return "not at the carrier"
    if local is None or local.device is None or local.jasper is None:
        return "no local Device / JasperDevice row"
    row, jasper = local.device, local.jasper
    if shown["status"] != CARRIER_STATUS[target.value]:
        return f"carrier shows {shown['status']!r}, target {target.value!r}"
    if row.device_status_id != RESULT_DEVICE_STATUS[target]:
        return f"local status {row.device_status_id}, expected {RESULT_DEVICE_STATUS[target]}"
    if jasper.status != shown["status"]:
        return f"JasperDevice status {jasper.status!r} != carrier {shown['status']!r}"
    carrier = (shown["msisdn"], shown["ratePlan"])
    for table, kept in (("Device", (row.msisdn, row.rate_plan)), ("JasperDevice", (jasper.msisdn, jasper.rate_plan))):
        if kept != carrier:
            return f"{table} (MSISDN, rate plan) {kept} != carrier {carrier}"
    return None
