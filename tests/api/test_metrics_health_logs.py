"""/metrics, /healthz, /readyz, structured logs, and the ``bulkchange serve`` command."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from bulkchange.api.app import create_app
from bulkchange.api.settings import ApiSettings
from bulkchange.logging_setup import configure_logging
from bulkchange.runtime import build_runtime
from bulkchange.settings import Settings
from bulkchange.simulator import FaultConfig, SimulatorConfig
from bulkchange.simulator.server import serve_in_thread

from .conftest import Api, activation_row, make_api


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def throttled_api(tmp_path: Path) -> Iterator[Api]:
    """The carrier answers 429 (Retry-After: 1) to half of the device requests (seeded: the first one is)."""
    config = SimulatorConfig(
        activation_delay_s=0.1,
        callback_retry_interval_s=0.2,
        faults=FaultConfig(seed=1, p_rate_limited=0.5, retry_after_s=1),
    )
    yield from make_api(tmp_path, sim_config=config, carrier_call_attempts=4, max_attempts=6)


def test_metrics_count_carrier_calls_rate_limits_changes_queue_and_webhooks(throttled_api: Api) -> None:
    api = throttled_api
    before = _samples(api.http.get("/metrics").text)
    bulk_id = api.create([activation_row() for _ in range(6)]).json()["id"]
    api.wait_processed(bulk_id, timeout_s=60)
    after = _samples(api.http.get("/metrics").text)

    def delta(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    assert delta("bulkchange_carrier_calls_total", endpoint="devices/actions/add", outcome="ok") >= 1
    assert delta("bulkchange_carrier_calls_total", endpoint="devices/actions/activate", outcome="ok") >= 1
    assert delta("bulkchange_carrier_calls_total", endpoint="oauth2/token", outcome="ok") >= 1
    limited = sum(
        delta("bulkchange_carrier_calls_total", endpoint=e, outcome="rate_limited")
        for e in ("devices/actions/add", "devices/actions/activate")
    )
    assert limited >= 1
    waits = sum(
        delta("bulkchange_rate_limit_waits_total", endpoint=e, source="carrier")
        for e in ("devices/actions/add", "devices/actions/activate")
    )
    assert waits == limited
    assert delta("bulkchange_carrier_call_duration_seconds_count", endpoint="devices/actions/add") >= 1
    assert _value(after, "bulkchange_device_changes", status="PROCESSED", terminal="true") == 6
    assert _value(after, "bulkchange_device_changes", status="READY", terminal="false") == 0
    assert _value(after, "bulkchange_bulk_changes", status="PROCESSED") == 1
    assert ("bulkchange_queue_messages", (("state", "visible"),)) in after
    assert ("bulkchange_queue_messages", (("state", "dead_lettered"),)) in after
    assert _value(after, "bulkchange_database_up") == 1
    # The finished bulk change's event is recorded whatever the configuration; with no destination it waits,
    # undelivered (no attempt made), until one is configured.
    assert _value(after, "bulkchange_webhook_events", status="PENDING") == 1
    assert not any(name == "bulkchange_webhook_delivery_attempts" and value for (name, _), value in after.items())


def test_metrics_tell_how_long_sqlite_write_transactions_waited_for_and_held_the_lock(api: Api) -> None:
    before = _samples(api.http.get("/metrics").text)
    bulk_id = api.create([activation_row() for _ in range(3)]).json()["id"]
    api.wait_processed(bulk_id)
    after = _samples(api.http.get("/metrics").text)

    def delta(name: str, work: str) -> float:
        return _value(after, name, work=work) - _value(before, name, work=work)

    # The worker's claims and records, the receiver's group commits and applying passes, each by name.
    for work in ("claim", "record", "callback_intake", "callback_apply"):
        assert delta("bulkchange_sqlite_write_transactions_total", work) >= 1, work
        assert delta("bulkchange_sqlite_write_lock_held_seconds_total", work) > 0, work
        assert ("bulkchange_sqlite_write_lock_wait_seconds_total", (("work", work),)) in after


def test_a_metrics_scrape_takes_no_write_lock(idle_api: Api) -> None:
    first = _samples(idle_api.http.get("/metrics").text)
    second = _samples(idle_api.http.get("/metrics").text)
    written = {k: v for k, v in second.items() if k[0] == "bulkchange_sqlite_write_transactions_total"}
    assert written == {k: v for k, v in first.items() if k[0] == "bulkchange_sqlite_write_transactions_total"}
    assert _value(second, "bulkchange_database_up") == 1


def test_health_and_readiness(idle_api: Api) -> None:
    assert idle_api.http.get("/healthz").json() == {"status": "ok", "detail": None}
    assert idle_api.http.get("/readyz").status_code == 200


def test_readyz_is_503_when_the_database_is_unreachable(tmp_path: Path) -> None:
    settings = Settings(database_url="postgresql+psycopg://nobody@127.0.0.1:1/none")
    rt = build_runtime(settings, migrate=False)
    try:
        app = create_app(rt, api_settings=ApiSettings(metrics_token=SecretStr("scrape-token-123")))
        with serve_in_thread(app) as server:
            r = httpx.get(f"{server.base_url}/readyz")
            assert r.status_code == 503 and r.json()["status"] == "unavailable"
            assert httpx.get(f"{server.base_url}/healthz").status_code == 200
            # An API key cannot be checked without the database: refused with 503, not let through.
            assert httpx.get(f"{server.base_url}/metrics", headers={"X-API-Key": "bck_" + "x" * 43}).status_code == 503
            # The metrics token needs no database, so the scrape still reports the database down.
            auth = {"Authorization": "Bearer scrape-token-123"}
            scrape = _samples(httpx.get(f"{server.base_url}/metrics", headers=auth).text)
            assert _value(scrape, "bulkchange_database_up") == 0
    finally:
        rt.close()


def test_engine_log_lines_carry_bulk_change_id(api: Api, capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("DEBUG", json_lines=True)
    try:
        bulk_id = api.create([activation_row() for _ in range(2)]).json()["id"]
        api.wait_processed(bulk_id)
        lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    finally:
        configure_logging("INFO")
    engine_events = {"bulk change processed", "activation check scheduled", "activation check round done"}
    engine_lines = [line for line in lines if line.get("event") in engine_events]
    assert any(line["event"] == "bulk change processed" for line in engine_lines)
    assert all(line.get("bulk_change_id") == bulk_id for line in engine_lines)
    # A callback that beat our commit of its requestId is first "stored" (no bulk change known yet) and
    # applied later in a batch; when the receiver applied it itself, its line names the change.
    callback_lines = [line for line in lines if line.get("event") == "callback"]
    assert callback_lines
    applied = [line for line in callback_lines if line.get("result") != "stored"]
    assert all(line.get("bulk_change_id") == bulk_id and line.get("change_id") for line in applied)
    assert all(line.get("level") for line in lines)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_command_serves_the_app_with_a_worker(tmp_path: Path) -> None:
    port = _free_port()
    env = {**os.environ, "BULKCHANGE_DATABASE_URL": f"sqlite:///{tmp_path}/serve.sqlite3"}
    cli = Path(sys.executable).parent / "bulkchange"
    proc = subprocess.Popen(
        [str(cli), "serve", "--port", str(port), "--with-worker", "--migrate"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        ready = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        assert ready is not None and ready.status_code == 200, proc.stderr.read() if proc.stderr else ""
        assert httpx.get(f"http://127.0.0.1:{port}/openapi.json").status_code == 200  # public: it describes
        assert httpx.get(f"http://127.0.0.1:{port}/api/v1/bulk-changes").status_code == 401
        assert httpx.get(f"http://127.0.0.1:{port}/ui/").headers["location"].startswith("/ui/login")
        created = subprocess.run(
            [str(cli), "apikeys", "create", "--tenant", "1", "--json"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        key = json.loads(created.stdout.strip().splitlines()[-1])["key"]
        auth = {"X-API-Key": key}
        spec = httpx.get(f"http://127.0.0.1:{port}/openapi.json", headers=auth).json()
        assert "/api/v1/bulk-changes" in spec["paths"]
        assert httpx.get(f"http://127.0.0.1:{port}/ui/", headers=auth).status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=30)
