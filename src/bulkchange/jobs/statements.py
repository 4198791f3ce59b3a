"""Every state change of durable work, one named statement each (see ``bulkchange.jobs.spec``).

* ``claim`` — waiting → working for up to ``limit`` rows in ONE atomic statement: lease set, attempt
  counted, the rows returned. Safe with any number of workers on PostgreSQL, SQL Server and SQLite.
* ``extend_lease`` — the heartbeat of long work.
* ``release`` — working → waiting untouched (the work never started), the attempt refunded.
* ``settle`` — working → a final state, only by the lease's owner.
* ``retry_later`` — working → waiting at the time a ``RetryDecision`` says, or the give-up state.
* ``next_due_in_s`` / ``any_due`` — for a worker loop deciding how long it may sleep.

The caller owns the transaction: each function runs in the session it is given and commits nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import ColumnElement, CursorResult, Select, Update, case, func, select, update
from sqlalchemy.orm import Session

from bulkchange.domain.retry import RetryDecision
from bulkchange.jobs.spec import LeasedRows

# SQL Server table hints: update locks on the rows read (held to the end of the transaction), skip rows
# another transaction has locked instead of waiting (READPAST), row locks rather than page locks.
MSSQL_CLAIM_HINT = "WITH (UPDLOCK, READPAST, ROWLOCK)"


def lock_candidates(query: Select[Any], rows: LeasedRows, dialect_name: str) -> Select[Any]:
    """Make a candidate-row SELECT safe against concurrent claimers — the one dialect switch.

    * PostgreSQL: ``FOR UPDATE SKIP LOCKED``: the chosen rows are locked for this transaction and rows
      another claimer holds are skipped, not waited for, so concurrent claims pick disjoint rows.
    * SQL Server: ``WITH (UPDLOCK, READPAST, ROWLOCK)``, the same in table hints (rendered and tested as
      SQL text; no SQL Server is available to run it here).
    * SQLite: nothing — a writing statement holds the database's single write lock from start to end,
      so its subqueries and its writes see no concurrent claim.
    """
    if dialect_name == "postgresql":
        return query.with_for_update(skip_locked=True)
    if dialect_name == "mssql":
        return query.with_hint(rows.table, MSSQL_CLAIM_HINT, "mssql")
    if dialect_name == "sqlite":
        return query
    raise NotImplementedError(f"durable work does not support the {dialect_name!r} dialect")


def claim_statement(
    rows: LeasedRows,
    dialect_name: str,
    *,
    where: Sequence[ColumnElement[bool]],
    values: Mapping[str, Any],
    limit: int,
    order: Sequence[Any] = (),
    guard: Sequence[ColumnElement[bool]] = (),
    returning: Sequence[Any] = (),
) -> Update:
    """UPDATE … RETURNING (SQL Server: OUTPUT) of at most ``limit`` rows matching ``where``, first in
    ``order`` (then by id); ``guard`` (plain column conditions) is checked again on each row as it is
    written, so a row that changed meanwhile is not taken.

    The row choice must run *once*. ``WHERE id IN (SELECT … LIMIT n FOR UPDATE SKIP LOCKED)`` does not
    guarantee that on PostgreSQL: under a nested-loop semi-join the subquery is re-run for each outer row,
    each run skipping the rows the statement already updated, so one claim could take far more than n
    rows (tests/multiworker/test_claims.py shows it). So:

    * PostgreSQL: the locked selection is a ``MATERIALIZED`` CTE — computed once, then joined.
    * SQL Server: ``UPDATE TOP (n)`` with the hints on the updated table itself — one reference to the
      table, nothing to re-run. TOP in an UPDATE takes no ORDER BY, so ``order`` is not applied there:
      which due rows a claim takes only matters for speed, never for correctness.
    * SQLite: ``IN (subquery)`` is evaluated once into a temporary index, under the write lock.
    """
    table = rows.table
    stmt: Update
    if dialect_name == "mssql":
        stmt = (
            update(table)
            .prefix_with(f"TOP ({int(limit)})", dialect="mssql")
            .with_hint(MSSQL_CLAIM_HINT, dialect_name="mssql")
            .where(*where)
        )
    else:
        chosen = lock_candidates(
            select(rows.id).where(*where).order_by(*order, rows.id).limit(limit), rows, dialect_name
        )
        if dialect_name == "postgresql":
            claimable = chosen.cte(f"claimable_{rows.kind}").prefix_with("MATERIALIZED")
            stmt = update(table).where(rows.id.in_(select(claimable.c[rows.id.key])))
        else:
            stmt = update(table).where(rows.id.in_(chosen))
        stmt = stmt.where(*guard)
    return stmt.values(**values).returning(*(returning or (rows.id,)))


def lease_values(
    rows: LeasedRows, *, owner: Any, now: datetime, lease_s: float, count_attempt: bool = True
) -> dict[str, Any]:
    """The column values that make a row claimed: working, owned, leased, one more attempt."""
    values: dict[str, Any] = {
        rows.owner.key: owner,
        rows.lease_until.key: now + timedelta(seconds=lease_s),
    }
    if rows.status is not None:
        values[rows.status.key] = rows.working
    if count_attempt:
        values[rows.attempts.key] = rows.attempts + 1
    return values


def claim(
    session: Session,
    rows: LeasedRows,
    *,
    where: Sequence[ColumnElement[bool]],
    owner: Any,
    now: datetime,
    lease_s: float,
    limit: int,
    order: Sequence[Any] = (),
    extra: Mapping[str, Any] | None = None,
    guard: Sequence[ColumnElement[bool]] = (),
    count_attempt: bool = True,
    returning: Sequence[Any] = (),
) -> list[Any]:
    """Claim up to ``limit`` rows matching ``where`` for ``owner``; return them (``returning`` columns,
    or ORM objects when ``returning`` is ``(rows.entity,)``), sorted by id. Commits nothing."""
    values = {**lease_values(rows, owner=owner, now=now, lease_s=lease_s, count_attempt=count_attempt), **(extra or {})}
    stmt = claim_statement(
        rows,
        session.get_bind().dialect.name,
        where=where,
        values=values,
        limit=limit,
        order=order,
        guard=guard,
        returning=returning,
    )
    orm = bool(returning) and returning[0] is rows.entity and rows.entity is not None
    if orm:
        found = list(
            session.scalars(
                stmt.execution_options(synchronize_session=False), execution_options={"populate_existing": True}
            )
        )
        return sorted(found, key=lambda r: cast(int, r.id))
    result = session.execute(stmt).all()
    return sorted(result, key=lambda r: r[0])  # RETURNING / OUTPUT order is unspecified


def _owned(rows: LeasedRows, ids: Sequence[int], owner: Any) -> list[ColumnElement[bool]]:
    return [*rows.scoped(), rows.id.in_(list(ids)), rows.owner == owner, rows.is_working()]


def extend_lease(session: Session, rows: LeasedRows, ids: Sequence[int], *, owner: Any, until: datetime) -> int:
    """Heartbeat: keep ``owner``'s claim of ``ids`` until ``until``. Returns how many were still its own."""
    if not ids:
        return 0
    return _rowcount(
        session.execute(update(rows.table).where(*_owned(rows, ids, owner)).values({rows.lease_until.key: until}))
    )


