"""Misconfigurations fed to the real ``bulkchange`` command: one readable line, a non-zero exit, no secret.

``providers add`` with a secret too long for its column, or with a missing or malformed key file, printed
SQLAlchemy's ``[parameters: …]`` — the plaintext password and client secret — in a ~450-line traceback.
Each case here runs the installed command in its own process (its own environment, its own key loading)
and scans everything it printed, stdout and stderr, for the secrets it was given.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from bulkchange.store.migrate import upgrade

PASSWORD = "Pw-0f-the-0perator"  # a test value the output must never show
CLIENT_SECRET = "cs-" + "Q7" * 10
DB_PASSWORD = "db-pass-9f3e1"


def _cli() -> list[str]:
    exe = shutil.which("bulkchange", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "bulkchange.cli.main"]


def _run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*_cli(), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture
def base_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BULKCHANGE_")}
    env["BULKCHANGE_DATABASE_URL"] = f"sqlite:///{tmp_path}/config.sqlite3"
    upgrade(env["BULKCHANGE_DATABASE_URL"])  # as `bulkchange db upgrade` does
    env["BULKCHANGE_SECRET_KEYS"] = Fernet.generate_key().decode()
    env["COLUMNS"] = "80"  # a narrow terminal must not wrap the one line
    return env


def _provider_args(*, client_secret: str = CLIENT_SECRET, client_id: str = "sim-client") -> list[str]:
    return [
        "providers",
        "add",
        "--name",
        "acme",
        "--base-url",
        "http://127.0.0.1:9",
        "--client-id",
        client_id,
        "--client-secret",
        client_secret,
        "--username",
        "operator",
        "--password",
        PASSWORD,
        "--account",
        "0000123456-00001",
    ]


def _one_line_refusal(done: subprocess.CompletedProcess[str], *secrets: str) -> str:
    output = done.stdout + done.stderr
    for secret in secrets:
        assert secret not in output, output
    assert "parameters" not in output.lower(), output
    assert "Traceback" not in output, output
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    assert done.returncode != 0
    return lines[0]


def test_a_client_secret_too_long_for_its_column(base_env: dict[str, str], tmp_path: Path) -> None:
    long_secret = "S3cr" * 100  # 400 characters: encrypted, more than the 500 the column holds
    done = _run(_provider_args(client_secret=long_secret), base_env, tmp_path)
    line = _one_line_refusal(done, long_secret, long_secret[:40], PASSWORD)
    assert "client secret is too long" in line and "500" in line and "ssm:" in line


def test_a_client_id_longer_than_its_column(base_env: dict[str, str], tmp_path: Path) -> None:
    done = _run(_provider_args(client_id="c" * 300), base_env, tmp_path)
    line = _one_line_refusal(done, PASSWORD, CLIENT_SECRET)
    assert "client id is longer than 200 characters" in line


def test_a_missing_key_file(base_env: dict[str, str], tmp_path: Path) -> None:
    env = {k: v for k, v in base_env.items() if k != "BULKCHANGE_SECRET_KEYS"}
    env["BULKCHANGE_SECRET_KEY_FILE"] = str(tmp_path / "nowhere" / "secret.keys")
    line = _one_line_refusal(_run(_provider_args(), env, tmp_path), PASSWORD, CLIENT_SECRET)
    assert "BULKCHANGE_SECRET_KEY_FILE" in line and "does not exist" in line


def test_a_malformed_key_file(base_env: dict[str, str], tmp_path: Path) -> None:
    key_file = tmp_path / "secret.keys"
    key_file.write_text("not-a-fernet-key\n")
    key_file.chmod(0o600)
    env = {k: v for k, v in base_env.items() if k != "BULKCHANGE_SECRET_KEYS"}
    env["BULKCHANGE_SECRET_KEY_FILE"] = str(key_file)
    line = _one_line_refusal(_run(_provider_args(), env, tmp_path), PASSWORD, CLIENT_SECRET)
    assert "not a Fernet key" in line and "generate-key" in line


def test_malformed_keys_in_the_environment(base_env: dict[str, str], tmp_path: Path) -> None:
    env = {**base_env, "BULKCHANGE_SECRET_KEYS": "tooshort"}
    line = _one_line_refusal(_run(_provider_args(), env, tmp_path), PASSWORD, CLIENT_SECRET, "tooshort")
    assert "BULKCHANGE_SECRET_KEYS" in line


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (f"postgresql+psycopg://bob:{DB_PASSWORD}@127.0.0.1:notaport/bulk", "cannot be parsed"),
        (f"nosuchdb://bob:{DB_PASSWORD}@127.0.0.1/bulk", "unknown database or driver"),
        (f"postgresql+psycopg://bob:{DB_PASSWORD}@127.0.0.1:9/bulk", "cannot reach the database"),
    ],
)
def test_a_bad_database_url(base_env: dict[str, str], tmp_path: Path, url: str, expected: str) -> None:
    env = {**base_env, "BULKCHANGE_DATABASE_URL": url}
    line = _one_line_refusal(_run(_provider_args(), env, tmp_path), DB_PASSWORD, PASSWORD, CLIENT_SECRET)
    assert expected in line and "BULKCHANGE_DATABASE_URL" in line


def test_an_invalid_setting(base_env: dict[str, str], tmp_path: Path) -> None:
    env = {**base_env, "BULKCHANGE_LEASE_SECONDS": "soon"}
    line = _one_line_refusal(_run(["providers", "list"], env, tmp_path))
    assert "lease_seconds" in line


def test_the_same_provider_added_correctly_works(base_env: dict[str, str], tmp_path: Path) -> None:
    """The refusals above are about the values, not the command: with sane values it succeeds."""
    done = _run(_provider_args(), base_env, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert PASSWORD not in done.stdout + done.stderr
