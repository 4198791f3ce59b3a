"""Set-based writes through the tables, not the ORM: for thousands of rows at once.

The ORM's bulk INSERT path showed in a sixth of the worker's py-spy samples at 2,000 devices a batch, much
of it per-row bookkeeping the tables do not need. These take the same row dicts, keyed by the mapped
attribute names, and send one executemany through SQLAlchemy Core; column defaults (``default=``,
``onupdate=``) live on the columns and apply as before. End to end the gain is modest
(docs/benchmarks.md).

On SQLite the per-row cost that was left is SQLAlchemy's own: for every row of an executemany it builds the
parameter dict, runs each value's type processor and orders the values — in the callback applier's profile
more CPU than SQLite's own executemany of the same rows (docs/benchmarks.md). ``execute_many`` compiles a
statement once, converts the values every row shares once, and hands the driver plain tuples.

On PostgreSQL the cost is the server's one statement per row and the driver's parsing of SQLAlchemy's
multi-row VALUES: ``insert_many`` streams its rows through COPY, ``insert_returning`` and ``update_rows``
send one statement with an array per column (``unnest``). SQL Server keeps SQLAlchemy's path.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import (
    ARRAY,
    CursorResult,
    Dialect,
    Insert,
    Table,
    TableValuedAlias,
    Update,
    bindparam,
    func,
    insert,
    inspect,
    select,
    update,
)
from sqlalchemy.orm import InstanceState, Mapper, Session
from sqlalchemy.orm.exc import StaleDataError
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
    """INSERT ``rows`` (every row with the same keys) and return ``attrs`` of each new row (in no promised
    order).

    On PostgreSQL one ``INSERT … SELECT`` from ``unnest`` of one array per column: SQLAlchemy's multi-row
    VALUES form, which RETURNING otherwise takes, makes the driver parse a statement with a placeholder per
    value — 2,000 device rows took 0.20–0.30 s that way, 0.05 s as arrays (docs/benchmarks.md)."""
    if not rows:
        return []
    table, keys = table_of(entity), column_keys(entity)
    returning = tuple(table.c[keys[a]] for a in attrs)
    values = table_rows(entity, rows)
    if session.get_bind().dialect.name == "postgresql":
        names = tuple(values[0])
        arrays = _column_arrays(names, values)
        return [tuple(row) for row in session.execute(_unnest_insert(table, names).returning(*returning), arrays)]
    statement: ReturningInsert[Any] = insert(table).returning(*returning)
    return [tuple(row) for row in session.execute(statement, values)]


@functools.cache
def _unnest_insert(table: Table, names: tuple[str, ...]) -> Insert:
    """``INSERT INTO table (names) SELECT * FROM unnest(:a0, :a1, …)``: bind ``a<i>`` is the array of column
    ``names[i]``'s values (PostgreSQL). Defaults of columns left out apply as to any INSERT … SELECT."""
    source = _unnested(table, names)
    return insert(table).from_select(list(names), select(*(source.c[name] for name in names)))


def _unnested(table: Table, names: tuple[str, ...], *, ids: bool = False) -> TableValuedAlias:
    """``unnest(:ids?, :a0, :a1, …) AS v(id?, names…)``: bind ``a<i>`` is the array of column ``names[i]``'s
    values, ``ids`` (when asked for) the array of row ids (PostgreSQL)."""
    arrays = [bindparam(f"a{i}", type_=ARRAY(table.c[name].type)) for i, name in enumerate(names)]
    if ids:
        arrays.insert(0, bindparam("ids", type_=ARRAY(table.c.id.type)))
    columns = ("id", *names) if ids else names
    return func.unnest(*arrays).table_valued(*columns).render_derived(name="v")


def _column_arrays(names: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]]:
    """The binds of ``_unnested``: ``a<i>``, the values of column ``names[i]`` in row order."""
    return {f"a{i}": [row[name] for row in rows] for i, name in enumerate(names)}


def update_by_id(session: Session, entity: type[Any], rows: Sequence[Mapping[str, Any]]) -> None:
    """UPDATE rows by primary key ``id``: one statement per set of columns the rows set (``update_rows``)."""
    keys = column_keys(entity)
    update_rows(session, table_of(entity), [{keys[n]: v for n, v in row.items()} for row in rows])


def update_rows(
    session: Session,
    table: Table,
    rows: Sequence[Mapping[str, Any]],
    *,
    shared: Mapping[str, Any] | None = None,
    expect: bool = False,
) -> None:
    """UPDATE ``table`` by ``id``: every row (keyed by column key, with its ``id``) sets its columns and the
    ``shared`` ones; one statement per set of columns the rows set — an executemany, on PostgreSQL one UPDATE
    from arrays. ``expect``: every id must match a row (else ``StaleDataError``, as from the ORM's flush)."""
    shared = shared or {}
    groups: dict[tuple[str, ...], list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(sorted(name for name in row if name != "id")), []).append(row)
    arrays = session.get_bind().dialect.name == "postgresql"
    for names, batch in groups.items():
        if not (names or shared):
            continue
        if arrays:
            _update_from_arrays(session, table, names, batch, shared, expect=expect)
        else:
            execute_many(session, _update_statement(table, names + tuple(sorted(shared))), batch, shared, expect=expect)


