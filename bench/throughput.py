"""Throughput benchmark: N device changes mixed across target statuses, until every change is terminal.

    python bench/throughput.py --json [--devices 10000] [--latency-ms 50] [--baseline-devices 100]
    python bench/throughput.py --carrier controlcenter --json [--devices 500] [--tps 20] [--workers 3] [--burst 2]
                               [--database-url URL] [--check-delay 30]

The ThingSpace simulator runs in its own process with the real limits (10,000 devices per request,
100 activate requests per minute, 2,000 per list page) and the given latency; a callback receiver
runs in another process; the worker runs here, so CPU and RSS figures are the worker's. Before it, the
same flow with batching and concurrency off (one device per carrier call, one call at a time: the
original's shape) on --baseline-devices. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import throughput_cc
from _common import free_port, fresh_database, new_iccid, new_imei, wait_http
from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from bulkchange.domain.statuses import IN_FLIGHT_CHANGE_STATUSES, DeviceStatusId
from bulkchange.engine import changes as ch
from bulkchange.engine.submit import create_bulk_change
from bulkchange.engine.worker import run_worker
from bulkchange.heap import settle_startup_objects
from bulkchange.logging_setup import configure_logging
from bulkchange.providers import add_provider, register_callback_listener
from bulkchange.runtime import build_runtime
from bulkchange.settings import Settings
from bulkchange.store.db import read_only_session
from bulkchange.store.tables import Device, M2MDeviceChange, ThingSpaceCallBackResponseLog

TARGETS = ["inventory", "pending activation", "active", "deactive", "suspend", "restore"]
PRESTATE = {"deactive": "active", "suspend": "active", "restore": "suspend"}
SEED_CHUNK = 1000  # devices made at the simulator and seeded locally at once


def start(cmd: list[str], stack: ExitStack) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stack.callback(stop, proc)
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 10 s: after a 100,000-device run the simulator is still working through
    tens of thousands of queued callbacks and took longer than that to shut down (the results were lost)."""
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def run_case(
    n: int,
    *,
    sim_url: str,
    receiver_url: str | None,
    db_url: str,
    batch: int,
    concurrency: int,
    rng: random.Random,
    progress: bool = False,
    check_delay_s: int = 30,
) -> dict[str, Any]:
    settings = Settings(
        database_url=db_url,
        batch_max_devices=batch,
        continuation_delay_s=0,
        activation_check_delay_s=check_delay_s,
        slice_max_changes=batch * 20 if batch > 1 else 50,
        carrier_concurrency=concurrency,
    )
    rt = build_runtime(settings)
    with rt.session_factory() as session:
        provider_id = add_provider(
            session,
            name=f"bench-{uuid.uuid4().hex[:6]}",
            base_url=sim_url,
            client_id="sim-client",
            client_secret="sim-secret",
            username="sim-user",
            password="sim-pass",
            account="0000123456-00001",
            register_callback=receiver_url is not None,
        )
        if receiver_url:  # our URL and the provider's callback credentials, which the simulator echoes
            asyncio.run(register_callback_listener(rt.ctx, provider_id, receiver_url))
    requests_before = _carrier_requests(sim_url)
    with rt.session_factory() as session:
        rows = device_rows(n, session=session, sim_url=sim_url, provider_id=provider_id, rng=rng)
        bulk_id = create_bulk_change(session, rt.transport, rows, status="active", service_provider_id=provider_id)
    settle_startup_objects()  # as `bulkchange worker` does before it takes messages
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    started = time.monotonic()

    in_flight = select(M2MDeviceChange.id).where(
        M2MDeviceChange.bulk_change_id == bulk_id,
        M2MDeviceChange.status.in_([s.value for s in IN_FLIGHT_CHANGE_STATUSES]),
    )

    async def until_terminal() -> None:
        stop = asyncio.Event()
        worker = asyncio.create_task(run_worker(rt.engine, stop=stop))  # production defaults
        try:
            while True:
                await asyncio.sleep(0.2)
                with read_only_session(rt.session_factory) as session:
                    # Is any change still in flight? One index probe (LIMIT 1), not a count: this harness
                    # runs in the worker's process, and counting 10,000 rows five times a second showed as
                    # ~7 % of the "worker" CPU it reports.
                    left = session.execute(in_flight.limit(1)).first() is not None
                    if progress:
                        _print_progress(session, bulk_id, time.monotonic() - started)
                if not left or worker.done():
                    break
        finally:
            stop.set()
            await worker

    asyncio.run(until_terminal())
    wall = time.monotonic() - started
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    with rt.session_factory() as session:
        by_status = _by_status(session, bulk_id)
    rt.close()
    cpu_s = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
    return {
        "devices": n,
        "wall_s": round(wall, 3),
        "carrier_requests": _carrier_requests(sim_url) - requests_before,
        "worker_cpu_s": round(cpu_s, 3),
        "by_status": by_status,
    }


