"""The stored-callback applier: batches, early callbacks, and callbacks that can never match."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, select, update
from typer.testing import CliRunner

from bulkchange.carrier.thingspace import verdicts
from bulkchange.cli.main import app
from bulkchange.engine.bulk_status import PacedRefresh, outcome_of
from bulkchange.engine.callbacks.applier import CallbackApplier
from bulkchange.engine.callbacks.apply import apply_callbacks_after, apply_pass
from bulkchange.engine.sources import CallbackSweep
from bulkchange.store.tables import DeviceBulkChange, DeviceBulkChangeLog, ThingSpaceCallBackResponseLog

from .conftest import Harness, activation_row, new_iccid, new_imei, success_callback


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
        assert (
            h.rt.engine.ingest_callback(_callback(f"unknown-{n}", new_iccid()), service_provider_id=h.provider_id)
            is not None
        )
    h.rt.engine.ingest_callback(_callback(change.carrier_request_id, iccid), service_provider_id=h.provider_id)
    assert h.rt.engine.apply_pending_callbacks(limit=2) == 1
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
    late = _callback(change.carrier_request_id or "", iccid)
    h.rt.engine.ingest_callback(late, service_provider_id=h.provider_id)  # the late callback
    assert h.rt.engine.apply_pending_callbacks() == 0
    with h.rt.session_factory() as s:
        stored = s.execute(select(ThingSpaceCallBackResponseLog)).scalar_one()
    assert stored.outcome == "not applied: the change was already PROCESSED"
    assert stored.m2m_device_change_id == change.id
    assert h.changes(bulk)[0].status == "PROCESSED"


async def test_a_refusal_for_a_change_a_check_already_settled_is_recorded_and_shown(
    polling_harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The carrier's "already active" arrives after the deferred check found the device active and settled the
    change: it does not vanish. It is on the change's log, flagged on the change, and `bulkchange status`
    shows it."""
    h = polling_harness
    iccid = new_iccid()
    bulk = h.submit([activation_row(iccid, new_imei())])
    await h.run()  # no listener: the deferred check settles it
    [change] = h.changes(bulk)
    assert change.status == "PROCESSED" and change.carrier_request_id and not change.has_errors
    refusal = {
        "username": "",
        "password": "",
        "requestId": change.carrier_request_id,
        "deviceIds": [{"id": iccid, "kind": "Iccid"}],
        "faultResponse": {
            "faultcode": "UnifiedWebService.REQUEST_FAILED.DeviceAlreadyActive",
            "faultstring": "REQUEST_FAILED. Device is already active",
        },
        "status": "Failed",
        "callbackCount": 1,
        "maxCallbackThreshold": 4,
    }
    h.rt.engine.ingest_callback(refusal, service_provider_id=h.provider_id)
    assert h.rt.engine.apply_pending_callbacks() == 0  # never a verdict on a settled change

    [after] = h.changes(bulk)
    assert after.status == "PROCESSED"
    assert after.has_errors and after.last_error_code == "REQUEST_FAILED.DeviceAlreadyActive"
    assert "the carrier later refused this request [REQUEST_FAILED.DeviceAlreadyActive]" in (after.status_details or "")
    with h.rt.session_factory() as s:
        logs = list(
            s.execute(select(DeviceBulkChangeLog).where(DeviceBulkChangeLog.m2m_device_change_id == change.id))
            .scalars()
            .all()
        )
    [late] = [row for row in logs if row.log_entry_description == "ThingSpace Callback: CarrierService"]
    assert late.has_errors and "DeviceAlreadyActive" in (late.error_text or "")

    monkeypatch.setenv("BULKCHANGE_DATABASE_URL", h.rt.settings.database_url)
    shown = CliRunner().invoke(app, ["status", str(bulk), "--json"])
    assert shown.exit_code == 0, shown.output
    [device] = json.loads(shown.stdout)["devices"]
    assert device["has_errors"] and device["last_error_code"] == "REQUEST_FAILED.DeviceAlreadyActive"
    assert "later refused" in device["details"]
    table = CliRunner().invoke(app, ["status", str(bulk)], env={"COLUMNS": "200"})
    assert "1 PROCESSED change(s) were later refused by the carrier" in table.stdout


