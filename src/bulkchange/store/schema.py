"""Whether a database is at the schema head, asked without Alembic.

Every command but ``bulkchange db upgrade`` only needs to know that the database exists and is at the head
revision; importing Alembic (and its DDL machinery) for that cost a command a quarter of its start-up. The
head is kept here as a constant, moved on by each new migration; ``tests/store/test_schema_head.py``
compares it with the head Alembic computes from ``store/migrations/versions``, so the two cannot drift
apart unnoticed. The revision a database is at is read from Alembic's own ``alembic_version`` table with
one plain query. Applying migrations, and anything else that needs Alembic, stays in ``store.migrate``.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import column, inspect, pool, select, table
from sqlalchemy.engine import make_url

from bulkchange.store.db import make_engine, parse_database_url, read_only

SCHEMA_HEAD = "0016_token_bucket"
"""The revision ``store.migrate.upgrade`` brings a database to: the newest migration's ``revision``."""

#: Alembic's bookkeeping table (its default name and column; ``store/migrations/env.py`` keeps them).
_ALEMBIC_VERSION = table("alembic_version", column("version_num"))


class SchemaNotReady(RuntimeError):
    """No database, or one not at the schema head; the message names it and the command that fixes it."""


def describe_url(url: str) -> str:
    """Where the database is, for a message: a SQLite file's absolute path, else the URL without password."""
    parsed = parse_database_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:":
        return str(Path(parsed.database).resolve())
    return parsed.render_as_string(hide_password=True)


def current_revision(url: str) -> str | None:
    """The revision the database at ``url`` is at, or ``None`` if it was never migrated.

    A SQLite file that does not exist yet is reported as ``None`` without creating it (asking must not
    leave an empty database file behind). A database whose ``alembic_version`` holds several revisions
    (branched migrations) is refused with ``SchemaNotReady``, as Alembic refuses it.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:" and not Path(database).exists():
            return None
    engine = make_engine(url, poolclass=pool.NullPool)
    try:
        with read_only(engine).connect() as connection:  # a check: never queued for SQLite's write lock
            if not inspect(connection).has_table(_ALEMBIC_VERSION.name):
                return None
            found = [str(v) for v in connection.execute(select(_ALEMBIC_VERSION.c.version_num)).scalars()]
    finally:
        engine.dispose()
    if len(found) > 1:
        raise SchemaNotReady(f"the database is at several revisions ({', '.join(sorted(found))})")
    return found[0] if found else None


def require_head(url: str) -> None:
    """Nothing when the database at ``url`` exists and is at head; else ``SchemaNotReady`` (nothing created)."""
    where = describe_url(url)  # DatabaseUrlError for a URL that cannot be used
    current = current_revision(url)
    if current is None:
        raise SchemaNotReady(f"no database at {where}; run `bulkchange db upgrade`")
    if current != SCHEMA_HEAD:
        raise SchemaNotReady(
            f"the database at {where} is at revision {current}, not {SCHEMA_HEAD}; run `bulkchange db upgrade`"
        )
