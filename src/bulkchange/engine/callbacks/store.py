"""Storing callbacks as received (``ThingSpaceCallBackResponseLog``), deduplicated by requestId + device,
and reading back the ones not yet applied."""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import ColumnElement, Connection, Table, insert, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import ReturningInsert

from bulkchange.carrier.port import CallbackReport
from bulkchange.store.tables import ThingSpaceCallBackResponseLog, utcnow

Received = tuple[dict[str, Any], CallbackReport, int | None]
"""A callback as a receiver hands it over: its body, the carrier's reading of it, the URL's provider."""

_TABLE = cast(Table, ThingSpaceCallBackResponseLog.__table__)
_UPSERT_DIALECTS = ("sqlite", "postgresql")  # INSERT … ON CONFLICT DO NOTHING RETURNING; others read first


def without_credentials(payload: dict[str, Any]) -> dict[str, Any]:
    """The callback as stored: the carrier echoes our listener's username/password in it; never keep those."""
    return {k: ("***" if k.lower() in {"username", "password"} and v else v) for k, v in payload.items()}


def insert_callbacks(conn: Connection, items: Sequence[Received]) -> list[int | None]:
    """Record many callbacks at once (a receiver's group commit), in the caller's transaction on ``conn``; per
    item the stored row's id, or None for a duplicate — of a stored callback or of an earlier item of the same
    batch.

    A Core connection, not an ORM session: a group commit is one statement, and a session's own bookkeeping
    around it (its transaction and connection state) cost about as much CPU as the INSERT itself.

    SQLite and PostgreSQL: INSERT … ON CONFLICT DO NOTHING RETURNING, the rows as parameters of one statement
    (SQLAlchemy batches them into multi-row INSERTs), so a callback another receiver stored meanwhile is
    simply not returned. Elsewhere (SQL Server): the stored ones are read first and the rest inserted; should
    another receiver insert one in between, the batch falls back to one savepoint per callback.
    """
    first: dict[tuple[str, str], int] = {}
    for position, (_, report, _) in enumerate(items):
        first.setdefault((report.request_id, report.iccid), position)
    upsert = conn.dialect.name in _UPSERT_DIALECTS
    stored = set() if upsert else _stored_keys(conn, list(first))
    fresh = [(key, position) for key, position in first.items() if key not in stored]
    ids: list[int | None] = [None] * len(items)
    if not fresh:
        return ids
    received = utcnow()  # one commit, one moment
    rows = [_row(items[position], received) for _, position in fresh]
    c = _TABLE.c
    if upsert:
        for row_id, request_id, iccid in conn.execute(_upsert(conn.dialect.name), rows):
            ids[first[(request_id, iccid)]] = int(row_id)
        return ids
    try:
        with conn.begin_nested():
            new_ids = conn.execute(insert(_TABLE).returning(c.id, sort_by_parameter_order=True), rows)
            for (_, position), new_id in zip(fresh, new_ids.scalars().all(), strict=True):
                ids[position] = int(new_id)
    except IntegrityError:  # a concurrent receiver stored one of them first
        for (_, position), row in zip(fresh, rows, strict=True):
            ids[position] = _insert_one(conn, row)
    return ids


@functools.cache
def _upsert(dialect: str) -> ReturningInsert[Any]:
    """``INSERT … ON CONFLICT (RequestId, ICCID) DO NOTHING RETURNING id, RequestId, ICCID``, built once."""
    c = _TABLE.c
    factory = postgresql_insert if dialect == "postgresql" else sqlite_insert
    statement = factory(_TABLE).on_conflict_do_nothing(index_elements=[c.RequestId, c.ICCID])
    return statement.returning(c.id, c.RequestId, c.ICCID)


def _insert_one(conn: Connection, row: dict[str, Any]) -> int | None:
    """One callback row in a savepoint of its own: its id, or None when it is stored already."""
    try:
        with conn.begin_nested():
            return int(conn.execute(insert(_TABLE).returning(_TABLE.c.id), row).scalar_one())
    except IntegrityError:
        return None


def _row(item: Received, received: datetime) -> dict[str, Any]:
    payload, report, provider_id = item
    c = _TABLE.c
    return {
        c.RequestId.key: report.request_id,
        c.ICCID.key: report.iccid,
        c.APIStatus.key: report.status,
        c.APIResponse.key: json.dumps(without_credentials(payload)),
        c.ServiceProviderId.key: provider_id,
        c.ReceivedDate.key: received,
    }


def _stored_keys(conn: Connection, keys: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
    """Which (requestId, ICCID) pairs of ``keys`` are already stored (one read per 500 keys)."""
    wanted = sorted(set(keys))
    found: set[tuple[str, str]] = set()
    table = ThingSpaceCallBackResponseLog
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        query = select(table.request_id, table.iccid).where(
            table.request_id.in_({r for r, _ in chunk}), table.iccid.in_({i for _, i in chunk})
        )
        found.update((request_id, iccid) for request_id, iccid in conn.execute(query).all())
    return found.intersection(wanted)


def pending_callbacks(
    session: Session, *, limit: int, after_id: int = 0, received_before: datetime | None = None
) -> list[ThingSpaceCallBackResponseLog]:
    """Stored callbacks not yet applied, oldest first from ``after_id`` — only those received before
    ``received_before`` when given (PostgreSQL: rows another applier holds are skipped)."""
    query = (
        select(ThingSpaceCallBackResponseLog)
        .where(*_pending(after_id, received_before))
        .order_by(ThingSpaceCallBackResponseLog.id)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    return list(session.execute(query).scalars())


def any_pending_callback(session: Session, *, after_id: int = 0, received_before: datetime | None = None) -> bool:
    """Is any stored callback above ``after_id`` (received before ``received_before``) not yet applied? One
    index probe, no lock taken."""
    query = select(ThingSpaceCallBackResponseLog.id).where(*_pending(after_id, received_before)).limit(1)
    return session.execute(query).first() is not None


def _pending(after_id: int, received_before: datetime | None) -> list[ColumnElement[bool]]:
    table = ThingSpaceCallBackResponseLog
    where = [table.outcome.is_(None), table.id > after_id]
    if received_before is not None:
        where.append(table.received_date < received_before)
    return where


def settled_its_change(row: ThingSpaceCallBackResponseLog) -> bool:
    """Did this stored callback settle (or at least decide about) its change — rather than being recorded
    against it as late, for another step, or as a mere reason to read the device?"""
    outcome = row.outcome or ""
    return row.m2m_device_change_id is not None and not outcome.startswith(("not ", "unmatched"))