async def test_a_late_success_for_a_processed_change_is_logged_but_flags_nothing(polling_harness: Harness) -> None:
    h = polling_harness
    iccid = new_iccid()
    h.seed_device(iccid, "active")
    bulk = h.submit([{"ICCID": iccid}], status="suspend")
    await h.run()
    [change] = h.changes(bulk)
    late = _callback(change.carrier_request_id or "", iccid)
    h.rt.engine.ingest_callback(late, service_provider_id=h.provider_id)
    h.rt.engine.apply_pending_callbacks()
    [after] = h.changes(bulk)
    assert after.status == "PROCESSED" and not after.has_errors and after.status_details == change.status_details
    with h.rt.session_factory() as s:
        descriptions = s.execute(
            select(DeviceBulkChangeLog.log_entry_description, DeviceBulkChangeLog.error_text).where(
                DeviceBulkChangeLog.m2m_device_change_id == change.id
            )
        ).all()
    assert ("ThingSpace Callback: CarrierService", "arrived after the change was PROCESSED; not applied") in [
        tuple(row) for row in descriptions
    ]


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _bulk_row(h: Harness, bulk_id: int) -> DeviceBulkChange:
    with h.rt.session_factory() as s:
        bulk = s.get(DeviceBulkChange, bulk_id)
        assert bulk is not None
        return bulk


def _exact_details(h: Harness, bulk_id: int) -> str:
    with h.rt.session_factory() as s:
        bulk = s.get(DeviceBulkChange, bulk_id)
        assert bulk is not None
        return outcome_of(s, bulk).details


async def _three_awaiting(h: Harness) -> tuple[int, list[tuple[str, str]]]:
    iccids = [new_iccid() for _ in range(3)]
    for iccid in iccids:
        h.seed_device(iccid, "active")
    bulk = h.submit([{"ICCID": iccid} for iccid in iccids], status="suspend")
    await h.run_once()  # sent; no listener, so the changes await their results
    changes = h.changes(bulk)
    assert [c.status for c in changes] == ["AWAITING_RESULT"] * 3
    return bulk, [(c.carrier_request_id or "", c.iccid) for c in changes]


def _apply_one(h: Harness, key: tuple[str, str], paced: PacedRefresh) -> int:
    h.rt.engine.ingest_callback(_callback(*key), service_provider_id=h.provider_id)
    return apply_callbacks_after(h.rt.ctx, 0, statuses=paced)[0]


async def test_a_paced_refresh_defers_counts_only_while_the_bulk_change_cannot_finish(
    polling_harness: Harness,
) -> None:
    """Within the interval, a pass that leaves a change awaiting does not refresh the bulk change (its counts
    lag); the pass that settles the last change finishes it at once, interval or not."""
    h = polling_harness
    bulk, keys = await _three_awaiting(h)
    clock = _Clock()
    paced = PacedRefresh(h.rt.ctx, interval_s=1.0, clock=clock)

    assert _apply_one(h, keys[0], paced) == 1  # never refreshed before: refreshed at once
    assert _bulk_row(h, bulk).status_details == _exact_details(h, bulk) and paced.owed == frozenset()
    clock.now += 0.3
    assert _apply_one(h, keys[1], paced) == 1  # refreshed 0.3 s ago and a change still awaits: deferred
    lagging = _bulk_row(h, bulk)
    assert lagging.status == "PROCESSING" and lagging.processed_date is None
    assert lagging.status_details != _exact_details(h, bulk) and paced.owed == frozenset({bulk})
    clock.now += 0.3
    assert _apply_one(h, keys[2], paced) == 1  # the last change: nothing awaits, refreshed at once
    done = _bulk_row(h, bulk)
    assert done.status == "PROCESSED" and done.processed_date is not None
    assert done.status_details == _exact_details(h, bulk) and paced.owed == frozenset()


