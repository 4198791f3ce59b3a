"""Fixtures for the store tests: a fresh database per test, on a SQLite file and on PostgreSQL.

PostgreSQL is the server on 127.0.0.1:5432 (trust auth). Each test gets its own ``bc_<random>``
database, dropped afterwards, so tests never see each other's rows or schema. Without a server the
PostgreSQL cases are skipped with the reason, except under ``CI=true`` where they fail: CI must not
pass by silently testing less.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

PG_HOST = os.environ.get("BULKCHANGE_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("BULKCHANGE_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("BULKCHANGE_TEST_PG_USER", "postgres")


def _admin_connect() -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(
        host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", autocommit=True, connect_timeout=3
    )


@pytest.fixture(scope="session")
def postgres_available() -> None:
    """Skip (or, under CI=true, fail) when the PostgreSQL server cannot be reached."""
    try:
        with _admin_connect():
            pass
    except psycopg.OperationalError as exc:
        reason = f"PostgreSQL not reachable at {PG_USER}@{PG_HOST}:{PG_PORT}: {exc}".strip()
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason} (CI=true: PostgreSQL tests must run)")
        pytest.skip(reason)


@pytest.fixture
def postgres_url(postgres_available: None) -> Iterator[str]:
    """A SQLAlchemy URL to a brand-new, empty PostgreSQL database, dropped after the test."""
    name = f"bc_{secrets.token_hex(6)}"
    with _admin_connect() as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        with _admin_connect() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite file URL in a folder that does not exist yet (``upgrade`` must create it)."""
    return f"sqlite:///{tmp_path / 'nested' / 'bulkchange.sqlite3'}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def empty_db_url(request: pytest.FixtureRequest) -> str:
    """An empty database of each kind the project runs on."""
    fixture = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    url: str = request.getfixturevalue(fixture)
    return url
