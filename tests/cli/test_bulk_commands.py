"""`bulkchange list / status / pause / cancel / resume / export` against the simulator on loopback and a
SQLite file: each does what applies, and refuses what does not in one line with a non-zero exit."""

from __future__ import annotations

import csv
import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

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
    monkeypatch.setenv("BULKCHANGE_CONTINUATION_DELAY_S", "0")
    monkeypatch.setenv("COLUMNS", "200")
    return tmp_path


def _provider(runner: CliRunner, base_url: str) -> int:
    added = runner.invoke(
        app,
        [
            *("providers", "add", "--name", "acme", "--base-url", base_url, "--client-id", "sim-client"),
            *("--client-secret", "sim-secret", "--username", "sim-user", "--password", "sim-pass"),
            *("--account", "0000123456-00001", "--json"),
        ],
    )
    assert added.exit_code == 0, added.output
    return int(json.loads(added.output.strip().splitlines()[-1])["service_provider_id"])


def _submit(runner: CliRunner, env: Path, provider: int, iccids: list[str]) -> int:
    rows = env / "rows.csv"
    rows.write_text("ICCID\n" + "".join(f"{i}\n" for i in iccids))
    submitted = runner.invoke(
        app, ["submit", str(rows), "--status", "inventory", "--service-provider", str(provider), "--json"]
    )
    assert submitted.exit_code == 0, submitted.output
    return int(json.loads(submitted.output.strip().splitlines()[-1])["bulk_change_id"])


def _status(runner: CliRunner, bulk: int) -> dict:  # type: ignore[type-arg]
    shown = runner.invoke(app, ["status", str(bulk), "--json"])
    assert shown.exit_code == 0, shown.output
    return json.loads(shown.output)  # type: ignore[no-any-return]


def test_pause_cancel_and_refusals(env: Path) -> None:
    runner = CliRunner()
    sim = Simulator(SimulatorConfig(activation_delay_s=0.1))
    with serve_in_thread(sim.app) as carrier:
        assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
        provider = _provider(runner, carrier.base_url)
        bulk = _submit(runner, env, provider, [_iccid(1), _iccid(2)])

        paused = runner.invoke(app, ["pause", str(bulk)])
        assert paused.exit_code == 0 and "paused by cli:" in paused.output, paused.output
        assert runner.invoke(app, ["worker", "--until-idle"]).exit_code == 0
        assert sim.counters.requests.get("devices/actions/add", 0) == 0
        assert _status(runner, bulk)["status"] == "PAUSED"
        again = runner.invoke(app, ["pause", str(bulk)])
        assert again.exit_code == 1 and "already paused" in again.output

        cancelled = runner.invoke(app, ["cancel", str(bulk)])
        assert cancelled.exit_code == 0 and "2 change(s) cancelled; 0 already at the carrier" in cancelled.output
        assert _status(runner, bulk)["status"] == "CANCELLED"
        nothing = runner.invoke(app, ["cancel", str(bulk)])
        assert nothing.exit_code == 1 and "nothing to cancel" in nothing.output
        assert len(nothing.output.strip().splitlines()) == 1
        refused = runner.invoke(app, ["resume", str(bulk)])
        assert refused.exit_code == 1 and "is CANCELLED" in refused.output, refused.output
        assert runner.invoke(app, ["pause", "999"]).exit_code == 2


def test_resume_of_a_finished_bulk_change_is_refused_and_export_says_its_status(env: Path) -> None:
    runner = CliRunner()
    sim = Simulator(SimulatorConfig(activation_delay_s=0.1))
    with serve_in_thread(sim.app) as carrier:
        assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
        provider = _provider(runner, carrier.base_url)
        bulk = _submit(runner, env, provider, [_iccid(3)])
        assert runner.invoke(app, ["worker", "--until-idle"]).exit_code == 0
        assert _status(runner, bulk)["status"] == "PROCESSED"

        resumed = runner.invoke(app, ["resume", str(bulk)])
        assert resumed.exit_code != 0, resumed.output
        assert "resumed" not in resumed.output and "nothing to resume" in resumed.output
        assert len(resumed.output.strip().splitlines()) == 1

        out = env / "export.csv"
        exported = runner.invoke(app, ["export", str(bulk), "--output", str(out)])
        assert exported.exit_code == 0, exported.output
        [row] = list(csv.DictReader(out.open()))
        assert (row["ICCID"], row["Status"], row["BulkChangeStatus"]) == (_iccid(3), "PROCESSED", "PROCESSED")
        assert runner.invoke(app, ["export", "999"]).exit_code == 2

        listed = runner.invoke(app, ["list", "--status", "processed", "--json"])
        assert listed.exit_code == 0, listed.output
        assert [b["id"] for b in json.loads(listed.output)["items"]] == [bulk]
        assert json.loads(runner.invoke(app, ["list", "--status", "PARTIAL", "--json"]).output)["items"] == []
        bogus = runner.invoke(app, ["list", "--status", "DONE"])
        assert bogus.exit_code == 2 and "PARTIAL" in bogus.output


