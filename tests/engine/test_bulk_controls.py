"""Cancel, pause and resume of a bulk change, and the outcome it reports, against the simulator on loopback
and a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from bulkchange.engine import changes as ch
from bulkchange.engine import controls
from bulkchange.simulator.faults import FaultConfig
from bulkchange.store.tables import DeviceBulkChange, DeviceBulkChangeLog

from .conftest import Harness, make_harness, new_iccid


@pytest.fixture
def refusing(tmp_path: Path) -> Iterator[Harness]:
    """Devices the carrier does not know are refused in its callback; a deferred check due after 1 s (the
    harness's default) would race that callback on a loaded machine and end the change NEEDS_REVIEW."""
    yield from make_harness(tmp_path, activation_check_delay_s=120)


def _bulk(h: Harness, bulk_id: int) -> DeviceBulkChange:
    with h.rt.session_factory() as session:
        bulk = session.get(DeviceBulkChange, bulk_id)
        assert bulk is not None
        return bulk


def _bulk_logs(h: Harness, bulk_id: int) -> list[DeviceBulkChangeLog]:
    with h.rt.session_factory() as session:
        query = select(DeviceBulkChangeLog).where(
            DeviceBulkChangeLog.bulk_change_id == bulk_id, DeviceBulkChangeLog.m2m_device_change_id.is_(None)
        )
        return list(session.execute(query).scalars())


async def test_cancel_takes_the_changes_waiting_in_rate_limit_backoff(harness: Harness) -> None:
    """Deactivations answered 429 wait READY with a retry in 60 s: the carrier has not accepted them, so cancel
    takes every one, and none of them reaches the carrier afterwards."""
    iccids = [new_iccid() for _ in range(6)]
    for iccid in iccids:
        harness.seed_device(iccid, "active")
    harness.sim.faults = FaultConfig(
        p_rate_limited=1.0, retry_after_s=60, endpoints=frozenset({"devices/actions/deactivate"})
    )
    bulk = harness.submit([{"ICCID": i} for i in iccids], status="deactive")
    await harness.run_once()
    waiting = harness.changes(bulk)
    assert {c.status for c in waiting} == {"READY"}
    assert all(c.attempt_count >= 1 and c.next_attempt_at is not None for c in waiting)

    result = controls.cancel(harness.rt.ctx, bulk, by="tester")
    assert len(result.cancelled) == 6 and result.not_cancellable == 0

    harness.sim.faults = FaultConfig()
    await harness.run()
    assert harness.counts(bulk) == {"CANCELLED": 6}
    assert all(harness.sim.device(i).state == "active" for i in iccids)  # type: ignore[union-attr]
    row = _bulk(harness, bulk)
    assert (row.status, row.has_errors, row.status_details) == ("CANCELLED", False, "6 CANCELLED")


async def test_cancel_leaves_a_claimed_change_alone_and_a_cancelled_one_is_never_claimed(harness: Harness) -> None:
    bulk = harness.submit([{"ICCID": new_iccid()} for _ in range(4)], status="inventory")
    now = harness.rt.ctx.clock()
    with harness.rt.session_factory() as session:
        claimed = ch.claim(session, bulk, worker="w1", lease_s=60, now=now, limit=1)
    assert len(claimed) == 1

    result = controls.cancel(harness.rt.ctx, bulk, by="tester")
    assert (len(result.cancelled), result.at_carrier, result.finished) == (3, 1, 0)
    assert claimed[0].id not in result.cancelled
    with harness.rt.session_factory() as session:
        assert ch.claim(session, bulk, worker="w2", lease_s=60, now=now + timedelta(hours=1), limit=10) == []
    again = controls.cancel(harness.rt.ctx, bulk, by="tester")
    assert (again.cancelled, again.at_carrier, again.finished) == ([], 1, 3)
    [audit, _] = [e for e in _bulk_logs(harness, bulk) if e.log_entry_description.startswith("Cancel bulk change")]
    assert audit.process_by == "tester" and "3 change(s) cancelled" in (audit.response_text or "")


async def test_pause_stops_claims_and_resume_wakes_it(harness: Harness) -> None:
    iccids = [new_iccid() for _ in range(3)]
    bulk = harness.submit([{"ICCID": i} for i in iccids], status="inventory")
    done = controls.pause(harness.rt.ctx, bulk, by="tester")
    assert "paused by tester" in done
    await harness.run()
    assert harness.counts(bulk) == {"READY": 3}
    assert harness.sim.counters.requests.get("devices/actions/add", 0) == 0
    row = _bulk(harness, bulk)
    assert (row.status, row.paused_by) == ("PAUSED", "tester")
    with pytest.raises(controls.NotApplicable, match="already paused"):
        controls.pause(harness.rt.ctx, bulk, by="tester")

    controls.resume(harness.rt.ctx, bulk, by="tester")
    await harness.run()
    assert harness.counts(bulk) == {"PROCESSED": 3}
    assert _bulk(harness, bulk).status == "PROCESSED"
    described = [e.log_entry_description for e in _bulk_logs(harness, bulk)]
    assert "Pause bulk change (operator)" in described and "Resume bulk change (operator)" in described


async def test_resume_of_a_finished_bulk_change_is_refused(harness: Harness) -> None:
    bulk = harness.submit([{"ICCID": new_iccid()}], status="inventory")
    await harness.run()
    with pytest.raises(controls.NotApplicable, match=r"is PROCESSED .*nothing to resume"):
        controls.resume(harness.rt.ctx, bulk, by="tester")
    with pytest.raises(controls.NotApplicable, match="nothing to pause"):
        controls.pause(harness.rt.ctx, bulk, by="tester")


async def test_some_devices_failed_is_partial_not_processed(refusing: Harness) -> None:
    harness = refusing
    good = new_iccid()
    harness.seed_device(good, "active")
    bulk = harness.submit([{"ICCID": good}, {"ICCID": new_iccid()}], status="deactive")  # the second: unknown
    await harness.run()
    assert harness.counts(bulk) == {"PROCESSED": 1, "ERROR": 1}
    row = _bulk(harness, bulk)
    assert (row.status, row.has_errors, row.status_details) == ("PARTIAL", True, "1 PROCESSED, 1 ERROR")


async def test_every_device_failed_is_error(refusing: Harness) -> None:
    harness = refusing
    bulk = harness.submit([{"ICCID": new_iccid()}, {"ICCID": new_iccid()}], status="deactive")
    await harness.run()
    row = _bulk(harness, bulk)
    assert (row.status, row.has_errors, row.status_details) == ("ERROR", True, "2 ERROR")
