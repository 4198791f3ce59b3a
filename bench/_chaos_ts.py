"""The ThingSpace part of ``bench/chaos.py``: its simulator, faults, seeded devices and end-of-run checks.

Every ``_chaos_*`` module offers the same names (``chaos.py`` picks one by ``--carrier``): ``NAME``,
``PROVISIONING`` (the simulator's request counters that mean "a change reached the carrier", for the aimed
kills), ``DEFAULT_CHANGES``, ``DEFAULT_KILLS``, ``NEEDS_RECEIVER``, ``simulator_args``, ``fault_config``,
``setup``, ``sim_devices``, ``faults`` (injected, by kind), ``applied`` (what the simulator really did, per
device), ``details`` (more about the run, reported only), ``local_view`` (what the database keeps of each
device) and ``mismatch``.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import uuid
from collections import Counter
from typing import Any

import httpx
from _common import new_iccid, new_imei
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from bulkchange.domain.statuses import RESULT_DEVICE_STATUS, DeviceStatusId, TargetStatus
from bulkchange.providers import add_provider, register_callback_listener
from bulkchange.runtime import Runtime
from bulkchange.store.tables import Device, M2MDeviceChange

NAME = "thingspace"
DEFAULT_CHANGES = 5000
DEFAULT_KILLS = 20
NEEDS_RECEIVER = True
TARGETS = ["inventory", "pending activation", "active", "deactive", "suspend", "restore"]
PRESTATE = {"deactive": "active", "suspend": "active", "restore": "suspend"}
# Where the device must be at the carrier once a change to the target is PROCESSED.
CARRIER_STATE = {
    "inventory": "preactive",
    "pending activation": "preactive",  # Add only: the local status says "pending activation"
    "active": "active",
    "deactive": "deactive",
    "suspend": "suspend",
    "restore": "active",
}
PROVISIONING = (
    "devices/actions/add",
    "devices/actions/activate",
    "devices/actions/deactivate",
    "devices/actions/suspend",
    "devices/actions/restore",
)
ACCOUNT = "0000123456-00001"
SLOW_S = 4.0  # a "slow" simulator answer; the workers' carrier timeout (chaos.WORKER_ENV) is shorter


def simulator_args(args: argparse.Namespace) -> list[str]:
    """``bulkchange simulator`` options after ``--host`` / ``--port`` (faults are switched on later)."""
    return [
        "--activation-delay",
        "1",
        "--latency-ms",
        str(args.latency_ms),
        "--callback-retry-interval",
        "2",
        "--activate-rpm",
        "100000",
    ]


def fault_config(seed: int) -> dict[str, Any]:
    return {
        "seed": seed,
        "p_server_error": 0.05,
        "p_rate_limited": 0.03,
        "retry_after_s": 1,
        "p_slow": 0.02,
        "slow_s": SLOW_S,
        "p_malformed": 0.01,
        "session_expire_every": 500,
        "p_callback_lost": 0.02,
        "p_callback_duplicate": 0.02,
        "callback_out_of_order": True,
    }


def setup(
    rt: Runtime, sim_url: str, receiver_url: str | None, changes: int, rng: random.Random
) -> tuple[int, list[dict[str, Any]]]:
    """A provider with its callback listener, the seeded devices, and the rows of the bulk change."""
    assert receiver_url is not None
    with rt.session_factory() as session:
        provider_id = add_provider(
            session,
            name=f"chaos-{uuid.uuid4().hex[:6]}",
            base_url=sim_url,
            client_id="sim-client",
            client_secret="sim-secret",
            username="sim-user",
            password="sim-pass",
            account=ACCOUNT,
            register_callback=True,
        )
        # Our URL and the provider's callback credentials, which the simulator echoes.
        asyncio.run(register_callback_listener(rt.ctx, provider_id, receiver_url))
    per_target = Counter(TARGETS[i % len(TARGETS)] for i in range(changes))
    rows: list[dict[str, Any]] = []
    local: list[dict[str, Any]] = []
    seeded: set[str] = set()
    for target in TARGETS:
        n = per_target[target]
        if not n:
            continue
        if target in PRESTATE:
            made = httpx.post(f"{sim_url}/_sim/devices", json={"n": n, "state": PRESTATE[target]}, timeout=60)
            made.raise_for_status()
            ids = made.json()["iccids"]
            seeded.update(ids)
            rows += [{"ICCID": i, "Status": target} for i in ids]
        else:
            for _ in range(n):
                row = {"ICCID": new_iccid(rng, "8901410"), "IMEI": new_imei(rng), "Status": target}
                if target == "active":
                    row.update({"ServicePlan": "M2M_4G", "MdnZipCode": "98801"})
                rows.append(row)
    # The seeded devices exist locally too, as a sync would have left them (status, MSISDN, IP).
    for shown in httpx.get(f"{sim_url}/_sim/devices", timeout=60).json():
        if shown["iccid"] not in seeded:
            continue
        msisdn, ip = carrier_line(shown)
        local.append(
            {
                "service_provider_id": provider_id,
                "iccid": shown["iccid"],
                "device_status_id": DeviceStatusId.ACTIVE if shown["state"] == "active" else DeviceStatusId.SUSPEND,
                "status": shown["state"],
                "msisdn": msisdn,
                "ip_address": ip,
                "is_deleted": False,
                "is_active": True,
            }
        )
    with rt.session_factory.begin() as session:
        for at in range(0, len(local), 1000):
            session.execute(insert(Device), local[at : at + 1000])
    rng.shuffle(rows)  # targets interleaved: batches of every step are in flight together
    return provider_id, rows


def carrier_line(shown: dict[str, Any]) -> tuple[str | None, str | None]:
    """(MSISDN, IP address) of a device as /_sim/devices shows it (IP 0.0.0.0 = none)."""
    ids = {str(d.get("kind", "")).lower(): str(d.get("id")) for d in shown.get("deviceIds", [])}
    msisdn = ids.get("msisdn") or ids.get("mdn")
    ip = shown.get("ipAddress")
    return msisdn, (None if ip in (None, "", "0.0.0.0") else ip)


def sim_devices(sim_url: str) -> dict[str, dict[str, Any]]:
    return {d["iccid"]: d for d in httpx.get(f"{sim_url}/_sim/devices", timeout=60).json()}


def faults(counters: dict[str, Any]) -> dict[str, int]:
    return {kind: int(n) for kind, n in counters["faults"].items()}


def applied(counters: dict[str, Any]) -> dict[str, dict[str, int]]:
    """Per device, the actions the simulator performed (only what changed state is counted)."""
    return {iccid: {k: int(n) for k, n in acts.items()} for iccid, acts in counters["actions"].items()}


def details(counters: dict[str, Any], changes: list[M2MDeviceChange]) -> dict[str, Any]:
    return {}


def local_view(session: Session, provider_id: int) -> dict[str, Device]:
    """The provider's live local devices by ICCID."""
    found = session.scalars(
        select(Device).where(Device.service_provider_id == provider_id, Device.is_deleted.is_(False))
    )
    return {d.iccid: d for d in found}


def mismatch(change: M2MDeviceChange, shown: dict[str, Any] | None, row: Device | None) -> str | None:
    """Why a PROCESSED change's device disagrees with the carrier, or None (other outcomes are not checked)."""
    if change.status != "PROCESSED":
        return None
    target = TargetStatus(change.target_status)
    if shown is None:
        return "not at the carrier"
    if row is None:
        return "no local device"
    if shown["state"] != CARRIER_STATE[target.value]:
        return f"carrier shows {shown['state']!r}, target {target.value!r}"
    if row.device_status_id != RESULT_DEVICE_STATUS[target]:
        return f"local status {row.device_status_id}, expected {RESULT_DEVICE_STATUS[target]}"
    if shown["state"] == "active" and (row.msisdn, row.ip_address) != carrier_line(shown):
        return f"local line {(row.msisdn, row.ip_address)} != carrier {carrier_line(shown)}"
    return None
