"""What the benchmarks share: free loopback ports, waiting for a server, a fresh database, test device identifiers."""

from __future__ import annotations

import random
import socket
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

import httpx

from bulkchange.domain.identifiers import luhn_check_digit


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, deadline_s: float = 30.0) -> None:
    """Return once ``url`` answers at all (any status); fail after ``deadline_s``."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def new_iccid(rng: random.Random, prefix: str = "8901260") -> str:
    """A valid ICCID (19 digits + Luhn) from ``rng``."""
    body = prefix + "".join(rng.choice("0123456789") for _ in range(12))
    return body + luhn_check_digit(body)


def new_imei(rng: random.Random) -> str:
    """A valid IMEI (14 digits + Luhn) from ``rng``."""
    body = "35" + "".join(rng.choice("0123456789") for _ in range(12))
    return body + luhn_check_digit(body)


def _admin_url(server_url: str) -> str:
    """The server's ``postgres`` database, as a psycopg URL."""
    return server_url.rsplit("/", 1)[0].replace("postgresql+psycopg", "postgresql") + "/postgres"


def drop_database(server_url: str, name: str) -> None:
    """Drop database ``name`` on the server of ``server_url``, closing any connection still open to it."""
    import psycopg

    with psycopg.connect(_admin_url(server_url), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # generated names only


def create_database(server_url: str, prefix: str) -> tuple[str, str]:
    """A brand-new database ``<prefix>_<random>`` on the PostgreSQL server of ``server_url``: (its URL, its name)."""
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(_admin_url(server_url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')  # name is generated here, not user input
    return server_url.rsplit("/", 1)[0] + "/" + name, name


def fresh_database(url: str | None, workdir: Path, stack: ExitStack) -> str:
    """A new SQLite file under ``workdir`` (no URL), a brand-new database on the PostgreSQL server of ``url``
    (dropped when ``stack`` closes: a benchmark must not leave databases behind on the operator's server),
    or ``url`` itself for anything else."""
    if url is None:
        return f"sqlite:///{workdir}/bench-{uuid.uuid4().hex[:6]}.sqlite3"
    if url.startswith("postgresql"):
        created, name = create_database(url, "bench")
        stack.callback(drop_database, url, name)
        return created
    return url
