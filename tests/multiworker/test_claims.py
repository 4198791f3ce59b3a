"""Claims with many workers: disjoint, counted, leased, reclaimed — on SQLite and PostgreSQL for real,
and on SQL Server as compiled SQL text (there is no SQL Server here; the statement is checked, not run).
"""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

import pytest
from sqlalchemy import Engine, select, text, update
from sqlalchemy.dialects import mssql, postgresql, sqlite

from bulkchange.engine import changes as ch
from bulkchange.store.db import make_engine, make_session_factory
from bulkchange.store.tables import M2MDeviceChange

from .conftest import MakeBulk, bulk_maker

NOW = datetime(2026, 3, 1, 12, 0, 0)


def _claim(
    engine: Engine, bulk_id: int, worker: str, *, limit: int, now: datetime = NOW, lease_s: int = 60
) -> list[int]:
    with make_session_factory(engine)() as session:
        return [c.id for c in ch.claim(session, bulk_id, worker=worker, lease_s=lease_s, now=now, limit=limit)]


def _rows(engine: Engine, bulk_id: int) -> list[M2MDeviceChange]:
    with make_session_factory(engine)() as session:
        return list(
            session.scalars(select(M2MDeviceChange).where(M2MDeviceChange.bulk_change_id == bulk_id).order_by("id"))
        )


def test_concurrent_claimers_take_disjoint_rows_and_count_one_attempt_each(
    claim_engine: Engine, make_bulk: MakeBulk
) -> None:
    bulk_id = make_bulk(600)
    start = threading.Barrier(6)

    def worker(name: str) -> list[int]:
        start.wait()
        taken: list[int] = []
        while batch := _claim(claim_engine, bulk_id, name, limit=7):
            taken.extend(batch)
        return taken

    with ThreadPoolExecutor(max_workers=6) as pool:
        results = {f"w{i}": pool.submit(worker, f"w{i}") for i in range(6)}
        by_worker = {name: future.result() for name, future in results.items()}

    every = [i for ids in by_worker.values() for i in ids]
    assert len(every) == len(set(every)) == 600  # nothing claimed twice, nothing left out
    rows = _rows(claim_engine, bulk_id)
    assert {r.status for r in rows} == {"SENDING"}
    assert {r.attempt_count for r in rows} == {1}  # the attempt is counted at claim time, once
    owner = {i: name for name, ids in by_worker.items() for i in ids}
    assert all(r.lease_owner == owner[r.id] for r in rows)
    assert all(r.lease_expires_at == NOW + timedelta(seconds=60) for r in rows)
    # One correlation id per claimed batch (a batch is one carrier request), never shared across batches.
    per_correlation = Counter(r.correlation_id for r in rows)
    assert max(per_correlation.values()) <= 7


def test_a_claim_takes_one_batch_key_in_id_order_up_to_the_limit(claim_engine: Engine, make_bulk: MakeBulk) -> None:
    bulk_id = make_bulk(10, keys=("ADD:a", "ADD:b"))
    first = _claim(claim_engine, bulk_id, "w", limit=3)
    rows = {r.id: r for r in _rows(claim_engine, bulk_id)}
    assert first == sorted(first) and len(first) == 3
    assert {rows[i].batch_key for i in first} == {"ADD:a"}
    assert first == sorted(i for i, r in rows.items() if r.batch_key == "ADD:a")[:3]
    assert len({rows[i].correlation_id for i in first}) == 1


def test_next_steps_then_the_longest_chains_then_callbacks_then_plain_adds_are_claimed(
    claim_engine: Engine, make_bulk: MakeBulk
) -> None:
    # In id order: plain Adds, Suspends, Activates, and Adds that an Activate follows, all mixed. First the
    # Activates of Add-then-Activates whose Add is done (a device's next step), then the Adds of
    # Add-then-Activate (the Add key's rows in that order too), then the steps settled by callbacks, then the
    # plain Adds; within each, by id.
    bulk_id = make_bulk(12, keys=("ADD:a", "SUSPEND:b", "ACTIVATE:c", "ADD:a"))
    rows = _rows(claim_engine, bulk_id)
    chain = [rows[3].id, rows[7].id, rows[11].id]  # three of the six ADD:a rows
    with claim_engine.begin() as conn:
        conn.execute(update(M2MDeviceChange).where(M2MDeviceChange.id.in_(chain)).values(plan="ADD,ACTIVATE"))
        second = [r.id for r in rows if r.batch_key == "ACTIVATE:c"]
        conn.execute(
            update(M2MDeviceChange).where(M2MDeviceChange.id.in_(second)).values(plan="ADD,ACTIVATE", step_index=1)
        )
    by_id = {r.id: r for r in rows}
    assert _claim(claim_engine, bulk_id, "w", limit=10) == second
    assert _claim(claim_engine, bulk_id, "w", limit=3) == chain  # though plain Adds of that key come earlier
    order = [_claim(claim_engine, bulk_id, "w", limit=10) for _ in range(3)]
    assert [{by_id[i].batch_key for i in batch} for batch in order[:2]] == [{"SUSPEND:b"}, {"ADD:a"}]
    assert order[2] == []
    plain_adds = [i for i, r in by_id.items() if r.batch_key == "ADD:a" and i not in chain]
    assert order[1] == sorted(plain_adds)


