"""The Alembic migrations: they build exactly the schema of ``tables.py``, online and as SQL scripts."""

from __future__ import annotations

import importlib.util
import sqlite3
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, make_url, select, text
from sqlalchemy.exc import DBAPIError

from bulkchange.domain.statuses import DEVICE_STATUS_NAMES
from bulkchange.store import migrate
from bulkchange.store.db import make_engine
from bulkchange.store.tables import Base, DeviceStatus

# The tables of the original system (seed), which every rendering must create.
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


def _head() -> str:
    config = migrate._config()
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None
    return head


def _schema_diffs(url: str) -> list[object]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            return list(compare_metadata(context, Base.metadata))
    finally:
        engine.dispose()


def _device_statuses(url: str) -> dict[int, tuple[str, str]]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(DeviceStatus.id, DeviceStatus.status, DeviceStatus.display_name)).all()
    finally:
        engine.dispose()
    return {status_id: (status, display) for status_id, status, display in rows}


def _table_names(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


EXPECTED_STATUSES = {i: (name, name.title()) for i, name in DEVICE_STATUS_NAMES.items()}


def test_expected_statuses_are_the_briefs_ids() -> None:
    assert sorted(EXPECTED_STATUSES) == [8, 15, 16, 17, 18, 19]
    assert EXPECTED_STATUSES[15] == ("pending activation", "Pending Activation")


def test_upgrade_creates_every_table_and_the_device_statuses(empty_db_url: str) -> None:
    assert migrate.current_revision(empty_db_url) is None

    migrate.upgrade(empty_db_url)

    assert _table_names(empty_db_url) == set(Base.metadata.tables) | {"alembic_version"}
    assert set(SEED_TABLES) <= _table_names(empty_db_url)
    assert _device_statuses(empty_db_url) == EXPECTED_STATUSES
    assert migrate.current_revision(empty_db_url) == _head()


def test_upgrade_twice_is_a_no_op(empty_db_url: str) -> None:
    migrate.upgrade(empty_db_url)
    migrate.upgrade(empty_db_url)  # would fail on the seed rows' primary keys if it re-ran 0001

    assert migrate.current_revision(empty_db_url) == _head()
    assert _device_statuses(empty_db_url) == EXPECTED_STATUSES


def test_migrated_schema_matches_the_metadata(empty_db_url: str) -> None:
    """Guards against editing tables.py without a new revision (and against a wrong 0001)."""
    migrate.upgrade(empty_db_url)

    assert _schema_diffs(empty_db_url) == []


def test_upgrade_creates_the_sqlite_folder(tmp_path: Path) -> None:
    db = tmp_path / "a" / "b" / "bc.sqlite3"
    migrate.upgrade(f"sqlite:///{db}")
    assert db.exists()


def test_current_revision_of_a_missing_sqlite_file_is_none_and_creates_nothing(tmp_path: Path) -> None:
    db = tmp_path / "missing" / "bc.sqlite3"
    assert migrate.current_revision(f"sqlite:///{db}") is None
    assert not db.parent.exists()


def _load_initial_revision() -> ModuleType:
    path = migrate.MIGRATIONS_DIR / "versions" / "0001_initial.py"
    spec = importlib.util.spec_from_file_location("bulkchange_migration_0001", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_frozen_seed_rows_agree_with_the_domain() -> None:
    """0001 spells its rows out (revisions are frozen); the domain constants must still say the same."""
    rows = _load_initial_revision().DEVICE_STATUS_ROWS
    assert {i: (status, display) for i, status, display in rows} == EXPECTED_STATUSES


QUOTED = {
    "mssql": "[{}]",
    "postgresql": '"{}"',
    "sqlite": '"{}"',
}


@pytest.mark.parametrize("dialect", ["mssql", "postgresql", "sqlite"])
def test_render_sql_creates_every_seed_table(dialect: migrate.Dialect, monkeypatch: pytest.MonkeyPatch) -> None:
    # No driver is needed to render: make sure none is importable (pyodbc is not installed anyway).
    monkeypatch.setitem(sys.modules, "pyodbc", None)

    sql = migrate.render_sql(dialect)

    for table in [*SEED_TABLES, *Base.metadata.tables]:
        assert f"CREATE TABLE {QUOTED[dialect].format(table)} (" in sql, table
    assert f"INSERT INTO {QUOTED[dialect].format('DeviceStatus')}" in sql
    for status_id, (status, display) in EXPECTED_STATUSES.items():
        assert f"({status_id}, '{status}', '{display}')" in sql
    assert "0001_initial" in sql


def test_render_sql_for_sql_server_uses_modern_types() -> None:
    sql = migrate.render_sql("mssql")
    assert "IDENTITY_INSERT" not in sql  # DeviceStatus.id is not IDENTITY; SET would fail on the server
    assert " TEXT " not in sql and "VARCHAR(max)" in sql
    assert "BIGINT NOT NULL IDENTITY" in sql


def test_render_sql_refuses_unknown_dialects() -> None:
    with pytest.raises(ValueError, match="oracle"):
        migrate.render_sql("oracle")  # type: ignore[arg-type]


def test_rendered_sqlite_script_builds_the_same_schema(tmp_path: Path) -> None:
    """The offline script is what a DBA would run: applied by hand it gives the migrated schema."""
    db = tmp_path / "by-hand.sqlite3"
    with sqlite3.connect(db) as conn:
        conn.executescript(migrate.render_sql("sqlite"))
    url = f"sqlite:///{db}"

    assert _schema_diffs(url) == []
    assert _device_statuses(url) == EXPECTED_STATUSES
    assert migrate.current_revision(url) == _head()
    migrate.upgrade(url)  # and Alembic takes over from there


@pytest.mark.postgres
def test_rendered_postgresql_script_builds_the_same_schema(postgres_url: str) -> None:
    url = make_url(postgres_url)
    with psycopg.connect(host=url.host, port=url.port, user=url.username, dbname=url.database) as conn:
        conn.execute(migrate.render_sql("postgresql").encode())

    assert _schema_diffs(postgres_url) == []
    assert _device_statuses(postgres_url) == EXPECTED_STATUSES
    assert migrate.current_revision(postgres_url) == _head()


def test_concurrent_upgrades_queue_up_instead_of_racing(empty_db_url: str) -> None:
    """Workers that all migrate on start: one applies 0001, the others find the database at head."""
    start = threading.Barrier(4)

    def run() -> None:
        start.wait()
        migrate.upgrade(empty_db_url)

    with ThreadPoolExecutor(max_workers=4) as pool:
        for future in [pool.submit(run) for _ in range(4)]:
            future.result()

    assert migrate.current_revision(empty_db_url) == _head()
    assert _device_statuses(empty_db_url) == EXPECTED_STATUSES
    assert _schema_diffs(empty_db_url) == []


def test_a_failing_upgrade_leaves_nothing_half_applied(empty_db_url: str) -> None:
    """0001 fails part-way (a table it creates already exists): the tables it made before are rolled back."""
    engine = make_engine(empty_db_url)
    with engine.begin() as conn:
        conn.execute(text('CREATE TABLE "ServiceProvider" (id INTEGER PRIMARY KEY)'))
    engine.dispose()

    with pytest.raises(DBAPIError):
        migrate.upgrade(empty_db_url)

    assert _table_names(empty_db_url) == {"ServiceProvider"}
    assert migrate.current_revision(empty_db_url) is None


def test_tenants_revision_gives_rows_without_a_tenant_to_tenant_1_and_scopes_plan_names(empty_db_url: str) -> None:
    """0010: credentials and plans written before it (TenantId NULL) become tenant 1's; plan names are then
    unique per tenant, and webhook destinations one per tenant and one per provider — all by the schema."""
    migrate.upgrade(empty_db_url, "0006_change_iccid_index")
    engine = make_engine(empty_db_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    'INSERT INTO "IntegrationAuthentication" ("Integration", "BaseUrl", "Username", "ClientCode", '
                    '"Password", "SubscriptionKey", "IsActive", "IsDeleted", "CreatedDate") '
                    "VALUES ('Rev.io', 'https://rev.example', 'u', 'c', 'p', 'k', true, false, '2026-01-01')"
                )
            )
            conn.execute(
                text(
                    'INSERT INTO "CustomerRatePlan" ("Name", "IsPool", "IsDeleted", "CreatedDate") '
                    "VALUES ('IOT-BASIC', false, false, '2026-01-01')"
                )
            )
        migrate.upgrade(empty_db_url)
        assert _schema_diffs(empty_db_url) == []
        with engine.connect() as conn:
            assert conn.execute(text('SELECT "TenantId" FROM "IntegrationAuthentication"')).scalars().all() == [1]
            assert conn.execute(text('SELECT "TenantId" FROM "CustomerRatePlan"')).scalars().all() == [1]

        plan = (
            'INSERT INTO "CustomerRatePlan" ("TenantId", "Name", "IsPool", "IsDeleted", "CreatedDate") '
            "VALUES (:tenant, 'IOT-BASIC', false, false, '2026-01-02')"
        )
        with engine.begin() as conn:
            conn.execute(text(plan), {"tenant": 2})  # the same name in another tenant
        with pytest.raises(DBAPIError), engine.begin() as conn:
            conn.execute(text(plan), {"tenant": 1})  # twice in one tenant
        with pytest.raises(DBAPIError), engine.begin() as conn:
            conn.execute(
                text(
                    'INSERT INTO "IntegrationAuthentication" ("Integration", "BaseUrl", "Username", '
                    '"ClientCode", "Password", "SubscriptionKey", "IsActive", "IsDeleted", "CreatedDate") '
                    "VALUES ('Rev.io', 'https://rev.example', 'u', 'c', 'p', 'k', true, false, '2026-01-01')"
                )
            )

        with engine.begin() as conn:
            conn.execute(
                text(
                    'INSERT INTO "ServiceProvider" ("Name", "IntegrationId", "TenantId", '
                    '"RegisterCarrierServiceCallBack", "IsActive", "IsDeleted", "CreatedDate") '
                    "VALUES ('p', 1, 2, false, true, false, '2026-01-01')"
                )
            )
            provider = conn.execute(text('SELECT id FROM "ServiceProvider"')).scalar_one()
        destination = (
            'INSERT INTO "WebhookDestination" ("TenantId", "ServiceProviderId", "Url", "Secret", "CreatedDate") '
            "VALUES (:tenant, :provider, 'https://hook.example', 's', '2026-01-01')"
        )
        with engine.begin() as conn:
            for tenant, provider_id in ((1, None), (2, None), (2, provider)):
                conn.execute(text(destination), {"tenant": tenant, "provider": provider_id})
        for tenant, provider_id in ((2, None), (2, provider)):
            with pytest.raises(DBAPIError), engine.begin() as conn:
                conn.execute(text(destination), {"tenant": tenant, "provider": provider_id})
    finally:
        engine.dispose()
