"""Commands that name something that does not exist refuse with one line and a non-zero exit."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from bulkchange.cli.main import app


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("BULKCHANGE_DATABASE_URL", f"sqlite:///{tmp_path}/cli.sqlite3")
    return tmp_path


def test_unlocking_a_provider_that_does_not_exist_fails_with_one_line(env: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    result = runner.invoke(app, ["providers", "unlock", "9"])
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines == ["refused: no service provider 9"]


def test_rerun_billing_refuses_an_unknown_bulk_change_and_an_empty_selection(env: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    unknown = runner.invoke(app, ["rerun-billing", "42"])
    assert unknown.exit_code == 2
    assert [line for line in unknown.output.splitlines() if line.strip()] == ["refused: no bulk change 42"]
    bad = runner.invoke(app, ["rerun-billing", "42", "--status", "PROCESSED"])
    assert bad.exit_code == 2 and "can be re-run" in bad.output
