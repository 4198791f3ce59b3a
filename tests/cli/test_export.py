"""``bulkchange export``: the results of a bulk change as CSV (the REST API's export.csv), to stdout or a
file; an unknown bulk change is named, exit 2."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bulkchange.cli.main import app
from bulkchange.services.exports import EXPORT_COLUMNS

from .test_examples import EXAMPLES


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("BULKCHANGE_DATABASE_URL", f"sqlite:///{tmp_path}/export.sqlite3")
    assert CliRunner().invoke(app, ["db", "upgrade"]).exit_code == 0
    return tmp_path


def test_export_writes_one_line_per_device_change(env: Path) -> None:
    runner = CliRunner()
    added = runner.invoke(
        app,
        [
            *("providers", "add", "--name", "sim", "--base-url", "http://127.0.0.1:9"),
            *("--client-id", "c", "--client-secret", "s", "--username", "u", "--password", "p"),
            *("--account", "0000123456-00001", "--json"),
        ],
    )
    assert added.exit_code == 0, added.output
    provider = str(json.loads(added.output.strip().splitlines()[-1])["service_provider_id"])
    submitted = runner.invoke(
        app, ["submit", str(EXAMPLES / "inventory.csv"), "--status", "inventory", "--service-provider", provider]
    )
    assert submitted.exit_code == 0, submitted.output
    bulk = submitted.output.strip().splitlines()[-1]

    shown = runner.invoke(app, ["export", bulk])
    assert shown.exit_code == 0, shown.output
    rows = list(csv.reader(io.StringIO(shown.stdout)))
    assert rows[0] == EXPORT_COLUMNS and len(rows) == 1 + 2
    assert {r[EXPORT_COLUMNS.index("Status")] for r in rows[1:]} == {"READY"}

    written = runner.invoke(app, ["export", bulk, "-o", str(env / "out.csv")])
    assert written.exit_code == 0, written.output
    assert (env / "out.csv").read_text(encoding="utf-8") == shown.stdout


def test_export_of_an_unknown_bulk_change_says_so(env: Path) -> None:
    result = CliRunner().invoke(app, ["export", "99"])
    assert result.exit_code == 2 and "no bulk change 99" in result.output