async def test_an_owed_refresh_is_made_when_nothing_more_is_pending_or_the_interval_has_passed(
    polling_harness: Harness,
) -> None:
    h = polling_harness
    bulk, keys = await _three_awaiting(h)
    clock = _Clock()
    paced = PacedRefresh(h.rt.ctx, interval_s=1.0, clock=clock)
    _apply_one(h, keys[0], paced)
    _apply_one(h, keys[1], paced)  # deferred
    assert paced.owed == frozenset({bulk})
    assert apply_callbacks_after(h.rt.ctx, 0, statuses=paced) == (0, 0)  # nothing pending: owed ones made
    assert paced.owed == frozenset() and _bulk_row(h, bulk).status_details == _exact_details(h, bulk)

    h.rt.engine.ingest_callback(_callback("another-request", new_iccid()), service_provider_id=h.provider_id)
    clock.now += 0.2
    _apply_one(h, keys[2], paced)  # settles the last change: at once; the stranger's callback stays pending
    assert _bulk_row(h, bulk).status == "PROCESSED"

    # Another bulk change owed a refresh: a pass after the interval makes it, though it touched another.
    other, other_keys = await _three_awaiting(h)
    _apply_one(h, other_keys[0], paced)
    clock.now += 0.1
    _apply_one(h, other_keys[1], paced)
    assert paced.owed == frozenset({other})
    clock.now += 1.0
    apply_callbacks_after(h.rt.ctx, 0, statuses=paced)  # the stranger's callback is still pending
    assert paced.owed == frozenset() and _bulk_row(h, other).status_details == _exact_details(h, other)


class _ArrivalsDuringPass(PacedRefresh):
    """Stores the next of ``keys``' callbacks when a pass has committed (as the carrier's senders do while a
    receiver's applier works), before the pass returns."""

    def __init__(self, h: Harness, keys: list[tuple[str, str]]) -> None:
        super().__init__(h.rt.ctx, interval_s=0.0)
        self._h, self._keys = h, keys

    def touched(self, bulk_ids: Iterable[int]) -> None:
        super().touched(bulk_ids)
        if self._keys:
            key = self._keys.pop(0)
            self._h.rt.engine.ingest_callback(_callback(*key), service_provider_id=self._h.provider_id)


def _statuses(h: Harness, bulk: int) -> list[str]:
    return [c.status for c in h.changes(bulk)]


async def test_a_pass_leaves_what_arrived_while_it_ran_to_the_next_one_and_a_sweep_takes_it_all(
    polling_harness: Harness,
) -> None:
    """The receiver's applier makes one pass at a time, so that between passes the receiver stores the
    carrier's callbacks without waiting for the applier's write transaction, and the next pass takes them all
    (back to back, each pass would take only what arrived during the last one); a sweep leaves nothing."""
    h = polling_harness
    bulk, keys = await _three_awaiting(h)
    h.rt.engine.ingest_callback(_callback(*keys[0]), service_provider_id=h.provider_id)
    result = apply_pass(h.rt.ctx, 0, statuses=_ArrivalsDuringPass(h, [keys[1]]))
    assert (result.examined, result.applied) == (1, 1)
    assert _statuses(h, bulk) == ["PROCESSED", "AWAITING_RESULT", "AWAITING_RESULT"]  # stored, not applied yet
    assert apply_pass(h.rt.ctx, result.after_id).examined == 1
    assert _statuses(h, bulk) == ["PROCESSED", "PROCESSED", "AWAITING_RESULT"]

    other, other_keys = await _three_awaiting(h)
    h.rt.engine.ingest_callback(_callback(*other_keys[0]), service_provider_id=h.provider_id)
    assert apply_callbacks_after(h.rt.ctx, 0, statuses=_ArrivalsDuringPass(h, other_keys[1:]))[0] == 3
    assert _statuses(h, other) == ["PROCESSED"] * 3


async def test_the_applier_takes_a_backlog_pass_after_pass_without_gathering(polling_harness: Harness) -> None:
    """A pass that was full (``limit`` callbacks: a backlog, say after a restart) is followed by the next at
    once; the quarter-second gather is for callbacks still arriving."""
    h = polling_harness
    bulk, keys = await _three_awaiting(h)
    for key in keys:
        h.rt.engine.ingest_callback(_callback(*key), service_provider_id=h.provider_id)
    applier = CallbackApplier(h.rt.ctx, idle_poll_s=0.05, gather_s=60.0, limit=1)
    await applier.start()
    try:
        deadline = time.monotonic() + 20  # far less than the 60 s gather a pass after a full one would wait
        while _statuses(h, bulk) != ["PROCESSED"] * 3:
            assert time.monotonic() < deadline, f"the backlog waited for the gather: {_statuses(h, bulk)}"
            await asyncio.sleep(0.05)
    finally:
        await applier.stop()


