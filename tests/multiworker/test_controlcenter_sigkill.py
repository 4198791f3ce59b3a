"""A Control Center worker process killed (SIGKILL) between the carrier making a change and our commit.

The simulator (a real HTTP server in this test process, so its counters can be read) makes the edit and then
holds its answer back. The worker is a separate ``bulkchange worker`` process: once the PUT has reached the
carrier it is killed with SIGKILL — no ``finally``, no lease given back, nothing committed after the PUT.
A new worker process then finds the change SENDING with an expired claim, reconciles it by reading the
device, sees it done and ends it PROCESSED: exactly one PUT, one status change at the carrier.

Short leases (claim 5 s, in-flight 3 s, queue visibility 5 s) keep the dead worker's hold on the change, on the
account and on its message short.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import select

from bulkchange.domain.statuses import DeviceStatusId
from bulkchange.engine.submit import create_bulk_change
from bulkchange.providers import add_controlcenter_provider
from bulkchange.runtime import build_runtime
from bulkchange.security.crypto import keyring
from bulkchange.settings import Settings
from bulkchange.simulator import run_in_thread
from bulkchange.simulator.controlcenter import (
    API_ROOT,
    ControlCenterConfig,
    ControlCenterFaults,
    ControlCenterSimulator,
)
from bulkchange.store.tables import Device, M2MDeviceChange

DEADLINE_S = 120  # a hung worker fails the test instead of hanging the suite
WORKER_ENV = {
    "BULKCHANGE_LEASE_SECONDS": "5",
    "BULKCHANGE_CARRIER_IN_FLIGHT_LEASE_S": "3",
    "BULKCHANGE_CARRIER_TIMEOUT_S": "60",  # the held-back answer is never given up on before the kill
    "BULKCHANGE_CONTINUATION_DELAY_S": "0",
    "BULKCHANGE_RETRY_BASE_S": "0.05",
    "BULKCHANGE_RETRY_CAP_S": "0.2",
    "BULKCHANGE_RECONCILE_WINDOW_S": "0",
    "BULKCHANGE_RECONCILE_RETRY_S": "0",
    "BULKCHANGE_LOG_LEVEL": "WARNING",
    # The killed worker's message comes back after this, so the new worker's ``--until-idle`` ends soon.
    "BULKCHANGE_QUEUE_VISIBILITY_TIMEOUT_S": "5",
}


def _worker(env: dict[str, str], name: str, tmp_path: Path, *extra: str) -> subprocess.Popen[bytes]:
    exe = shutil.which("bulkchange", path=str(Path(sys.executable).parent))
    command = [exe, "worker", *extra] if exe else [sys.executable, "-m", "bulkchange.cli.main", "worker", *extra]
    return subprocess.Popen(
        command,
        env={**env, "BULKCHANGE_PROCESS_BY": name},
        cwd=tmp_path,
        stdout=(tmp_path / f"{name}.out").open("w"),
        stderr=(tmp_path / f"{name}.err").open("w"),
    )


def _wait_for(what: str, condition: Callable[[], object], proc: subprocess.Popen[bytes] | None = None) -> None:
    """Poll ``condition`` until true; fail on the deadline or when ``proc`` ended first."""
    started = time.monotonic()
    while not condition():
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"worker ended (rc {proc.returncode}) before {what}")
        if time.monotonic() - started > DEADLINE_S:
            pytest.fail(f"no {what} within {DEADLINE_S}s")
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.serial
def test_a_killed_worker_after_its_put_is_reconciled_by_a_new_process_without_a_second_put(
    claim_db_url: str, tmp_path: Path
) -> None:
    # The edit is made, then its answer is held back for 20 s; more than one open call is allowed so the
    # killed worker's abandoned call does not make the carrier refuse the new worker's read.
    faults = ControlCenterFaults(slow_s=20.0)
    sim = ControlCenterSimulator(ControlCenterConfig(tps=1000, tps_burst=1000, max_in_flight=4, faults=faults))
    device = sim.add_device(status="ACTIVATED")
    sim.fail_next("slow", endpoints=frozenset({"devices/edit"}))
    rt = build_runtime(Settings(database_url=claim_db_url))
    env = {
        **os.environ,
        **WORKER_ENV,
        "BULKCHANGE_DATABASE_URL": claim_db_url,
        "BULKCHANGE_SECRET_KEYS": ",".join(keyring().keys),  # the provider's API key is stored encrypted
    }
    try:
        with run_in_thread(sim) as server:
            with rt.session_factory() as session:
                provider_id = add_controlcenter_provider(
                    session,
                    name="pod19-kill",
                    base_url=server.base_url + API_ROOT,
                    username="sim-user",
                    api_key="sim-api-key",
                    tps=50,
                    pod19=True,
                )
                bulk_id = create_bulk_change(
                    session,
                    rt.transport,
                    [{"ICCID": device.iccid}],
                    status="deactive",
                    service_provider_id=provider_id,
                )

            first = _worker(env, "first", tmp_path)
            try:
                _wait_for("PUT at the carrier", lambda: sim.counters.puts.get(device.iccid), first)
            finally:
                first.send_signal(signal.SIGKILL)  # mid-call: the answer has not come, nothing committed after
                first.wait(timeout=30)
            assert first.returncode == -signal.SIGKILL

            with rt.session_factory() as session:
                (change,) = session.scalars(select(M2MDeviceChange).where(M2MDeviceChange.bulk_change_id == bulk_id))
            assert change.status == "SENDING", change.status_details
            shown = sim.device(device.iccid)
            assert shown is not None and shown.status == "DEACTIVATED"  # made at the carrier, unknown to us

            second = _worker(env, "second", tmp_path, "--until-idle")
            try:
                second.wait(timeout=DEADLINE_S)
            except subprocess.TimeoutExpired:
                second.kill()
                pytest.fail(f"the new worker did not finish; logs in {tmp_path}")
            assert second.returncode == 0, (tmp_path / "second.err").read_text()[-3000:]

        with rt.session_factory() as session:
            (change,) = session.scalars(select(M2MDeviceChange).where(M2MDeviceChange.bulk_change_id == bulk_id))
            local = session.scalars(select(Device).where(Device.iccid == device.iccid)).one_or_none()
        assert change.status == "PROCESSED", change.status_details
        assert sim.counters.puts[device.iccid] == 1  # reconciled by reading: never sent again
        assert sim.counters.changes[device.iccid] == {"status": 1}
        assert local is not None and local.device_status_id == DeviceStatusId.DEACTIVE
    finally:
        rt.close()
