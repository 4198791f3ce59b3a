"""Environment traps, with the installed ``bulkchange`` command in its own process and working directory:
the default database is one per user (the platform's user data directory), never ``./var`` of wherever the
command runs; no command but ``db upgrade`` (or an explicit ``--migrate``) creates or migrates it; and an
``ssm:`` credential that cannot be read (no AWS region) ends the bulk change's attempt with a one-line
reason instead of a traceback and a bulk change stuck in PROCESSING."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from bulkchange.store.migrate import upgrade


def _cli() -> list[str]:
    exe = shutil.which("bulkchange", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "bulkchange.cli.main"]


def _run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.run([*_cli(), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=180, check=False)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """No BULKCHANGE_DATABASE_URL and no AWS configuration; the user's data directory under tmp_path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BULKCHANGE_", "AWS_"))}
    env["XDG_DATA_HOME"] = str(tmp_path / "data")
    env["AWS_CONFIG_FILE"] = str(tmp_path / "no-aws-config")
    env["AWS_SHARED_CREDENTIALS_FILE"] = str(tmp_path / "no-aws-credentials")
    env["BULKCHANGE_SECRET_KEYS"] = Fernet.generate_key().decode()
    env["COLUMNS"] = "200"
    return env


def test_without_a_database_a_command_names_it_and_creates_nothing(tmp_path: Path, env: dict[str, str]) -> None:
    default = tmp_path / "data" / "bulkchange" / "bulkchange.sqlite3"
    for args in (["status", "1"], ["providers", "list"], ["worker", "--until-idle"], ["apikeys", "list"]):
        r = _run(args, env, tmp_path / "elsewhere")
        assert r.returncode != 0, (args, r.stdout, r.stderr)
        assert f"no database at {default}; run `bulkchange db upgrade`" in r.stderr, (args, r.stderr)
        assert "Traceback" not in r.stderr
        assert not default.exists() and not (tmp_path / "elsewhere" / "var").exists()


def test_the_default_database_is_the_same_from_every_folder(tmp_path: Path, env: dict[str, str]) -> None:
    upgraded = _run(["db", "upgrade"], env, tmp_path / "here")
    assert upgraded.returncode == 0, upgraded.stderr
    default = tmp_path / "data" / "bulkchange" / "bulkchange.sqlite3"
    assert str(default) in upgraded.stdout and default.exists()
    status = _run(["status", "1"], env, tmp_path / "there")  # another folder: the same, migrated, database
    assert status.returncode == 2 and "no bulk change 1" in status.stderr, status.stderr
    assert not (tmp_path / "here" / "var").exists() and not (tmp_path / "there" / "var").exists()


def test_a_database_behind_the_head_is_migrated_only_when_asked(tmp_path: Path, env: dict[str, str]) -> None:
    url = f"sqlite:///{tmp_path}/old.sqlite3"
    upgrade(url, "0011")
    env["BULKCHANGE_DATABASE_URL"] = url
    refused = _run(["worker", "--until-idle"], env, tmp_path)
    assert refused.returncode != 0 and "is at revision 0011" in refused.stderr, refused.stderr
    assert "run `bulkchange db upgrade`" in refused.stderr
    migrated = _run(["worker", "--until-idle", "--migrate"], env, tmp_path)
    assert migrated.returncode == 0, migrated.stderr
    assert _run(["worker", "--until-idle"], env, tmp_path).returncode == 0


def test_an_unreadable_ssm_secret_ends_the_attempt_with_a_one_line_reason(tmp_path: Path, env: dict[str, str]) -> None:
    assert _run(["db", "upgrade"], env, tmp_path).returncode == 0
    added = _run(
        [
            *("providers", "add", "--name", "acme", "--base-url", "http://127.0.0.1:9"),
            *("--client-id", "sim-client", "--client-secret", "ssm:/bulkchange/test/client-secret"),
            *("--username", "sim-user", "--password", "sim-pass", "--account", "0000123456-00001", "--json"),
        ],
        env,
        tmp_path,
    )
    assert added.returncode == 0, added.stderr
    provider = str(json.loads(added.stdout.strip().splitlines()[-1])["service_provider_id"])
    rows = tmp_path / "rows.csv"
    rows.write_text("ICCID\n89148000000800784259\n89148000000800784267\n89148000000800784275\n")
    submitted = _run(["submit", str(rows), "--status", "inventory", "--service-provider", provider], env, tmp_path)
    assert submitted.returncode == 0, submitted.stderr

    worked = _run(["worker", "--until-idle"], env, tmp_path)  # returns: nothing is left to do
    assert worked.returncode == 0, worked.stderr
    assert "Traceback" not in worked.stderr + worked.stdout
    status = _run(["status", "1", "--json"], env, tmp_path)
    payload = json.loads(status.stdout)
    assert payload["status"] == "ERROR", payload
    details = payload["details"]
    assert "ThingSpace credentials of service provider" in details and "cannot be read" in details, details
    assert "\n" not in details
    shown = _run(["status", "1"], env, tmp_path)
    assert details.splitlines()[0][:60] in shown.stdout.replace("\n", " ")