def device_rows(
    n: int, *, session: Session, sim_url: str, provider_id: int, rng: random.Random
) -> Iterator[dict[str, Any]]:
    """The ``n`` input rows, target by target (``i % 6``), made lazily so the bench never holds them all.

    A target that needs a prior state (deactive, suspend, restore) takes devices the simulator creates in
    that state, ``SEED_CHUNK`` at a time; their local Device rows are inserted through ``session`` — the
    submission's own, so its checks see them and they commit with it — before their rows are handed out.
    """
    for k, target in enumerate(TARGETS):
        count = len(range(k, n, len(TARGETS)))
        if target in PRESTATE:
            yield from _prestate_rows(target, count, session=session, sim_url=sim_url, provider_id=provider_id)
            continue
        for _ in range(count):
            row = {"ICCID": new_iccid(rng), "IMEI": new_imei(rng), "Status": target}
            if target == "active":
                row.update({"ServicePlan": "M2M_4G", "MdnZipCode": "98801"})
            yield row


def _prestate_rows(
    target: str, count: int, *, session: Session, sim_url: str, provider_id: int
) -> Iterator[dict[str, Any]]:
    """Rows for ``count`` devices made at the simulator in ``PRESTATE[target]`` and seeded locally, by chunks."""
    state = PRESTATE[target]
    status_id = DeviceStatusId.ACTIVE if state == "active" else DeviceStatusId.SUSPEND
    for start_at in range(0, count, SEED_CHUNK):
        made = httpx.post(
            f"{sim_url}/_sim/devices", json={"n": min(SEED_CHUNK, count - start_at), "state": state}, timeout=60
        )
        iccids = made.json()["iccids"]
        local = [
            {
                "service_provider_id": provider_id,
                "iccid": i,
                "device_status_id": status_id,
                "status": state,
                "is_deleted": False,
                "is_active": True,
            }
            for i in iccids
        ]
        session.execute(insert(Device), local)
        yield from ({"ICCID": i, "Status": target} for i in iccids)


def _by_status(session: Session, bulk_id: int) -> dict[str, int]:
    return {status.value: n for status, n in ch.counts_by_status(session, bulk_id).items()}


def _print_progress(session: Any, bulk_id: int, elapsed: float) -> None:
    """One stderr line: where the changes stand and how many callbacks are stored / applied."""
    by_status = _by_status(session, bulk_id)
    stored, applied = session.execute(select(func.count(), func.count(ThingSpaceCallBackResponseLog.outcome))).one()
    print(f"{elapsed:6.1f}s {by_status} callbacks stored={stored} applied={applied}", file=sys.stderr)


