"""Set-based writes through the tables (``store.core``): the same rows, defaults and values as the ORM would
write, on each database the project runs on."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from bulkchange.store.core import insert_returning, insert_rows, update_by_id
from bulkchange.store.db import make_engine, make_session_factory
from bulkchange.store.migrate import upgrade
from bulkchange.store.tables import Device, ServiceProvider


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
