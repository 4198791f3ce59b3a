"""The `bulkchange` commands an operator runs, end to end against the simulator on loopback."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bulkchange.cli.main import app
from bulkchange.domain.identifiers import luhn_check_digit
from bulkchange.simulator import Simulator, SimulatorConfig
from bulkchange.simulator.server import serve_in_thread


def _iccid(n: int) -> str:
    body = f"89148000{n:011d}"
    return body + luhn_check_digit(body)


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("BULKCHANGE_DATABASE_URL", f"sqlite:///{tmp_path}/cli.sqlite3")
    monkeypatch.setenv("THINGSPACE_ACTIVATION_CHECK_DELAY_SECONDS", "1")
    monkeypatch.setenv("BULKCHANGE_CONTINUATION_DELAY_S", "0")
    return tmp_path


def _last_json(output: str) -> dict:  # type: ignore[type-arg]
    return json.loads(output.strip().splitlines()[-1])


def test_operator_session_through_the_cli(env: Path) -> None:
    runner = CliRunner()
    sim = Simulator(SimulatorConfig(activation_delay_s=0.1))
    deactivate_me = _iccid(1)
    sim.add_device(deactivate_me, state="active")
    with serve_in_thread(sim.app) as carrier:
        assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
        added = runner.invoke(
            app,
            [
                "providers",
                "add",
                "--name",
                "acme",
                "--base-url",
                carrier.base_url,
                "--client-id",
                "sim-client",
                "--client-secret",
                "sim-secret",
                "--username",
                "sim-user",
                "--password",
                "sim-pass",
                "--account",
                "0000123456-00001",
                "--json",
            ],
        )
        assert added.exit_code == 0, added.output
        provider = _last_json(added.output)["service_provider_id"]

        rows = env / "rows.csv"
        rows.write_text(
            f"ICCID,IMEI,ServicePlan,MdnZipCode,Status\n{_iccid(2)},,,,inventory\n{deactivate_me},,,,deactive\n"
        )
        submitted = runner.invoke(
            app, ["submit", str(rows), "--status", "inventory", "--service-provider", str(provider), "--json"]
        )
        assert submitted.exit_code == 0, submitted.output
        bulk = _last_json(submitted.output)["bulk_change_id"]

        worked = runner.invoke(app, ["worker", "--until-idle"])
        assert worked.exit_code == 0, worked.output
        assert gc.get_freeze_count() > 0  # the worker froze its start-up objects (bulkchange.heap)

        shown = runner.invoke(app, ["status", str(bulk), "--json"])
        assert shown.exit_code == 0, shown.output
        payload = json.loads(shown.output)
        assert payload["status"] == "PROCESSED"
        assert payload["by_status"] == {"PROCESSED": 2}
        assert {d["iccid"]: d["status"] for d in payload["devices"]} == {
            _iccid(2): "PROCESSED",
            deactivate_me: "PROCESSED",
        }
        assert sim.device(deactivate_me).state == "deactive"  # type: ignore[union-attr]

        table = runner.invoke(app, ["status", str(bulk)])
        assert table.exit_code == 0 and _iccid(2) in table.output

        missing = runner.invoke(app, ["status", "999"])
        assert missing.exit_code == 2


def test_db_sql_renders_sql_server_ddl_offline(env: Path) -> None:
    result = CliRunner().invoke(app, ["db", "sql", "--dialect", "mssql"])
    assert result.exit_code == 0
    for table in ("M2M_DeviceChange", "DeviceBulkChange", "DeviceBulkChangeLog", "ThingSpaceCallBackResponseLog"):
        assert table in result.output


def test_demo_command_prints_one_json_object_and_exits_zero(env: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bulkchange.cli.main", "demo", "--devices", "12", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    summary = _last_json(done.stdout)
    assert set(summary) == {"bulk_change_id", "devices", "by_status", "errors", "wall_s"}
    assert summary["devices"] == 12 and summary["by_status"] == {"PROCESSED": 12} and summary["errors"] == []
