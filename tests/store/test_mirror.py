"""A carrier's local tables written from ``TableRows``: created rows get audit and insert-only columns,
existing ones are updated (and revived), on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from bulkchange.domain.outcomes import TableRows
from bulkchange.store.db import make_engine, make_session_factory
from bulkchange.store.migrate import upgrade
from bulkchange.store.mirror import write_table_rows
from bulkchange.store.tables import ServiceProvider, ThingSpaceDevice, ThingSpaceDeviceDetail

T0 = datetime(2026, 12, 1, 9, 0, 0)
T1 = datetime(2026, 12, 1, 10, 0, 0)
A, B = "89148000000800784259", "89148000000800784267"


def _provider_database(url: str) -> tuple[Engine, sessionmaker[Session], int]:
    """A migrated database at ``url`` with one service provider: its engine, sessions and the provider's id."""
    upgrade(url)
    engine = make_engine(url)
    sessions = make_session_factory(engine)
    with sessions.begin() as session:
        provider = ServiceProvider(name="acme")
        session.add(provider)
        session.flush()
        return engine, sessions, provider.id


def test_rows_are_created_once_then_updated_and_insert_only_values_never_change(empty_db_url: str) -> None:
    engine, sessions, provider_id = _provider_database(empty_db_url)
    with sessions.begin() as session:
        session.add(ThingSpaceDevice(service_provider_id=provider_id, iccid=B, status="preactive", is_deleted=True))

    first = [
        TableRows("ThingSpaceDevice", {A: {"Status": "active", "MSISDN": "15551230001"}, B: {"Status": "active"}}),
        TableRows(
            "ThingSpaceDeviceDetail",
            {A: {}},
            insert_only={A: {"AccountNumber": "0000123456-00001", "ThingSpaceDateAdded": T0}},
            insert_description="Insert ThingSpace Device Detail: AMOP DB",
        ),
    ]
    with sessions.begin() as session:
        created = write_table_rows(session, provider_id, first, process_by="test", now=T0)
    assert created == {"ThingSpaceDevice": {A}, "ThingSpaceDeviceDetail": {A}}

    second = [
        TableRows("ThingSpaceDevice", {A: {"Status": "deactive"}}),
        TableRows("ThingSpaceDeviceDetail", {A: {}}, insert_only={A: {"AccountNumber": "changed"}}),
    ]
    with sessions.begin() as session:
        assert write_table_rows(session, provider_id, second, process_by="again", now=T1) == {
            "ThingSpaceDevice": set(),
            "ThingSpaceDeviceDetail": set(),
        }
    with sessions() as session:
        devices = {d.iccid: d for d in session.scalars(select(ThingSpaceDevice))}
        detail = session.scalars(select(ThingSpaceDeviceDetail)).one()
    assert (devices[A].status, devices[A].msisdn, devices[A].created_by, devices[A].modified_by) == (
        "deactive",
        "15551230001",
        "test",
        "again",
    )
    assert (devices[B].status, devices[B].is_deleted, devices[B].modified_date) == ("active", False, T0)
    assert (detail.account_number, detail.thing_space_date_added) == ("0000123456-00001", T0)
    engine.dispose()


def test_an_unknown_table_or_column_is_an_error_not_a_silent_drop(empty_db_url: str) -> None:
    upgrade(empty_db_url)
    engine = make_engine(empty_db_url)
    with make_session_factory(engine)() as session:
        with pytest.raises(KeyError, match="NoSuchTable"):
            write_table_rows(session, 1, [TableRows("NoSuchTable", {A: {}})], process_by="t", now=T0)
        with pytest.raises(KeyError, match="Colour"):
            write_table_rows(
                session, 1, [TableRows("ThingSpaceDevice", {A: {"Colour": "red"}})], process_by="t", now=T0
            )
    engine.dispose()


def test_created_rows_take_the_audit_values_unless_they_set_those_columns_themselves(empty_db_url: str) -> None:
    """A row that sets an audit column (IsActive; CreatedBy, even to NULL) keeps its value; the rows that do
    not get the audit one; columns no row sets get the shared audit values."""
    engine, sessions, provider_id = _provider_database(empty_db_url)
    c = "89148000000800784275"
    rows = {A: {"Status": "active", "IsActive": False}, B: {"Status": "active"}, c: {"CreatedBy": None}}
    with sessions.begin() as session:
        created = write_table_rows(session, provider_id, [TableRows("ThingSpaceDevice", rows)], process_by="t", now=T0)
    assert created == {"ThingSpaceDevice": {A, B, c}}
    with sessions() as session:
        got = {d.iccid: d for d in session.scalars(select(ThingSpaceDevice))}
    assert {i: (d.is_active, d.is_deleted, d.created_by, d.created_date) for i, d in got.items()} == {
        A: (False, False, "t", T0),
        B: (True, False, "t", T0),
        c: (True, False, None, T0),
    }
    assert (got[A].status, got[B].status, got[c].status) == ("active", "active", None)
    engine.dispose()