def release(session: Session, rows: LeasedRows, ids: Sequence[int], *, owner: Any, refund_attempt: bool = True) -> int:
    """Give claimed rows back untouched (the work never started): waiting, due now, attempt refunded."""
    if not ids:
        return 0
    values: dict[str, Any] = {rows.owner.key: None, rows.lease_until.key: None}
    if rows.status is not None:
        values[rows.status.key] = rows.waiting
    if rows.due_at is not None and rows.due_at.key != rows.lease_until.key:
        values[rows.due_at.key] = None
    if refund_attempt:
        values[rows.attempts.key] = case((rows.attempts > 0, rows.attempts - 1), else_=0)
    return _rowcount(session.execute(update(rows.table).where(*_owned(rows, ids, owner)).values(values)))


def settle(
    session: Session,
    rows: LeasedRows,
    row_id: int,
    *,
    owner: Any,
    status: str | None,
    values: Mapping[str, Any] | None = None,
) -> bool:
    """Finish a claimed row: ``status`` (and ``values``), lease cleared — only if ``owner`` still holds it
    (a worker whose lease expired and was taken over must not overwrite the new owner's result)."""
    changes: dict[str, Any] = {rows.owner.key: None, rows.lease_until.key: None, **(values or {})}
    if rows.status is not None and status is not None:
        changes[rows.status.key] = status
    return _rowcount(session.execute(update(rows.table).where(*_owned(rows, [row_id], owner)).values(changes))) == 1


def retry_later(
    session: Session,
    rows: LeasedRows,
    row_id: int,
    *,
    owner: Any,
    decision: RetryDecision,
    gave_up: str,
    values: Mapping[str, Any] | None = None,
) -> bool:
    """After a transient failure: waiting again at ``decision.retry_at``, or ``gave_up`` when the decision
    is to give up. Only by the lease's owner."""
    changes: dict[str, Any] = dict(values or {})
    if decision.give_up:
        return settle(session, rows, row_id, owner=owner, status=gave_up, values=changes)
    if rows.due_at is not None:
        changes[rows.due_at.key] = decision.retry_at
    return settle(session, rows, row_id, owner=owner, status=rows.waiting, values=changes)


def any_due(session: Session, rows: LeasedRows, *, now: datetime, where: Sequence[ColumnElement[bool]] = ()) -> bool:
    """Is any row claimable now? One index probe, no lock."""
    query = select(rows.id).where(rows.claimable(now), *where).limit(1)
    return session.execute(query).first() is not None


def next_due_in_s(
    session: Session, rows: LeasedRows, *, now: datetime, where: Sequence[ColumnElement[bool]] = ()
) -> float | None:
    """Seconds until a row is claimable (0 = now), or None when nothing is waiting or working."""
    if any_due(session, rows, now=now, where=where):
        return 0.0
    times: list[Any] = []
    if rows.due_at is not None:
        times.append(
            session.execute(select(func.min(rows.due_at)).where(*rows.scoped(), rows.is_waiting(), *where)).scalar()
        )
    times.append(
        session.execute(select(func.min(rows.lease_until)).where(*rows.scoped(), rows.is_working(), *where)).scalar()
    )
    waits = [max(0.0, (_as_datetime(t) - now).total_seconds()) for t in times if t is not None]
    return min(waits) if waits else None


def _rowcount(result: Any) -> int:
    """Rows an UPDATE touched (the typed Result hides ``CursorResult.rowcount``)."""
    return int(cast(CursorResult[Any], result).rowcount)


def _as_datetime(value: Any) -> datetime:
    """``MIN`` may come back as text on SQLite; normalise to a naive datetime."""
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))
