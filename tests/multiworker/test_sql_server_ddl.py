"""`bulkchange db sql --dialect mssql`: the SQL Server DDL, rendered offline (no server, no driver here)."""

from __future__ import annotations

import re
import sys

import pytest
from typer.testing import CliRunner

from bulkchange.cli.main import app

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
