"""Fixtures for the queue tests: migrated databases (SQLite file, PostgreSQL), a hand-driven clock.

This folder has no ``__init__.py`` on purpose: as a package it would be imported as ``queue`` and
clash with the standard library's ``queue`` module (already imported by the time pytest loads us).

PostgreSQL databases come from ``tests/conftest.py``: each test gets a fresh ``bc_<run>_<n>``
database, dropped afterwards; without a server the PostgreSQL cases skip with the reason, except under
``CI=true`` where they fail.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from bulkchange.jobs.embedded_queue import EmbeddedQueue
from bulkchange.store.db import make_engine, make_session_factory
from bulkchange.store.migrate import upgrade


@pytest.fixture
def postgres_url(pg_migrated_url: str) -> str:
    """A fresh PostgreSQL database migrated to head, dropped after the test (see tests/conftest.py)."""
    return pg_migrated_url


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
