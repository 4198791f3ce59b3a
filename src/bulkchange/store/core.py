"""Set-based writes through the tables, not the ORM: for thousands of rows at once.

The ORM's bulk INSERT path showed in a sixth of the worker's py-spy samples at 2,000 devices a batch, much
of it per-row bookkeeping the tables do not need. These take the same row dicts, keyed by the mapped
attribute names, and send one executemany through SQLAlchemy Core; column defaults (``default=``,
``onupdate=``) live on the columns and apply as before. End to end the gain is modest
(docs/benchmarks.md).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any, cast

from sqlalchemy import Table, bindparam, insert, inspect, update
from sqlalchemy.orm import Mapper, Session
from sqlalchemy.sql.dml import ReturningInsert

_KEY_PREFIX = "v_"  # bind names must not collide with column names in an UPDATE's WHERE / SET


def column_keys(entity: type[Any]) -> dict[str, str]:
    """Mapped attribute name → the table column's key (``service_provider_id`` → ``ServiceProviderId``)."""
    return _mapper_keys(inspect(entity))


@functools.cache
def _mapper_keys(mapper: Mapper[Any]) -> dict[str, str]:
    return {attr: column.key for attr, column in mapper.columns.items()}


def table_of(entity: type[Any]) -> Table:
    return cast(Table, inspect(entity).local_table)


def table_rows(entity: type[Any], rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` keyed by column key instead of attribute name."""
    keys = column_keys(entity)
    return [{keys[name]: value for name, value in row.items()} for row in rows]


def insert_rows(session: Session, entity: type[Any], rows: Sequence[Mapping[str, Any]]) -> None:
    """INSERT ``rows`` (attribute-named dicts) in one executemany. Column defaults apply as with the ORM."""
    if rows:
        session.execute(insert(table_of(entity)), table_rows(entity, rows))


def insert_returning(
    session: Session, entity: type[Any], rows: Sequence[Mapping[str, Any]], *attrs: str
) -> list[tuple[Any, ...]]:
    """INSERT ``rows`` and return ``attrs`` of each new row (in no promised order)."""
    if not rows:
        return []
    table, keys = table_of(entity), column_keys(entity)
    statement: ReturningInsert[Any] = insert(table).returning(*(table.c[keys[a]] for a in attrs))
    return [tuple(row) for row in session.execute(statement, table_rows(entity, rows))]


def update_by_id(session: Session, entity: type[Any], rows: Sequence[Mapping[str, Any]]) -> None:
    """UPDATE rows by primary key ``id``: one executemany per set of columns the rows set."""
    table, keys = table_of(entity), column_keys(entity)
    groups: dict[tuple[str, ...], list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(sorted(name for name in row if name != "id")), []).append(row)
    for names, batch in groups.items():
        if not names:
            continue
        statement = (
            update(table)
            .where(table.c[keys["id"]] == bindparam(_KEY_PREFIX + "id"))
            .values({keys[n]: bindparam(_KEY_PREFIX + n) for n in names})
        )
        session.execute(statement, [{_KEY_PREFIX + n: v for n, v in row.items()} for row in batch])
