"""Migration 0007 on a database that already holds data (SQLite and PostgreSQL): the provider is copied onto
each change, a device with two unfinished changes stops the upgrade with the list, duplicate live Rev.io
services are set aside, and the SQL Server script carries the filtered indexes and the same check."""

from __future__ import annotations

import sys
from datetime import datetime
from typing import Any

import pytest
from alembic import command
from sqlalchemy import Connection, Engine, MetaData, Table, inspect, select

from bulkchange.store import migrate
from bulkchange.store.db import make_engine

BEFORE = "0006_change_iccid_index"
AFTER = "0007_unfinished_change_unique"
NOW = datetime(2026, 12, 1, 12, 0, 0)


def _table(conn: Connection, name: str) -> Table:
    return Table(name, MetaData(), autoload_with=conn)


def _insert(conn: Connection, name: str, **values: Any) -> int:
    table = _table(conn, name)
    return int(conn.execute(table.insert().values(**values)).inserted_primary_key[0])


def _provider(conn: Connection, name: str) -> int:
    return _insert(
        conn,
        "ServiceProvider",
        Name=name,
        IntegrationId=1,
        TenantId=1,
        RegisterCarrierServiceCallBack=False,
        IsActive=True,
        IsDeleted=False,
        CreatedDate=NOW,
    )


def _bulk(conn: Connection, provider_id: int) -> int:
    return _insert(
        conn,
        "DeviceBulkChange",
        TenantId=1,
        ServiceProviderId=provider_id,
        ChangeRequestType="StatusUpdate",
        Status="PROCESSING",
        HasErrors=False,
        CheckRound=0,
        CreatedDate=NOW,
    )


def _change(conn: Connection, bulk_id: int, iccid: str, status: str) -> int:
    return _insert(
        conn,
        "M2M_DeviceChange",
        BulkChangeId=bulk_id,
        ICCID=iccid,
        Status=status,
        IsProcessed=False,
        HasErrors=False,
        ChangeRequest="{}",
        CreatedDate=NOW,
        IsActive=True,
        IsDeleted=False,
        TargetStatus="inventory",
        Plan="ADD",
        StepIndex=0,
        AttemptCount=0,
        Solo=False,
    )


def _service(conn: Connection, change_id: int, number: str, status: str, auth_id: int = 1) -> int:
    return _insert(
        conn,
        "RevService",
        M2MDeviceChangeId=change_id,
        Number=number,
        RevServiceId=1000 + change_id,
        Status=status,
        IntegrationAuthenticationId=auth_id,
        CreatedDate=NOW,
    )


@pytest.fixture
def at_0006(empty_db_url: str) -> Any:
    migrate.upgrade(empty_db_url, BEFORE)
    engine = make_engine(empty_db_url)
    yield empty_db_url, engine
    engine.dispose()


def test_upgrade_copies_the_provider_onto_each_change_and_sets_aside_duplicate_services(
    at_0006: tuple[str, Engine],
) -> None:
    url, engine = at_0006
    with engine.begin() as conn:
        a, b = _provider(conn, "a"), _provider(conn, "b")
        bulk_a, older_a, bulk_b = _bulk(conn, a), _bulk(conn, a), _bulk(conn, b)
        # Same ICCID: unfinished under two providers, and unfinished once plus finished once under one.
        c1 = _change(conn, bulk_a, "8914800000000000001", "READY")
        c2 = _change(conn, bulk_b, "8914800000000000001", "AWAITING_RESULT")
        c3 = _change(conn, older_a, "8914800000000000001", "PROCESSED")
        c4 = _change(conn, older_a, "8914800000000000002", "PROCESSED")
        s1 = _service(conn, c3, "5550001", "CREATED")
        s2 = _service(conn, c4, "5550001", "CREATED")  # the bug this revision closes: a second service
        s3 = _service(conn, c1, "5550001", "CREATED", auth_id=2)  # another Rev.io account: its own
        s4 = _service(conn, c2, "5550002", None)  # a row from before the intent columns: not live

    migrate.upgrade(url, AFTER)

    assert migrate.current_revision(url) == AFTER
    with engine.connect() as conn:
        changes = _table(conn, "M2M_DeviceChange")
        providers = dict(conn.execute(select(changes.c.id, changes.c.ServiceProviderId)).all())
        services = _table(conn, "RevService")
        statuses = dict(conn.execute(select(services.c.id, services.c.Status)).all())
    assert providers == {c1: a, c2: b, c3: a, c4: a}
    assert statuses == {s1: "CREATED", s2: "DUPLICATE", s3: "CREATED", s4: None}
    indexes = {ix["name"]: ix for ix in inspect(engine).get_indexes("M2M_DeviceChange")}
    assert indexes["UX_M2M_DeviceChange_Unfinished"]["unique"]
    assert indexes["UX_M2M_DeviceChange_Unfinished"]["column_names"] == ["ServiceProviderId", "ICCID"]


