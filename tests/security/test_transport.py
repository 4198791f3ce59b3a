"""Transport: https for carrier / billing / webhook URLs (except loopback); database connections encrypted
when the URL says so — checked against the local PostgreSQL server, whatever it supports."""

from __future__ import annotations

import psycopg
import pytest
from pydantic import ValidationError
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.exc import OperationalError

from bulkchange.integrations.settings import IntegrationSettings
from bulkchange.security.transport import InsecureUrlError, database_transport, is_loopback, require_https


@pytest.mark.parametrize(
    "url",
    [
        "https://thingspace.verizon.com",
        "https://api.revioapi.com/v1",
        "http://127.0.0.1:8765",
        "http://127.5.6.7/x",
        "http://localhost:9000/hook",
        "http://[::1]:8080/",
    ],
)
def test_allowed_urls(url: str) -> None:
    assert require_https(url, "URL") == url


@pytest.mark.parametrize(
    "url",
    [
        "http://thingspace.verizon.com",
        "http://10.0.0.5/hook",
        "http://127.0.0.1.evil.example/",
        "ftp://example.com/",
        "thingspace.verizon.com",
        "https://user:pass@example.com/",
        "http://localhost.evil.example/",
    ],
)
def test_refused_urls(url: str) -> None:
    with pytest.raises(InsecureUrlError):
        require_https(url, "URL")


def test_loopback_names() -> None:
    assert is_loopback("localhost") and is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("a.localhost")
    assert not is_loopback("example.com") and not is_loopback("10.0.0.1") and not is_loopback(None)


def test_webhook_url_setting_is_validated() -> None:
    assert IntegrationSettings(webhook_url="https://hooks.example.com/bc").webhook_url == "https://hooks.example.com/bc"
    assert IntegrationSettings(webhook_url="http://127.0.0.1:9/h").webhook_url == "http://127.0.0.1:9/h"
    with pytest.raises(ValidationError, match="https"):
        IntegrationSettings(webhook_url="http://hooks.example.com/bc")


def test_database_transport_classification() -> None:
    assert database_transport("sqlite:///./var/x.sqlite3") == "local"
    assert database_transport("postgresql+psycopg://u@db.example.com/bc") == "unencrypted"
    assert database_transport("postgresql+psycopg://u@db.example.com/bc?sslmode=require") == "encrypted"
    assert database_transport("postgresql+psycopg://u@db.example.com/bc?sslmode=verify-full") == "encrypted"
    assert database_transport("postgresql+psycopg://u@127.0.0.1/bc") == "local"
    mssql = "mssql+pyodbc://u:p@sql.example.com/bc?driver=ODBC+Driver+18+for+SQL+Server"
    assert database_transport(mssql) == "unencrypted"
    assert database_transport(mssql + "&Encrypt=yes") == "encrypted"


@pytest.mark.postgres
def test_postgres_sslmode_require_is_honoured(pg_url: str) -> None:
    """``sslmode=require`` in BULKCHANGE_DATABASE_URL reaches the driver: the connection is encrypted, or —
    when the server has no TLS (the local test server has none) — refused, never silently in clear text."""
    url = make_url(pg_url).update_query_dict({"sslmode": "require"})
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            encrypted = conn.execute(text("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")).scalar_one()
            assert encrypted is True
    except OperationalError as exc:
        assert isinstance(exc.orig, psycopg.OperationalError)
        # The local test server has no TLS: the required encryption was refused, not dropped (the encrypted
        # branch above runs against a server with ssl=on; docs/security.md says this one has none).
        assert "SSL" in str(exc.orig), exc.orig
    finally:
        engine.dispose()
