"""Writing a carrier's own local tables (``ThingSpaceDevice``, ``JasperDevice`` …) from ``TableRows``.

A carrier adapter says *what* its tables should hold after steps took effect (rows by ICCID, in the
tables' own column names); this writes them set-based in the caller's transaction: one SELECT of the
rows that exist (by ServiceProviderId + ICCID), one executemany INSERT of the missing ones (with the
audit columns and the insert-only values), one executemany UPDATE per set of columns of the rest.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Select, Table, bindparam, select
from sqlalchemy.orm import Session

from bulkchange.domain.outcomes import TableRows
from bulkchange.store.core import insert_many, update_rows
from bulkchange.store.tables import Base

_CHUNK = 500  # bound on IN lists


def write_table_rows(
    session: Session, provider_id: int, writes: Sequence[TableRows], *, process_by: str, now: datetime
) -> dict[str, set[str]]:
    """Upsert every ``TableRows``; return, per table, the ICCIDs whose row was created."""
    created: dict[str, set[str]] = {}
    for rows in writes:
        if rows.rows:
            created[rows.table] = _write(session, _table(rows.table), provider_id, rows, process_by, now)
    return created


def _table(name: str) -> Table:
    table = Base.metadata.tables.get(name)
    if table is None:
        raise KeyError(f"no local table named {name!r}")
    return table


@functools.cache
def _existing_query(table: Table) -> Select[str, int]:
    """Built once per table: a pass of the applier looks up three tables' rows, and building and keying the
    statement each time cost more than running it."""
    return (
        select(table.c.ICCID, table.c.id)
        .where(
            table.c.ServiceProviderId == bindparam("provider"), table.c.ICCID.in_(bindparam("iccids", expanding=True))
        )
        .order_by(table.c.id)
    )


def _existing(session: Session, table: Table, provider_id: int, iccids: list[str]) -> dict[str, int]:
    found: dict[str, int] = {}
    query = _existing_query(table)
    for start in range(0, len(iccids), _CHUNK):
        for iccid, row_id in session.execute(
            query, {"provider": provider_id, "iccids": iccids[start : start + _CHUNK]}
        ):
            found[iccid] = row_id
    return found


def _write(
    session: Session, table: Table, provider_id: int, rows: TableRows, process_by: str, now: datetime
) -> set[str]:
    existing = _existing(session, table, provider_id, list(rows.rows))
    audit_insert = _present(table, {"CreatedBy": process_by, "CreatedDate": now, "IsActive": True, "IsDeleted": False})
    audit_update = _present(
        table, {"ModifiedBy": process_by, "ModifiedDate": now, "IsActive": True, "IsDeleted": False}
    )
    missing = [iccid for iccid in rows.rows if iccid not in existing]
    if missing:
        new_rows = [
            {"ServiceProviderId": provider_id, "ICCID": iccid, **rows.insert_only.get(iccid, {}), **rows.rows[iccid]}
            for iccid in missing
        ]
        new_rows, shared = _with_audit(new_rows, audit_insert)
        insert_many(session, table, _uniform(table, new_rows), shared=shared)
    known = [{"id": existing[i], **rows.rows[i]} for i in rows.rows if i in existing]
    updates, shared = _with_audit(known, audit_update)
    update_rows(session, table, updates, shared=shared)
    return set(missing)


def _with_audit(rows: list[dict[str, Any]], audit: Mapping[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """``rows`` and the audit values to send with them. The audit values are the same for every row, so they go
    as shared values (converted once) — except a column some row sets itself: then every row holds it, its own
    value or else the audit one."""
    own = {k for row in rows for k in row}
    if own & audit.keys():
        rows = [{**{k: v for k, v in audit.items() if k in own}, **row} for row in rows]
    return rows, {k: v for k, v in audit.items() if k not in own}


def _present(table: Table, values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` restricted to the columns ``table`` has (not every local table has every audit column)."""
    return {k: v for k, v in values.items() if k in table.c}


def _uniform(table: Table, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One executemany needs the same keys on every row: a column some rows lack gets NULL."""
    keys = {k for row in rows for k in row}
    unknown = keys - set(table.c.keys())
    if unknown:
        raise KeyError(f"{table.name} has no column(s) {sorted(unknown)}")
    return [{k: row.get(k) for k in keys} for row in rows]
