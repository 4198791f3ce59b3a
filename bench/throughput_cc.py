"""``bench/throughput.py --carrier controlcenter``: a Control Center account used at its full TPS.

The physical limit of a Control Center account is its calls per second, so the measure is how close the wall
time comes to the ideal (changes × calls per change ÷ TPS, the verification reads included) without one
refused call. The simulator runs as its own process with a per-account token bucket of ``--burst`` calls
(1: strict, no two calls closer than 1/TPS) and one call in flight; the provider is told the same burst.
``--workers`` engines share the account through the database limiter.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
from _common import free_port, fresh_database, wait_http
from sqlalchemy import select

from bulkchange.domain.statuses import IN_FLIGHT_CHANGE_STATUSES
from bulkchange.engine import changes as ch
from bulkchange.engine.submit import create_bulk_change
from bulkchange.engine.worker import run_worker
from bulkchange.providers import add_controlcenter_provider
from bulkchange.queue.message import BulkChangeMessage
from bulkchange.runtime import Runtime, build_runtime
from bulkchange.settings import Settings
from bulkchange.store.tables import M2MDeviceChange


def _start_simulator(port: int, tps: float, burst: int, stack: ExitStack) -> str:
    cmd = [
        sys.executable,
        "-m",
        "bulkchange.cli.main",
        "simulator",
        "--carrier",
        "controlcenter",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--tps",
        str(tps),
        "--tps-burst",
        str(burst),
        "--max-in-flight",
        "1",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stack.callback(lambda: (proc.terminate(), proc.wait(10)))
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/_sim/counters")
    return url


async def _until_terminal(runtimes: list[Runtime], bulk_id: int) -> None:
    stop = asyncio.Event()
    workers = [asyncio.create_task(run_worker(rt.engine, stop=stop, poll_s=0.05)) for rt in runtimes]
    in_flight = select(M2MDeviceChange.id).where(
        M2MDeviceChange.bulk_change_id == bulk_id,
        M2MDeviceChange.status.in_([s.value for s in IN_FLIGHT_CHANGE_STATUSES]),
    )
    try:
        while True:
            await asyncio.sleep(0.2)
            with runtimes[0].session_factory() as session:
                if session.execute(in_flight.limit(1)).first() is None:
                    break
    finally:
        stop.set()
        await asyncio.gather(*workers)


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    with ExitStack() as stack:
        sim_url = _start_simulator(free_port(), args.tps, args.burst, stack)
        db_url = fresh_database(args.database_url, workdir, stack)
        settings = Settings(database_url=db_url, continuation_delay_s=0)
        runtimes = [build_runtime(settings.model_copy(update={"process_by": f"w{i}"})) for i in range(args.workers)]
        made = httpx.post(f"{sim_url}/_sim/devices", json={"n": args.devices, "status": "ACTIVATED"}, timeout=60)
        iccids = made.json()["iccids"]
        rt = runtimes[0]
        with rt.session_factory() as session:
            provider_id = add_controlcenter_provider(
                session,
                name=f"bench-cc-{uuid.uuid4().hex[:6]}",
                base_url=f"{sim_url}/rws/api",
                username="sim-user",
                api_key="sim-api-key",
                tps=args.tps,
                burst=args.burst,
                pod19=True,
            )
            rows = [{"ICCID": i} for i in iccids]
            bulk_id = create_bulk_change(
                session, rt.transport, rows, status="deactive", service_provider_id=provider_id
            )
        for _ in range(args.workers - 1):  # one wake-up per worker: the row claims decide who sends
            rt.transport.send(BulkChangeMessage(bulk_change_id=bulk_id, service_provider_id=provider_id))
        started = time.monotonic()
        asyncio.run(_until_terminal(runtimes, bulk_id))
        wall = time.monotonic() - started
        with rt.session_factory() as session:
            by_status = {s.value: n for s, n in ch.counts_by_status(session, bulk_id).items()}
        counters = httpx.get(f"{sim_url}/_sim/counters", timeout=30).json()
        for r in runtimes:
            r.close()
    calls = sum(counters.get("requests", {}).values())
    per_change = calls / max(1, args.devices)
    ideal = calls / args.tps
    return {
        "carrier": "controlcenter",
        "devices": args.devices,
        "workers": args.workers,
        "tps": args.tps,
        "burst": args.burst,
        "wall_s": round(wall, 3),
        "carrier_requests": calls,
        "calls_per_change": round(per_change, 3),
        "ideal_wall_s": round(ideal, 3),
        "utilisation": round(ideal / wall, 3) if wall else None,
        "rate_limited": counters.get("rate_limited", 0),
        "max_in_flight": counters.get("max_in_flight"),
        "by_status": by_status,
    }
