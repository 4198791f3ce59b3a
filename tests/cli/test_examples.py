"""examples/ cannot rot: each file is submitted with the CLI against a simulator started like
``bulkchange simulator --preload 8``, in the order examples/README.md gives, and every change must finish
PROCESSED with the carrier in the state the file asked for. ``bulkchange template`` prints exactly the
columns of the example for its status."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bulkchange.cli.main import app
from bulkchange.domain.statuses import TargetStatus
from bulkchange.simulator import Simulator, SimulatorConfig
from bulkchange.simulator.server import serve_in_thread

THINGSPACE_TARGETS = set(TargetStatus) - {TargetStatus.RETIRED}  # the examples play the ThingSpace simulator
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
# (file, --status, the carrier state each of its devices ends in), in the order of examples/README.md.
RUNS = [
    ("active.csv", "active", "active"),
    ("suspend.csv", "suspend", "suspend"),
    ("restore.csv", "restore", "active"),
    ("deactive.csv", "deactive", "deactive"),
    ("pending-activation.csv", "pending activation", "preactive"),
    ("inventory.csv", "inventory", "preactive"),
]


def _last_json(output: str) -> dict:  # type: ignore[type-arg]
    return json.loads(output.strip().splitlines()[-1])


def submit_and_process(runner: CliRunner, file: Path, status: str, provider: str) -> tuple[dict, dict]:  # type: ignore[type-arg]
    """``submit FILE``, ``worker --until-idle`` and ``status --json`` as an operator types them: (the submit's
    answer, the bulk change's status)."""
    submitted = runner.invoke(app, ["submit", str(file), "--status", status, "--service-provider", provider, "--json"])
    assert submitted.exit_code == 0, (file.name, submitted.output)
    bulk = _last_json(submitted.output)
    assert runner.invoke(app, ["worker", "--until-idle"]).exit_code == 0
    shown = json.loads(runner.invoke(app, ["status", str(bulk["bulk_change_id"]), "--json"]).output)
    return bulk, shown


def _iccids(name: str) -> list[str]:
    with (EXAMPLES / name).open(newline="", encoding="utf-8") as f:
        return [row["ICCID"] for row in csv.DictReader(f)]


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("BULKCHANGE_DATABASE_URL", f"sqlite:///{tmp_path}/examples.sqlite3")
    monkeypatch.setenv("THINGSPACE_ACTIVATION_CHECK_DELAY_SECONDS", "1")
    monkeypatch.setenv("BULKCHANGE_CONTINUATION_DELAY_S", "0")
    return tmp_path


def test_every_status_has_an_example_and_every_example_is_run() -> None:
    files = {p.name for p in EXAMPLES.glob("*.csv")}
    assert files == {name for name, _status, _state in RUNS}
    assert {TargetStatus.parse(status) for _name, status, _state in RUNS} == THINGSPACE_TARGETS


def test_the_examples_run_against_the_preloaded_simulator(env: Path) -> None:
    runner = CliRunner()
    sim = Simulator(SimulatorConfig(activation_delay_s=0.1))
    preloaded = {d.iccid for d in sim.preload(8)}  # what `bulkchange simulator --preload 8` creates
    assert {i for name, _s, _st in RUNS for i in _iccids(name)} <= preloaded
    with serve_in_thread(sim.app) as carrier:
        assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
        added = runner.invoke(
            app,
            [
                *("providers", "add", "--name", "sim", "--base-url", carrier.base_url),
                *("--client-id", "sim-client", "--client-secret", "sim-secret"),
                *("--username", "sim-user", "--password", "sim-pass", "--account", "0000123456-00001", "--json"),
            ],
        )
        assert added.exit_code == 0, added.output
        provider = str(_last_json(added.output)["service_provider_id"])
        for name, status, state in RUNS:
            bulk, shown = submit_and_process(runner, EXAMPLES / name, status, provider)
            assert bulk["devices"] == len(_iccids(name))
            assert shown["by_status"] == {"PROCESSED": len(_iccids(name))}, (name, shown)
            for iccid in _iccids(name):
                assert sim.device(iccid).state == state, (name, iccid)  # type: ignore[union-attr]


@pytest.mark.parametrize("status", sorted(t.value for t in THINGSPACE_TARGETS))
def test_the_template_has_exactly_the_columns_of_the_example(status: str, env: Path) -> None:
    result = CliRunner().invoke(app, ["template", "--status", status, "--carrier", "thingspace"])
    assert result.exit_code == 0, result.output
    header, example, *rest = list(csv.reader(result.output.splitlines()))
    assert rest == [] and len(example) == len(header) and all(example)
    name = next(n for n, s, _state in RUNS if s == status)
    with (EXAMPLES / name).open(newline="", encoding="utf-8") as f:
        assert next(csv.reader(f)) == header


def test_template_refuses_a_wrong_status_or_carrier_listing_what_is_accepted(env: Path) -> None:
    wrong = CliRunner().invoke(app, ["template", "--status", "activate"])
    assert wrong.exit_code == 2
    assert "did you mean 'active'" in wrong.output and "activation ready" in wrong.output
    carrier = CliRunner().invoke(app, ["template", "--status", "active", "--carrier", "att"])
    assert carrier.exit_code == 2 and "thingspace" in carrier.output
