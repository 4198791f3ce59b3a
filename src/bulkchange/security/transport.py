"""Transport rules: carrier, billing and webhook URLs are https, except on loopback (tests, the demo, a
local stand-in); database URLs say whether their connection is encrypted.
"""

from __future__ import annotations

import functools
import ipaddress
import ssl
from urllib.parse import urlsplit

import httpx
from sqlalchemy.engine import make_url

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


class InsecureUrlError(ValueError):
    """A URL that would send credentials or device data in clear text."""


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    name = host.strip("[]").lower()
    if name in LOOPBACK_NAMES or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def require_https(url: str, what: str) -> str:
    """``url`` unchanged when it is https (or http on loopback); ``InsecureUrlError`` otherwise."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise InsecureUrlError(f"{what} must be an absolute https:// URL, not {url!r}")
    if parts.username or parts.password:
        raise InsecureUrlError(f"{what} must not carry credentials in the URL")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise InsecureUrlError(
            f"{what} must use https:// (plain http is allowed only on loopback: localhost, 127.0.0.0/8, ::1)"
        )
    return url


def database_transport(url: str) -> str:
    """How a database URL's connection is protected: ``local``, ``encrypted`` or ``unencrypted``.

    PostgreSQL: ``sslmode=require`` (or ``verify-ca`` / ``verify-full``, which also check the server);
    SQL Server (pyodbc): ``Encrypt=yes`` in the query / ``odbc_connect`` string. SQLite is a local file.
    """
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    query = {k.lower(): str(v).lower() for k, v in parsed.query.items()}
    if backend == "sqlite":
        return "local"
    if backend == "postgresql":
        if query.get("sslmode") in ("require", "verify-ca", "verify-full"):
            return "encrypted"
        return "local" if is_loopback(parsed.host) or parsed.host is None else "unencrypted"
    if backend == "mssql":
        text = " ".join(f"{k}={v}" for k, v in query.items()).replace(" ", "")
        if "encrypt=yes" in text or "encrypt=true" in text or "encrypt%3dyes" in text or "encrypt=strict" in text:
            return "encrypted"
        return "local" if is_loopback(parsed.host) else "unencrypted"
    return "unencrypted"


@functools.cache
def tls_context() -> ssl.SSLContext:
    """The one verifying TLS context every outbound client shares (carrier, billing, webhooks, metrics).

    httpx builds a fresh context for each client it makes, and loading the CA bundle costs about 27 ms of
    CPU each time; the worker makes a carrier client per message (about 36, ~1 s of CPU, for 10,000
    devices). A context is safe to share between connections and threads once built. Same verification as
    httpx's default (its CA bundle, ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` honoured).
    """
    return httpx.create_ssl_context()


OUTBOUND_KEEPALIVE_S = 2.0
"""How long an idle outbound connection is kept for reuse: well under 5 s, the idle timeout of many servers
(uvicorn, Apache, Node.js) and httpx's own default expiry.

At equal values a request can go out on a connection the server is closing at that moment; the server never
reads it and the client sees the connection drop (``ReadError``) after sending. For a provisioning call that
is an unknown outcome, settled only by a reconcile after ``reconcile_window_s``, which stretches a large run
by minutes (docs/benchmarks.md). ThingSpace does not document its own idle timeout."""


def outbound_limits() -> httpx.Limits:
    """httpx's default pool sizes, with the shorter keep-alive (``OUTBOUND_KEEPALIVE_S``)."""
    return httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=OUTBOUND_KEEPALIVE_S)
