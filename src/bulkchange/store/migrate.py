"""Schema migrations, driven from code: Alembic is the only way the schema changes.

There is no ``alembic.ini`` at run time. The Alembic ``Config`` is built here with ``script_location``
pointing into the installed package, so an installed wheel, the CLI and the tests all migrate the same
way, and deployments never depend on a working directory.

* ``upgrade(url)`` applies pending revisions to a real database (SQLite file or PostgreSQL).
* ``current_revision(url)`` tells which revision a database is at (``None`` when never migrated).
* ``require_head(url)`` refuses (``SchemaNotReady``) a database that is missing or behind: commands other
  than ``bulkchange db upgrade`` never create or migrate one silently.
* ``render_sql(dialect)`` prints the full DDL without connecting, for DBAs who apply scripts by hand
  (notably SQL Server, whose driver need not even be installed).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Literal

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import pool, text
from sqlalchemy.engine import make_url

from bulkchange.store.db import make_engine, parse_database_url

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

Dialect = Literal["sqlite", "postgresql", "mssql"]

# Offline rendering only needs a dialect, never a driver: SQLAlchemy imports the DBAPI module when an
# engine is created, not when the dialect class is instantiated, so ``mssql+pyodbc`` works without pyodbc.
_OFFLINE_URLS: dict[Dialect, str] = {
    "sqlite": "sqlite://",
    "postgresql": "postgresql+psycopg://",
    "mssql": "mssql+pyodbc://",
}


def _config(output: io.StringIO | None = None) -> Config:
    """An Alembic config pointing at the packaged migrations; ``output`` captures offline SQL."""
    config = Config(output_buffer=output) if output is not None else Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the database at ``url`` up to ``revision`` (idempotent: an up-to-date database is left alone).

    A SQLite file's folder is created (``make_engine`` does it). The whole upgrade is one transaction,
    so a failing revision leaves nothing half-applied, and concurrent upgraders (several workers
    starting at once) queue up instead of racing to create the same tables: on PostgreSQL through a
    transaction-scoped advisory lock, on SQLite through ``BEGIN IMMEDIATE`` (``store.db.make_engine``).
    The second upgrader then finds the database at head and does nothing.
    """
    # On SQLite, make_engine opens every transaction with BEGIN IMMEDIATE and keeps the driver from
    # autocommitting DDL, so the whole upgrade is atomic and takes the write lock before Alembic reads
    # the current revision.
    engine = make_engine(url, poolclass=pool.NullPool)
    try:
        with engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
            config = _config()
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
    finally:
        engine.dispose()


# An arbitrary constant naming "bulkchange schema migration" among the server's advisory locks.
_PG_MIGRATION_LOCK = 0x62756C6B_6368616E  # "bulkchan"


def current_revision(url: str) -> str | None:
    """The revision the database at ``url`` is at, or ``None`` if it was never migrated.

    A SQLite file that does not exist yet is reported as ``None`` without creating it (asking must not
    leave an empty database file behind).
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:" and not Path(database).exists():
            return None
    engine = make_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            revision: str | None = MigrationContext.configure(connection).get_current_revision()
            return revision
    finally:
        engine.dispose()


class SchemaNotReady(RuntimeError):
    """No database, or one not at the schema head; the message names it and the command that fixes it."""


def describe_url(url: str) -> str:
    """Where the database is, for a message: a SQLite file's absolute path, else the URL without password."""
    parsed = parse_database_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:":
        return str(Path(parsed.database).resolve())
    return parsed.render_as_string(hide_password=True)


def require_head(url: str) -> None:
    """Nothing when the database at ``url`` exists and is at head; else ``SchemaNotReady`` (nothing created)."""
    where = describe_url(url)  # DatabaseUrlError for a URL that cannot be used
    current = current_revision(url)
    if current is None:
        raise SchemaNotReady(f"no database at {where}; run `bulkchange db upgrade`")
    heads = head_revisions()
    if current not in heads:
        raise SchemaNotReady(
            f"the database at {where} is at revision {current}, not {', '.join(sorted(heads))}; "
            "run `bulkchange db upgrade`"
        )


def head_revisions() -> frozenset[str]:
    """The revisions ``upgrade(url)`` brings a database to (one, unless the migrations have branched)."""
    return frozenset(ScriptDirectory.from_config(_config()).get_heads())


def render_sql(dialect: Dialect) -> str:
    """The complete DDL (and seed rows) from an empty database to ``head``, as SQL text for ``dialect``.

    Alembic's offline mode (``as_sql``) renders statements with literal values and connects to nothing.
    The output includes Alembic's own ``alembic_version`` bookkeeping so a database set up by hand from
    this script can later be upgraded with ``upgrade()``.
    """
    try:
        url = _OFFLINE_URLS[dialect]
    except KeyError:
        raise ValueError(f"unknown dialect {dialect!r}; expected one of {', '.join(_OFFLINE_URLS)}") from None
    output = io.StringIO()
    config = _config(output)
    config.attributes["url"] = url
    command.upgrade(config, "head", sql=True)
    return output.getvalue()
