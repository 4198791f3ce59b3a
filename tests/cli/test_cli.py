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


def test_demo_command_prints_one_json_object_and_exits_zero_every_time(env: Path) -> None:
    """Twice on the same database, as `make demo` run again on one machine: the second demo's devices are new
    (a device the first left there belongs to the first demo's provider, and naming it again is refused)."""
    bulk_ids: list[int] = []
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, "-m", "bulkchange.cli.main", "demo", "--devices", "12", "--json"],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        summary = _last_json(done.stdout)
        assert set(summary) == {"bulk_change_id", "devices", "by_status", "errors", "wall_s", "controlcenter"}
        assert summary["devices"] == 12 and summary["by_status"] == {"PROCESSED": 12} and summary["errors"] == []
        cc = summary["controlcenter"]  # the second carrier's bulk change, checked against its simulator
        assert cc["devices"] == 12 and cc["by_status"] == {"PROCESSED": 12} and cc["errors"] == [], cc
        bulk_ids += [summary["bulk_change_id"], cc["bulk_change_id"]]
    assert len(set(bulk_ids)) == 4


def _provider_args(name: str, base_url: str, *extra: str) -> list[str]:
    return [
        "providers",
        "add",
        "--name",
        name,
        "--base-url",
        base_url,
        "--client-id",
        "c",
        "--client-secret",
        "client-secret-value",
        "--username",
        "u",
        "--password",
        "password-value",
        "--account",
        "0000123456-00001",
        "--json",
        *extra,
    ]


def _rows(output: str) -> list[list[str]]:
    """The data rows of a Rich table (│-separated cells, stripped)."""
    return [
        [cell.strip() for cell in line.strip("│ ").split("│")]
        for line in output.splitlines()
        if line.startswith("│") and "│" in line[1:]
    ]


def test_providers_billing_and_rate_plans_belong_to_a_tenant(env: Path) -> None:
    """`--tenant` on `providers add`, `billing add`, `rate-plans add`; the lists show the tenant and filter by it;
    rate plan names are unique per tenant, not across tenants."""
    runner = CliRunner()
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    one = runner.invoke(app, _provider_args("one", "https://ts.example"))
    two = runner.invoke(app, _provider_args("two", "https://ts.example", "--tenant", "2"))
    assert one.exit_code == 0 and two.exit_code == 0, (one.output, two.output)
    two_id = _last_json(two.output)["service_provider_id"]

    providers = runner.invoke(app, ["providers", "list"], env={"COLUMNS": "200"})
    assert [row[:3] for row in _rows(providers.output)] == [["1", "1", "one"], [str(two_id), "2", "two"]]
    only_2 = runner.invoke(app, ["providers", "list", "--tenant", "2"], env={"COLUMNS": "200"})
    assert [row[:3] for row in _rows(only_2.output)] == [[str(two_id), "2", "two"]]

    billing = ["billing", "add", "--base-url", "https://rev.example/v1", "--username", "u", "--client-code", "c"]
    billing += ["--password", "rev-password-value", "--subscription-key", "rev-subscription-value", "--json"]
    rev_1 = runner.invoke(app, billing)
    rev_2 = runner.invoke(app, [*billing, "--tenant", "2", "--name", "rev-two"])
    assert rev_1.exit_code == 0 and rev_2.exit_code == 0, (rev_1.output, rev_2.output)
    rev_2_id = _last_json(rev_2.output)["integration_authentication_id"]
    listed = runner.invoke(app, ["billing", "list", "--tenant", "2"], env={"COLUMNS": "200"})
    assert [row[:3] for row in _rows(listed.output)] == [[str(rev_2_id), "2", "rev-two"]]
    assert "rev-password-value" not in listed.output

    assert runner.invoke(app, ["rate-plans", "add", "IOT-BASIC"]).exit_code == 0
    assert runner.invoke(app, ["rate-plans", "add", "IOT-BASIC", "--tenant", "2"]).exit_code == 0
    again = runner.invoke(app, ["rate-plans", "add", "IOT-BASIC", "--tenant", "2"])
    assert again.exit_code == 2 and "tenant 2 already has a customer rate plan named 'IOT-BASIC'" in again.output
    plans = runner.invoke(app, ["rate-plans", "list"], env={"COLUMNS": "200"})
    assert [row[1:3] for row in _rows(plans.output)] == [["1", "IOT-BASIC"], ["2", "IOT-BASIC"]]
    plans_2 = runner.invoke(app, ["rate-plans", "list", "--tenant", "2"], env={"COLUMNS": "200"})
    assert [row[1:3] for row in _rows(plans_2.output)] == [["2", "IOT-BASIC"]]
