"""How long this process waited for SQLite's write lock, and held it, by the work that took it.

SQLite lets one connection write at a time, and every bulkchange transaction on SQLite takes the write
lock at its start (``db.make_engine``). A callback receiver acknowledges a callback only once its row is
committed, so when a worker's or an applier's transactions hold the lock, acknowledgements wait — the
carrier's senders with them. These tallies make that visible: ``/metrics`` exports them
(``bulkchange_sqlite_write_lock_*``), and they say when the embedded database has become the bottleneck
(the cure is PostgreSQL: its locks are per row).

The work is named by whoever opens the transaction (``working_on``); a transaction opened outside any
named work counts as ``other``. Nothing is recorded on other databases.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

OTHER = "other"

_work: ContextVar[str] = ContextVar("bulkchange_write_lock_work", default=OTHER)


@contextmanager
def working_on(work: str) -> Iterator[None]:
    """Count the SQLite write transactions begun inside this block (in this thread or task) as ``work``."""
    token = _work.set(work)
    try:
        yield
    finally:
        _work.reset(token)


def current_work() -> str:
    """The work a write transaction begun here now counts under (``other`` outside ``working_on``)."""
    return _work.get()


@dataclass(frozen=True)
class Tally:
    """One kind of work's write transactions so far: how many, the seconds spent waiting for the lock before
    they began, and the seconds from holding it to their commit or rollback."""

    transactions: int = 0
    wait_s: float = 0.0
    held_s: float = 0.0


class WriteLockTallies:
    """The process's tallies by work; safe to update from several threads (a receiver's intake and applier)."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._by_work: dict[str, Tally] = {}

    def began(self, work: str, wait_s: float) -> None:
        with self._guard:
            t = self._by_work.get(work, Tally())
            self._by_work[work] = Tally(t.transactions + 1, t.wait_s + wait_s, t.held_s)

    def ended(self, work: str, held_s: float) -> None:
        with self._guard:
            t = self._by_work.get(work, Tally())
            self._by_work[work] = Tally(t.transactions, t.wait_s, t.held_s + held_s)

    def snapshot(self) -> dict[str, Tally]:
        with self._guard:
            return dict(self._by_work)


WRITE_LOCK = WriteLockTallies()
"""This process's tallies (one per process, like the lock waits they count)."""