async def test_a_pass_is_one_write_transaction_and_a_read_finds_that_nothing_more_is_pending(
    polling_harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On SQLite every write transaction takes the database's write lock, which the receiver's intake and the
    worker wait for: learning that nothing is left after a pass must not take it once more."""
    h = polling_harness
    bulk, keys = await _three_awaiting(h)
    for key in keys:
        h.rt.engine.ingest_callback(_callback(*key), service_provider_id=h.provider_id)
    factory = h.rt.ctx.session_factory
    real_begin = factory.begin
    writes: list[int] = []

    def counted_begin() -> Any:
        writes.append(1)
        return real_begin()

    monkeypatch.setattr(factory, "begin", counted_begin)
    assert h.rt.engine.apply_pending_callbacks() == 3
    assert len(writes) == 2  # the pass, then the bulk change's status
    assert _bulk_row(h, bulk).status == "PROCESSED"


async def test_a_pass_records_the_changes_it_matched_without_reading_them_again(
    polling_harness: Harness, db_url: str
) -> None:
    """On SQLite (no row locks; the pass holds the write lock) recording takes the changes the pass matched as
    the session holds them: the pass reads each change once, not once to match it and again to record it."""
    if not db_url.startswith("sqlite"):
        pytest.skip("PostgreSQL reads the changes again under a row lock, by design")
    h = polling_harness
    bulk, keys = await _three_awaiting(h)
    for key in keys:
        h.rt.engine.ingest_callback(_callback(*key), service_provider_id=h.provider_id)
    by_id: list[str] = []

    def _statement(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and '"M2M_DeviceChange".id IN' in statement:
            by_id.append(statement)

    bind = h.rt.ctx.session_factory.kw["bind"]
    event.listen(bind, "before_cursor_execute", _statement)
    try:
        assert h.rt.engine.apply_pending_callbacks() == 3
    finally:
        event.remove(bind, "before_cursor_execute", _statement)
    assert by_id == []
    assert [c.status for c in h.changes(bulk)] == ["PROCESSED"] * 3


async def test_a_pass_parses_each_callback_body_once(polling_harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """The body read to match a callback to its change is the one judged: not parsed a second time."""
    h = polling_harness
    bulk, keys = await _three_awaiting(h)
    for key in keys:
        h.rt.engine.ingest_callback(_callback(*key), service_provider_id=h.provider_id)
    real_parse = verdicts.parse_callback
    parsed: list[object] = []

    def counted(payload: Any) -> Any:
        parsed.append(payload)
        return real_parse(payload)

    monkeypatch.setattr(verdicts, "parse_callback", counted)
    assert h.rt.engine.apply_pending_callbacks() == 3
    assert len(parsed) == 3
    assert [c.status for c in h.changes(bulk)] == ["PROCESSED"] * 3


async def test_the_worker_sweep_leaves_fresh_callbacks_to_the_receiver_and_takes_those_left_behind(
    polling_harness: Harness,
) -> None:
    """The worker's sweep is the safety net for callbacks no receiver applied (a receiver that died after
    storing them). Taking the ones a live receiver is about to apply would only make the two race: on
    PostgreSQL the sweep then applied a share of every burst on the worker's own event loop, between its
    carrier requests. Its first turn takes everything (a worker started after a receiver died)."""
    h = polling_harness
    bulk, keys = await _three_awaiting(h)
    h.rt.engine.ingest_callback(_callback(*keys[0]), service_provider_id=h.provider_id)
    sweep = CallbackSweep(h.rt.ctx, interval_s=0.0, left_after_s=30.0)
    assert await sweep.run_due() == 1  # the first turn
    for key in keys[1:]:
        h.rt.engine.ingest_callback(_callback(*key), service_provider_id=h.provider_id)
    assert await sweep.run_due() == 0  # just stored: the receiver's to apply
    assert _statuses(h, bulk) == ["PROCESSED", "AWAITING_RESULT", "AWAITING_RESULT"]
    with h.rt.session_factory.begin() as s:  # one of them has waited a minute: its receiver is gone
        s.execute(
            update(ThingSpaceCallBackResponseLog)
            .where(
                ThingSpaceCallBackResponseLog.request_id == keys[1][0],
                ThingSpaceCallBackResponseLog.iccid == keys[1][1],
            )
            .values(received_date=h.rt.ctx.clock() - timedelta(seconds=60))
        )
    assert await sweep.run_due() == 1
    assert _statuses(h, bulk) == ["PROCESSED", "PROCESSED", "AWAITING_RESULT"]