def _carrier_requests(sim_url: str) -> int:
    counters = httpx.get(f"{sim_url}/_sim/counters", timeout=30).json()
    return sum(v for k, v in counters["requests"].items() if k.startswith(("devices/", "requests/")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--baseline-devices", type=int, default=100)
    parser.add_argument("--batch", type=int, default=2000, help="devices per carrier request")
    parser.add_argument(
        "--concurrency", type=int, default=4, help="batches the worker has at the carrier at once (baseline: 1)"
    )
    parser.add_argument("--database-url", default=None, help="default: a fresh SQLite file")
    parser.add_argument("--no-callbacks", action="store_true", help="no listener: results by polling")
    parser.add_argument(
        "--check-delay",
        type=int,
        default=30,
        help="THINGSPACE_ACTIVATION_CHECK_DELAY_SECONDS for both runs: the deferred check (list polling) "
        "settles what callbacks have not; the simulator completes actions after 1 s",
    )
    parser.add_argument(
        "--callback-concurrency",
        type=int,
        default=16,
        help="callbacks the simulator has in flight at once (ThingSpace's own figure is not published)",
    )
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--progress", action="store_true", help="print where the changes stand every 0.2 s")
    parser.add_argument("--carrier", choices=["thingspace", "controlcenter"], default="thingspace")
    parser.add_argument("--tps", type=float, default=20.0, help="controlcenter: the account's calls per second")
    parser.add_argument("--workers", type=int, default=1, help="controlcenter: engines sharing the account")
    parser.add_argument(
        "--burst",
        type=int,
        default=1,
        help="controlcenter: calls the account admits back to back, for the simulator and the provider alike",
    )
    args = parser.parse_args()
    configure_logging("WARNING")
    if args.carrier == "controlcenter":
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(throughput_cc.run(args, Path(tmp))))
        return
    rng = random.Random(1)
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        sim_port = free_port()
        start(
            [
                sys.executable,
                "-m",
                "bulkchange.cli.main",
                "simulator",
                "--host",
                "127.0.0.1",
                "--port",
                str(sim_port),
                "--latency-ms",
                str(args.latency_ms),
                "--activation-delay",
                "1",
                "--callback-retry-interval",
                "5",
                "--callback-concurrency",
                str(args.callback_concurrency),
            ],
            stack,
        )
        sim_url = f"http://127.0.0.1:{sim_port}"
        wait_http(f"{sim_url}/_sim/counters")
        db_url = fresh_database(args.database_url, workdir, stack)
        build_runtime(Settings(database_url=db_url)).close()  # migrate before the receiver starts
        receiver_url = None
        if not args.no_callbacks:
            rec_port = free_port()
            start([sys.executable, str(Path(__file__).with_name("_receiver.py")), db_url, str(rec_port)], stack)
            receiver_url = f"http://127.0.0.1:{rec_port}"
            wait_http(f"{receiver_url}/docs")
        # The baseline first, on a fresh simulator: after a large run the simulator still has tens of
        # thousands of callbacks queued (the deferred check settled those changes), and the baseline's
        # callbacks waited behind them — 51.5 s instead of ~10 s for 100 devices after a 100,000 run.
        base = run_case(
            args.baseline_devices,
            sim_url=sim_url,
            receiver_url=receiver_url,
            db_url=db_url,
            batch=1,
            concurrency=1,
            rng=rng,
            check_delay_s=args.check_delay,
        )
        main_run = run_case(
            args.devices,
            sim_url=sim_url,
            receiver_url=receiver_url,
            db_url=db_url,
            batch=args.batch,
            concurrency=args.concurrency,
            rng=rng,
            progress=args.progress,
            check_delay_s=args.check_delay,
        )
        peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    per_device = main_run["wall_s"] / max(1, main_run["devices"])
    base_per_device = base["wall_s"] / max(1, base["devices"])
    summary = {
        "devices": main_run["devices"],
        "wall_s": main_run["wall_s"],
        "carrier_requests": main_run["carrier_requests"],
        "requests_per_device": round(main_run["carrier_requests"] / max(1, main_run["devices"]), 5),
        "worker_cpu_ms_per_device": round(1000 * main_run["worker_cpu_s"] / max(1, main_run["devices"]), 3),
        "peak_rss_mb": round(peak_rss_mb, 1),
        "baseline_devices": base["devices"],
        "baseline_wall_s": base["wall_s"],
        "speedup_per_device": round(base_per_device / per_device, 1) if per_device else None,
    }
    if not args.json:
        print(f"main: {main_run}\nbaseline: {base}", file=sys.stderr)
    else:  # where every change ended, on stderr: the last line stays the one JSON object the issue fixes
        print(f"by status: main {main_run['by_status']}, baseline {base['by_status']}", file=sys.stderr)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