def test_two_unfinished_changes_of_one_device_stop_the_upgrade_with_the_list(at_0006: tuple[str, Engine]) -> None:
    url, engine = at_0006
    with engine.begin() as conn:
        p = _provider(conn, "a")
        first, second = _bulk(conn, p), _bulk(conn, p)
        c1 = _change(conn, first, "8914800000000000001", "AWAITING_RESULT")
        c2 = _change(conn, second, "8914800000000000001", "READY")
        _change(conn, second, "8914800000000000002", "READY")

    with pytest.raises(Exception, match="more than one unfinished change") as caught:
        migrate.upgrade(url, AFTER)

    message = str(caught.value)
    assert "1 device(s)" in message
    assert f"service provider {p}, ICCID 8914800000000000001" in message
    assert f"change {c1} in bulk change {first} (AWAITING_RESULT)" in message
    assert f"change {c2} in bulk change {second} (READY)" in message
    assert "8914800000000000002" not in message
    assert migrate.current_revision(url) == BEFORE  # nothing applied
    assert "ServiceProviderId" not in {c["name"] for c in inspect(engine).get_columns("M2M_DeviceChange")}


def test_downgrade_removes_what_0007_added(at_0006: tuple[str, Engine]) -> None:
    url, engine = at_0006
    migrate.upgrade(url, AFTER)
    with engine.begin() as conn:
        config = migrate._config()
        config.attributes["connection"] = conn
        command.downgrade(config, BEFORE)

    inspector = inspect(engine)
    assert "ServiceProviderId" not in {c["name"] for c in inspector.get_columns("M2M_DeviceChange")}
    assert "UX_M2M_DeviceChange_Unfinished" not in {ix["name"] for ix in inspector.get_indexes("M2M_DeviceChange")}
    assert "UX_RevService_LiveNumber" not in {ix["name"] for ix in inspector.get_indexes("RevService")}
    migrate.upgrade(url, AFTER)  # and up again
    assert migrate.current_revision(url) == AFTER


def test_sql_server_script_has_the_filtered_unique_indexes_and_the_duplicate_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "pyodbc", None)  # rendered offline, no driver
    sql = migrate.render_sql("mssql")
    part = sql.split("-- Running upgrade 0006_change_iccid_index -> 0007_unfinished_change_unique", 1)[1]

    assert "ALTER TABLE [M2M_DeviceChange] ALTER COLUMN [ServiceProviderId] INTEGER NOT NULL" in part
    assert (
        "CREATE UNIQUE INDEX [UX_M2M_DeviceChange_Unfinished] ON [M2M_DeviceChange] ([ServiceProviderId], [ICCID]) "
        "WHERE [Status] IN (N'AWAITING_RESULT', N'READY', N'SENDING')"
    ) in part
    assert (
        "CREATE UNIQUE INDEX [UX_RevService_LiveNumber] ON [RevService] ([IntegrationAuthenticationId], [Number]) "
        "WHERE [Status] IN (N'CREATED', N'CREATING')"
    ) in part
    # The check runs before the index: a script applied by hand stops with a readable error, not a raw one.
    guard = part.index("THROW 50007, N'devices with more than one unfinished change")
    assert part.index("IF EXISTS (SELECT 1") < guard < part.index("[UX_M2M_DeviceChange_Unfinished]")
