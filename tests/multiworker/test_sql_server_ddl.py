"""`bulkchange db sql --dialect mssql`: the SQL Server DDL, rendered offline (no server, no driver here)."""

from __future__ import annotations

import re
import sys

import pytest
from typer.testing import CliRunner

from bulkchange.cli.main import app
from bulkchange.store.tables import Base

SEED_TABLES = [
    "Device",
    "M2M_DeviceChange",
    "DeviceBulkChange",
    "DeviceBulkChangeLog",
    "ThingSpaceDevice",
    "ThingSpaceDeviceDetail",
    "ThingSpaceDeviceUsage",
    "ServiceProvider",
    "ThingSpaceAuthentication",
    "DeviceStatus",
    "ThingSpaceCallBackResponseLog",
]


def test_sql_server_ddl_names_the_seed_tables_with_sql_server_types(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyodbc", None)  # rendering must not need the driver
    result = CliRunner().invoke(app, ["db", "sql", "--dialect", "mssql"])
    assert result.exit_code == 0, result.output
    sql = result.output

    for table in SEED_TABLES:
        assert f"CREATE TABLE [{table}] (" in sql, table
    assert "GO" in sql.splitlines()  # batches for sqlcmd / SSMS

    # The initial revision (every seed table): SQL Server types only.
    initial = sql.split("-- Running upgrade  -> 0001_initial", 1)[1].split("-- Running upgrade 0001_initial", 1)[0]
    assert "DATETIME2 NOT NULL" in initial and "NVARCHAR(30) NOT NULL" in initial and "NVARCHAR(max)" in initial
    assert not re.search(r"\bDATETIME\b", initial)  # the legacy type rounds to 1/300 s
    assert not re.search(r"(?<!N)VARCHAR\(", initial)  # str parameters are NVARCHAR: no implicit conversions
    assert " TEXT" not in initial and "NTEXT" not in initial
    m2m = initial.split("CREATE TABLE [M2M_DeviceChange] (", 1)[1].split(");", 1)[0]
    for column in ("[LeaseExpiresAt] DATETIME2 NULL", "[LeaseOwner] NVARCHAR(100) NULL", "[AttemptCount] INTEGER"):
        assert column in m2m, column


# Plain (non-Unicode) VARCHAR, the legacy DATETIME, and TEXT / NTEXT: none may appear in SQL Server DDL.
PLAIN_TYPES = re.compile(r"(?<![N\w])VARCHAR\(|\bDATETIME\b|\bN?TEXT\b")


def _without_alembic_version(sql: str) -> str:
    """Alembic's own bookkeeping table (``version_num VARCHAR(32)``, ASCII revision ids) is not ours to type."""
    head, sep, rest = sql.partition("CREATE TABLE alembic_version (")
    return head + (rest.split(");", 1)[1] if sep else "")


def test_every_migration_renders_sql_server_types_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole DDL — 0001 and every later revision (billing, webhooks, API, …) — uses DATETIME2,
    NVARCHAR(n) and NVARCHAR(max) on SQL Server."""
    monkeypatch.setitem(sys.modules, "pyodbc", None)
    result = CliRunner().invoke(app, ["db", "sql", "--dialect", "mssql"])
    assert result.exit_code == 0, result.output
    sql = _without_alembic_version(result.output)
    assert "-- Running upgrade 0002_billing_webhooks -> 0003_api" in sql  # the later revisions are there

    offending = [line.strip() for line in sql.splitlines() if PLAIN_TYPES.search(line)]
    assert offending == []

    outbox = sql.split("CREATE TABLE [WebhookOutbox] (", 1)[1].split(");", 1)[0]
    for column in ("[EventId] NVARCHAR(64) NOT NULL", "[NextAttemptAt] DATETIME2 NULL", "[LastError] NVARCHAR(max)"):
        assert column in outbox, column
    assert "ALTER TABLE [M2M_DeviceChange] ADD [AdditionalStepLeaseExpiresAt] DATETIME2 NULL" in sql
    assert "ALTER TABLE [RevServiceProduct] ADD [RevCustomerId] NVARCHAR(50) NULL" in sql
    idempotency = sql.split("CREATE TABLE [ApiIdempotencyKey] (", 1)[1].split(");", 1)[0]
    assert "[IdempotencyKey] NVARCHAR(255) NOT NULL" in idempotency
    assert "[CreatedDate] DATETIME2 NOT NULL" in idempotency


def test_the_tables_module_declares_sql_server_types_only() -> None:
    """store/tables.py (what the code reads and writes) agrees: every table compiled for SQL Server."""
    from sqlalchemy.dialects import mssql
    from sqlalchemy.schema import CreateTable

    dialect = mssql.dialect()
    offending = [
        f"{table.name}: {line.strip()}"
        for table in Base.metadata.sorted_tables
        for line in str(CreateTable(table).compile(dialect=dialect)).splitlines()
        if PLAIN_TYPES.search(line)
    ]
    assert offending == []
