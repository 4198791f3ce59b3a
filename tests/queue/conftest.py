"""Fixtures for the queue tests: migrated databases (SQLite file, PostgreSQL), a hand-driven clock.

This folder has no ``__init__.py`` on purpose: as a package it would be imported as ``queue`` and
clash with the standard library's ``queue`` module (already imported by the time pytest loads us).

PostgreSQL is the server on 127.0.0.1:5432 (trust auth); each test gets a fresh ``bc_<random>``
database, dropped afterwards. Without a server the PostgreSQL cases skip with the reason, except under
``CI=true`` where they fail. (The same few lines live in tests/store/conftest.py: test folders cannot
share fixtures without a tests/conftest.py.)
"""

from __future__ import annotations

import os
import secrets
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine

from bulkchange.queue import EmbeddedQueue
from bulkchange.store.db import make_engine, make_session_factory
from bulkchange.store.migrate import upgrade

PG_HOST = os.environ.get("BULKCHANGE_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("BULKCHANGE_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("BULKCHANGE_TEST_PG_USER", "postgres")


def _admin_connect() -> psycopg.Connection[tuple[Any, ...]]:
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
    """A fresh PostgreSQL database migrated to head, dropped after the test."""
    name = f"bc_{secrets.token_hex(6)}"
    with _admin_connect() as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql+psycopg://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    try:
        upgrade(url)
        yield url
    finally:
        with _admin_connect() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite file migrated to head with ``upgrade()``."""
    url = f"sqlite:///{tmp_path / 'queue.sqlite3'}"
    upgrade(url)
    return url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest) -> str:
    """A migrated database of each kind the queue runs on."""
    url: str = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "postgres_url")
    return url


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


class FakeClock:
    """Naive-UTC time that only moves when a test says so (no sleeping, no flakiness)."""

    def __init__(self, start: datetime) -> None:
        self._now = start
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime(2026, 3, 1, 12, 0, 0))


@pytest.fixture
def make_queue(engine: Engine, clock: FakeClock) -> Callable[..., EmbeddedQueue]:
    """Build queues on the test database and clock; keyword arguments go to ``EmbeddedQueue``."""
    factory = make_session_factory(engine)

    def build(**kwargs: Any) -> EmbeddedQueue:
        kwargs.setdefault("clock", clock)
        return EmbeddedQueue(factory, **kwargs)

    return build