def _update_from_arrays(
    session: Session,
    table: Table,
    names: tuple[str, ...],
    batch: Sequence[Mapping[str, Any]],
    shared: Mapping[str, Any],
    *,
    expect: bool,
) -> None:
    """PostgreSQL: ``batch`` as one ``UPDATE … FROM unnest(ids, one array per column)`` instead of one UPDATE
    per row (10,000 rows: 0.13–0.16 s one by one, 0.08–0.09 s as arrays, a fifth of the CPU). An id given
    twice takes its last row's values, as it does one statement after another."""
    last = {row["id"]: row for row in batch}
    ids = list(last)
    params: dict[str, Any] = {"ids": ids}
    params.update(_column_arrays(names, list(last.values())))
    shared_names = tuple(sorted(shared))
    params.update({f"s{i}": shared[name] for i, name in enumerate(shared_names)})
    result = cast(CursorResult[Any], session.execute(_unnest_update(table, names, shared_names), params))
    if expect and result.rowcount != len(ids):
        raise StaleDataError(f"{table}: {len(ids)} rows to update by id, {result.rowcount} matched")


@functools.cache
def _unnest_update(table: Table, names: tuple[str, ...], shared_names: tuple[str, ...]) -> Update:
    """``UPDATE table SET name = v.name, …, shared = :s<i> FROM unnest(:ids, :a0, …) AS v WHERE id = v.id``."""
    source = _unnested(table, names, ids=True)
    values: dict[Any, Any] = {table.c[name]: source.c[name] for name in names}
    values.update({table.c[name]: bindparam(f"s{i}", type_=table.c[name].type) for i, name in enumerate(shared_names)})
    return update(table).where(table.c.id == source.c.id).values(values)


def insert_many(
    session: Session, table: Table, rows: Sequence[Mapping[str, Any]], *, shared: Mapping[str, Any] | None = None
) -> None:
    """INSERT ``rows`` (keyed by column key, the same keys in every row) into ``table`` in one executemany, each
    with the ``shared`` values too. Column defaults apply to the columns not given.

    On PostgreSQL through psycopg, when no column left out has a default computed here, the rows go through
    ``COPY … FROM STDIN`` instead: the server runs one command, not one INSERT per row (docs/benchmarks.md).
    The values are streamed as data, converted by the columns' types as SQLAlchemy would; they never become
    SQL text."""
    if not rows:
        return
    shared = shared or {}
    names = tuple(rows[0]) + tuple(shared)
    connection = session.connection()
    # COPY is psycopg's (3); another PostgreSQL driver keeps the executemany.
    copy = _copy_for(table, names, connection.dialect) if connection.dialect.driver == "psycopg" else None
    if copy is None:
        execute_many(session, _insert_statement(table, names), rows, shared)
        return
    driver: Any = connection.connection.driver_connection  # psycopg's, in the session's transaction
    with driver.cursor() as cursor, cursor.copy(copy.sql) as stream:
        for values in _driver_rows(copy, rows, shared):
            stream.write_row(values)


def write_modified(session: Session, entities: Sequence[type[Any]]) -> int:
    """Write what the session changed on loaded rows of ``entities`` as UPDATEs by id (one executemany per
    table and set of columns, every id checked to match as the flush checks), then mark those rows as
    written, as the session's flush does after its own UPDATEs: its flush, which spends several times as long
    per row on its bookkeeping, finds nothing left of them. Rows with anything else pending (new, deleted, a
    changed key) are left to the flush. How many rows were written.
    """
    wanted = tuple(entities)
    keys_of: dict[type[Any], dict[str, str]] = {}  # per class: its column keys, empty when not wanted
    rows: dict[type[Any], list[dict[str, Any]]] = {}
    written: list[InstanceState[Any]] = []
    for obj in session.dirty:
        kind = type(obj)
        keys = keys_of.get(kind)
        if keys is None:
            keys = keys_of[kind] = column_keys(kind) if issubclass(kind, wanted) else {}
        if not keys:
            continue
        state = inspect(obj)
        changed = state.committed_state
        if not state.persistent or state.identity is None or "id" in changed or not keys.keys() >= changed.keys():
            continue
        held = state.dict
        values = {keys[name]: held.get(name) for name in changed}
        values[keys["id"]] = state.identity[0]
        rows.setdefault(kind, []).append(values)
        written.append(state)
    with session.no_autoflush:  # the rest stays the flush's, at the caller's commit
        for entity, batch in rows.items():
            update_rows(session, table_of(entity), batch, expect=True)
    # What the flush does once its UPDATEs ran (``Session._register_persistent``): the values held are now the
    # committed ones, and the session no longer counts the rows as modified. Not ``expunge``: its cascade walk
    # cost more per row than the UPDATE, and the rows stay the session's as after a flush.
    for state in written:
        state._commit_all(state.dict, session.identity_map)
    return len(written)


