"""A Control Center provider end to end: the real engine and worker loop, a real database (SQLite and
PostgreSQL), the Control Center simulator over real HTTP.

Each target status; a scheduled change (SCHEDULED until its date, verified after it); a change the carrier
accepted and did not make (ERROR with the audit record's text, never PROCESSED); refused credentials (a
bulk-level reason, no device touched); a 429 storm with three workers (every change done once, never two
calls in flight); a worker stopped between its PUT and its commit (the next worker reconciles by reading
the device and sends nothing again).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from bulkchange.carrier.controlcenter.adapter import ControlCenterCarrier
from bulkchange.domain.statuses import ChangeStatus, DeviceStatusId
from bulkchange.engine import changes as ch
from bulkchange.engine import controls
from bulkchange.engine import slice as slice_module
from bulkchange.engine.context import default_carriers
from bulkchange.engine.operator_actions import preview
from bulkchange.engine.preview_estimate import calls_per_change, duration_text
from bulkchange.engine.submit import create_bulk_change
from bulkchange.engine.worker import run_worker
from bulkchange.providers import add_controlcenter_provider
from bulkchange.queue.message import BulkChangeMessage
from bulkchange.runtime import Runtime, build_runtime
from bulkchange.simulator import ManualClock, ServerHandle, run_in_thread
from bulkchange.simulator.controlcenter import (
    API_ROOT,
    ControlCenterConfig,
    ControlCenterFaults,
    ControlCenterSimulator,
)
from bulkchange.store.tables import Device, DeviceBulkChange, DeviceBulkChangeLog, M2MDeviceChange

from .conftest import fast_settings

STEP_TIMEOUT_S = 120  # a hung worker fails the test instead of hanging the suite


@dataclass
class CC:
    sim: ControlCenterSimulator
    server: ServerHandle
    rt: Runtime
    provider_id: int
    clock: ManualClock

    def submit(self, rows: list[dict[str, Any]], *, status: str = "active") -> int:
        with self.rt.session_factory() as session:
            return create_bulk_change(
                session, self.rt.transport, rows, status=status, service_provider_id=self.provider_id
            )

    async def run(self, rt: Runtime | None = None) -> None:
        await asyncio.wait_for(run_worker((rt or self.rt).engine, until_idle=True, poll_s=0.05), STEP_TIMEOUT_S)

    async def run_once(self) -> None:
        """The messages visible now, once each (a scheduled change's follow-up is days away)."""
        for received in self.rt.transport.receive(max_messages=10):
            await self.rt.engine.handle(received)
            self.rt.transport.delete(received.receipt_handle)

    def changes(self, bulk_id: int) -> list[M2MDeviceChange]:
        with self.rt.session_factory() as session:
            query = select(M2MDeviceChange).where(M2MDeviceChange.bulk_change_id == bulk_id)
            return list(session.scalars(query.order_by(M2MDeviceChange.id)))

    def counts(self, bulk_id: int) -> dict[str, int]:
        with self.rt.session_factory() as session:
            return {s.value: n for s, n in ch.counts_by_status(session, bulk_id).items()}

    def bulk(self, bulk_id: int) -> DeviceBulkChange:
        with self.rt.session_factory() as session:
            bulk = session.get(DeviceBulkChange, bulk_id)
            assert bulk is not None
            return bulk

    def device(self, iccid: str) -> Device | None:
        with self.rt.session_factory() as session:
            return session.scalars(select(Device).where(Device.iccid == iccid)).one_or_none()


def _follow(rt: Runtime, clock: ManualClock) -> None:
    """The engine and the adapter read the simulator's wall clock (scheduled dates without waiting)."""
    rt.engine.ctx.clock = lambda: datetime.fromtimestamp(clock(), UTC).replace(tzinfo=None)
    carriers = dict(default_carriers())
    carriers["controlcenter"] = ControlCenterCarrier(clock=lambda: datetime.fromtimestamp(clock(), UTC))
    rt.engine.ctx.carriers = carriers


def make_cc(
    db_url: str,
    *,
    config: ControlCenterConfig | None = None,
    api_key: str = "sim-api-key",
    tps: float = 50.0,
    manual_clock: bool = True,
    **settings: Any,
) -> Iterator[CC]:
    """A simulator, a runtime and a POD 19 provider. ``manual_clock``: the simulator's wall clock only moves
    when the test says, and the engine and adapter follow it; otherwise every clock is the real one."""
    clock = ManualClock(datetime.now(UTC).timestamp())
    config = config or ControlCenterConfig(tps=1000, tps_burst=1000)
    sim = ControlCenterSimulator(config, clock=clock if manual_clock else None)
    rt = build_runtime(fast_settings(db_url, **settings))
    if manual_clock:
        _follow(rt, clock)
    with run_in_thread(sim) as server:
        with rt.session_factory() as session:
            provider_id = add_controlcenter_provider(
                session,
                name="pod19-test",
                base_url=server.base_url + API_ROOT,
                username="sim-user",
                api_key=api_key,
                tps=tps,
                pod19=True,
            )
        yield CC(sim, server, rt, provider_id, clock)
    rt.close()


@pytest.fixture
def cc(db_url: str) -> Iterator[CC]:
    yield from make_cc(db_url)


# ------------------------------------------------------------------------------------------------ statuses

# (operator's status, the device's status before, Control Center's status after, local status after)
STATUSES = [
    ("active", "INVENTORY", "ACTIVATED", DeviceStatusId.ACTIVE),
    ("activated", "DEACTIVATED", "ACTIVATED", DeviceStatusId.ACTIVE),
    ("pending activation", "INVENTORY", "ACTIVATION_READY", DeviceStatusId.PENDING_ACTIVATION),
    ("inventory", "ACTIVATED", "INVENTORY", DeviceStatusId.INVENTORY),
    ("deactive", "ACTIVATED", "DEACTIVATED", DeviceStatusId.DEACTIVE),
    ("retired", "DEACTIVATED", "RETIRED", DeviceStatusId.RETIRED),
]


async def test_every_target_status_reaches_the_carrier_and_the_local_tables(cc: CC) -> None:
    devices = [cc.sim.add_device(status=before) for _s, before, _a, _l in STATUSES]
    rows = [{"ICCID": d.iccid, "Status": s} for d, (s, *_rest) in zip(devices, STATUSES, strict=True)]
    rows[0]["RatePlan"] = "POD19 5GB"
    rows[0]["CommunicationPlan"] = "POD19 Data+SMS"
    bulk_id = cc.submit(rows)
    await cc.run()
    assert cc.counts(bulk_id) == {"PROCESSED": len(STATUSES)}
    assert cc.bulk(bulk_id).status == "PROCESSED"
    for device, (status, _before, after, local) in zip(devices, STATUSES, strict=True):
        shown = cc.sim.device(device.iccid)
        assert shown is not None and shown.status == after, status
        assert cc.sim.counters.puts[device.iccid] == 1, status
        row = cc.device(device.iccid)
        assert row is not None and row.device_status_id == local, status
        assert row.msisdn == shown.msisdn
    first = cc.sim.device(devices[0].iccid)
    assert first is not None and (first.rate_plan, first.communication_plan) == ("POD19 5GB", "POD19 Data+SMS")


async def test_a_claim_takes_no_more_changes_than_one_send_carries(cc: CC, monkeypatch: pytest.MonkeyPatch) -> None:
    """A send carries ten Control Center changes. Claiming up to the configured batch (10,000 by default) and
    giving the rest back made each claim touch every remaining change of the bulk change."""
    devices = [cc.sim.add_device(status="INVENTORY") for _ in range(25)]
    claimed: list[int] = []
    real_claim = slice_module.claim

    def counting_claim(*args: Any, **kwargs: Any) -> list[M2MDeviceChange]:
        batch = real_claim(*args, **kwargs)
        claimed.append(len(batch))
        return batch

    monkeypatch.setattr(slice_module, "claim", counting_claim)
    bulk_id = cc.submit([{"ICCID": d.iccid} for d in devices])
    await cc.run()
    assert cc.counts(bulk_id) == {"PROCESSED": 25}
    assert sorted(n for n in claimed if n) == [5, 10, 10], claimed


async def test_suspend_is_refused_at_submit_for_a_control_center_provider(cc: CC) -> None:
    from bulkchange.engine.submit import SubmissionRefused

    device = cc.sim.add_device(status="ACTIVATED")
    with pytest.raises(SubmissionRefused) as refused:
        cc.submit([{"ICCID": device.iccid}], status="suspend")
    assert "suspend" in str(refused.value.report.problems[0].message).lower()
    assert cc.sim.counters.puts == {}


def test_the_preview_gives_the_time_at_the_accounts_tps_and_no_thingspace_fee_warning(cc: CC) -> None:
    devices = [cc.sim.add_device(status="ACTIVATED") for _ in range(3)]
    with cc.rt.session_factory() as session:
        shown = preview(
            session, [{"ICCID": d.iccid} for d in devices], status="deactive", service_provider_id=cc.provider_id
        )
    assert shown.ok, shown.problems
    # POD 19: edit, read back, audit trail per change; 9 calls at the provider's 50 TPS.
    assert shown.estimate == "3 changes × 3 calls ≈ 0 s at 50 TPS"
    assert not any("early-termination" in w for r in shown.rows for w in r.warnings)  # ThingSpace's fee
    assert cc.sim.counters.puts == {}


def test_estimates_read_as_hours_and_minutes() -> None:
    assert duration_text(10_000 / 1.0) == "2 h 47 min"
    assert duration_text(30_000 / 5.0) == "1 h 40 min"
    assert duration_text(720) == "12 min" and duration_text(40) == "40 s"
    assert calls_per_change(pod19=True, pre_step=False) == 3
    assert calls_per_change(pod19=False, pre_step=True) == 5


# ------------------------------------------------------------------------------------------------ scheduled


async def test_a_scheduled_change_waits_as_scheduled_and_is_verified_after_its_date(cc: CC) -> None:
    device = cc.sim.add_device(status="ACTIVATED")
    when = datetime.fromtimestamp(cc.clock(), UTC) + timedelta(days=2)
    bulk_id = cc.submit([{"ICCID": device.iccid, "EffectiveDate": when.isoformat()}], status="deactive")
    await cc.run_once()

    (change,) = cc.changes(bulk_id)
    assert change.status == "SCHEDULED", change.status_details
    assert change.next_attempt_at is not None and abs(change.next_attempt_at - when.replace(tzinfo=None)) < timedelta(
        seconds=1
    )
    assert cc.bulk(bulk_id).status != "PROCESSED"
    shown = cc.sim.device(device.iccid)
    assert shown is not None and shown.status == "ACTIVATED"  # not before its date
    assert cc.sim.counters.puts[device.iccid] == 1

    cc.clock.advance(2 * 86400 + 60)  # the date has passed, at the carrier and for us
    cc.rt.transport.send(BulkChangeMessage(bulk_change_id=bulk_id, service_provider_id=cc.provider_id))
    await cc.run_once()

    (change,) = cc.changes(bulk_id)
    assert change.status == "PROCESSED", change.status_details
    shown = cc.sim.device(device.iccid)
    assert shown is not None and shown.status == "DEACTIVATED"
    assert cc.sim.counters.puts[device.iccid] == 1  # verified by reading, never sent again
    row = cc.device(device.iccid)
    assert row is not None and row.device_status_id == DeviceStatusId.DEACTIVE


async def test_cancel_leaves_a_scheduled_change_to_the_carrier_and_counts_it_there(cc: CC) -> None:
    """The carrier has accepted a scheduled change and offers no way to withdraw it: cancel must not mark it
    CANCELLED (it will happen at its date) and must say it is at the carrier."""
    scheduled, waiting = cc.sim.add_device(status="ACTIVATED"), cc.sim.add_device(status="ACTIVATED")
    when = datetime.fromtimestamp(cc.clock(), UTC) + timedelta(days=2)
    bulk_id = cc.submit([{"ICCID": scheduled.iccid, "EffectiveDate": when.isoformat()}], status="deactive")
    other = cc.submit([{"ICCID": waiting.iccid}], status="deactive")
    await cc.run_once()
    assert [c.status for c in cc.changes(bulk_id)] == ["SCHEDULED"]

    result = controls.cancel(cc.rt.ctx, bulk_id, by="test")

    assert (result.cancelled, result.at_carrier, result.finished) == ([], 1, 0)
    assert [c.status for c in cc.changes(bulk_id)] == ["SCHEDULED"]
    assert cc.bulk(other).status != "CANCELLED"  # another bulk change is not touched


# ------------------------------------------------------------------------------------ accepted, not applied


async def test_a_change_accepted_but_not_applied_ends_in_error_with_the_audit_text(cc: CC) -> None:
    device = cc.sim.add_device(status="ACTIVATED")
    cc.sim.fail_next("not_applied", endpoints=frozenset({"devices/edit"}))
    bulk_id = cc.submit([{"ICCID": device.iccid}], status="deactive")
    await cc.run()

    (change,) = cc.changes(bulk_id)
    assert change.status == "ERROR", change.status_details
    assert change.has_errors  # finished (IsProcessed) with errors: never counted as done
    assert change.last_error_code == "NotApplied"
    shown = cc.sim.device(device.iccid)
    assert shown is not None and shown.status == "ACTIVATED"
    audit_errors = [r for r in cc.sim.audit_trail(device.iccid) if r.status == "Error"]
    assert audit_errors
    assert change.status_details and "DEACTIVATED" in change.status_details
    local = cc.device(device.iccid)
    assert local is None or local.device_status_id != DeviceStatusId.DEACTIVE
    with cc.rt.session_factory() as session:
        texts = list(
            session.scalars(
                select(DeviceBulkChangeLog.response_text).where(DeviceBulkChangeLog.bulk_change_id == bulk_id)
            )
        )
    assert any(t and "Error" in t for t in texts)  # the carrier's own audit body is in the log rows


# ------------------------------------------------------------------------------------ refused credentials


@pytest.fixture
def cc_bad_key(db_url: str) -> Iterator[CC]:
    yield from make_cc(db_url, api_key="not-the-key")


async def test_refused_credentials_stop_the_bulk_change_before_any_device_is_touched(cc_bad_key: CC) -> None:
    cc = cc_bad_key
    devices = [cc.sim.add_device(status="ACTIVATED") for _ in range(3)]
    bulk_id = cc.submit([{"ICCID": d.iccid} for d in devices], status="deactive")
    await cc.run()

    bulk = cc.bulk(bulk_id)
    assert bulk.status == "ERROR"
    assert bulk.status_details and "credential" in bulk.status_details.lower(), bulk.status_details
    assert cc.sim.counters.puts == {}
    assert all(c.status == "READY" for c in cc.changes(bulk_id))  # resumable once the key is fixed
    assert cc.sim.counters.unauthorized >= 1


async def test_a_login_refused_for_its_rate_is_retried_and_never_fails_the_bulk_change(cc: CC) -> None:
    """The credential check answered 429 / 40000029 more often than the engine's attempts allow: a rate
    refusal is transient, so the bulk change waits and tries again instead of ending in ERROR."""
    attempts = cc.rt.settings.max_attempts * cc.rt.settings.carrier_call_attempts
    cc.sim.fail_next("rate_limited", count=attempts, endpoints=frozenset({"devices/search"}))
    devices = [cc.sim.add_device(status="ACTIVATED") for _ in range(2)]
    bulk_id = cc.submit([{"ICCID": d.iccid} for d in devices], status="deactive")
    await cc.run()

    assert cc.sim.counters.throttled.get("injected", 0) == attempts  # every login of max_attempts was refused
    assert cc.bulk(bulk_id).status == "PROCESSED", cc.bulk(bulk_id).status_details
    assert cc.counts(bulk_id) == {"PROCESSED": 2}
    for d in devices:
        assert cc.sim.counters.puts[d.iccid] == 1


# ------------------------------------------------------------------------------------------ a 429 storm


def _worker(cc: CC, name: str) -> Runtime:
    """Another worker on the same database and queue (its own connections, worker id and ProcessBy)."""
    rt = build_runtime(cc.rt.settings.model_copy(update={"process_by": name}))
    rt.engine.ctx.worker_id = name
    return rt


STORM_DEVICES = 12
STORM_TPS = 5.0  # a real POD 19 contract figure


@pytest.fixture
def cc_storm(db_url: str) -> Iterator[CC]:
    faults = ControlCenterFaults(seed=3, p_rate_limited=0.3)  # on top of the real per-account limits
    config = ControlCenterConfig(tps=STORM_TPS, tps_burst=1, max_in_flight=1, faults=faults)
    yield from make_cc(db_url, config=config, tps=STORM_TPS, manual_clock=False, max_attempts=50)


async def test_a_429_storm_with_three_workers_does_every_change_once_within_the_account_limits(cc_storm: CC) -> None:
    cc = cc_storm
    devices = [cc.sim.add_device(status="ACTIVATED") for _ in range(STORM_DEVICES)]
    bulk_id = cc.submit([{"ICCID": d.iccid} for d in devices], status="deactive")
    for _ in range(2):  # one wake-up per worker: the row claims decide who sends
        cc.rt.transport.send(BulkChangeMessage(bulk_change_id=bulk_id, service_provider_id=cc.provider_id))
    others = [_worker(cc, f"w{i}") for i in (2, 3)]
    try:
        await asyncio.gather(cc.run(), *(cc.run(rt) for rt in others))
        # A worker that stopped while another still held rows left a wake-up: the last one drains it.
        await cc.run()
    finally:
        for rt in others:
            rt.close()

    assert cc.counts(bulk_id) == {"PROCESSED": STORM_DEVICES}
    counters = cc.sim.counters
    assert counters.throttled.get("injected", 0) > 0  # the storm happened
    # Never two calls open at once on the account.
    assert counters.throttled.get("in_flight", 0) == 0 and counters.max_in_flight <= 1, counters.throttled
    for d in devices:
        assert counters.changes[d.iccid] == {"status": 1}, d.iccid  # made once, whatever was retried
        shown = cc.sim.device(d.iccid)
        assert shown is not None and shown.status == "DEACTIVATED"


async def test_a_429_storm_never_exceeds_the_account_rate(cc_storm: CC) -> None:
    """The simulator's bucket has no burst: a call that arrives less than 1/TPS after the previous one is
    refused for its rate. Calls are counted when their answer is in, so a request delayed on its way (a slow
    commit, a busy machine) cannot arrive too close to the next one."""
    cc = cc_storm
    devices = [cc.sim.add_device(status="ACTIVATED") for _ in range(STORM_DEVICES)]
    cc.submit([{"ICCID": d.iccid} for d in devices], status="deactive")
    await cc.run()
    assert cc.sim.counters.throttled.get("tps", 0) == 0, cc.sim.counters.throttled


# ------------------------------------------------------------------ stopped between the PUT and its commit


async def _run_until_terminal(cc: CC, rt: Runtime, bulk_id: int) -> None:
    """A worker that stops once every change of the bulk change is terminal (later wake-ups not waited for)."""
    stop = asyncio.Event()
    worker = asyncio.create_task(run_worker(rt.engine, stop=stop, poll_s=0.05))
    try:
        async with asyncio.timeout(STEP_TIMEOUT_S):
            while not all(ChangeStatus(c.status).is_terminal for c in cc.changes(bulk_id)):
                assert not worker.done(), worker
                await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.wait_for(worker, STEP_TIMEOUT_S)


@pytest.fixture
def cc_slow(db_url: str) -> Iterator[CC]:
    config = ControlCenterConfig(tps=1000, tps_burst=1000, faults=ControlCenterFaults(slow_s=1.0))
    yield from make_cc(db_url, config=config, manual_clock=False, carrier_timeout_s=60.0, lease_seconds=5)


async def test_a_worker_stopped_after_its_put_is_reconciled_without_a_second_put(cc_slow: CC) -> None:
    cc = cc_slow
    device = cc.sim.add_device(status="ACTIVATED")
    cc.sim.fail_next("slow", endpoints=frozenset({"devices/edit"}))  # the edit is made; its answer never comes
    bulk_id = cc.submit([{"ICCID": device.iccid}], status="deactive")

    first = asyncio.create_task(cc.run())
    while not cc.sim.counters.puts.get(device.iccid):  # the PUT reached the carrier
        assert not first.done(), first
        await asyncio.sleep(0.02)
    first.cancel()  # the worker dies before it hears the answer or commits anything
    with pytest.raises(asyncio.CancelledError):
        await first
    (change,) = cc.changes(bulk_id)
    assert change.status == "SENDING"
    shown = cc.sim.device(device.iccid)
    assert shown is not None and shown.status == "DEACTIVATED"  # done at the carrier, unknown to us

    restarted = _worker(cc, "restarted")
    try:
        restarted.transport.send(BulkChangeMessage(bulk_change_id=bulk_id, service_provider_id=cc.provider_id))
        await _run_until_terminal(cc, restarted, bulk_id)  # waits out the dead worker's lease, then reconciles
    finally:
        restarted.close()
    (change,) = cc.changes(bulk_id)
    assert change.status == "PROCESSED", change.status_details
    assert cc.sim.counters.puts[device.iccid] == 1  # the device read showed it done: no second PUT
    row = cc.device(device.iccid)
    assert row is not None and row.device_status_id == DeviceStatusId.DEACTIVE
