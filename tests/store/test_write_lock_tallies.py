"""The write-lock tallies (``store.write_lock``): every SQLite write transaction counts, under the work that
opened it, the time it waited for the write lock and the time it held it; reads and other databases count
nothing."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from bulkchange.store.db import make_engine, make_session_factory, read_only_session
from bulkchange.store.migrate import upgrade
from bulkchange.store.tables import ServiceProvider
from bulkchange.store.write_lock import OTHER, WRITE_LOCK, Tally, working_on

HOLD_S = 0.3


def _add_provider(session: Session, name: str) -> None:
    session.execute(insert(ServiceProvider.__table__).values(Name=name))


def _delta(before: dict[str, Tally], work: str) -> Tally:
    now, then = WRITE_LOCK.snapshot().get(work, Tally()), before.get(work, Tally())
    return Tally(now.transactions - then.transactions, now.wait_s - then.wait_s, now.held_s - then.held_s)


def test_a_transaction_counts_its_wait_and_the_holder_its_hold_each_under_its_work(sqlite_url: str) -> None:
    upgrade(sqlite_url)
    factory = make_session_factory(make_engine(sqlite_url))
    before = WRITE_LOCK.snapshot()
    holding, trying = threading.Event(), threading.Event()
    failures: list[BaseException] = []

    def hold() -> None:
        try:
            with working_on("record"), factory.begin() as session:
                _add_provider(session, "held")
                holding.set()
                trying.wait(30)
                time.sleep(HOLD_S)  # the waiter is queued for the lock all this while
        except BaseException as exc:  # reported to the test thread
            failures.append(exc)

    holder = threading.Thread(target=hold)
    holder.start()
    assert holding.wait(30)
    with working_on("callback_intake"):
        trying.set()
        with factory.begin() as session:  # waits for the holder's commit
            _add_provider(session, "waited")
    holder.join(30)
    assert not failures

    waited, held = _delta(before, "callback_intake"), _delta(before, "record")
    assert waited.transactions == 1 and held.transactions == 1
    assert waited.wait_s >= HOLD_S / 2, "the waiter's wait is the holder's hold after it began to wait"
    assert held.held_s >= HOLD_S
    assert held.wait_s < HOLD_S / 2, "the holder found the lock free"
    assert _delta(before, OTHER).transactions == 0


def test_a_rolled_back_transaction_counts_its_hold_and_outside_any_work_is_other(sqlite_url: str) -> None:
    upgrade(sqlite_url)
    factory = make_session_factory(make_engine(sqlite_url))
    before = WRITE_LOCK.snapshot()
    with pytest.raises(RuntimeError), factory.begin() as session:
        _add_provider(session, "rolled back")
        raise RuntimeError("the transaction fails")
    other = _delta(before, OTHER)
    assert other.transactions == 1 and other.held_s > 0
    with factory() as session:
        assert session.execute(select(func.count()).select_from(ServiceProvider)).scalar_one() == 0


@pytest.mark.postgres
def test_reads_on_sqlite_and_every_transaction_on_postgresql_count_nothing(sqlite_url: str, postgres_url: str) -> None:
    for url in (sqlite_url, postgres_url):
        upgrade(url)
    sqlite_factory = make_session_factory(make_engine(sqlite_url))
    postgres_factory = make_session_factory(make_engine(postgres_url))
    before = WRITE_LOCK.snapshot()
    with read_only_session(sqlite_factory) as session:
        session.execute(select(func.count()).select_from(ServiceProvider)).scalar_one()
    with working_on("record"), postgres_factory.begin() as session:
        _add_provider(session, "on PostgreSQL")
    assert WRITE_LOCK.snapshot() == before
