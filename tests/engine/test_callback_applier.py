"""The stored-callback applier: batches, early callbacks, and callbacks that can never match."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from bulkchange.store.tables import ThingSpaceCallBackResponseLog

from .conftest import Harness, new_iccid, success_callback


def _callback(request_id: str, iccid: str) -> dict[str, Any]:
    return success_callback(request_id, iccid, action="suspend", state="suspend")


async def test_callbacks_waiting_for_their_change_never_hide_the_ones_behind_them(polling_harness: Harness) -> None:
    h = polling_harness
    iccid = new_iccid()
    h.seed_device(iccid, "active")
    bulk = h.submit([{"ICCID": iccid}], status="suspend")
    await h.run_once()  # sends Suspend; no listener, so the change awaits its result
    [change] = h.changes(bulk)
    assert change.status == "AWAITING_RESULT" and change.carrier_request_id
    for n in range(3):  # callbacks that match nothing yet (they may be early): kept pending, at the head
        assert h.rt.processor.ingest_callback(_callback(f"unknown-{n}", new_iccid())) is not None
    h.rt.processor.ingest_callback(_callback(change.carrier_request_id, iccid))
    assert h.rt.processor.apply_pending_callbacks(limit=2) == 1
    assert h.changes(bulk)[0].status == "PROCESSED"
    with h.rt.session_factory() as s:
        waiting = s.execute(
            select(ThingSpaceCallBackResponseLog).where(ThingSpaceCallBackResponseLog.outcome.is_(None))
        ).scalars()
        assert sorted(r.request_id for r in waiting) == ["unknown-0", "unknown-1", "unknown-2"]


async def test_a_callback_for_a_change_already_settled_is_recorded_as_such(polling_harness: Harness) -> None:
    h = polling_harness
    iccid = new_iccid()
    h.seed_device(iccid, "active")
    bulk = h.submit([{"ICCID": iccid}], status="suspend")
    await h.run()  # no listener: the deferred check settles it
    [change] = h.changes(bulk)
    assert change.status == "PROCESSED"
    h.rt.processor.ingest_callback(_callback(change.carrier_request_id or "", iccid))  # the late callback
    assert h.rt.processor.apply_pending_callbacks() == 0
    with h.rt.session_factory() as s:
        stored = s.execute(select(ThingSpaceCallBackResponseLog)).scalar_one()
    assert stored.outcome == "not applied: the change was already PROCESSED"
    assert stored.m2m_device_change_id == change.id
    assert h.changes(bulk)[0].status == "PROCESSED"
