"""The database goes away under running processes, and comes back: nothing dies, nothing is done twice.

A private PostgreSQL cluster (the ``private_pg`` fixture: initdb into a temporary directory, a free port) is
stopped with ``pg_ctl -m immediate`` — a crash, connections cut mid-transaction — while two real
``bulkchange worker`` processes work on a bulk change against the ThingSpace simulator, then started again.
Both workers must still be alive after the outage, finish the bulk change by themselves, and have logged the
outage once each (a warning when it began, one line with its duration when it ended); the simulator's
counters show every device got each carrier action exactly once. ``serve --with-worker`` gets the same
treatment, with ``/readyz`` answering 503 while the database is down.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import httpx
import pytest
from sqlalchemy import select

from bulkchange.domain.identifiers import luhn_check_digit
from bulkchange.engine.submit import create_bulk_change
from bulkchange.providers import add_provider
from bulkchange.queue.message import BulkChangeMessage
from bulkchange.runtime import Runtime, build_runtime
from bulkchange.security.crypto import keyring
from bulkchange.settings import Settings
from bulkchange.simulator import Simulator, SimulatorConfig
from bulkchange.simulator.server import ServerHandle, serve_in_thread
from bulkchange.store.tables import DeviceBulkChange, M2MDeviceChange

DEVICES = 240
OUTAGE_S = 6.0  # long enough for every loop to meet it several times (the retry cap below is 1.5 s)

ENV = {
    "BULKCHANGE_BATCH_MAX_DEVICES": "10",  # many carrier requests: the outage lands in the middle of the work
    "BULKCHANGE_CARRIER_CONCURRENCY": "1",
    "BULKCHANGE_CONTINUATION_DELAY_S": "0",
    # Rows a worker had claimed when the database went away are recovered when their lease runs out (read
    # from the carrier first, never resent blindly): short leases keep the test short.
    "BULKCHANGE_LEASE_SECONDS": "5",
    "BULKCHANGE_RECONCILE_WINDOW_S": "2",
    "BULKCHANGE_RECONCILE_RETRY_S": "1",
    "THINGSPACE_ACTIVATION_CHECK_DELAY_SECONDS": "1",
    "THINGSPACE_UPDATE_DEVICE_STATUS_RETRY_NUMBER": "10",
    "BULKCHANGE_RETRY_BASE_S": "0.05",
    "BULKCHANGE_RETRY_CAP_S": "0.2",
    "BULKCHANGE_CARRIER_TIMEOUT_S": "10",
    "BULKCHANGE_OUTAGE_RETRY_BASE_S": "0.2",
    "BULKCHANGE_OUTAGE_RETRY_CAP_S": "1.5",
    "BULKCHANGE_LOG_LEVEL": "INFO",
}
OUTAGE_STARTED = "database unavailable; waiting for it to come back"
OUTAGE_ENDED = "database available again"


def _devices(n: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    out: set[tuple[str, str]] = set()
    while len(out) < n:
        iccid = "8914800" + "".join(rng.choice("0123456789") for _ in range(12))
        imei = "35" + "".join(rng.choice("0123456789") for _ in range(12))
        out.add((iccid + luhn_check_digit(iccid), imei + luhn_check_digit(imei)))
    return sorted(out)


def _cli() -> list[str]:
    exe = shutil.which("bulkchange", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "bulkchange.cli.main"]


def _env(url: str) -> dict[str, str]:
    # Every process of a deployment shares the keys the credentials were encrypted with.
    return {
        **os.environ,
        **ENV,
        "BULKCHANGE_DATABASE_URL": url,
        "BULKCHANGE_SECRET_KEYS": ",".join(keyring().keys),
    }


def _events(log_text: str) -> list[dict[str, Any]]:
    """The JSON log lines of a process (anything else it printed is ignored)."""
    events = []
    for line in log_text.splitlines():
        if line.startswith("{"):
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
    return events


def _wait(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout_s}s")


def _setup(url: str, carrier: ServerHandle, name: str) -> tuple[Runtime, int]:
    rt = build_runtime(Settings(database_url=url))
    with rt.session_factory() as session:
        provider_id = add_provider(
            session,
            name=name,
            base_url=carrier.base_url,
            client_id="sim-client",
            client_secret="sim-secret",
            username="sim-user",
            password="sim-pass",
            account="0000123456-00001",
            register_callback=False,  # polling path: results come from the deferred check
        )
    return rt, provider_id


def _submit(rt: Runtime, provider_id: int, devices: list[tuple[str, str]]) -> int:
    rows = [{"ICCID": i, "IMEI": m, "ServicePlan": "M2M_4G", "MdnZipCode": "98801"} for i, m in devices]
    with rt.session_factory() as session:
        return create_bulk_change(session, rt.transport, rows, status="active", service_provider_id=provider_id)


def _status(rt: Runtime, bulk_id: int) -> str | None:
    with rt.session_factory() as session:
        return session.scalar(select(DeviceBulkChange.status).where(DeviceBulkChange.id == bulk_id))


def _assert_exactly_once(sim: Simulator, rt: Runtime, bulk_id: int, devices: list[tuple[str, str]]) -> None:
    actions = {iccid: dict(sim.counters.actions.get(iccid, {})) for iccid, _ in devices}
    wrong = {i: a for i, a in actions.items() if a != {"add": 1, "activate": 1}}
    assert not wrong, f"{len(wrong)} devices with wrong action counts, e.g. {list(wrong.items())[:5]}"
    with rt.session_factory() as session:
        statuses = Counter(
            session.scalars(select(M2MDeviceChange.status).where(M2MDeviceChange.bulk_change_id == bulk_id))
        )
    assert statuses == {"PROCESSED": len(devices)}


def _one_outage_logged(events: list[dict[str, Any]], who: str) -> None:
    started = [e for e in events if e.get("event") == OUTAGE_STARTED]
    ended = [e for e in events if e.get("event") == OUTAGE_ENDED]
    assert len(started) == 1, (who, started)
    assert started[0]["level"] == "warning"
    assert len(ended) == 1, (who, ended)
    assert ended[0]["level"] == "info" and ended[0]["outage_s"] > 0


@pytest.mark.slow
@pytest.mark.serial
def test_two_workers_survive_a_database_outage_and_finish_exactly_once(private_pg: Any, tmp_path: Path) -> None:
    url = private_pg.create_database("outage")
    sim = Simulator(SimulatorConfig(activation_delay_s=0.2, activate_requests_per_minute=100_000, latency_s=0.05))
    devices = _devices(DEVICES, seed=18)
    with serve_in_thread(sim.app) as carrier:
        rt, provider_id = _setup(url, carrier, "outage-workers")
        bulk_id = _submit(rt, provider_id, devices)
        rt.transport.send(BulkChangeMessage(bulk_change_id=bulk_id))  # one wake-up per worker
        rt.close()  # this process holds no connection across the outage
        logs: list[TextIO] = [(tmp_path / f"worker{i}.log").open("w") for i in range(2)]
        procs = [
            subprocess.Popen(
                [*_cli(), "worker", "--until-idle"],
                env={**_env(url), "BULKCHANGE_PROCESS_BY": f"worker-{i}"},
                cwd=tmp_path,
                stdout=subprocess.DEVNULL,
                stderr=logs[i],
            )
            for i in range(2)
        ]
        try:
            # The outage starts once the carrier has seen part of the work: both workers are mid-bulk change.
            _wait(lambda: sim.counters.requests.get("devices/actions/add", 0) >= 4, 60, "work started")
            private_pg.stop()
            time.sleep(OUTAGE_S)  # the outage itself: nothing to wait for, the database is down on purpose
            alive = [p.poll() is None for p in procs]
            private_pg.start()
            assert alive == [True, True], [(tmp_path / f"worker{i}.log").read_text()[-3000:] for i in range(2)]
            deadline = time.monotonic() + 180
            while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
                time.sleep(0.2)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
            for f in logs:
                f.close()
        texts = [(tmp_path / f"worker{i}.log").read_text() for i in range(2)]
        assert [p.returncode for p in procs] == [0, 0], [t[-3000:] for t in texts]

        rt = build_runtime(Settings(database_url=url), migrate=False)
        try:
            assert _status(rt, bulk_id) == "PROCESSED"
            _assert_exactly_once(sim, rt, bulk_id, devices)
        finally:
            rt.close()
    for i, text in enumerate(texts):
        _one_outage_logged(_events(text), f"worker{i}")
        assert "message processing failed" not in text, text[-3000:]
        assert "Traceback" not in text, text[-3000:]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
@pytest.mark.serial
def test_serve_with_worker_is_not_ready_during_an_outage_and_carries_on(private_pg: Any, tmp_path: Path) -> None:
    url = private_pg.create_database("serve")
    sim = Simulator(SimulatorConfig(activation_delay_s=0.1, activate_requests_per_minute=100_000))
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    with serve_in_thread(sim.app) as carrier:
        rt, provider_id = _setup(url, carrier, "outage-serve")
        rt.close()
        log_path = tmp_path / "serve.log"
        with log_path.open("w") as log_file:
            server = subprocess.Popen(
                [*_cli(), "serve", "--with-worker", "--port", str(port)],
                env=_env(url),
                cwd=tmp_path,
                stdout=subprocess.DEVNULL,
                stderr=log_file,
            )
            try:
                with httpx.Client(base_url=base, timeout=5) as http:

                    def ready() -> int | None:
                        try:
                            return http.get("/readyz").status_code
                        except httpx.TransportError:
                            return None

                    _wait(lambda: ready() == 200, 60, "serve ready")
                    private_pg.stop()
                    _wait(lambda: ready() == 503, 30, "/readyz reports the outage")
                    body = http.get("/readyz").json()
                    assert body["status"] == "unavailable" and "database" in body["detail"], body
                    assert http.get("/healthz").status_code == 200  # the process itself is fine
                    time.sleep(3)  # the outage goes on: the in-process worker and applier meet it repeatedly
                    assert server.poll() is None
                    private_pg.start()
                    _wait(lambda: ready() == 200, 60, "/readyz ready again")
                # The worker inside the server carries on by itself: a bulk change submitted now is processed.
                rt = build_runtime(Settings(database_url=url), migrate=False)
                try:
                    devices = _devices(20, seed=5)
                    bulk_id = _submit(rt, provider_id, devices)
                    _wait(lambda: _status(rt, bulk_id) == "PROCESSED", 90, "bulk change processed after the outage")
                    _assert_exactly_once(sim, rt, bulk_id, devices)
                finally:
                    rt.close()
            finally:
                server.send_signal(signal.SIGINT)
                try:
                    server.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    server.kill()
    text = log_path.read_text()
    _one_outage_logged(_events(text), "serve")
    assert "worker stopped unexpectedly" not in text, text[-3000:]
    assert "applying stored callbacks failed" not in text, text[-3000:]
