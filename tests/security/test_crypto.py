"""Secrets at rest: encrypted on every write path, legacy plaintext still works, rotation, the key file."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from sqlalchemy import create_engine, insert, select, text, update
from sqlalchemy.orm import Session, object_session
from typer.testing import CliRunner

from bulkchange.carrier.thingspace.adapter import connection_for as thingspace_connection
from bulkchange.carrier.thingspace.models import ThingSpaceConnection
from bulkchange.cli.main import app
from bulkchange.engine.accounts import SecretResolver, load_account
from bulkchange.providers import add_provider
from bulkchange.security import crypto
from bulkchange.services import credentials as creds
from bulkchange.store.tables import IntegrationAuthentication, ThingSpaceAuthentication

from .conftest import use_keys

SECRET = "client-secret-value-1"
PASSWORD = "carrier-password-value-2"


def _raw(url: str, table: str, column: str) -> list[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return [r[0] for r in conn.execute(text(f'SELECT "{column}" FROM "{table}" ORDER BY id'))]
    finally:
        engine.dispose()


def _provider(session: Session, name: str = "acme") -> int:
    return add_provider(
        session,
        name=name,
        base_url="https://thingspace.example.com",
        client_id="client-id",
        client_secret=SECRET,
        username="user",
        password=PASSWORD,
        account="0000123456-00001",
    )


def test_round_trip_and_what_is_stored(secret_keys: list[str]) -> None:
    stored = crypto.encrypt("s3cret-value")
    assert stored.startswith("enc:v1:") and "s3cret" not in stored
    assert crypto.reveal(stored) == "s3cret-value"
    assert crypto.encrypt(stored) == stored, "never encrypted twice"
    assert crypto.encrypt("ssm:/bulkchange/password") == "ssm:/bulkchange/password", "a reference is kept"
    assert crypto.reveal("legacy-plaintext") == "legacy-plaintext"


def connection_for(auth: ThingSpaceAuthentication, resolve: SecretResolver | None = None) -> ThingSpaceConnection:
    """The ThingSpace connection the engine would use for the provider of ``auth`` (its secrets decrypted)."""
    session = object_session(auth)
    assert session is not None
    return thingspace_connection(load_account(session, auth.service_provider_id, resolve))


def test_every_write_path_stores_ciphertext_and_connection_for_decrypts(secret_keys: list[str], db_url: str) -> None:
    engine = create_engine(db_url)
    with Session(engine) as session:
        provider_id = _provider(session)
        # Core insert and update go through the column type as well.
        session.execute(
            insert(IntegrationAuthentication).values(
                tenant_id=1,
                base_url="https://api.revioapi.com/v1",
                username="rev",
                client_code="cc",
                password="rev-password-3",
                subscription_key="rev-subscription-4",
            )
        )
        session.execute(update(IntegrationAuthentication).values(password="rev-password-5"))
        session.commit()
        auth = session.execute(select(ThingSpaceAuthentication)).scalar_one()
        assert auth.client_secret.startswith("enc:v1:"), "the ORM object holds what is stored"
        connection = connection_for(auth)
        assert (
            connection.client_secret.get_secret_value() == SECRET and connection.password.get_secret_value() == PASSWORD
        )
    engine.dispose()
    stored = " ".join(
        _raw(db_url, "ThingSpaceAuthentication", "ClientSecret")
        + _raw(db_url, "ThingSpaceAuthentication", "Password")
        + _raw(db_url, "IntegrationAuthentication", "Password")
        + _raw(db_url, "IntegrationAuthentication", "SubscriptionKey")
    )
    for plaintext in (SECRET, PASSWORD, "rev-password-3", "rev-password-5", "rev-subscription-4"):
        assert plaintext not in stored
    assert stored.count("enc:v1:") == 4
    assert provider_id == 1


def test_legacy_plaintext_rows_work_and_rotate_encrypts_them(
    secret_keys: list[str], db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = create_engine(db_url)
    with engine.begin() as conn:  # a row as the original system left it: plaintext, written past the ORM
        conn.execute(
            text(
                'INSERT INTO "ServiceProvider" (id, "Name", "IntegrationId", "TenantId", '
                '"RegisterCarrierServiceCallBack", "IsActive", "IsDeleted", "CreatedDate") '
                "VALUES (1, 'legacy', 1, 1, 0, 1, 0, '2026-01-01')"
            )
        )
        conn.execute(
            text(
                'INSERT INTO "ThingSpaceAuthentication" ("ServiceProviderId", "BaseUrl", '
                '"AuthTokenUrl", "AuthUrl", "ClientId", "ClientSecret", "Username", "Password", '
                '"AccountNumber", "WriteIsEnabled", "IsActive", "IsDeleted") VALUES (1, '
                "'https://x', 'https://x/t', 'https://x/l', 'id', :s, 'u', 'ssm:/bc/password', 'a', 1, 1, 0)"
            ),
            {"s": SECRET},
        )
    with Session(engine) as session:
        auth = session.execute(select(ThingSpaceAuthentication)).scalar_one()
        assert (
            connection_for(
                auth, resolve=lambda v: "resolved" if v.startswith("ssm:") else v
            ).client_secret.get_secret_value()
            == SECRET
        )
        assert creds.status(session) == {"plaintext": 1, "reference": 1}
        result = creds.rotate(session)
        assert (result.encrypted, result.reencrypted, result.unchanged) == (1, 0, 1)
        assert creds.status(session) == {"current": 1, "reference": 1}
    assert SECRET not in _raw(db_url, "ThingSpaceAuthentication", "ClientSecret")[0]
    assert _raw(db_url, "ThingSpaceAuthentication", "Password") == ["ssm:/bc/password"], "references stay as they are"

    # Key rotation: a new key first, the old one still listed → rotate → the old key can go.
    old = secret_keys[0]
    new = crypto.generate_key()
    use_keys(monkeypatch, [new, old])
    with Session(engine) as session:
        assert creds.status(session) == {"old-key": 1, "reference": 1}
        assert creds.rotate(session).reencrypted == 1
    use_keys(monkeypatch, [new])
    with Session(engine) as session:
        auth = session.execute(select(ThingSpaceAuthentication)).scalar_one()
        assert connection_for(auth).client_secret.get_secret_value() == SECRET
    # Without the key that encrypted it: a clear bulk-level failure, never garbage.
    use_keys(monkeypatch, [crypto.generate_key()])
    from bulkchange.domain.errors import BulkFailure

    with Session(engine) as session:
        auth = session.execute(select(ThingSpaceAuthentication)).scalar_one()
        with pytest.raises(BulkFailure, match="cannot be decrypted"):
            connection_for(auth)
        with pytest.raises(crypto.SecretKeyError):
            creds.rotate(session)
    engine.dispose()


def test_a_missing_key_is_generated_into_the_user_data_dir_with_0600(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(crypto.KEYS_ENV, raising=False)
    monkeypatch.delenv(crypto.KEY_FILE_ENV, raising=False)
    crypto.reset_keyring()
    try:
        stored = crypto.encrypt("generated-key-secret")
        key_file = tmp_path / "data" / "bulkchange" / "secret.keys"
        assert key_file.exists() and not (tmp_path / "var").exists()
        assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
        crypto.reset_keyring()  # another process: reads the same file
        assert crypto.reveal(stored) == "generated-key-secret"
    finally:
        crypto.reset_keyring()


def test_bad_keys_are_refused_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(crypto.SecretKeyError, match="not a Fernet key"):
        crypto.load_keyring({crypto.KEYS_ENV: "not-a-key"})
    with pytest.raises(crypto.SecretKeyError, match="does not exist"):
        crypto.load_keyring({crypto.KEY_FILE_ENV: "/nonexistent/keys"})


def test_cli_credentials_set_rotate_status_and_apikeys(
    secret_keys: list[str], db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BULKCHANGE_DATABASE_URL", db_url)
    runner = CliRunner()
    engine = create_engine(db_url)
    with Session(engine) as session:
        provider_id = _provider(session)
    result = runner.invoke(
        app, ["credentials", "set", "--provider", str(provider_id), "--password", "-"], input="new-password-6\n"
    )
    assert result.exit_code == 0, result.output
    assert "new-password-6" not in result.output
    assert all(v.startswith("enc:v1:") for v in _raw(db_url, "ThingSpaceAuthentication", "Password"))
    with Session(engine) as session:
        auth = session.execute(select(ThingSpaceAuthentication)).scalar_one()
        assert connection_for(auth).password.get_secret_value() == "new-password-6"

    status = runner.invoke(app, ["credentials", "status", "--json"])
    assert json.loads(status.stdout)["fields"] == {"current": 3}  # the generated callback password too
    new = runner.invoke(app, ["credentials", "generate-key"]).stdout.strip()
    use_keys(monkeypatch, [new, secret_keys[0]])
    rotated = runner.invoke(app, ["credentials", "rotate", "--json"])
    assert json.loads(rotated.stdout) == {"encrypted": 0, "reencrypted": 3, "unchanged": 0}

    created = runner.invoke(app, ["apikeys", "create", "--tenant", "1", "--json"])
    key = json.loads(created.stdout)["key"]
    assert key.startswith("bck_")
    listed = runner.invoke(app, ["apikeys", "list"])
    assert key not in listed.stdout and key[:12] in listed.stdout
    with engine.connect() as conn:
        stored = " ".join(str(v) for row in conn.execute(text('SELECT * FROM "ApiKey"')) for v in row)
    assert key not in stored, "only the key's hash is stored"
    assert runner.invoke(app, ["apikeys", "revoke", "1"]).exit_code == 0
    again = runner.invoke(app, ["apikeys", "revoke", "1"])  # already revoked: refused, not "done"
    assert again.exit_code == 2 and "no active API key 1" in again.output
    refused = runner.invoke(app, ["credentials", "set", "--billing", "1", "--base-url", "http://billing.example.com"])
    assert refused.exit_code == 2
    engine.dispose()


def test_providers_add_refuses_plain_http_except_on_loopback(secret_keys: list[str], db_url: str) -> None:
    engine = create_engine(db_url)
    with Session(engine) as session:
        with pytest.raises(ValueError, match="https"):
            add_provider(
                session,
                name="x",
                base_url="http://thingspace.example.com",
                client_id="i",
                client_secret="s" * 8,
                username="u",
                password="p" * 8,
                account="a",
            )
        assert add_provider(
            session,
            name="y",
            base_url="http://127.0.0.1:8765",
            client_id="i",
            client_secret="s" * 8,
            username="u",
            password="p" * 8,
            account="a",
        )
    engine.dispose()
