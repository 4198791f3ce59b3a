"""A worker's slice and an applier's pass make their writes with the cyclic collector off (their rows are freed
by reference counting when they end), and the collector is on again afterwards."""

from __future__ import annotations

import gc
from typing import Any

from sqlalchemy import event

from .conftest import Harness, activation_row, new_iccid, new_imei


async def test_changes_are_recorded_and_callbacks_applied_without_collections(harness: Harness) -> None:
    h = harness
    bulk = h.submit([activation_row(new_iccid(), new_imei()) for _ in range(3)])
    writes: list[tuple[str, bool]] = []

    def spy(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        verb = statement.lstrip().split(None, 1)[0].upper()
        if verb in ("INSERT", "UPDATE") and ('"DeviceBulkChangeLog"' in statement or '"M2M_DeviceChange"' in statement):
            writes.append((statement.split("(", 1)[0][:60], gc.isenabled()))

    event.listen(h.rt.db, "before_cursor_execute", spy)
    try:
        await h.run()
    finally:
        event.remove(h.rt.db, "before_cursor_execute", spy)
    assert h.counts(bulk) == {"PROCESSED": 3}
    assert writes  # claims, recordings, applied callbacks, their log rows
    assert [w for w in writes if w[1]] == []
    assert gc.isenabled()
