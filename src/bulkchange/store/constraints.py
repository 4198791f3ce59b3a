"""Which unique index an ``IntegrityError`` is about, on every database the project runs on.

A caller that turns one constraint's violation into a readable refusal must not swallow another's (a
different unique key, a foreign key, a NOT NULL): it asks ``violates(exc, index)``.
"""

from __future__ import annotations

from sqlalchemy import Index
from sqlalchemy.exc import DBAPIError, IntegrityError


def violates(exc: IntegrityError, index: Index) -> bool:
    """True when ``exc`` is a duplicate key in the unique ``index``.

    * PostgreSQL (psycopg) names the index in the error's diagnostics (``constraint_name``).
    * SQL Server names it in the message ("… with unique index 'UX_…'", error 2601).
    * SQLite names the index's columns instead ("UNIQUE constraint failed: T.a, T.b"); the column list
      identifies the index because no two unique indexes of a table here have the same columns.
    """
    orig = exc.orig
    name = getattr(getattr(orig, "diag", None), "constraint_name", None)
    if isinstance(name, str) and name:
        return name == index.name
    text = str(orig)
    if isinstance(index.name, str) and f"'{index.name}'" in text:
        return True
    table = index.table
    if table is None:
        return False
    columns = ", ".join(f"{table.name}.{column.name}" for column in index.columns)
    return text.startswith("UNIQUE constraint failed: ") and text.removeprefix("UNIQUE constraint failed: ") == columns


def is_deadlock(exc: DBAPIError) -> bool:
    """True when the database chose this transaction's statement as a deadlock victim.

    PostgreSQL's SQLSTATE 40P01 and SQL Server's error 1205; SQLite has one writer at a time, so none.
    """
    orig = exc.orig
    if getattr(orig, "sqlstate", None) == "40P01":
        return True
    args = getattr(orig, "args", ())
    return any("(1205)" in str(arg) for arg in args)
