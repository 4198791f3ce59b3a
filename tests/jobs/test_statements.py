"""The durable-work primitive on a table of its own: claims are disjoint and counted, leases expire and
are taken over, only the owner settles, a retry decision is recorded — on SQLite and PostgreSQL for real,
on SQL Server as compiled SQL text (no server here)."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Column, DateTime, Engine, Integer, MetaData, String, Table, insert, select
from sqlalchemy.dialects import mssql

from bulkchange.domain.retry import RetryPolicy
from bulkchange.jobs import statements as jobs
from bulkchange.jobs.spec import LeasedRows
from bulkchange.store.db import make_engine, make_session_factory

NOW = datetime(2026, 12, 1, 12, 0, 0)

metadata = MetaData()
work = Table(
    "TestWork",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("Status", String(20), nullable=False),
    Column("LeaseOwner", String(50)),
    Column("LeaseExpiresAt", DateTime),
    Column("AttemptCount", Integer, nullable=False, default=0),
    Column("NextAttemptAt", DateTime),
)
ROWS = LeasedRows(
    kind="test",
    table=work,
    id=work.c.id,
    owner=work.c.LeaseOwner,
    lease_until=work.c.LeaseExpiresAt,
    attempts=work.c.AttemptCount,
    due_at=work.c.NextAttemptAt,
    status=work.c.Status,
    waiting="PENDING",
    working="RUNNING",
)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'jobs.sqlite3'}"
        made = make_engine(url)
    else:
        made = make_engine(str(request.getfixturevalue("pg_empty_url")), pool_size=10)
    metadata.create_all(made)
    yield made
    made.dispose()


def _add(engine: Engine, n: int, **values: Any) -> None:
    with make_session_factory(engine).begin() as session:
        session.execute(insert(work), [{"Status": "PENDING", "AttemptCount": 0, **values} for _ in range(n)])


def _claim(engine: Engine, owner: str, *, limit: int, now: datetime = NOW, lease_s: float = 60) -> list[int]:
    with make_session_factory(engine).begin() as session:
        rows = jobs.claim(
            session, ROWS, where=[ROWS.claimable(now)], owner=owner, now=now, lease_s=lease_s, limit=limit
        )
        return [int(r[0]) for r in rows]


def _all(engine: Engine) -> list[Any]:
    with make_session_factory(engine)() as session:
        return list(session.execute(select(work).order_by(work.c.id)).all())


def test_concurrent_claimers_take_disjoint_rows_each_counted_once(engine: Engine) -> None:
    _add(engine, 300)
    start = threading.Barrier(5)

    def worker(name: str) -> list[int]:
        start.wait()
        taken: list[int] = []
        while batch := _claim(engine, name, limit=7):
            assert len(batch) <= 7  # the row choice runs once: a claim never takes more than asked
            taken.extend(batch)
        return taken

    with ThreadPoolExecutor(max_workers=5) as pool:
        results = [pool.submit(worker, f"w{i}") for i in range(5)]
        taken = [i for future in results for i in future.result()]
    assert len(taken) == len(set(taken)) == 300
    rows = _all(engine)
    assert {r.Status for r in rows} == {"RUNNING"}
    assert {r.AttemptCount for r in rows} == {1}
    assert {r.LeaseExpiresAt for r in rows} == {NOW + timedelta(seconds=60)}


def test_work_not_yet_due_is_not_claimed_and_next_due_says_when(engine: Engine) -> None:
    _add(engine, 2, NextAttemptAt=NOW + timedelta(seconds=30))
    assert _claim(engine, "w", limit=10) == []
    with make_session_factory(engine)() as session:
        assert jobs.next_due_in_s(session, ROWS, now=NOW) == pytest.approx(30.0)
        assert jobs.next_due_in_s(session, ROWS, now=NOW + timedelta(seconds=31)) == 0.0
    assert len(_claim(engine, "w", limit=10, now=NOW + timedelta(seconds=31))) == 2


def test_an_expired_lease_is_taken_over_and_the_old_owner_can_no_longer_settle(engine: Engine) -> None:
    _add(engine, 1)
    [row_id] = _claim(engine, "slow", limit=1, lease_s=10)
    assert _claim(engine, "other", limit=1, now=NOW + timedelta(seconds=5)) == []  # still leased
    with make_session_factory(engine)() as session:
        assert jobs.next_due_in_s(session, ROWS, now=NOW) == pytest.approx(10.0)
    assert _claim(engine, "other", limit=1, now=NOW + timedelta(seconds=11)) == [row_id]
    with make_session_factory(engine).begin() as session:
        assert not jobs.settle(session, ROWS, row_id, owner="slow", status="DONE")
        assert jobs.settle(session, ROWS, row_id, owner="other", status="DONE")
    [row] = _all(engine)
    assert (row.Status, row.LeaseOwner, row.AttemptCount) == ("DONE", None, 2)
    with make_session_factory(engine)() as session:
        assert jobs.next_due_in_s(session, ROWS, now=NOW) is None  # nothing waiting or working


def test_retry_later_records_the_decision_and_gives_up_when_attempts_run_out(engine: Engine) -> None:
    _add(engine, 1)
    policy = RetryPolicy(max_attempts=2, base_s=10, cap_s=60)
    [row_id] = _claim(engine, "w", limit=1)
    decision = policy.decide(1, now=NOW, rng=random.Random(1))
    assert not decision.give_up and decision.retry_at is not None
    with make_session_factory(engine).begin() as session:
        assert jobs.retry_later(session, ROWS, row_id, owner="w", decision=decision, gave_up="FAILED")
    [row] = _all(engine)
    assert (row.Status, row.NextAttemptAt, row.LeaseOwner) == ("PENDING", decision.retry_at, None)
    later = decision.retry_at
    [row_id] = _claim(engine, "w", limit=1, now=later)
    final = policy.decide(2, now=later)
    assert final.give_up and final.describe() == "gave up after 2 attempts"
    with make_session_factory(engine).begin() as session:
        assert jobs.retry_later(session, ROWS, row_id, owner="w", decision=final, gave_up="FAILED")
    assert _all(engine)[0].Status == "FAILED"


def test_release_gives_work_back_untouched_and_heartbeat_extends_only_own_leases(engine: Engine) -> None:
    _add(engine, 2)
    ids = _claim(engine, "w", limit=2)
    with make_session_factory(engine).begin() as session:
        assert jobs.extend_lease(session, ROWS, ids, owner="w", until=NOW + timedelta(hours=1)) == 2
        assert jobs.extend_lease(session, ROWS, ids, owner="intruder", until=NOW + timedelta(hours=2)) == 0
        assert jobs.release(session, ROWS, ids[:1], owner="w") == 1
    rows = _all(engine)
    assert (rows[0].Status, rows[0].AttemptCount, rows[0].LeaseOwner) == ("PENDING", 0, None)
    assert (rows[1].Status, rows[1].LeaseExpiresAt) == ("RUNNING", NOW + timedelta(hours=1))


def test_sql_server_claim_is_one_update_top_with_lock_hints() -> None:
    stmt = jobs.claim_statement(
        ROWS,
        "mssql",
        where=[ROWS.claimable(NOW)],
        values=jobs.lease_values(ROWS, owner="w", now=NOW, lease_s=60),
        limit=25,
    )
    sql = " ".join(str(stmt.compile(dialect=mssql.dialect())).split())
    assert sql.startswith("UPDATE TOP (25) [TestWork] WITH (UPDLOCK, READPAST, ROWLOCK) SET")
    assert "OUTPUT inserted.id" in sql
    assert "SELECT" not in sql and "FROM" not in sql  # no subquery: nothing to re-run per row
