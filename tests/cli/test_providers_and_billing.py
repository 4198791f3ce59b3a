"""``providers list`` says, per provider, its carrier, tenant, account, whether logins are paused after a
refused one and whether its callback listener is registered; ``billing add`` reads its secrets from
standard input with ``-``, as ``credentials set`` does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from bulkchange.cli.main import app
from bulkchange.security.crypto import reveal
from bulkchange.store.db import make_engine, make_session_factory
from bulkchange.store.migrate import upgrade
from bulkchange.store.tables import IntegrationAuthentication, ThingSpaceAuthentication, utcnow


@pytest.fixture
def db_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path}/cli.sqlite3"
    monkeypatch.setenv("BULKCHANGE_DATABASE_URL", url)
    upgrade(url)
    return url


def _add(runner: CliRunner, name: str, account: str, tenant: str) -> int:
    added = runner.invoke(
        app,
        [
            *("providers", "add", "--name", name, "--base-url", "http://127.0.0.1:9", "--tenant", tenant),
            *("--client-id", "c", "--client-secret", "s", "--username", "u", "--password", "p"),
            *("--account", account, "--json"),
        ],
    )
    assert added.exit_code == 0, added.output
    return int(json.loads(added.output.strip().splitlines()[-1])["service_provider_id"])


def test_providers_list_shows_account_paused_logins_and_callback_registration(db_url: str) -> None:
    runner = CliRunner()
    paused = _add(runner, "paused", "0000123456-00001", "1")
    fine = _add(runner, "fine", "0000999999-00002", "2")
    engine = make_engine(db_url)
    with make_session_factory(engine).begin() as session:
        auth = session.execute(
            select(ThingSpaceAuthentication).where(ThingSpaceAuthentication.service_provider_id == paused)
        ).scalar_one()
        auth.login_failed_at = utcnow()
        auth.login_failure_message = "UnAuthorized: invalid username or password"
        other = session.execute(
            select(ThingSpaceAuthentication).where(ThingSpaceAuthentication.service_provider_id == fine)
        ).scalar_one()
        other.callback_url = "https://bulkchange.example.com/callbacks/thingspace/2"
    engine.dispose()

    listed = runner.invoke(app, ["providers", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    rows = {r["name"]: r for r in json.loads(listed.output)}
    assert rows["paused"]["carrier"] == "thingspace" and rows["paused"]["tenant_id"] == 1
    assert rows["paused"]["account"] == "0000123456-00001"
    assert "invalid username or password" in rows["paused"]["login_paused"]
    assert rows["paused"]["callback_url"] is None
    assert rows["fine"]["login_paused"] is None and rows["fine"]["tenant_id"] == 2
    assert rows["fine"]["callback_url"].endswith("/callbacks/thingspace/2")

    table = runner.invoke(app, ["providers", "list"], env={"COLUMNS": "250"})
    assert table.exit_code == 0, table.output
    assert "0000999999-00002" in table.output and "paused" in table.output
    assert f"providers unlock {paused}" in table.output and "registered" in table.output


def test_billing_add_reads_its_secrets_from_stdin(db_url: str) -> None:
    runner = CliRunner()
    added = runner.invoke(
        app,
        [
            *("billing", "add", "--base-url", "https://rev.example/v1", "--username", "u", "--client-code", "c"),
            *("--password", "-", "--subscription-key", "-", "--json"),
        ],
        input="pw-from-stdin\nsk-from-stdin\n",
    )
    assert added.exit_code == 0, added.output
    assert "pw-from-stdin" not in added.output and "sk-from-stdin" not in added.output
    engine = make_engine(db_url)
    with make_session_factory(engine)() as session:
        row = session.execute(select(IntegrationAuthentication)).scalar_one()
        assert (reveal(row.password), reveal(row.subscription_key)) == ("pw-from-stdin", "sk-from-stdin")
    engine.dispose()
    empty = runner.invoke(
        app,
        [
            *("billing", "add", "--base-url", "https://rev.example/v1", "--username", "u", "--client-code", "c"),
            *("--password", "-", "--subscription-key", "x"),
        ],
        input="\n",
    )
    assert empty.exit_code != 0 and "standard input" in empty.output
