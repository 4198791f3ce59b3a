"""`bulkchange submit` of devices another bulk change holds: the per-row report, also when only the
database's unique index catches it (the early check disabled)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from bulkchange.cli.main import app
from bulkchange.domain.identifiers import luhn_check_digit
from bulkchange.engine.submit import RowValidator
from bulkchange.store.migrate import upgrade


def _iccid(n: int) -> str:
    body = f"89148000{n:011d}"
    return body + luhn_check_digit(body)


def _last_json(output: str) -> Any:
    return json.loads(output.strip().splitlines()[-1])


@pytest.mark.parametrize("early_check", [True, False], ids=["early-check", "index-only"])
def test_a_second_submission_of_held_devices_prints_the_per_row_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, early_check: bool
) -> None:
    monkeypatch.setenv("BULKCHANGE_DATABASE_URL", f"sqlite:///{tmp_path}/cli.sqlite3")
    upgrade(f"sqlite:///{tmp_path}/cli.sqlite3")  # as `bulkchange db upgrade` does
    if not early_check:
        original = RowValidator._facts

        def facts_without_busy_devices(self: RowValidator, iccids: list[str]) -> Any:
            facts = original(self, iccids)
            facts.busy.clear()
            return facts

        monkeypatch.setattr(RowValidator, "_facts", facts_without_busy_devices)
    runner = CliRunner()
    added = runner.invoke(
        app,
        [
            *("providers", "add", "--name", "acme", "--base-url", "http://127.0.0.1:9"),
            *("--client-id", "c", "--client-secret", "s", "--username", "u", "--password", "p"),
            *("--account", "0000123456-00001", "--json"),
        ],
    )
    assert added.exit_code == 0, added.output
    provider = str(_last_json(added.output)["service_provider_id"])
    held = tmp_path / "held.csv"
    held.write_text("ICCID\n" + "".join(f"{_iccid(n)}\n" for n in (1, 2)))
    first = runner.invoke(app, ["submit", str(held), "--status", "inventory", "--service-provider", provider, "--json"])
    assert first.exit_code == 0, first.output
    holder = _last_json(first.output)["bulk_change_id"]

    again = tmp_path / "again.csv"
    again.write_text(f"ICCID\n{_iccid(3)}\n{_iccid(2)}\n")
    second = runner.invoke(
        app, ["submit", str(again), "--status", "inventory", "--service-provider", provider, "--json"]
    )

    assert second.exit_code == 1, second.output
    assert _last_json(second.output) == {
        "refused": True,
        "rows": 2,
        "problems": [
            {
                "row": 3,  # the spreadsheet's line: the header is line 1
                "field": "ICCID",
                "message": f"device already has an unfinished change in bulk change {holder}",
                "iccid": _iccid(2),
            }
        ],
        "problems_omitted": 0,
    }
