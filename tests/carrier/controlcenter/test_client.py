"""The Control Center client against the simulator over real HTTP."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bulkchange.carrier.controlcenter import ControlCenterClient
from bulkchange.carrier.errors import (
    AuthenticationFailed,
    DeviceNotFound,
    OutcomeUnknown,
    PermanentError,
    RateLimited,
    TransientError,
)
from bulkchange.simulator import ManualClock
from bulkchange.simulator.controlcenter import ControlCenterConfig, ControlCenterFaults, ControlCenterSimulator

from .conftest import ClientFactory

HOUR = 3600.0


def _now(clock: ManualClock) -> datetime:
    return datetime.fromtimestamp(clock(), tz=UTC)


async def test_get_device_reads_every_field(cc_sim: ControlCenterSimulator, cc_client: ControlCenterClient) -> None:
    seeded = cc_sim.add_device(status="ACTIVATED", imei="359876100000017", fixed_ip="10.0.0.9")
    device = await cc_client.get_device(seeded.iccid)
    assert device is not None
    assert (device.iccid, device.status, device.imsi, device.msisdn) == (
        seeded.iccid,
        "ACTIVATED",
        seeded.imsi,
        seeded.msisdn,
    )
    assert (device.rate_plan, device.communication_plan, device.account_id) == ("POD19 1GB", "POD19 Data", "100020620")
    assert device.fixed_ip_address == "10.0.0.9"
    assert device.date_activated == datetime.fromtimestamp(seeded.date_added, tz=UTC)
    assert device.date_updated is not None and device.date_updated.tzinfo is not None
    assert device.model_extra is not None and device.model_extra["accountCustom1"] == ""


async def test_get_device_unknown_is_none(cc_client: ControlCenterClient) -> None:
    assert await cc_client.get_device("89011700000000000999") is None


async def test_get_device_with_fields(cc_sim: ControlCenterSimulator, cc_client: ControlCenterClient) -> None:
    seeded = cc_sim.add_device()
    device = await cc_client.get_device(seeded.iccid, fields=["iccid", "status"])
    assert device is not None
    assert (device.iccid, device.status, device.rate_plan) == (seeded.iccid, "INVENTORY", None)


@pytest.mark.parametrize(
    ("given", "sent"),
    [
        ("activated", "ACTIVATED"),
        ("Activated", "ACTIVATED"),
        (" activation ready ", "ACTIVATION_READY"),
        ("activation-ready", "ACTIVATION_READY"),
        ("deactivated", "DEACTIVATED"),
        ("RETIRED", "RETIRED"),
    ],
)
async def test_statuses_are_sent_upper_case(
    cc_sim: ControlCenterSimulator, cc_client: ControlCenterClient, given: str, sent: str
) -> None:
    # The simulator compares status values exactly, so a lower-case value on the wire would be refused.
    device = cc_sim.add_device(status="INVENTORY")
    accepted = await cc_client.edit_device(device.iccid, status=given)
    assert (accepted.iccid, accepted.http_status, accepted.scheduled) == (device.iccid, 200, False)
    assert f'"status":"{sent}"' in accepted.request_text
    assert cc_sim.device(device.iccid).status == sent  # type: ignore[union-attr]


async def test_an_unknown_status_is_never_sent(cc_sim: ControlCenterSimulator, cc_client: ControlCenterClient) -> None:
    device = cc_sim.add_device()
    with pytest.raises(ValueError, match="not a Control Center status"):
        await cc_client.edit_device(device.iccid, status="suspended")
    with pytest.raises(ValueError, match="at least one"):
        await cc_client.edit_device(device.iccid)
    assert cc_sim.counters.requests == {}


async def test_plans_and_status_in_one_call(cc_sim: ControlCenterSimulator, cc_client: ControlCenterClient) -> None:
    device = cc_sim.add_device(status="ACTIVATED")
    await cc_client.edit_device(
        device.iccid, status="deactivated", rate_plan="POD19 Suspend", communication_plan="POD19 Data+SMS"
    )
    after = cc_sim.device(device.iccid)
    assert after is not None
    assert (after.status, after.rate_plan, after.communication_plan) == (
        "DEACTIVATED",
        "POD19 Suspend",
        "POD19 Data+SMS",
    )
    assert cc_sim.counters.puts == {device.iccid: 1}


async def test_scheduled_change(
    cc_sim: ControlCenterSimulator, cc_client: ControlCenterClient, cc_clock: ManualClock
) -> None:
    device = cc_sim.add_device(status="ACTIVATED")
    when = _now(cc_clock) + timedelta(days=2)
    accepted = await cc_client.edit_device(device.iccid, status="DEACTIVATED", effective_date=when)
    assert (accepted.http_status, accepted.scheduled) == (202, True)
    assert f'"effectiveDate":"{when.isoformat()}"' in accepted.request_text
    assert (await cc_client.get_device(device.iccid)).status == "ACTIVATED"  # type: ignore[union-attr]
    cc_clock.advance(2 * 86400)
    assert (await cc_client.get_device(device.iccid)).status == "DEACTIVATED"  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="timezone-aware"):
        await cc_client.edit_device(device.iccid, status="ACTIVATED", effective_date=datetime(2030, 1, 1))


async def test_search_devices_walks_every_page(
    cc_sim: ControlCenterSimulator, cc_client: ControlCenterClient, cc_clock: ManualClock
) -> None:
    devices = cc_sim.preload(120)
    pages = [page async for page in cc_client.search_devices(_now(cc_clock) - timedelta(days=1))]
    assert [(len(p.devices), p.page_number, p.last_page) for p in pages] == [
        (50, 1, False),
        (50, 2, False),
        (20, 3, True),
    ]
    assert [d.iccid for p in pages for d in p.devices] == [d.iccid for d in devices]
    assert cc_sim.counters.requests == {"devices/search": 3}
    small = [p async for p in cc_client.search_devices(_now(cc_clock) - timedelta(days=1), status="activated")]
    assert [p.devices for p in small] == [[]]


async def test_audit_trails_since(
    cc_sim: ControlCenterSimulator, cc_client: ControlCenterClient, cc_clock: ManualClock
) -> None:
    device = cc_sim.add_device(status="ACTIVATED")
    for status in ("DEACTIVATED", "ACTIVATED", "RETIRED"):
        await cc_client.edit_device(device.iccid, status=status)
        cc_clock.advance(HOUR)
    everything = await cc_client.audit_trails(device.iccid)
    assert [r.value for r in everything] == ["RETIRED", "ACTIVATED", "DEACTIVATED"]
    recent = await cc_client.audit_trails(device.iccid, since=_now(cc_clock) - timedelta(hours=2))
    assert [(r.field, r.prior_value, r.value, r.status) for r in recent] == [
        ("status", "ACTIVATED", "RETIRED", "Executed"),
        ("status", "DEACTIVATED", "ACTIVATED", "Executed"),
    ]
    assert not any(r.is_error for r in recent)
    assert recent[0].effective_date == _now(cc_clock) - timedelta(hours=1)


async def test_audit_trails_pages_back_to_since(
    cc_sim: ControlCenterSimulator, cc_client: ControlCenterClient, cc_clock: ManualClock
) -> None:
    device = cc_sim.add_device(status="ACTIVATED")
    for i in range(120):
        cc_clock.advance(60)
        await cc_client.edit_device(device.iccid, status="DEACTIVATED" if i % 2 == 0 else "ACTIVATED")
    cc_sim.reset_counters()
    assert len(await cc_client.audit_trails(device.iccid)) == 120
    assert cc_sim.counters.requests == {"devices/auditTrails": 3}
    cc_sim.reset_counters()
    recent = await cc_client.audit_trails(device.iccid, since=_now(cc_clock) - timedelta(minutes=30))
    assert len(recent) == 31  # one a minute for the last 30 minutes, both ends included: all on page one
    assert cc_sim.counters.requests == {"devices/auditTrails": 1}
    cc_sim.reset_counters()
    longer = await cc_client.audit_trails(device.iccid, since=_now(cc_clock) - timedelta(minutes=70))
    assert len(longer) == 71
    assert cc_sim.counters.requests == {"devices/auditTrails": 2}  # page two reaches back before since: stop


async def test_accepted_but_not_applied_is_visible_to_the_client(
    cc_sim: ControlCenterSimulator, cc_client: ControlCenterClient, cc_clock: ManualClock
) -> None:
    device = cc_sim.add_device(status="ACTIVATED")
    cc_sim.faults = ControlCenterFaults(p_not_applied=1.0)
    before = _now(cc_clock)
    accepted = await cc_client.edit_device(device.iccid, status="DEACTIVATED")
    assert accepted.http_status == 200
    assert (await cc_client.get_device(device.iccid)).status == "ACTIVATED"  # type: ignore[union-attr]
    [record] = await cc_client.audit_trails(device.iccid, since=before)
    assert record.is_error
    assert (record.field, record.value, record.status) == ("status", "DEACTIVATED", "Error")


async def test_authenticate(make_cc_client: ClientFactory, cc_sim: ControlCenterSimulator) -> None:
    await make_cc_client().authenticate()
    with pytest.raises(AuthenticationFailed) as refused:
        await make_cc_client(api_key="wrong").authenticate()
    assert (refused.value.code, refused.value.http_status) == ("10000001", 401)
    assert cc_sim.counters.unauthorized == 1  # refused credentials are never retried


async def test_refused_credentials_on_an_edit(make_cc_client: ClientFactory, cc_sim: ControlCenterSimulator) -> None:
    device = cc_sim.add_device()
    client = make_cc_client(api_key="not-the-key")
    with pytest.raises(AuthenticationFailed) as refused:
        await client.edit_device(device.iccid, status="ACTIVATED")
    assert (refused.value.code, refused.value.device) == ("10000001", device.iccid)
    assert "not-the-key" not in repr(client) + str(refused.value) + (refused.value.request_text or "")
    assert cc_sim.device(device.iccid).status == "INVENTORY"  # type: ignore[union-attr]


async def test_unknown_device_edit(cc_client: ControlCenterClient) -> None:
    with pytest.raises(DeviceNotFound) as missing:
        await cc_client.edit_device("89011700000000000999", status="ACTIVATED")
    assert (missing.value.device, missing.value.http_status, missing.value.code) == (
        "89011700000000000999",
        404,
        "90000404",
    )


async def test_refused_transition_is_permanent_with_the_carriers_words(
    cc_sim: ControlCenterSimulator, cc_client: ControlCenterClient
) -> None:
    device = cc_sim.add_device(status="PURGED")
    with pytest.raises(PermanentError) as refused:
        await cc_client.edit_device(device.iccid, status="ACTIVATED")
    assert refused.value.message == "Status change from PURGED to ACTIVATED is not allowed"
    assert (refused.value.code, refused.value.device, refused.value.http_status) == ("90000411", device.iccid, 400)
    assert refused.value.response_text is not None and "90000411" in refused.value.response_text
    assert cc_sim.counters.puts == {device.iccid: 1}  # not retried


@pytest.mark.parametrize("cc_config", [ControlCenterConfig(tps=1, tps_burst=1)])
async def test_429_is_retried_through_the_limiter(
    make_cc_client: ClientFactory, cc_sim: ControlCenterSimulator, cc_ticks: ManualClock
) -> None:
    calls: list[str] = []

    async def limiter(endpoint: str) -> None:
        calls.append(endpoint)
        cc_ticks.advance(0.5)  # half a token per attempt: every second attempt is refused

    client = make_cc_client(limiter=limiter)
    a, b = cc_sim.preload(2)
    await client.edit_device(a.iccid, status="ACTIVATED")
    await client.edit_device(b.iccid, status="ACTIVATED")
    assert calls == ["devices/edit", "devices/edit", "devices/edit"]
    assert cc_sim.counters.throttled == {"tps": 1}
    assert cc_sim.counters.puts == {a.iccid: 1, b.iccid: 1}


@pytest.mark.parametrize("cc_config", [ControlCenterConfig(tps=1, tps_burst=1)])
async def test_429_gives_up_after_max_attempts(make_cc_client: ClientFactory, cc_sim: ControlCenterSimulator) -> None:
    device = cc_sim.add_device()
    client = make_cc_client(max_attempts=3)
    await client.get_device(device.iccid)
    with pytest.raises(RateLimited) as limited:
        await client.get_device(device.iccid)  # the rate-limit clock never moves: every attempt is refused
    assert (limited.value.code, limited.value.http_status, limited.value.retry_after) == ("40000029", 429, None)
    assert limited.value.device == device.iccid
    assert cc_sim.counters.throttled == {"tps": 3}


async def test_lost_answer_to_an_edit_is_outcome_unknown_and_not_retried(
    make_cc_client: ClientFactory, cc_sim: ControlCenterSimulator
) -> None:
    device = cc_sim.add_device()
    cc_sim.faults = ControlCenterFaults(p_slow=1.0, slow_s=3.0, endpoints=frozenset({"devices/edit"}))
    client = make_cc_client(timeout=0.3)
    with pytest.raises(OutcomeUnknown) as unknown:
        await client.edit_device(device.iccid, status="ACTIVATED")
    assert unknown.value.device == device.iccid
    assert cc_sim.counters.puts == {device.iccid: 1}
    assert cc_sim.device(device.iccid).status == "ACTIVATED"  # type: ignore[union-attr]  # it had been made


@pytest.mark.parametrize("cc_config", [ControlCenterConfig(tps=1000, tps_burst=1000, max_in_flight=5)])
async def test_lost_answer_to_a_read_is_retried(make_cc_client: ClientFactory, cc_sim: ControlCenterSimulator) -> None:
    device = cc_sim.add_device()
    cc_sim.faults = ControlCenterFaults(p_slow=1.0, slow_s=3.0, endpoints=frozenset({"devices/get"}))
    client = make_cc_client(timeout=0.3, max_attempts=2)
    with pytest.raises(TransientError):
        await client.get_device(device.iccid)
    assert cc_sim.counters.requests == {"devices/get": 2}


async def test_a_retry_while_the_lost_call_is_still_open_meets_the_in_flight_rule(
    make_cc_client: ClientFactory, cc_sim: ControlCenterSimulator
) -> None:
    device = cc_sim.add_device()
    cc_sim.faults = ControlCenterFaults(p_slow=1.0, slow_s=3.0, endpoints=frozenset({"devices/get"}))
    with pytest.raises(RateLimited):
        await make_cc_client(timeout=0.3, max_attempts=2).get_device(device.iccid)
    assert cc_sim.counters.throttled == {"in_flight": 1}


@pytest.mark.parametrize("fault", ["missing_iccid", "malformed"])
async def test_unreadable_edit_answer_is_outcome_unknown(
    cc_sim: ControlCenterSimulator, cc_client: ControlCenterClient, fault: str
) -> None:
    device = cc_sim.add_device()
    cc_sim.faults = ControlCenterFaults.model_validate({f"p_{fault}": 1.0})
    with pytest.raises(OutcomeUnknown) as unknown:
        await cc_client.edit_device(device.iccid, status="ACTIVATED")
    assert (unknown.value.device, unknown.value.http_status) == (device.iccid, 200)
    assert cc_sim.counters.puts == {device.iccid: 1}


async def test_unreadable_read_answer_is_retried(cc_sim: ControlCenterSimulator, make_cc_client: ClientFactory) -> None:
    device = cc_sim.add_device()
    cc_sim.faults = ControlCenterFaults(p_malformed=1.0)
    with pytest.raises(TransientError, match="unreadable"):
        await make_cc_client(max_attempts=3).get_device(device.iccid)
    assert cc_sim.counters.requests == {"devices/get": 3}


async def test_server_errors_are_retried_and_recover(
    cc_sim: ControlCenterSimulator, cc_client: ControlCenterClient
) -> None:
    device = cc_sim.add_device()
    cc_sim.faults = ControlCenterFaults(iccid_faults={device.iccid: frozenset({"server_error"})})
    with pytest.raises(TransientError) as failed:
        await cc_client.edit_device(device.iccid, status="ACTIVATED")
    assert (failed.value.http_status, failed.value.code, failed.value.device) == (500, "90000500", device.iccid)
    assert cc_sim.counters.requests == {"devices/edit": 4}
    assert cc_sim.device(device.iccid).status == "INVENTORY"  # type: ignore[union-attr]
    cc_sim.faults = ControlCenterFaults(seed=3, p_server_error=0.5)
    for _ in range(5):
        await cc_client.get_device(device.iccid)
    assert cc_sim.counters.faults["server_error"] >= 1