@functools.cache
def _update_statement(table: Table, names: tuple[str, ...]) -> Update:
    return (
        update(table)
        .where(table.c.id == bindparam(_KEY_PREFIX + "id"))
        .values({table.c[n]: bindparam(_KEY_PREFIX + n) for n in names})
    )


@functools.cache
def _insert_statement(table: Table, names: tuple[str, ...]) -> Insert:
    return insert(table).values({table.c[n]: bindparam(_KEY_PREFIX + n) for n in names})


@dataclass(frozen=True)
class _Prepared:
    """A statement compiled for the driver: its SQL and, per positional parameter, the key it takes and the
    type's conversion (None: the value goes as it is)."""

    sql: str
    keys: tuple[str, ...]
    processors: tuple[Callable[[Any], Any] | None, ...]


_prepared: dict[tuple[Insert | Update, str], _Prepared | None] = {}


def _prepare(statement: Insert | Update, dialect: Dialect) -> _Prepared | None:
    """``statement`` compiled once per dialect; None when SQLAlchemy must run it (a column default to compute
    per row, or a driver that does not take positional parameters)."""
    cache_key = (statement, dialect.name)
    if cache_key in _prepared:
        return _prepared[cache_key]
    compiled = statement.compile(dialect=dialect)
    order = compiled.positiontup
    prepared = None
    if order is not None and not compiled.insert_prefetch and not compiled.update_prefetch:
        binds = [compiled.binds[name] for name in order]
        if all(b.key.startswith(_KEY_PREFIX) for b in binds):
            prepared = _Prepared(
                compiled.string,
                tuple(b.key[len(_KEY_PREFIX) :] for b in binds),
                tuple(b.type.dialect_impl(dialect).bind_processor(dialect) for b in binds),
            )
    _prepared[cache_key] = prepared
    return prepared


_copies: dict[tuple[Table, tuple[str, ...], str], _Prepared | None] = {}


def _copy_for(table: Table, names: tuple[str, ...], dialect: Dialect) -> _Prepared | None:
    """PostgreSQL's ``COPY`` of the columns ``names`` into ``table``, with each column's conversion; None when a
    column left out has a default computed by SQLAlchemy (COPY applies only the server's: the ``id``)."""
    cache_key = (table, names, dialect.name)
    if cache_key not in _copies:
        given = set(names)
        prepared = None
        if not any(c.default is not None for c in table.columns if c.key not in given):
            quote = dialect.identifier_preparer
            columns = [table.c[name] for name in names]
            listed = ", ".join(quote.format_column(c) for c in columns)
            prepared = _Prepared(
                f"COPY {quote.format_table(table)} ({listed}) FROM STDIN",
                names,
                tuple(c.type.dialect_impl(dialect).bind_processor(dialect) for c in columns),
            )
        _copies[cache_key] = prepared
    return _copies[cache_key]


def execute_many(
    session: Session,
    statement: Insert | Update,
    rows: Sequence[Mapping[str, Any]],
    shared: Mapping[str, Any],
    *,
    expect: bool = False,
) -> None:
    """Execute ``statement`` (binds named ``v_<key>``) once per row of ``rows`` — every row with the same keys —
    plus the ``shared`` values, in the session's transaction. ``expect``: each row must match one row of the
    table (an UPDATE by id), as the ORM's flush checks; else ``StaleDataError``.

    On SQLite the statement is compiled once and the driver gets tuples; the shared values are converted once.
    Elsewhere, SQLAlchemy's executemany with the same parameters.
    """
    if not rows:
        return
    connection = session.connection()
    dialect = connection.dialect
    prepared = _prepare(statement, dialect) if dialect.name == "sqlite" else None
    if prepared is None:
        params = [{_KEY_PREFIX + k: v for k, v in {**row, **shared}.items()} for row in rows]
        result = cast(CursorResult[Any], session.execute(statement, params))
    else:
        result = connection.exec_driver_sql(prepared.sql, _driver_rows(prepared, rows, shared))
    if expect and dialect.supports_sane_multi_rowcount and result.rowcount != len(rows):
        raise StaleDataError(f"{statement.table}: {len(rows)} rows to update by id, {result.rowcount} matched")


def _driver_rows(
    prepared: _Prepared, rows: Sequence[Mapping[str, Any]], shared: Mapping[str, Any]
) -> list[tuple[Any, ...]]:
    # Per position: (the row's key, its conversion) or (None, the value every row takes, already converted). A
    # converted column (a date) whose rows all hold the very same object — a pass's one "now" — is converted
    # once too.
    plan: list[tuple[str | None, Any]] = []
    for key, processor in zip(prepared.keys, prepared.processors, strict=True):
        if key in shared:
            value = shared[key]
        elif processor is not None and all(row[key] is rows[0][key] for row in rows):
            value = rows[0][key]
        else:
            plan.append((key, processor))
            continue
        plan.append((None, processor(value) if processor is not None else value))
    return [
        tuple([fixed if key is None else (row[key] if fixed is None else fixed(row[key])) for key, fixed in plan])
        for row in rows
    ]
