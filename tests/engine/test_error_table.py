"""Every row of the seed's error table (§8.3) as decisions.md refines it, over real HTTP."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select, update

from bulkchange.engine.worker import run_worker
from bulkchange.simulator import FaultConfig, SimulatorConfig
from bulkchange.store.tables import DeviceBulkChange, M2MDeviceChange, ThingSpaceAuthentication, utcnow

from .conftest import Harness, activation_row, make_harness, new_iccid, new_imei


def _bulk(h: Harness, bulk_id: int) -> DeviceBulkChange:
    with h.rt.session_factory() as s:
        bulk = s.get(DeviceBulkChange, bulk_id)
        assert bulk is not None
        return bulk


async def test_refused_credentials_fail_the_bulk_change_which_stays_resumable(harness: Harness) -> None:
    with harness.rt.session_factory.begin() as s:
        s.execute(update(ThingSpaceAuthentication).values(client_secret="wrong-secret"))
    iccid = new_iccid()
    bulk = harness.submit([{"ICCID": iccid}], status="inventory")
    await harness.run()
    row = _bulk(harness, bulk)
    assert row.status == "ERROR"
    assert "authentication failed" in (row.status_details or "").lower()
    assert "resume" in (row.status_details or "")
    assert harness.counts(bulk) == {"READY": 1}  # untouched, resumable
    assert harness.sim.counters.requests.get("devices/actions/add", 0) == 0

    with harness.rt.session_factory.begin() as s:  # the operator fixes the secret and resumes
        s.execute(update(ThingSpaceAuthentication).values(client_secret="sim-secret"))
        s.execute(update(DeviceBulkChange).where(DeviceBulkChange.id == bulk).values(status="PROCESSING"))
    harness.rt.engine.wake(bulk, delay_s=0, force=True)
    await harness.run()
    assert harness.counts(bulk) == {"PROCESSED": 1}
    assert _bulk(harness, bulk).status == "PROCESSED"


async def test_a_refused_login_is_never_retried_blindly(harness: Harness) -> None:
    with harness.rt.session_factory.begin() as s:
        s.execute(update(ThingSpaceAuthentication).values(password="wrong-password"))
    logins_before = harness.sim.counters.requests.get("session/login", 0)  # the listener registration
    first = harness.submit([{"ICCID": new_iccid()}], status="inventory")
    await harness.run()
    second = harness.submit([{"ICCID": new_iccid()}], status="inventory")
    await harness.run()
    # One refused login, then none: ThingSpace locks the user after 5 consecutive failures.
    assert harness.sim.counters.requests["session/login"] == logins_before + 1
    assert _bulk(harness, first).status == "ERROR" and _bulk(harness, second).status == "ERROR"
    assert "unlock" in (_bulk(harness, second).status_details or "")
    with harness.rt.session_factory() as s:
        auth = s.execute(select(ThingSpaceAuthentication)).scalar_one()
        assert auth.login_failed_at is not None


async def test_transient_authentication_failure_is_retried_then_fails_clearly(tmp_path: Path) -> None:
    for h in make_harness(tmp_path, callbacks=False):
        h.sim.faults = FaultConfig(p_server_error=1.0, endpoints=frozenset({"oauth2/token"}))
        bulk = h.submit([{"ICCID": new_iccid()}], status="inventory")
        await h.run()
        row = _bulk(h, bulk)
        assert row.status == "ERROR"
        assert "unavailable after 3 attempts" in (row.status_details or "")
        assert h.counts(bulk) == {"READY": 1}


async def test_rate_limiting_backs_off_honouring_retry_after(harness: Harness) -> None:
    harness.sim.faults = FaultConfig(
        p_rate_limited=1.0, retry_after_s=1, endpoints=frozenset({"devices/actions/activate"})
    )
    iccid = new_iccid()
    bulk = harness.submit([activation_row(iccid, new_imei())])
    await harness.run_once()
    [change] = harness.changes(bulk)
    assert change.status == "READY"
    assert "rate limited" in (change.status_details or "")
    assert change.next_attempt_at is not None and change.sent_at is not None
    assert (change.next_attempt_at - change.sent_at).total_seconds() >= 1.0  # Retry-After honoured
    harness.sim.faults = FaultConfig()
    await harness.run()
    assert harness.counts(bulk) == {"PROCESSED": 1}
    assert harness.actions(iccid) == {"add": 1, "activate": 1}


async def test_device_not_found_is_an_error_without_retry(harness: Harness) -> None:
    iccid = new_iccid()  # unknown to the carrier
    bulk = harness.submit([{"ICCID": iccid}], status="deactive")
    await harness.run()
    [change] = harness.changes(bulk)
    assert change.status == "ERROR"
    assert change.last_error_code == "INPUT_INVALID.Device.Account.Invalid"
    assert harness.sim.counters.requests["devices/actions/deactivate"] == 1
    assert _bulk(harness, bulk).has_errors


async def test_server_errors_are_retried_then_end_api_failed(harness: Harness) -> None:
    harness.sim.faults = FaultConfig(p_server_error=1.0, endpoints=frozenset({"devices/actions/suspend"}))
    iccid = new_iccid()
    harness.seed_device(iccid, "active")
    bulk = harness.submit([{"ICCID": iccid}], status="suspend")
    await harness.run()
    [change] = harness.changes(bulk)
    assert change.status == "API_FAILED"
    assert "gave up after 3 attempts" in (change.status_details or "")
    assert harness.sim.device(iccid).state == "active"  # type: ignore[union-attr]


async def test_server_error_then_recovery_processes_once(tmp_path: Path) -> None:
    # A long backoff, so the retry is not taken again inside the same slice; then time "passes".
    for harness in make_harness(tmp_path, retry_base_s=600, retry_cap_s=600):
        harness.sim.faults = FaultConfig(p_server_error=1.0, endpoints=frozenset({"devices/actions/suspend"}))
        iccid = new_iccid()
        harness.seed_device(iccid, "active")
        bulk = harness.submit([{"ICCID": iccid}], status="suspend")
        await harness.run_once()
        [change] = harness.changes(bulk)
        assert change.status == "READY" and change.attempt_count == 1 and change.next_attempt_at is not None
        harness.sim.faults = FaultConfig()
        with harness.rt.session_factory.begin() as s:  # the backoff has passed
            s.execute(update(M2MDeviceChange).values(next_attempt_at=utcnow()))
        harness.rt.engine.wake(bulk, delay_s=0, force=True)
        await harness.run()
        assert harness.counts(bulk) == {"PROCESSED": 1}
        assert harness.actions(iccid) == {"suspend": 1}


async def test_timeout_after_sending_is_reconciled_not_resent(harness: Harness) -> None:
    harness.sim.faults = FaultConfig(p_slow=1.0, slow_s=3.0, endpoints=frozenset({"devices/actions/activate"}))
    iccid = new_iccid()
    bulk = harness.submit([activation_row(iccid, new_imei())])
    await harness.run()
    [change] = harness.changes(bulk)
    assert change.status == "PROCESSED", change.status_details
    assert harness.actions(iccid) == {"add": 1, "activate": 1}  # never activated twice
    assert harness.sim.counters.requests["devices/actions/activate"] == 1
    assert harness.device(iccid).msisdn == harness.sim.device(iccid).msisdn  # type: ignore[union-attr]


async def test_malformed_answer_is_reconciled(harness: Harness) -> None:
    harness.sim.faults = FaultConfig(p_malformed=1.0, endpoints=frozenset({"devices/actions/deactivate"}))
    iccid = new_iccid()
    harness.seed_device(iccid, "active")
    bulk = harness.submit([{"ICCID": iccid}], status="deactive")
    await harness.run()
    assert harness.counts(bulk) == {"PROCESSED": 1}
    assert harness.actions(iccid) == {"deactivate": 1}


async def test_invalid_transition_fault_is_an_error_without_retry(tmp_path: Path) -> None:
    # The refusal comes in the callback. The deferred check (1 s in the harness) would race it and, on a loaded
    # machine, find the device active at the carrier first (PROCESSED): here it is due long after the callback.
    for harness in make_harness(tmp_path, activation_check_delay_s=120):
        iccid, imei = new_iccid(), new_imei()
        harness.sim.add_device(iccid, imei=imei, state="active")
        bulk = harness.submit([activation_row(iccid, imei)], ignore=True)
        await harness.run()
        [change] = harness.changes(bulk)
        assert change.status == "ERROR"
        assert change.last_error_code == "REQUEST_FAILED.DeviceAlreadyActive"
        assert "DeviceAlreadyActive" in (change.status_details or "")
        assert harness.sim.counters.requests["devices/actions/activate"] == 1


async def test_activation_never_confirmed_ends_unverified(tmp_path: Path) -> None:
    config = SimulatorConfig(activation_delay_s=3600)
    for h in make_harness(tmp_path, sim_config=config, callbacks=False, activation_check_delay_s=0):
        iccid = new_iccid()
        bulk = h.submit([activation_row(iccid, new_imei())])
        await run_worker(h.rt.engine, until_idle=True, poll_s=0.05)
        [change] = h.changes(bulk)
        assert change.status == "ACTIVATION_UNVERIFIED"
        assert "not confirmed after 2 checks" in (change.status_details or "")
        assert "pending activation" in (change.status_details or "")
        assert _bulk(h, bulk).status == "ERROR" and _bulk(h, bulk).has_errors  # none done
        assert h.sim.counters.requests["devices/actions/list"] == 2  # one poll per round, THINGSPACE_..._RETRY_NUMBER=2
