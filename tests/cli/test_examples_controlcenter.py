"""examples/controlcenter/ cannot rot: each file is submitted with the CLI to a Control Center provider
against a simulator started like ``bulkchange simulator --carrier controlcenter --preload 8``, in the order
examples/controlcenter/README.md gives; every change must finish PROCESSED with the carrier in the status
(and plans) the file asked for. ``bulkchange template --carrier controlcenter`` prints the examples' header."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bulkchange.cli.main import app
from bulkchange.domain.statuses import TargetStatus
from bulkchange.engine.row_rules import build_request, rules_for
from bulkchange.security import crypto
from bulkchange.simulator import run_in_thread
from bulkchange.simulator.controlcenter import API_ROOT, ControlCenterConfig, ControlCenterSimulator

from .test_examples import _last_json, submit_and_process

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "controlcenter"
CC_TARGETS = set(TargetStatus) - {TargetStatus.SUSPEND, TargetStatus.RESTORE}
# (file, --status, the Control Center status each of its devices ends in), in the README's order.
RUNS = [
    ("active.csv", "active", "ACTIVATED"),
    ("deactive.csv", "deactive", "DEACTIVATED"),
    ("retired.csv", "retired", "RETIRED"),
    ("pending-activation.csv", "pending activation", "ACTIVATION_READY"),
    ("inventory.csv", "inventory", "INVENTORY"),
]


def _rows(name: str) -> list[dict[str, str]]:
    with (EXAMPLES / name).open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("BULKCHANGE_DATABASE_URL", f"sqlite:///{tmp_path}/examples.sqlite3")
    monkeypatch.setenv("BULKCHANGE_CONTINUATION_DELAY_S", "0")
    monkeypatch.setenv(crypto.KEYS_ENV, crypto.generate_key())
    crypto.reset_keyring()
    yield tmp_path
    crypto.reset_keyring()


def test_every_control_center_status_has_an_example() -> None:
    assert {p.name for p in EXAMPLES.glob("*.csv")} == {name for name, _s, _st in RUNS}
    assert {TargetStatus.parse(status) for _n, status, _st in RUNS} == CC_TARGETS


def test_the_control_center_examples_run_against_the_preloaded_simulator(env: Path) -> None:
    runner = CliRunner()
    sim = ControlCenterSimulator(ControlCenterConfig(tps=1000, tps_burst=1000))
    preloaded = {d.iccid for d in sim.preload(8)}  # what `--preload 8` creates
    assert {row["ICCID"] for name, _s, _st in RUNS for row in _rows(name)} <= preloaded
    with run_in_thread(sim) as server:
        assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
        added = runner.invoke(
            app,
            [
                *("providers", "add", "--carrier", "controlcenter", "--name", "pod"),
                *("--base-url", server.base_url + API_ROOT, "--username", "sim-user", "--api-key", "sim-api-key"),
                *("--tps", "100", "--pod19", "--json"),
            ],
        )
        assert added.exit_code == 0, added.output
        provider = str(_last_json(added.output)["service_provider_id"])
        for name, status, state in RUNS:
            _bulk, shown = submit_and_process(runner, EXAMPLES / name, status, provider)
            assert shown["by_status"] == {"PROCESSED": len(_rows(name))}, (name, shown)
            for row in _rows(name):
                device = sim.device(row["ICCID"])
                assert device is not None and device.status == state, (name, row)
                if row["RatePlan"]:
                    assert device.rate_plan == row["RatePlan"]
                if row["CommunicationPlan"]:
                    assert device.communication_plan == row["CommunicationPlan"]


@pytest.mark.parametrize("status", sorted(t.value for t in CC_TARGETS))
def test_the_control_center_template_has_the_columns_of_the_examples(status: str, env: Path) -> None:
    result = CliRunner().invoke(app, ["template", "--status", status, "--carrier", "controlcenter"])
    assert result.exit_code == 0, result.output
    header, example, *rest = list(csv.reader(result.output.splitlines()))
    assert rest == [] and len(example) == len(header)
    with (EXAMPLES / "active.csv").open(newline="", encoding="utf-8") as f:
        assert next(csv.reader(f)) == header


def test_a_control_center_file_is_read_with_control_center_columns(env: Path) -> None:
    """RatePlan, CommunicationPlan and EffectiveDate reach the change request's device part; a ThingSpace-only
    column is an unknown column for a Control Center provider."""
    rules = rules_for("controlcenter")
    row = {
        "iccid": "89011700000000000012",
        "Rate Plan": "POD19 5GB",
        "communication_plan": "POD19 Data",
        "EffectiveDate": "2030-01-31",
        "RevEffectiveDate": "2030-02-01",
    }
    req = build_request(row, status="deactive", ignore_current_status=False, rules=rules)
    assert (req.request.rate_plan, req.request.communication_plan) == ("POD19 5GB", "POD19 Data")
    assert req.request.effective_date is not None and req.request.effective_date.isoformat().startswith("2030-01-31")
    assert req.rev_service is not None and req.rev_service.effective_date == "2030-02-01"
    assert rules.columns.find("MdnZipCode") is None
