"""Text too long for its column is refused with a readable message before anything is sent to the database.

Otherwise each database fails in its own way — PostgreSQL and SQL Server with a driver error naming only the
column type, SQLite not at all (it stores the whole value) — and a secret column's error came out of the
bind step carrying the row's parameters, plaintext password included. ``install`` adds a ``before_flush``
check to a session factory: every object about to be INSERTed through the ORM, and every changed object of a
table with a secret column, is checked against the lengths the tables declare. A secret column
(``EncryptedSecret``) is checked on its encrypted form, which is what the column holds. Set-based writes
(``store.core``) carry engine-made values and are not checked here.
"""

from __future__ import annotations

import functools
from typing import Any

from sqlalchemy import String, event, inspect
from sqlalchemy.orm import Mapper, Session, sessionmaker

from bulkchange.security.crypto import EncryptedSecret, encrypt, max_plaintext_bytes


class ValueTooLong(ValueError):
    """A value longer than its column; the message names the field and the limit, never the value."""

    def __init__(self, message: str, *, table: str, column: str, limit: int) -> None:
        super().__init__(message)
        self.table = table
        self.column = column
        self.limit = limit


@functools.cache
def _limits(mapper: Mapper[Any]) -> tuple[tuple[str, str, int, bool], ...]:
    """(attribute, column name, length, encrypted) for every length-limited text column of ``mapper``."""
    limits = []
    for attr, column in mapper.columns.items():
        kind = column.type
        encrypted = isinstance(kind, EncryptedSecret)
        length = getattr(kind, "length", None) if encrypted or isinstance(kind, String) else None
        if isinstance(length, int):
            limits.append((attr, str(column.name), length, encrypted))
    return tuple(limits)


def check_lengths(obj: Any) -> None:
    """Raise ``ValueTooLong`` for the first text attribute of ``obj`` its column cannot hold."""
    mapper = inspect(type(obj))
    for attr, column, length, encrypted in _limits(mapper):
        value = getattr(obj, attr, None)
        if not isinstance(value, str):
            continue
        label = attr.replace("_", " ")
        table = str(getattr(mapper.persist_selectable, "name", mapper.class_.__name__))
        if not encrypted:
            if len(value) > length:
                raise ValueTooLong(
                    f"{label} is longer than {length} characters ({len(value)}); shorten it",
                    table=table,
                    column=column,
                    limit=length,
                )
            continue
        stored = encrypt(value)
        if len(stored) > length:
            raise ValueTooLong(
                f"{label} is too long to store: encrypted it takes {len(stored)} characters and {table}.{column} "
                f"holds {length} (at most {max_plaintext_bytes(length)} bytes of secret fit); store a reference "
                "such as ssm:/path or secretsmanager:name instead",
                table=table,
                column=column,
                limit=length,
            )


@functools.cache
def _has_secret(mapper: Mapper[Any]) -> bool:
    return any(encrypted for *_, encrypted in _limits(mapper))


def _before_flush(session: Session, _flush_context: Any, _instances: Any) -> None:
    for obj in session.new:
        check_lengths(obj)
    for obj in session.dirty:
        if _has_secret(inspect(type(obj))):
            check_lengths(obj)


def install(factory: sessionmaker[Session]) -> None:
    """Check lengths on every flush of the sessions ``factory`` makes (see the module docstring)."""
    event.listen(factory, "before_flush", _before_flush)
