"""A receive claims at most ``max_messages`` rows, whatever plan the database picks for the claim.

``WHERE id IN (SELECT … LIMIT n FOR UPDATE SKIP LOCKED)`` is not one row choice on PostgreSQL: under a
nested-loop semi-join the subquery is re-run for each outer row, each run skipping the rows the statement
already locked, so one receive could take (and hide for the visibility timeout) far more than ``n``
messages — what happened to the engine's change claims (engine/changes.py ``_claimed_rows``). These
tests force that plan on every connection and check a small receive against many visible messages; the
SQL Server statement is checked as compiled text (there is no server here).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import Engine, event, func, select
from sqlalchemy.dialects import mssql, postgresql
from sqlalchemy.orm import sessionmaker

from bulkchange.jobs.embedded_queue import EmbeddedQueue
from bulkchange.queue.message import BulkChangeMessage
from bulkchange.store.db import make_engine, make_session_factory
from bulkchange.store.tables import QueueMessage

# What makes PostgreSQL pick the nested loop that re-runs the subquery: no hash or merge join, no
# materialisation of the inner side.
NESTED_LOOP_ONLY = (
    "SET enable_hashjoin = off",
    "SET enable_mergejoin = off",
    "SET enable_material = off",
    "SET enable_memoize = off",
)


@pytest.fixture
def nested_loop_engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    if engine.dialect.name == "postgresql":

        @event.listens_for(engine, "connect")
        def _force_nested_loop(dbapi_connection: Any, _record: Any) -> None:
            with dbapi_connection.cursor() as cursor:
                for statement in NESTED_LOOP_ONLY:
                    cursor.execute(statement)
            dbapi_connection.commit()

    yield engine
    engine.dispose()


def _hidden(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).where(QueueMessage.receive_count > 0)).scalar_one())


@pytest.mark.parametrize("limit", [1, 3, 7])
def test_a_small_receive_among_many_messages_takes_at_most_its_limit(
    nested_loop_engine: Engine, clock: Any, limit: int
) -> None:
    queue = EmbeddedQueue(make_session_factory(nested_loop_engine), clock=clock)
    for i in range(400):
        queue.send(BulkChangeMessage(bulk_change_id=i + 1))

    first = queue.receive(max_messages=limit)

    assert len(first) == limit
    assert _hidden(nested_loop_engine) == limit  # nothing else was hidden by the claim
    assert [m.attributes["BulkChangeId"]["StringValue"] for m in first] == [str(i + 1) for i in range(limit)]
    taken = [m.message_id for m in first]
    while batch := queue.receive(max_messages=10):
        assert len(batch) <= 10
        taken.extend(m.message_id for m in batch)
    assert len(taken) == len(set(taken)) == 400


def test_dead_lettering_under_the_same_plan_touches_only_exhausted_messages(
    nested_loop_engine: Engine, clock: Any
) -> None:
    queue = EmbeddedQueue(make_session_factory(nested_loop_engine), clock=clock, max_receives=1, visibility_timeout_s=5)
    for i in range(50):
        queue.send(BulkChangeMessage(bulk_change_id=i + 1))
    first = queue.receive(max_messages=2)
    clock.advance(6)  # the two come back having used their only receive

    again = queue.receive(max_messages=2)

    assert {m.message_id for m in again}.isdisjoint(m.message_id for m in first)
    assert {m.message_id for m in queue.dead_letters()} == {m.message_id for m in first}
    assert queue.stats().dead_lettered == 2


def _claim_sql(dialect: Any) -> str:
    queue = EmbeddedQueue(sessionmaker(), queue_name="q")  # never connects: the statement is only compiled
    stmt = queue._claim(dialect.name, datetime(2026, 3, 1, 12, 0, 0), 3, 30)
    return " ".join(str(stmt.compile(dialect=dialect)).upper().split())


def test_postgresql_chooses_the_rows_once_in_a_materialized_cte() -> None:
    sql = _claim_sql(postgresql.dialect())
    assert "WITH CLAIMABLE AS MATERIALIZED" in sql
    assert "FOR UPDATE SKIP LOCKED" in sql and "LIMIT" in sql


def test_sql_server_updates_top_n_with_its_hints_and_no_subquery() -> None:
    sql = _claim_sql(mssql.dialect())
    assert sql.startswith("UPDATE TOP (3)")
    assert "WITH (UPDLOCK, READPAST, ROWLOCK)" in sql
    assert "OUTPUT INSERTED." in sql
    assert " IN (" not in sql  # one reference to the table: nothing to re-run
