"""Fixtures for the store tests: a fresh, empty database per test, on a SQLite file and on PostgreSQL.

The PostgreSQL databases come from ``tests/conftest.py`` (a brand-new ``bc_<run>_<n>`` database per
test, dropped afterwards; skipped without a server, failed under ``CI=true``).
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def postgres_url(pg_empty_url: str) -> str:
    """A SQLAlchemy URL to a brand-new, empty PostgreSQL database, dropped after the test."""
    return pg_empty_url


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
