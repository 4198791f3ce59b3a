"""``read_only_session``: on SQLite a read neither waits for nor takes the write lock; elsewhere an ordinary
session. Writers still begin IMMEDIATE."""

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from bulkchange.store.db import make_engine, make_session_factory, read_only_session
from bulkchange.store.migrate import upgrade
from bulkchange.store.tables import ServiceProvider


def _providers(session: Session) -> int:
    return int(session.execute(select(func.count()).select_from(ServiceProvider)).scalar_one())


def test_a_read_runs_while_another_connection_holds_the_write_lock(sqlite_url: str) -> None:
    upgrade(sqlite_url)
    engine = make_engine(sqlite_url)
    factory = make_session_factory(engine)
    with factory.begin() as session:
        session.add(ServiceProvider(name="committed"))
    other = make_engine(sqlite_url)  # another process's writer
    writer = other.connect()
    holder = sqlite3.connect(engine.url.database or "", isolation_level=None)
    try:
        pending = writer.begin()  # BEGIN IMMEDIATE: the write lock, held until commit
        writer.execute(insert(ServiceProvider.__table__).values(Name="uncommitted"))
        # Were this a BEGIN IMMEDIATE it would wait out the lock (30 s) and fail "database is locked".
        with read_only_session(factory) as session:
            assert _providers(session) == 1  # the committed snapshot, not the writer's pending row
        pending.commit()
        with read_only_session(factory) as session:
            assert _providers(session) == 2
        # The ordinary session still takes the write lock up front: while it is open, another writer cannot.
        holder.execute("PRAGMA busy_timeout=0")
        with factory.begin() as session:
            session.add(ServiceProvider(name="third"))
            session.flush()
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                holder.execute("BEGIN IMMEDIATE")
    finally:
        holder.close()
        writer.close()
        other.dispose()
        engine.dispose()


def test_on_every_database_it_reads_what_is_committed(empty_db_url: str) -> None:
    upgrade(empty_db_url)
    engine = make_engine(empty_db_url)
    try:
        factory = make_session_factory(engine)
        with factory.begin() as session:
            session.add(ServiceProvider(name="one"))
        with read_only_session(factory) as session:
            assert _providers(session) == 1
    finally:
        engine.dispose()
