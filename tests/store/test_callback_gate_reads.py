"""The callback gate reads a provider's credentials without SQLite's write lock: a receiver's lookup must not
queue behind the applier (or a worker) that holds it, or every callback of that provider waits too."""

from __future__ import annotations

import sqlite3
import threading

from bulkchange.engine.callbacks.gate import CallbackGate, CallbackPolicy
from bulkchange.store.db import make_engine, make_session_factory
from bulkchange.store.migrate import upgrade


def test_a_credentials_lookup_runs_while_another_connection_holds_the_write_lock(sqlite_url: str) -> None:
    upgrade(sqlite_url)
    engine = make_engine(sqlite_url)
    gate = CallbackGate(make_session_factory(engine), CallbackPolicy())
    holder = sqlite3.connect(engine.url.database or "", isolation_level=None)
    looked_up = threading.Event()
    found: list[str] = []

    def lookup() -> None:
        found.append(gate.lookup(4242).state)
        looked_up.set()

    try:
        holder.execute("BEGIN IMMEDIATE")  # a writer elsewhere, mid-transaction
        reader = threading.Thread(target=lookup, daemon=True)
        reader.start()
        # A lookup that began IMMEDIATE would wait here until the writer commits (up to 30 s).
        assert looked_up.wait(timeout=10), "the lookup waited for the write lock"
        assert found == ["unknown"]
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        engine.dispose()
