"""``bulkchange submit`` with the queue unreachable: the bulk change is created, the command says its wake-up
is pending and succeeds (it used to fail after the commit, leaving the change for a later worker start)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bulkchange.cli.main import app
from bulkchange.domain.identifiers import luhn_check_digit
from bulkchange.engine.outbox import wakeup_pending
from bulkchange.runtime import build_runtime
from bulkchange.settings import Settings
from bulkchange.store.migrate import upgrade


def _iccid(n: int) -> str:
    body = f"89148000{n:011d}"
    return body + luhn_check_digit(body)


def _dead_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_submit_with_the_queue_down_creates_the_bulk_change_and_warns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db_url = f"sqlite:///{tmp_path}/cli.sqlite3"
    monkeypatch.setenv("BULKCHANGE_DATABASE_URL", db_url)
    upgrade(db_url)  # as `bulkchange db upgrade` does
    runner = CliRunner()
    added = runner.invoke(
        app,
        [
            "providers", "add", "--name", "acme", "--base-url", "http://127.0.0.1:9", "--client-id", "sim-client",
            "--client-secret", "sim-secret", "--username", "sim-user", "--password", "sim-pass",
            "--account", "0000123456-00001", "--json",
        ],
    )  # fmt: skip
    assert added.exit_code == 0, added.output
    provider = json.loads(added.stdout.strip().splitlines()[-1])["service_provider_id"]
    rows = tmp_path / "rows.csv"
    rows.write_text(f"ICCID,Status\n{_iccid(1)},inventory\n{_iccid(2)},inventory\n")

    port = _dead_port()  # an SQS endpoint where nothing answers
    for name, value in {
        "DEVICE_BULK_CHANGE_QUEUE_URL": f"http://127.0.0.1:{port}/123456789012/bulk",
        "BULKCHANGE_AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }.items():
        monkeypatch.setenv(name, value)
    submitted = runner.invoke(
        app, ["submit", str(rows), "--status", "inventory", "--service-provider", str(provider), "--json"]
    )
    assert submitted.exit_code == 0, submitted.output
    result = json.loads(submitted.stdout.strip().splitlines()[-1])
    assert result["devices"] == 2 and "wake-up" in result["warnings"][0]
    assert "warning:" in submitted.stderr and "wake-up" in submitted.stderr
    rt = build_runtime(Settings(database_url=db_url), migrate=False)
    try:
        with rt.session_factory() as session:
            assert wakeup_pending(session, result["bulk_change_id"])  # on record, for the running workers
    finally:
        rt.close()
