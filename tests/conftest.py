"""Fixtures shared by every test folder: PostgreSQL databases that are fresh for each run and each test.

PostgreSQL is the server on 127.0.0.1:5432 with trust auth (``BULKCHANGE_TEST_PG_HOST`` / ``_PORT`` /
``_USER`` override it). Nothing is written into the server's existing databases:

* ``pg_url`` (session) — a database created for this test run, migrated to head, dropped at the end.
  Tests that use it share it for the run; each must work on rows it created itself.
* ``pg_empty_url`` / ``pg_migrated_url`` (per test) — a brand-new database (empty, or migrated to head),
  dropped after the test, for tests that look at the whole schema or count rows table-wide.

Every database this run creates is named ``bc_<run id>_…``; the session's end drops any that a
crashed teardown left behind. Without a reachable server the PostgreSQL tests are skipped with the
reason, except under ``CI=true`` where they fail: CI must not pass by silently testing less.

The SQLite counterparts stay in the folders' own conftest files (each folder wants its file in a
different place); only the server-side plumbing is shared here.
"""

from __future__ import annotations

import gc
import itertools
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
from cryptography.fernet import Fernet

from bulkchange.logging_setup import configure_logging

# Credentials are encrypted at rest (bulkchange.security.crypto): one key for the whole run, inherited by
# every worker process a test starts whatever its working directory (never ./var/secret.keys).
os.environ.setdefault("BULKCHANGE_SECRET_KEYS", Fernet.generate_key().decode("ascii"))


def pytest_configure(config: pytest.Config) -> None:
    """Logging set up as every entry point sets it up (``cli``, the Lambda handlers), before any test.

    Unconfigured, structlog renders an exception with Rich, every frame's locals included, and without the
    redaction processor: a test that logged an exception (a database down) then took seconds to answer and
    timed out on a slow machine — or passed, when an earlier test had happened to configure logging.
    """
    configure_logging("INFO")


PG_HOST = os.environ.get("BULKCHANGE_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("BULKCHANGE_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("BULKCHANGE_TEST_PG_USER", "postgres")


@pytest.fixture(autouse=True)
def _collector_as_found() -> Iterator[None]:
    """Entry points run in-process here (the CLI worker, the Lambda handler) freeze the start-up heap and
    raise the collector's threshold (``bulkchange.heap``); the next test gets the collector as it was."""
    threshold = gc.get_threshold()
    yield
    if gc.get_freeze_count():
        gc.unfreeze()
    gc.set_threshold(*threshold)


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() == "true"


def _admin_connect() -> psycopg.Connection[tuple[Any, ...]]:
    return psycopg.connect(
        host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", autocommit=True, connect_timeout=3
    )


@dataclass
class PgServer:
    """The reachable server and this run's database names (``bc_<run>_<n>``)."""

    run: str
    _numbers: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def url(self, name: str) -> str:
        return f"postgresql+psycopg://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"

    def create(self, suffix: str | None = None) -> str:
        """Create an empty database; return its name."""
        name = f"bc_{self.run}_{suffix or next(self._numbers)}"
        with _admin_connect() as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        return name

    def drop(self, name: str) -> None:
        # FORCE ends connections a test left open (an undisposed pool), so teardown never hangs.
        with _admin_connect() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def leftovers(self) -> list[str]:
        with _admin_connect() as admin:
            rows = admin.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE %s", (f"bc\\_{self.run}\\_%",)
            ).fetchall()
        return [str(row[0]) for row in rows]


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """The PostgreSQL server, or a skip (a failure under ``CI=true``) when it cannot be reached."""
    try:
        with _admin_connect():
            pass
    except psycopg.OperationalError as exc:
        reason = f"PostgreSQL not reachable at {PG_USER}@{PG_HOST}:{PG_PORT}: {exc}".strip()
        if in_ci():
            pytest.fail(f"{reason} (CI=true: PostgreSQL tests must run)")
        pytest.skip(reason)
    server = PgServer(run=secrets.token_hex(4))
    yield server
    for name in server.leftovers():
        server.drop(name)


@pytest.fixture(scope="session")
def pg_url(pg_server: PgServer) -> Iterator[str]:
    """This run's own PostgreSQL database, migrated to head; dropped when the session ends."""
    from bulkchange.store.migrate import upgrade

    name = pg_server.create("run")
    try:
        upgrade(pg_server.url(name))
        yield pg_server.url(name)
    finally:
        pg_server.drop(name)


@pytest.fixture
def pg_empty_url(pg_server: PgServer) -> Iterator[str]:
    """A brand-new, empty PostgreSQL database (never migrated), dropped after the test."""
    name = pg_server.create()
    try:
        yield pg_server.url(name)
    finally:
        pg_server.drop(name)


@pytest.fixture
def pg_migrated_url(pg_empty_url: str) -> str:
    """A brand-new PostgreSQL database migrated to head with ``upgrade()``, dropped after the test."""
    from bulkchange.store.migrate import upgrade

    upgrade(pg_empty_url)
    return pg_empty_url
