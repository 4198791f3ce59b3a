"""A worker's last log line on SQLite says how long its write transactions waited for the database's write
lock and held it, by work: a worker started on its own has no ``/metrics`` to show it."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from bulkchange.engine.worker import WRITE_LOCK_EVENT

from .conftest import Harness, new_iccid


async def test_the_worker_ends_with_its_write_lock_tallies(harness: Harness, db_url: str) -> None:
    if not db_url.startswith("sqlite"):
        pytest.skip("only SQLite has the one write lock (PostgreSQL locks rows)")
    bulk = harness.submit([{"ICCID": new_iccid()} for _ in range(3)], status="inventory")
    with capture_logs() as logs:
        await harness.run()
    assert harness.counts(bulk) == {"PROCESSED": 3}
    last = [entry for entry in logs if entry["event"] == WRITE_LOCK_EVENT]
    assert len(last) == 1 and logs[-1] is last[0], "one line, the worker's last"
    by_work = last[0]["write_lock"]
    for work in ("claim", "record"):
        assert by_work[work]["transactions"] >= 1, work
        assert by_work[work]["held_s"] > 0 and by_work[work]["wait_s"] >= 0, work

