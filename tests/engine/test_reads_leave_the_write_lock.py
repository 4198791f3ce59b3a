"""On SQLite a worker takes the database's one write lock only to write: reading what to do next — the
provider's account for a message, the scheduled changes that are due, what is left of a bulk change for its
follow-up, the changes awaiting the deferred check, whether logins are paused, whether the rate limiter's rows
exist — reads a snapshot. A write transaction that only read would make a callback receiver's commits
(another process) wait for nothing.

Observed through SQLite's own statement trace: every transaction opened with ``BEGIN IMMEDIATE`` whose
statements up to its COMMIT or ROLLBACK changed nothing is reported with the engine function that opened it.
"""

from __future__ import annotations

import re
import sqlite3
import threading
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from bulkchange.store.db import db_engine

from .conftest import Harness, activation_row, make_harness, new_iccid, new_imei

_CHANGES = re.compile(r"\b(INSERT|UPDATE|DELETE|REPLACE)\b", re.IGNORECASE)


class ReadOnlyWriteTransactions:
    """Per SQLite connection, the statements of its open write transaction; at its end, the opener of each
    one that changed nothing (the innermost bulkchange function on the stack at ``BEGIN IMMEDIATE``)."""

    def __init__(self) -> None:
        self.found: list[str] = []
        self.write_transactions = 0
        self.watching = True
        self._open: dict[int, tuple[str, bool]] = {}
        self._lock = threading.Lock()

    def trace(self, connection: sqlite3.Connection) -> None:
        key = id(connection)

        def statement(sql: str) -> None:
            word = sql.lstrip().split(None, 1)[0].upper() if sql.strip() else ""
            with self._lock:
                if not self.watching:
                    return
                if sql.strip().upper() == "BEGIN IMMEDIATE":
                    self._open[key] = (_opener(), False)
                    self.write_transactions += 1
                elif word in {"COMMIT", "ROLLBACK", "END"} and key in self._open:
                    opener, changed = self._open.pop(key)
                    if not changed:
                        self.found.append(opener)
                elif key in self._open and word != "SELECT" and _CHANGES.search(sql):
                    self._open[key] = (self._open[key][0], True)

        connection.set_trace_callback(statement)


def _opener() -> str:
    ours = [f for f in traceback.extract_stack() if "/bulkchange/" in f.filename and "/store/" not in f.filename]
    return ours[-1].name if ours else "?"


@pytest.fixture(params=[True, False], ids=["settled by callbacks", "settled by the deferred check"])
def h(request: pytest.FixtureRequest, tmp_path: Path, db_url: str) -> Iterator[Harness]:
    if not db_url.startswith("sqlite"):
        pytest.skip("only SQLite has the one write lock (PostgreSQL locks rows)")
    yield from make_harness(tmp_path, callbacks=request.param, batch_max_devices=2)


def _census(h: Harness) -> ReadOnlyWriteTransactions:
    census = ReadOnlyWriteTransactions()
    engine = db_engine(h.rt.session_factory)
    engine.dispose()  # connections made from here on are traced

    @event.listens_for(engine, "connect")
    def _traced(dbapi_connection: Any, _record: Any) -> None:
        census.trace(dbapi_connection)

    return census


async def test_a_worker_takes_the_write_lock_only_to_write(h: Harness) -> None:
    census = _census(h)
    bulk_id = h.submit([activation_row(new_iccid(), new_imei()) for _ in range(3)])
    await h.run()
    census.watching = False
    assert h.counts(bulk_id) == {"PROCESSED": 3}
    assert census.write_transactions > 0, "the census saw the worker's write transactions"
    # One read-modify-write may find nothing to modify: a message's start reads its bulk change and, in the same
    # transaction, moves it from NEW to PROCESSING and clears the wake-up the message was — a check message
    # finds neither to do. Everything else that took the lock wrote.
    only_read = [opener for opener in census.found if opener != "_start"]
    assert only_read == [], f"write transactions that only read, opened by: {census.found}"
