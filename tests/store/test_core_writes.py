"""Set-based writes through the tables (``store.core``): the same rows, defaults and values as the ORM would
write, on each database the project runs on."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any, cast

import pytest
from sqlalchemy import Table, event, select
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from bulkchange.store.core import (
    insert_many,
    insert_returning,
    insert_rows,
    update_by_id,
    update_rows,
    write_modified,
)
from bulkchange.store.db import make_engine, make_session_factory
from bulkchange.store.migrate import upgrade
from bulkchange.store.tables import Device, DeviceBulkChangeLog, ServiceProvider


@pytest.fixture
def session(empty_db_url: str) -> Iterator[Session]:
    """A session on a freshly migrated database of each kind."""
    upgrade(empty_db_url)
    engine = make_engine(empty_db_url)
    try:
        with make_session_factory(engine)() as session:
            yield session
    finally:
        engine.dispose()


def _provider(session: Session) -> ServiceProvider:
    provider = ServiceProvider(name="core-writes")
    session.add(provider)
    session.flush()
    return provider


def test_insert_update_by_attribute_names(session: Session) -> None:
    provider = _provider(session)
    rows = [
        {"service_provider_id": provider.id, "iccid": f"8914800000000000{n:04d}", "status": "inventory"}
        for n in range(1200)  # more than one executemany page on every driver
    ]
    created = dict((iccid, row_id) for row_id, iccid in insert_returning(session, Device, rows, "id", "iccid"))
    assert sorted(created) == sorted(r["iccid"] for r in rows)
    insert_rows(session, Device, [{"service_provider_id": provider.id, "iccid": "89148000000000009999"}])
    first, second = created["89148000000000000000"], created["89148000000000000001"]
    # rows setting different columns: one statement per column set, each row touched once
    update_by_id(
        session,
        Device,
        [
            {"id": first, "status": "active", "msisdn": "5551234567"},
            {"id": second, "status": "deactive"},
            {"id": created["89148000000000000002"]},  # nothing to set: left alone
        ],
    )
    session.commit()
    session.expire_all()
    got = {d.iccid: d for d in session.execute(select(Device)).scalars()}
    assert len(got) == 1201
    assert (got["89148000000000000000"].status, got["89148000000000000000"].msisdn) == ("active", "5551234567")
    assert (got["89148000000000000001"].status, got["89148000000000000001"].msisdn) == ("deactive", None)
    assert got["89148000000000000002"].status == "inventory"
    # column defaults apply as with the ORM (IsActive, IsDeleted, CreatedDate)
    extra = got["89148000000000009999"]
    assert extra.is_active is True and extra.is_deleted is False and extra.created_date is not None


def test_update_by_id_many_rows_with_dates_nulls_and_a_repeated_id(session: Session) -> None:
    """Many rows of one column set in one executemany, on each database: dates, booleans and NULLs come back
    as written, and when an id is named twice the last row wins."""
    provider = _provider(session)
    rows = [
        {"service_provider_id": provider.id, "iccid": f"8914800000000001{n:04d}", "msisdn": "1"} for n in range(1200)
    ]
    ids = [row_id for row_id, _ in insert_returning(session, Device, rows, "id", "iccid")]
    when = datetime(2026, 11, 30, 18, 0, 0, 123456)
    updates = [
        {
            "id": row_id,
            "status": f"s{n}",
            "msisdn": None if n % 2 else f"555{n:07d}",
            "is_active": n % 3 != 0,
            "modified_date": when + timedelta(seconds=n),
        }
        for n, row_id in enumerate(ids)
    ]
    repeated = {**updates[0], "status": "last wins", "modified_date": when}
    update_by_id(session, Device, [*updates, repeated])
    session.commit()
    session.expire_all()
    got = {d.id: d for d in session.execute(select(Device)).scalars()}
    for n, row_id in enumerate(ids[1:], start=1):
        device = got[row_id]
        assert device.status == f"s{n}"
        assert device.msisdn == (None if n % 2 else f"555{n:07d}")
        assert device.is_active is (n % 3 != 0)
        assert device.modified_date is not None
        assert device.modified_date.replace(tzinfo=None) == when + timedelta(seconds=n)
    assert got[ids[0]].status == "last wins"


def test_rows_with_shared_values_are_written_as_given_and_defaults_still_apply(session: Session) -> None:
    """``insert_many`` / ``update_rows`` with values every row shares (given once): on SQLite the driver gets
    tuples converted by the columns' types, elsewhere SQLAlchemy's executemany; the rows read back the same."""
    table = cast(Table, DeviceBulkChangeLog.__table__)
    when = datetime(2026, 12, 7, 4, 30, 0, 250000)
    rows = [
        {"BulkChangeId": 7, "M2MDeviceChangeId": n, "LogEntryDescription": f"row {n}", "HasErrors": n % 2 == 1}
        for n in range(600)
    ]
    insert_many(session, table, rows, shared={"ProcessBy": "tester", "ProcessedDate": when, "ErrorText": None})
    # A column with a default left out (ProcessedDate: now) gets it, as with the ORM.
    insert_many(session, table, [{"BulkChangeId": 8, "LogEntryDescription": "defaulted", "HasErrors": False}])
    got = {r.m2m_device_change_id: r for r in session.execute(select(DeviceBulkChangeLog)).scalars()}
    assert len(got) == 601
    for n in range(600):
        row = got[n]
        assert (row.bulk_change_id, row.log_entry_description, row.has_errors) == (7, f"row {n}", n % 2 == 1)
        assert (row.process_by, row.error_text, row.processed_date.replace(tzinfo=None)) == ("tester", None, when)
    assert got[None].processed_date is not None and got[None].process_by is None

    later = when + timedelta(hours=1)
    ids = sorted(r.id for n, r in got.items() if n is not None and n < 3)
    update_rows(
        session,
        table,
        [{"id": ids[0], "ErrorText": "first"}, {"id": ids[1], "ErrorText": None}, {"id": ids[2]}],
        shared={"ProcessedDate": later, "HasErrors": True},
    )
    session.commit()
    session.expire_all()
    updated = {
        r.id: r for r in session.execute(select(DeviceBulkChangeLog).where(DeviceBulkChangeLog.id.in_(ids))).scalars()
    }
    assert [updated[i].error_text for i in ids] == ["first", None, None]
    assert all(updated[i].has_errors and updated[i].processed_date.replace(tzinfo=None) == later for i in ids)
    assert all(updated[i].process_by == "tester" for i in ids)  # not named: left alone


def test_an_update_by_id_of_a_row_that_is_not_there_fails_as_the_orm_flush_would(session: Session) -> None:
    table = cast(Table, DeviceBulkChangeLog.__table__)
    insert_many(session, table, [{"BulkChangeId": 1, "LogEntryDescription": "here", "HasErrors": False}])
    [here] = session.execute(select(DeviceBulkChangeLog.id)).scalars()
    with pytest.raises(StaleDataError):
        update_rows(
            session, table, [{"id": here, "ErrorText": "x"}, {"id": here + 1000, "ErrorText": "y"}], expect=True
        )


def test_write_modified_writes_the_changed_columns_of_loaded_rows_and_leaves_the_rest_to_the_flush(
    session: Session,
) -> None:
    provider = _provider(session)
    rows = [{"service_provider_id": provider.id, "iccid": f"8914800000000002{n:04d}", "status": "s"} for n in range(4)]
    insert_returning(session, Device, rows, "id")
    session.commit()
    a, b, c, d = session.execute(select(Device).order_by(Device.id)).scalars()
    when = datetime(2026, 12, 7, 5, 0, 0, 5)
    a.status, a.modified_date = "active", when
    b.msisdn = "5550000001"
    d.status = "untouched"
    provider.name = "renamed"  # another entity: left to the flush
    new = Device(service_provider_id=provider.id, iccid="89148000000000029999", status="new")
    session.add(new)  # new rows are the flush's
    assert write_modified(session, [Device]) == 3  # a, b and d — c was not changed
    assert all(x in session and x not in session.dirty for x in (a, b, c, d))  # written, as after a flush
    assert new in session.new and provider in session.dirty
    flushed: list[str] = []

    def _statement(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        flushed.append(" ".join(statement.split()[:3]))

    bind = session.get_bind()
    event.listen(bind, "before_cursor_execute", _statement)
    try:
        session.commit()  # the flush: the provider's name and the new row, and no UPDATE of a Device
    finally:
        event.remove(bind, "before_cursor_execute", _statement)
    assert sorted(flushed) == ['INSERT INTO "Device"', 'UPDATE "ServiceProvider" SET']
    session.expire_all()
    got = {x.iccid: x for x in session.execute(select(Device)).scalars()}
    assert (got[a.iccid].status, got[a.iccid].modified_date.replace(tzinfo=None)) == ("active", when)
    assert (got[b.iccid].msisdn, got[b.iccid].status) == ("5550000001", "s")
    assert got[c.iccid].status == "s" and got[d.iccid].status == "untouched"
    assert got["89148000000000029999"].status == "new"
    assert session.get(ServiceProvider, provider.id).name == "renamed"  # type: ignore[union-attr]


def test_text_that_copy_must_escape_is_stored_as_given(session: Session) -> None:
    """On PostgreSQL ``insert_many`` streams the rows through COPY (its text format gives tabs, newlines and
    backslashes a meaning); every value reads back exactly as given, NULL stays NULL, and no INSERT is sent."""
    table = cast(Table, DeviceBulkChangeLog.__table__)
    awkward = ["tab\there", "line\nbreak\r\n", "back\\slash \\N", "\\.", "", "ünïcödé ✓ 𝄞", '{"json": "quote\\""}']
    sent: list[str] = []
    event.listen(session.get_bind(), "before_cursor_execute", lambda *args: sent.append(str(args[2])))
    insert_many(
        session,
        table,
        [{"M2MDeviceChangeId": n, "RequestText": text, "ResponseText": None} for n, text in enumerate(awkward)],
        shared={
            "BulkChangeId": 3,
            "LogEntryDescription": "awkward",
            "HasErrors": True,
            "ProcessedDate": datetime(2026, 12, 7),
        },
    )
    got = {r.m2m_device_change_id: r for r in session.execute(select(DeviceBulkChangeLog)).scalars()}
    assert [got[n].request_text for n in range(len(awkward))] == awkward
    assert all(got[n].response_text is None and got[n].has_errors for n in range(len(awkward)))
    assert all(got[n].processed_date.replace(tzinfo=None) == datetime(2026, 12, 7) for n in range(len(awkward)))
    if session.get_bind().dialect.name == "postgresql":
        assert not [sql for sql in sent if sql.lstrip().upper().startswith("INSERT")]


def test_insert_returning_gives_every_new_row_and_sends_one_statement_on_postgresql(session: Session) -> None:
    """Each row's id comes back with its ICCID and its values are stored as given (NULLs, booleans, times); on
    PostgreSQL as one INSERT of arrays, not one statement per page of rows."""
    provider = _provider(session)
    when = datetime(2026, 12, 7, 9, 50, 1, 500)
    rows = [
        {
            "service_provider_id": provider.id,
            "iccid": f"8914801000000000{n:04d}",
            "msisdn": None if n % 2 else f"555{n:07d}",
            "is_active": n % 3 != 0,
            "created_date": when,
            "status": "inventory",
        }
        for n in range(2500)
    ]
    sent: list[str] = []
    event.listen(session.get_bind(), "before_cursor_execute", lambda *args: sent.append(str(args[2])))
    made = insert_returning(session, Device, rows, "id", "iccid")
    inserts = [sql for sql in sent if sql.lstrip().upper().startswith("INSERT")]
    if session.get_bind().dialect.name == "postgresql":
        assert len(inserts) == 1
    by_iccid = {iccid: row_id for row_id, iccid in made}
    assert len(made) == len(by_iccid) == 2500
    stored = {d.id: d for d in session.execute(select(Device)).scalars()}
    for n, row in enumerate(rows):
        device = stored[by_iccid[row["iccid"]]]
        assert (device.iccid, device.msisdn, device.is_active, device.status) == (
            row["iccid"],
            row["msisdn"],
            row["is_active"],
            "inventory",
        ), n
        assert device.created_date.replace(tzinfo=None) == when
        assert device.is_deleted is False  # a default of a column left out


def test_update_rows_sets_each_row_and_sends_one_statement_per_column_set_on_postgresql(session: Session) -> None:
    """Rows updated by id get their own values and the shared ones; on PostgreSQL each set of columns is one
    UPDATE of arrays, not an executemany of one UPDATE per row."""
    table = cast(Table, DeviceBulkChangeLog.__table__)
    insert_many(
        session, table, [{"BulkChangeId": 9, "M2MDeviceChangeId": n, "LogEntryDescription": "x"} for n in range(1500)]
    )
    ids = sorted(session.execute(select(DeviceBulkChangeLog.id)).scalars())
    when = datetime(2026, 12, 7, 10, 0, 0)
    sent: list[tuple[str, bool]] = []  # each statement, and whether it went as an executemany (row by row)
    event.listen(session.get_bind(), "before_cursor_execute", lambda *args: sent.append((str(args[2]), args[5])))
    update_rows(
        session,
        table,
        [{"id": i, "ResponseText": f"r{i}", "HasErrors": i % 2 == 0} for i in ids[:1000]]
        + [{"id": i, "ErrorText": None if i % 3 else "e"} for i in ids[1000:]],
        shared={"ProcessedDate": when},
        expect=True,
    )
    if session.get_bind().dialect.name == "postgresql":
        assert [many for sql, many in sent if sql.lstrip().upper().startswith("UPDATE")] == [False, False]
    session.expire_all()
    got = {r.id: r for r in session.execute(select(DeviceBulkChangeLog)).scalars()}
    for i in ids[:1000]:
        assert (got[i].response_text, got[i].has_errors, got[i].error_text) == (f"r{i}", i % 2 == 0, None)
    for i in ids[1000:]:
        assert (got[i].response_text, got[i].error_text) == (None, None if i % 3 else "e")
    assert all(r.processed_date.replace(tzinfo=None) == when for r in got.values())
