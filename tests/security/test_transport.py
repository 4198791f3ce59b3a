"""Transport: https for carrier / billing / webhook URLs (except loopback); database connections encrypted
when the URL says so — checked against the local PostgreSQL server, whatever it supports."""

from __future__ import annotations

import asyncio
import datetime
import http.server
import ipaddress
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import SecretStr, ValidationError
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.exc import OperationalError

from bulkchange.carrier.errors import CarrierError
from bulkchange.carrier.port import SessionServices
from bulkchange.carrier.thingspace.client import ThingSpaceClient
from bulkchange.carrier.thingspace.models import ThingSpaceConnection
from bulkchange.integrations.revio import RevioClient, RevioConnection
from bulkchange.integrations.settings import IntegrationSettings
from bulkchange.metrics import observe_carrier_calls
from bulkchange.security import transport
from bulkchange.security.transport import (
    OUTBOUND_KEEPALIVE_S,
    InsecureUrlError,
    database_transport,
    is_loopback,
    require_https,
    tls_context,
)


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


@pytest.fixture
def self_signed_https_url(tmp_path: Path) -> Iterator[str]:
    """An https server on loopback whose certificate no CA signed: a client that verifies must refuse it."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _connection(base_url: str) -> ThingSpaceConnection:
    return ThingSpaceConnection(
        base_url=base_url,
        client_id="id",
        client_secret=SecretStr("secret"),
        username="user",
        password=SecretStr("password"),
        account_name="0000123456-00001",
    )


def test_shared_tls_context_verifies_certificates(self_signed_https_url: str) -> None:
    """Every outbound client shares one context (built once: loading the CA bundle is costly); sharing it
    must not weaken it — the carrier client still refuses a certificate no trusted CA signed."""
    assert tls_context() is tls_context()
    assert tls_context().verify_mode == ssl.CERT_REQUIRED and tls_context().check_hostname

    async def call() -> None:
        async with ThingSpaceClient(_connection(self_signed_https_url), max_attempts=1) as client:
            await client.authenticate()

    with pytest.raises(CarrierError) as refused:
        asyncio.run(call())
    causes = []
    error: BaseException | None = refused.value
    while error is not None:
        causes.append(error)
        error = error.__cause__ or error.__context__
    assert any(isinstance(e, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(e) for e in causes)


class _CountingHandler(http.server.BaseHTTPRequestHandler):
    """HTTP/1.1 with keep-alive; counts the TCP connections it is given."""

    protocol_version = "HTTP/1.1"
    connections = 0

    def setup(self) -> None:
        type(self).connections += 1
        super().setup()

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def counting_server() -> Iterator[tuple[str, type[_CountingHandler]]]:
    handler = type("Handler", (_CountingHandler,), {"connections": 0})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


def test_outbound_keepalive_is_shorter_than_common_server_idle_timeouts() -> None:
    # uvicorn, Apache and Node.js close idle connections after 5 s; at equal values a request can go out on
    # a connection the server is closing (an unknown outcome for a provisioning call).
    assert OUTBOUND_KEEPALIVE_S < 5


def test_outbound_clients_do_not_reuse_a_connection_idle_past_the_keepalive(
    counting_server: tuple[str, type[_CountingHandler]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The carrier client (plain and instrumented, as ``serve`` builds it) and the billing client reuse a
    connection between calls close together, and open a new one once it idled past the keep-alive."""
    url, handler = counting_server
    monkeypatch.setattr(transport, "OUTBOUND_KEEPALIVE_S", 0.05)
    observed = observe_carrier_calls(SessionServices())
    clients = {
        "carrier": ThingSpaceClient(_connection(url)),
        "carrier (instrumented)": ThingSpaceClient(_connection(url), http=observed.http_client()),
        "billing": RevioClient(RevioConnection(url, "user", "client", "password", "key")),
    }

    async def calls(http: httpx.AsyncClient) -> None:
        await http.get(f"{url}/a")
        await http.get(f"{url}/b")  # right after: the same connection
        await asyncio.sleep(0.2)  # idle well past the (patched) keep-alive
        await http.get(f"{url}/c")  # a new connection
        await http.aclose()

    for name, client in clients.items():
        before = handler.connections
        asyncio.run(calls(client._http))
        assert handler.connections - before == 2, name
