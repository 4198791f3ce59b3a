"""Four worker processes on PostgreSQL, one 2,000-device bulk change, one simulator.

Each worker is a separate ``bulkchange worker --until-idle`` process with its own database connections;
the simulator (a real HTTP server) runs in this test process so its counters can be read afterwards.
Activations are verified by the *polling* path (no callback listener is registered; the deferred check
runs every second), so the four processes also race on the one-check-per-bulk-change compare-and-swap.

The bulk change gets one wake-up message per worker: the row claims, not the messages, decide who
sends, so duplicated wake-ups are exactly what the engine must absorb (and what spreads the work).
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import make_url, select

from bulkchange.domain.identifiers import luhn_check_digit
from bulkchange.domain.statuses import DeviceStatusId
from bulkchange.engine.submit import create_bulk_change
from bulkchange.providers import add_provider
from bulkchange.queue.message import BulkChangeMessage
from bulkchange.runtime import build_runtime
from bulkchange.security.crypto import keyring
from bulkchange.settings import Settings
from bulkchange.simulator import Simulator, SimulatorConfig
from bulkchange.simulator.server import serve_in_thread
from bulkchange.store.tables import Device, DeviceBulkChange, DeviceBulkChangeLog, M2MDeviceChange

DEVICES = int(os.environ.get("BC_TEST_DEVICES", "2000"))
WORKERS = 4
DEADLINE_S = 180  # a hung (deadlocked) worker fails the test instead of hanging the suite

WORKER_ENV = {
    "BULKCHANGE_BATCH_MAX_DEVICES": "50",  # 40 carrier requests per step: many concurrent claims
    "BULKCHANGE_CONTINUATION_DELAY_S": "0",
    # A worker that finishes while another holds rows schedules a wake-up for when that lease expires
    # (in case the holder died); ``--until-idle`` waits for it. 15 s instead of 300 s keeps the tail short.
    "BULKCHANGE_LEASE_SECONDS": "15",
    "THINGSPACE_ACTIVATION_CHECK_DELAY_SECONDS": "1",
    "THINGSPACE_UPDATE_DEVICE_STATUS_RETRY_NUMBER": "10",
    "BULKCHANGE_RETRY_BASE_S": "0.05",
    "BULKCHANGE_RETRY_CAP_S": "0.2",
    "BULKCHANGE_CARRIER_TIMEOUT_S": "10",
    "BULKCHANGE_LOG_LEVEL": "WARNING",
}


def _devices(n: int) -> list[tuple[str, str]]:
    rng = random.Random(2000)
    out: set[tuple[str, str]] = set()
    while len(out) < n:
        iccid = "8914800" + "".join(rng.choice("0123456789") for _ in range(12))
        imei = "35" + "".join(rng.choice("0123456789") for _ in range(12))
        out.add((iccid + luhn_check_digit(iccid), imei + luhn_check_digit(imei)))
    return sorted(out)


def _deadlocks(url: str) -> int:
    u = make_url(url)
    with psycopg.connect(host=u.host, port=u.port, user=u.username, dbname="postgres", autocommit=True) as conn:
        row = conn.execute("SELECT deadlocks FROM pg_stat_database WHERE datname = %s", (u.database,)).fetchone()
    return int(row[0]) if row else 0


def _worker_command() -> list[str]:
    exe = shutil.which("bulkchange", path=str(Path(sys.executable).parent))
    if exe:
        return [exe, "worker", "--until-idle"]
    return [sys.executable, "-m", "bulkchange.cli.main", "worker", "--until-idle"]


@pytest.mark.slow
@pytest.mark.serial
@pytest.mark.postgres
def test_four_worker_processes_process_2000_devices_exactly_once(pg_url: str, tmp_path: Path) -> None:
    sim = Simulator(
        SimulatorConfig(activation_delay_s=0.2, activate_requests_per_minute=100_000, callback_retry_interval_s=1)
    )
    rt = build_runtime(Settings(database_url=pg_url))
    devices = _devices(DEVICES)
    with serve_in_thread(sim.app) as carrier:
        with rt.session_factory() as session:
            provider_id = add_provider(
                session,
                name=f"four-workers-{os.getpid()}",
                base_url=carrier.base_url,
                client_id="sim-client",
                client_secret="sim-secret",
                username="sim-user",
                password="sim-pass",
                account="0000123456-00001",
                register_callback=False,  # polling path: results come from the deferred check
            )
            rows = [{"ICCID": i, "IMEI": m, "ServicePlan": "M2M_4G", "MdnZipCode": "98801"} for i, m in devices]
            bulk_id = create_bulk_change(
                session, rt.transport, rows, status="active", service_provider_id=provider_id
            )
        for _ in range(WORKERS - 1):  # one wake-up per worker (the submit sent the first)
            rt.transport.send(BulkChangeMessage(bulk_change_id=bulk_id))
        deadlocks_before = _deadlocks(pg_url)

        # Every process of a deployment shares the keys the credentials were encrypted with.
        env = {
            **os.environ,
            **WORKER_ENV,
            "BULKCHANGE_DATABASE_URL": pg_url,
            "BULKCHANGE_SECRET_KEYS": ",".join(keyring().keys),
        }
        started = time.monotonic()
        procs = [
            subprocess.Popen(
                _worker_command(),
                env={**env, "BULKCHANGE_PROCESS_BY": f"worker-{i}"},  # who finished each change
                cwd=tmp_path,
                stdout=(tmp_path / f"worker{i}.out").open("w"),
                stderr=(tmp_path / f"worker{i}.err").open("w"),
            )
            for i in range(WORKERS)
        ]
        terminal_s: float | None = None  # when the bulk change became PROCESSED
        while any(p.poll() is None for p in procs) and time.monotonic() - started < DEADLINE_S:
            if terminal_s is None:
                with rt.session_factory() as session:
                    status = session.scalar(select(DeviceBulkChange.status).where(DeviceBulkChange.id == bulk_id))
                if status == "PROCESSED":
                    terminal_s = time.monotonic() - started
            time.sleep(0.2)
        wall_s = time.monotonic() - started
        if any(p.poll() is None for p in procs):
            for p in procs:
                p.kill()
            pytest.fail(f"workers still running after {DEADLINE_S}s (deadlock or stall); logs in {tmp_path}")
        codes = [p.returncode for p in procs]
        errs = {i: (tmp_path / f"worker{i}.err").read_text() for i in range(WORKERS)}
        assert codes == [0] * WORKERS, errs

        # The carrier did every action exactly once per device.
        actions = {iccid: dict(sim.counters.actions.get(iccid, {})) for iccid, _ in devices}
        wrong = {i: a for i, a in actions.items() if a != {"add": 1, "activate": 1}}
        assert not wrong, f"{len(wrong)} devices with wrong action counts, e.g. {list(wrong.items())[:5]}"
        assert set(sim.counters.actions) == {i for i, _ in devices}

        # No deadlock, nothing failed in a worker.
        assert _deadlocks(pg_url) == deadlocks_before
        for i, err in errs.items():
            assert "deadlock" not in err.lower(), (i, err[-2000:])
            assert "message processing failed" not in err, (i, err[-2000:])

        # Every change terminal, processed, and the database agrees with the simulator.
        with rt.session_factory() as session:
            changes = list(session.scalars(select(M2MDeviceChange).where(M2MDeviceChange.bulk_change_id == bulk_id)))
            bulk = session.get(DeviceBulkChange, bulk_id)
            local = {
                d.iccid: d
                for d in session.scalars(
                    select(Device).where(Device.service_provider_id == provider_id, Device.is_deleted.is_(False))
                )
            }
        assert len(changes) == DEVICES
        assert Counter(c.status for c in changes) == {"PROCESSED": DEVICES}
        assert {c.attempt_count for c in changes} == {1}  # per step; the last step (activate) was sent once
        assert bulk is not None and bulk.status == "PROCESSED" and not bulk.has_errors
        assert len(local) == DEVICES
        for iccid, _ in devices:
            shown = sim.device(iccid)
            assert shown is not None and shown.state == "active", iccid
            row = local[iccid]
            assert row.device_status_id == DeviceStatusId.ACTIVE, iccid
            assert (row.msisdn, row.ip_address) == (shown.msisdn, shown.ip_address), iccid
        # The work really was shared between the processes (every carrier call is logged with its ProcessBy).
        with rt.session_factory() as session:
            owners = Counter(
                session.scalars(
                    select(DeviceBulkChangeLog.process_by).where(DeviceBulkChangeLog.bulk_change_id == bulk_id)
                )
            )
        assert len(owners) >= 2, owners
    rt.close()
    print(  # the figures docs/benchmarks.md records (pytest -s shows them)
        f"\nfour-workers: devices={DEVICES} workers={WORKERS} all_terminal_s={terminal_s or wall_s:.1f} "
        f"workers_exited_s={wall_s:.1f} "
        f"requests={dict(sorted(sim.counters.requests.items()))} log_rows_by_worker={dict(sorted(owners.items()))}"
    )