def test_retry_failed_makes_a_linked_bulk_change_of_the_failures_only(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No callback listener here: deactivations are settled by the deferred check, made quick and final.
    monkeypatch.setenv("THINGSPACE_ACTIVATION_CHECK_DELAY_SECONDS", "1")
    monkeypatch.setenv("THINGSPACE_UPDATE_DEVICE_STATUS_RETRY_NUMBER", "1")
    runner = CliRunner()
    sim = Simulator(SimulatorConfig(activation_delay_s=0.1))
    with serve_in_thread(sim.app) as carrier:
        assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
        provider = _provider(runner, carrier.base_url)
        rows = env / "deactivate.csv"
        rows.write_text(f"ICCID\n{_iccid(4)}\n{_iccid(5)}\n")  # lines the carrier does not know: refused there
        submitted = runner.invoke(
            app, ["submit", str(rows), "--status", "deactive", "--service-provider", str(provider), "--json"]
        )
        assert submitted.exit_code == 0, submitted.output
        bulk = int(json.loads(submitted.output.strip().splitlines()[-1])["bulk_change_id"])
        assert runner.invoke(app, ["worker", "--until-idle"]).exit_code == 0
        failed = [d["iccid"] for d in _status(runner, bulk)["devices"] if d["status"] != "PROCESSED"]
        assert failed, _status(runner, bulk)

        retried = runner.invoke(app, ["retry-failed", str(bulk), "--json"])
        assert retried.exit_code == 0, retried.output
        new = json.loads(retried.output.strip().splitlines()[-1])
        assert new["retry_of"] == bulk
        assert [d["iccid"] for d in _status(runner, new["bulk_change_id"])["devices"]] == failed

        wrong = runner.invoke(app, ["retry-failed", str(bulk), "--status", "processed"])
        assert wrong.exit_code == 2 and "only failed changes can be retried" in wrong.output, wrong.output
        typo = runner.invoke(app, ["retry-failed", str(bulk), "--status", "broken"])
        assert typo.exit_code == 2 and "--status takes a failed status" in typo.output, typo.output
        assert runner.invoke(app, ["retry-failed", "999"]).exit_code == 2


def test_list_status_and_export_answer_while_a_worker_holds_the_write_lock(env: Path) -> None:
    """An operator checking on a run on the embedded database: the readers read a snapshot; they neither wait
    for the write lock a worker or a receiver holds (up to SQLite's 30 s, then "database is locked") nor take
    it from them."""
    runner = CliRunner()
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    # Nothing here calls the carrier: a submission is only written down.
    bulk = _submit(runner, env, _provider(runner, "https://carrier.invalid/api"), [_iccid(7), _iccid(8)])
    worker = sqlite3.connect(env / "cli.sqlite3", isolation_level=None)
    try:
        worker.execute("BEGIN IMMEDIATE")  # held, as a worker's transaction holds it
        worker.execute('UPDATE "M2M_DeviceChange" SET "StatusDetails" = \'uncommitted\'')
        assert _status(runner, bulk)["by_status"] == {"READY": 2}
        listed = runner.invoke(app, ["list", "--json"])
        assert listed.exit_code == 0 and json.loads(listed.output)["total"] == 1, listed.output
        exported = runner.invoke(app, ["export", str(bulk)])
        assert exported.exit_code == 0, exported.output
        assert "uncommitted" not in exported.output, "the committed snapshot, not the writer's pending rows"
        assert len(list(csv.reader(exported.output.splitlines()))) == 3
    finally:
        worker.execute("ROLLBACK")
        worker.close()


def test_the_workers_progress_bars_leave_the_write_lock_to_writers(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After each message the worker reads every recent bulk change's counts for its progress bars. On the
    embedded database that read must not hold the write lock: a receiver storing callbacks meanwhile (another
    process) would wait for it."""
    from bulkchange.services import bulk_changes

    real = bulk_changes.recent_progress
    others_could_write: list[bool] = []

    def progress_then_try_to_write(session: Any, *args: Any, **kwargs: Any) -> Any:
        found = real(session, *args, **kwargs)  # the read's transaction is still open here
        other = sqlite3.connect(env / "cli.sqlite3", isolation_level=None, timeout=0)
        try:
            other.execute("BEGIN IMMEDIATE")
            other.execute("ROLLBACK")
            others_could_write.append(True)
        except sqlite3.OperationalError as exc:
            assert "locked" in str(exc)
            others_could_write.append(False)
        finally:
            other.close()
        return found

    monkeypatch.setattr(bulk_changes, "recent_progress", progress_then_try_to_write)
    _work_two_devices(env, [_iccid(11), _iccid(12)])
    assert others_could_write and all(others_could_write), others_could_write


def _work_two_devices(env: Path, iccids: list[str]) -> None:
    """Submit ``iccids`` against a simulator on loopback and run ``worker --until-idle`` (its output captured:
    not a terminal) until the bulk change is PROCESSED."""
    runner = CliRunner()
    sim = Simulator(SimulatorConfig(activation_delay_s=0.1))
    with serve_in_thread(sim.app) as carrier:
        assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
        bulk = _submit(runner, env, _provider(runner, carrier.base_url), iccids)
        worked = runner.invoke(app, ["worker", "--until-idle"])
        assert worked.exit_code == 0, worked.output
    assert _status(runner, bulk)["status"] == "PROCESSED"


def test_a_worker_writing_to_a_file_redraws_no_progress_bars_meanwhile(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rich redraws live progress bars from a thread of their own, ten times a second. Where the output is not
    a terminal nothing shows before the end anyway (the bars are written once as the worker stops), and that
    thread would only take CPU from the worker."""
    from bulkchange.services import bulk_changes

    real = bulk_changes.recent_progress
    redrawing: list[bool] = []

    def progress_noting_redraws(session: Any, *args: Any, **kwargs: Any) -> Any:
        # Rich's live display redraws from a thread of a class of its own (rich.live).
        redrawing.append(any(type(t).__module__.startswith("rich") for t in threading.enumerate()))
        return real(session, *args, **kwargs)

    monkeypatch.setattr(bulk_changes, "recent_progress", progress_noting_redraws)
    _work_two_devices(env, [_iccid(21), _iccid(22)])
    assert redrawing and not any(redrawing), redrawing