def test_rows_not_due_or_not_ready_are_not_claimed(claim_engine: Engine, make_bulk: MakeBulk) -> None:
    bulk_id = make_bulk(4)
    ids = [r.id for r in _rows(claim_engine, bulk_id)]
    with claim_engine.begin() as conn:
        later = NOW + timedelta(seconds=5)
        conn.execute(update(M2MDeviceChange).where(M2MDeviceChange.id == ids[0]).values(next_attempt_at=later))
        conn.execute(update(M2MDeviceChange).where(M2MDeviceChange.id == ids[1]).values(status="AWAITING_RESULT"))
    assert _claim(claim_engine, bulk_id, "w", limit=10) == ids[2:]
    assert _claim(claim_engine, bulk_id, "w", limit=10) == []
    assert _claim(claim_engine, bulk_id, "w", limit=10, now=NOW + timedelta(seconds=5)) == [ids[0]]


def test_an_expired_lease_is_taken_over_once_and_not_before(claim_engine: Engine, make_bulk: MakeBulk) -> None:
    bulk_id = make_bulk(5)
    claimed = _claim(claim_engine, bulk_id, "dead-worker", limit=5, lease_s=30)
    sessions = make_session_factory(claim_engine)

    def reclaim(worker: str, now: datetime) -> list[int]:
        with sessions() as session:
            rows = ch.claim_expired_sending(session, bulk_id, worker=worker, lease_s=30, now=now, limit=100)
            return [r.id for r in rows]

    assert reclaim("w2", NOW + timedelta(seconds=29)) == []  # lease still running
    assert reclaim("w2", NOW + timedelta(seconds=31)) == claimed
    assert reclaim("w3", NOW + timedelta(seconds=32)) == []  # w2's new lease holds
    rows = _rows(claim_engine, bulk_id)
    assert {r.lease_owner for r in rows} == {"w2"}
    assert {r.status for r in rows} == {"SENDING"}  # to be reconciled, never resent blindly
    assert {r.attempt_count for r in rows} == {1}  # taking over is not a new attempt


def test_concurrent_takeovers_of_expired_leases_are_disjoint(claim_engine: Engine, make_bulk: MakeBulk) -> None:
    bulk_id = make_bulk(300)
    while _claim(claim_engine, bulk_id, "dead-worker", limit=50, lease_s=10):
        pass
    later = NOW + timedelta(seconds=11)
    sessions = make_session_factory(claim_engine)
    start = threading.Barrier(4)

    def worker(name: str) -> list[int]:
        start.wait()
        taken: list[int] = []
        while True:
            with sessions() as session:
                rows = ch.claim_expired_sending(session, bulk_id, worker=name, lease_s=600, now=later, limit=9)
            if not rows:
                return taken
            taken.extend(r.id for r in rows)

    with ThreadPoolExecutor(max_workers=4) as pool:
        every = [i for ids in pool.map(worker, [f"w{i}" for i in range(4)]) for i in ids]
    assert len(every) == len(set(every)) == 300


@pytest.mark.postgres
def test_postgresql_claims_skip_locked_rows_instead_of_waiting(pg_migrated_url: str) -> None:
    """A claim whose transaction is still open holds its rows; another claim takes the next ones at once."""
    engine = make_engine(pg_migrated_url)
    try:
        bulk_id = bulk_maker(engine)(20)
        sessions = make_session_factory(engine)
        with sessions() as holder:
            stmt = ch.claim_statement(
                "postgresql", bulk_id, worker="slow", lease_s=60, now=NOW, limit=5, correlation="held"
            )
            held = sorted(c.id for c in holder.scalars(stmt))  # not committed: rows stay locked
            with sessions() as other:
                other.execute(text("SET LOCAL lock_timeout = '2s'"))  # waiting would fail the test
                taken = [c.id for c in ch.claim(other, bulk_id, worker="fast", lease_s=60, now=NOW, limit=5)]
            holder.rollback()
        assert len(held) == 5 and len(taken) == 5
        assert not set(held) & set(taken)
        assert min(taken) > max(held)
    finally:
        engine.dispose()


# ------------------------------------------------------------------------------------------ SQL text


def _sql(stmt: object, dialect: object) -> str:
    return " ".join(str(stmt.compile(dialect=dialect, compile_kwargs={"literal_binds": True})).split())  # type: ignore[attr-defined]


