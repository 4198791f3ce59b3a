"""The schema check every command makes (``store.schema``) agrees with Alembic, without importing it.

``SCHEMA_HEAD`` is a constant moved on by each new migration: if a migration is added and the constant is
not, the first test fails. The revision read from ``alembic_version`` by one plain query must be the one
Alembic itself reads.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text

from bulkchange.store import migrate, schema
from bulkchange.store.db import make_engine

BEHIND = "0014_bulk_change_pause"


def _alembic_reads(url: str) -> str | None:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            revision: str | None = MigrationContext.configure(connection).get_current_revision()
            return revision
    finally:
        engine.dispose()


def test_the_head_constant_is_the_head_alembic_computes_from_the_migrations() -> None:
    assert migrate.head_revisions() == {schema.SCHEMA_HEAD}


def test_a_database_at_head_passes_and_reads_as_alembic_reads_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/head.sqlite3"
    migrate.upgrade(url)
    assert schema.current_revision(url) == _alembic_reads(url) == schema.SCHEMA_HEAD
    schema.require_head(url)


def test_a_database_one_revision_behind_is_refused_naming_both_revisions(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/behind.sqlite3"
    migrate.upgrade(url, BEHIND)
    assert schema.current_revision(url) == _alembic_reads(url) == BEHIND
    with pytest.raises(schema.SchemaNotReady, match=f"at revision {BEHIND}, not {schema.SCHEMA_HEAD}"):
        schema.require_head(url)


def test_a_database_without_alembic_version_is_no_database_yet(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/bare.sqlite3"
    engine = make_engine(url)
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE unrelated (id INTEGER)"))
    engine.dispose()
    assert schema.current_revision(url) is None
    with pytest.raises(schema.SchemaNotReady, match=r"no database at .*bare\.sqlite3; run `bulkchange db upgrade`"):
        schema.require_head(url)


def test_a_database_at_two_revisions_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/two.sqlite3"
    migrate.upgrade(url)
    engine = make_engine(url)
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO alembic_version (version_num) VALUES (:v)"), {"v": BEHIND})
    engine.dispose()
    with pytest.raises(schema.SchemaNotReady, match="several revisions"):
        schema.require_head(url)
