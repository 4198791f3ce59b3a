"""SQLite's write lock: a transaction waits for it (polling, not SQLite's 100 ms back-off) and gives up
with "database is locked" only after its wait."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from bulkchange.store import db as db_module
from bulkchange.store.db import begin_immediate, make_engine


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    return conn


def test_a_waiting_transaction_starts_once_the_writer_commits(tmp_path: Path) -> None:
    db = tmp_path / "lock.sqlite3"
    holder, waiter = _connect(db), _connect(db)
    holder.execute("CREATE TABLE t (v INTEGER)")
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("INSERT INTO t VALUES (1)")
    started = threading.Event()
    failure: list[BaseException] = []

    def wait_then_write() -> None:
        try:
            begin_immediate(waiter, wait_s=30)
            waiter.execute("INSERT INTO t VALUES (2)")
            waiter.execute("COMMIT")
        except BaseException as exc:  # reported to the test thread
            failure.append(exc)
        finally:
            started.set()

    thread = threading.Thread(target=wait_then_write)
    thread.start()
    assert not started.wait(0.2), "it must wait while the other connection holds the write lock"
    holder.execute("COMMIT")
    thread.join(30)
    assert not thread.is_alive() and not failure
    assert [r[0] for r in holder.execute("SELECT v FROM t ORDER BY v")] == [1, 2]
    # The connection's own busy timeout is back for its other statements.
    assert waiter.execute("PRAGMA busy_timeout").fetchone()[0] == 30_000


def test_it_gives_up_with_database_is_locked_after_its_wait(tmp_path: Path) -> None:
    db = tmp_path / "lock.sqlite3"
    holder, waiter = _connect(db), _connect(db)
    holder.execute("BEGIN IMMEDIATE")
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        begin_immediate(waiter, wait_s=0.05)
    holder.execute("COMMIT")
    begin_immediate(waiter, wait_s=0.05)
    waiter.execute("COMMIT")


def test_a_new_connection_waits_to_switch_a_fresh_file_to_wal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two workers starting on a fresh file: one migrating (a write transaction, the file not yet in WAL
    mode), the other connecting. SQLite refuses the second's ``PRAGMA journal_mode=WAL`` at once, without its
    busy handler; the engine retries it until the writer commits (here: the first pause commits it)."""
    db = tmp_path / "fresh.sqlite3"
    holder = sqlite3.connect(db, isolation_level=None, check_same_thread=False)  # rollback journal: fresh file
    holder.execute("CREATE TABLE t (v INTEGER)")
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("INSERT INTO t VALUES (1)")
    pauses: list[float] = []
    real_sleep = db_module.time.sleep

    def pause(seconds: float) -> None:
        if not pauses:
            holder.execute("COMMIT")  # the other worker's migration finishes while this one waits
        pauses.append(seconds)
        real_sleep(seconds)

    monkeypatch.setattr(db_module.time, "sleep", pause)
    engine = make_engine(f"sqlite:///{db}")
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("SELECT v FROM t").scalars().all() == [1]
        assert pauses, "the first attempt must have been refused"
    finally:
        engine.dispose()
        holder.close()