def test_sql_server_claim_is_update_top_n_with_updlock_readpast_then_output() -> None:
    stmt = ch.claim_statement("mssql", 42, worker="w1", lease_s=300, now=NOW, limit=50, correlation="c0ffee")
    sql = _sql(stmt, mssql.dialect())

    # TOP(50) rows, the hints on the updated table itself (one reference to it: nothing to re-run).
    assert sql.startswith(
        "UPDATE TOP (50) [M2M_DeviceChange] WITH (UPDLOCK, READPAST, ROWLOCK) SET [Status]=N'SENDING'"
    )
    assert "[AttemptCount]=([M2M_DeviceChange].[AttemptCount] + 1)" in sql  # counted at claim time
    assert "[LeaseOwner]=N'w1'" in sql and "[CorrelationId]=N'c0ffee'" in sql
    assert "[LeaseExpiresAt]='2026-03-01 12:05:00'" in sql
    assert " OUTPUT inserted.id, inserted.[BulkChangeId]," in sql  # SQL Server's RETURNING
    due = (
        "[M2M_DeviceChange].[BulkChangeId] = 42 AND [M2M_DeviceChange].[Status] = N'READY' AND "
        "([M2M_DeviceChange].[NextAttemptAt] IS NULL OR [M2M_DeviceChange].[NextAttemptAt] <= '2026-03-01 12:00:00') "
        # A paused bulk change lends none of its changes (the pause is tested by the claim itself).
        "AND NOT (EXISTS (SELECT * FROM [DeviceBulkChange] WHERE [DeviceBulkChange].id = 42 AND "
        "[DeviceBulkChange].[PausedAt] IS NOT NULL))"
    )
    # The batch key: the first due row's in claim order (next steps, then chains, plain Adds last), read with the same
    # hints (its row locked, others' skipped).
    assert sql.endswith(
        f"WHERE {due} AND coalesce([M2M_DeviceChange].[BatchKey], '') = (SELECT TOP 1 "
        f"coalesce([M2M_DeviceChange].[BatchKey], '') AS coalesce_1 FROM [M2M_DeviceChange] "
        f"WITH (UPDLOCK, READPAST, ROWLOCK) WHERE {due} ORDER BY CASE WHEN ([M2M_DeviceChange].[StepIndex] > 0) "
        f"THEN 0 WHEN ([M2M_DeviceChange].[StepIndex] = 0 AND [M2M_DeviceChange].[Plan] LIKE N'%,%') THEN 1 WHEN "
        f"(coalesce([M2M_DeviceChange].[BatchKey], '') LIKE N'ADD:%' OR coalesce([M2M_DeviceChange].[BatchKey], '') "
        f"LIKE N'RATE_PLAN:%' OR coalesce([M2M_DeviceChange].[BatchKey], '') LIKE N'STATUS:%') THEN 3 ELSE 2 END, "
        f"[M2M_DeviceChange].id)"
    )
    assert sql.count("WITH (UPDLOCK, READPAST, ROWLOCK)") == 2
    assert "FOR UPDATE" not in sql and "RETURNING" not in sql and "LIMIT" not in sql


def test_sql_server_takeover_of_expired_leases() -> None:
    stmt = ch.reclaim_statement("mssql", 42, worker="w2", lease_s=300, now=NOW, limit=20)
    sql = _sql(stmt, mssql.dialect())
    assert sql.startswith(
        "UPDATE TOP (20) [M2M_DeviceChange] WITH (UPDLOCK, READPAST, ROWLOCK) SET [LeaseOwner]=N'w2', "
        "[LeaseExpiresAt]='2026-03-01 12:05:00', [CorrelationId]=N'"
    )
    # A new claim id: outcomes read under the expired claim can no longer be recorded.
    assert " OUTPUT inserted.id," in sql
    assert sql.endswith(
        "WHERE [M2M_DeviceChange].[BulkChangeId] = 42 AND [M2M_DeviceChange].[Status] = N'SENDING' "
        "AND [M2M_DeviceChange].[LeaseExpiresAt] < '2026-03-01 12:00:00'"
    )


def test_postgresql_and_sqlite_claim_text() -> None:
    pg = _sql(ch.claim_statement("postgresql", 1, worker="w", lease_s=5, now=NOW, limit=9, correlation="c"),
              postgresql.dialect())
    assert pg.count("FOR UPDATE SKIP LOCKED") == 2 and " RETURNING " in pg
    # The locked choice is computed once (a nested loop would otherwise re-run it per row).
    assert pg.startswith("WITH claimable AS MATERIALIZED (SELECT")
    assert (
        'WHERE "M2M_DeviceChange".id IN (SELECT claimable.id FROM claimable) '
        'AND "M2M_DeviceChange"."Status" = \'READY\''
    ) in pg
    lite = _sql(ch.claim_statement("sqlite", 1, worker="w", lease_s=5, now=NOW, limit=9, correlation="c"),
                sqlite.dialect())
    assert lite.startswith('UPDATE "M2M_DeviceChange" SET') and " RETURNING " in lite
    assert "FOR UPDATE" not in lite and "WITH (" not in lite  # one statement under SQLite's write lock


def test_claims_refuse_an_unknown_dialect() -> None:
    with pytest.raises(NotImplementedError, match="oracle"):
        ch.claim_statement("oracle", 1, worker="w", lease_s=5, now=NOW, limit=1, correlation="c")
