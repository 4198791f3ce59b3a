"""Schema migrations, driven from code: Alembic is the only way the schema changes.

There is no ``alembic.ini`` at run time. The Alembic ``Config`` is built here with ``script_location``
pointing into the installed package, so an installed wheel, the CLI and the tests all migrate the same
way, and deployments never depend on a working directory.

* ``upgrade(url)`` applies pending revisions to a real database (SQLite file or PostgreSQL).
* ``current_revision(url)``, ``require_head(url)`` (``store.schema``, re-exported here) tell which revision a
  database is at and refuse one that is missing or behind, without Alembic: commands other than
  ``bulkchange db upgrade`` never create or migrate a database silently, and do not import Alembic.
* ``head_revisions()`` is what Alembic computes from the migrations (``store.schema.SCHEMA_HEAD`` is kept
  equal to it by a test).
* ``render_sql(dialect)`` prints the full DDL without connecting, for DBAs who apply scripts by hand
  (notably SQL Server, whose driver need not even be installed).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from sqlalchemy import pool, text

from bulkchange.store.db import make_engine
from bulkchange.store.schema import SchemaNotReady, current_revision, describe_url, require_head

__all__ = [
    "SchemaNotReady",
    "current_revision",
    "describe_url",
    "head_revisions",
    "render_sql",
    "require_head",
    "upgrade",
]

# Alembic is imported by the functions that run it, as boto3 is by the AWS code: a process that only checks
# the schema (``store.schema``) never loads it — importing it and computing the head cost every command
# ~0.09 s of CPU (docs/benchmarks.md).
if TYPE_CHECKING:
    from alembic.config import Config

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
    from alembic.config import Config

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
    from alembic import command

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


def head_revisions() -> frozenset[str]:
    """The revisions ``upgrade(url)`` brings a database to (one, unless the migrations have branched)."""
    from alembic.script import ScriptDirectory

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
    from alembic import command

    output = io.StringIO()
    config = _config(output)
    config.attributes["url"] = url
    command.upgrade(config, "head", sql=True)
    return output.getvalue()
