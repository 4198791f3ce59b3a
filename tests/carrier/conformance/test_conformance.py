"""The carrier port's contract, checked for every adapter against its own simulator over real HTTP.

Nothing here knows a carrier: states, requests and faults come from the harness (``harness.py``). A new
adapter passes these tests unchanged.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import pytest

from bulkchange.carrier.errors import AuthenticationFailed, CarrierError
from bulkchange.carrier.port import (
    CarrierSession,
    ChangeView,
    DeviceReading,
    RateRule,
    ReceivesCallbacks,
    UnsupportedTarget,
)
from bulkchange.domain.outcomes import CarrierFacts, Kind, Outcome
from bulkchange.domain.statuses import ChangeStatus, TargetStatus

from .conftest import services
from .harness import CarrierHarness, Fault, TargetCase

_ids = itertools.count(1)


def view(harness: CarrierHarness, target: TargetStatus, iccid: str, imei: str | None, *, step: int = 0) -> ChangeView:
    """A change of a fresh device to ``target``, on step number ``step`` of its plan."""
    request = harness.request(target, iccid, imei)
    plan = harness.carrier.plan(target, request, ignore_current_status=False)
    return ChangeView(next(_ids), 1, iccid, imei, target, plan[step], request)


def device_at(harness: CarrierHarness, state: str | None) -> tuple[str, str | None]:
    iccid, imei = harness.new_device()
    if state is not None:
        harness.preload(iccid, imei, state)
    return iccid, imei


def single_step_cases(harness: CarrierHarness) -> list[tuple[TargetStatus, TargetCase]]:
    """The supported targets whose plan (for the harness's request) is one step."""
    found = []
    for target, case in harness.cases.items():
        iccid, imei = harness.new_device()
        if len(harness.carrier.plan(target, harness.request(target, iccid, imei), ignore_current_status=False)) == 1:
            found.append((target, case))
    return found


def settling_now_and_later(harness: CarrierHarness) -> list[tuple[TargetStatus, TargetCase]]:
    """One one-step target whose step settles in its answer and one whose step settles later, when there are."""
    chosen: dict[bool, tuple[TargetStatus, TargetCase]] = {}
    for target, case in single_step_cases(harness):
        step = view(harness, target, *harness.new_device()).step
        chosen.setdefault(harness.carrier.settles_later(step), (target, case))
    return list(chosen.values())


@asynccontextmanager
async def connected(harness: CarrierHarness, **overrides: object) -> AsyncIterator[CarrierSession]:
    opened = harness.carrier.connect(harness.account(), services(harness, **overrides))
    try:
        yield opened
    finally:
        await opened.aclose()


async def settle(harness: CarrierHarness, session: CarrierSession, change: ChangeView, sent: Outcome) -> Outcome:
    """What a step's send left the change at, once the carrier completed the step and it was read back."""
    if not harness.carrier.settles_later(change.step):
        return sent
    assert sent.kind is Kind.AWAITING and sent.request_id, sent
    harness.complete()
    change = dataclasses.replace(change, carrier_request_id=sent.request_id, sent_at=datetime.now(UTC))
    reading = (await session.read([change]))[change.id]
    assert not isinstance(reading, CarrierError), reading
    return harness.carrier.judge(change, reading, window_passed=False, purpose="check")


# ------------------------------------------------------------------------------------------ authentication


async def test_authenticate_with_working_credentials(session: CarrierSession) -> None:
    await session.authenticate()


async def test_refused_credentials_fail_authentication(harness: CarrierHarness, session: CarrierSession) -> None:
    harness.refuse_credentials()
    with pytest.raises(AuthenticationFailed):
        await session.authenticate()


# ------------------------------------------------------------------------------------ every target, end to end


@pytest.mark.parametrize("target", list(TargetStatus), ids=lambda t: t.value.replace(" ", "_"))
async def test_every_target_is_reached_or_refused_at_plan_time(
    harness: CarrierHarness, session: CarrierSession, target: TargetStatus
) -> None:
    carrier = harness.carrier
    case = harness.cases.get(target)
    iccid, imei = device_at(harness, case.start if case else None)
    request = harness.request(target, iccid, imei)
    if case is None:
        with pytest.raises(UnsupportedTarget):
            carrier.plan(target, request, ignore_current_status=False)
        return
    plan = carrier.plan(target, request, ignore_current_status=False)
    assert plan, "a supported target has at least one step"
    await session.authenticate()
    for step in plan:
        change = ChangeView(next(_ids), 1, iccid, imei, target, step, request)
        sent = await session.send(step, [change])
        assert [o.change_id for o in sent] == [change.id]
        done = await settle(harness, session, change, sent[0])
        assert done.kind is Kind.DONE, done
        assert done.logs and done.logs[0].change_id == change.id
    assert harness.state(iccid) == case.end
    if case.line:
        line = harness.facts(iccid)
        assert line.msisdn and line.ip_address
        assert (done.facts.msisdn, done.facts.ip_address) == (line.msisdn, line.ip_address)


async def test_requests_the_carrier_cannot_plan_are_refused(harness: CarrierHarness) -> None:
    for target, request in harness.refused_plans():
        with pytest.raises(UnsupportedTarget):
            harness.carrier.plan(target, request, ignore_current_status=False)


# ---------------------------------------------------------------------------------------------------- reads


async def test_read_knows_preloaded_devices_and_not_others(harness: CarrierHarness, session: CarrierSession) -> None:
    target = next(iter(harness.cases))
    states = sorted({s for c in harness.cases.values() for s in (c.start, c.end) if s is not None})
    known = {state: view(harness, target, *device_at(harness, state)) for state in states}
    unknown = view(harness, target, *harness.new_device())
    readings = await session.read([*known.values(), unknown])
    assert readings[unknown.id] is None
    for state, change in known.items():
        reading = readings[change.id]
        assert isinstance(reading, DeviceReading), reading
        assert (reading.iccid, reading.state) == (change.iccid, state)


async def test_a_failed_read_gives_the_error_for_every_device(harness: CarrierHarness, session: CarrierSession) -> None:
    target, case = single_step_cases(harness)[0]
    changes = [view(harness, target, *device_at(harness, case.start)) for _ in range(2)]
    await session.authenticate()
    harness.inject(Fault.SERVER_ERROR)
    readings = await session.read(changes)
    assert all(isinstance(readings[c.id], CarrierError) for c in changes)


# --------------------------------------------------------------------------------------------------- judging


@pytest.mark.parametrize("target", list(TargetStatus), ids=lambda t: t.value.replace(" ", "_"))
async def test_judge_a_device_by_its_state(
    harness: CarrierHarness, session: CarrierSession, target: TargetStatus
) -> None:
    cases = dict(single_step_cases(harness))
    if target not in cases:
        pytest.skip("not a one-step target of this carrier")
    case = cases[target]
    unchanged = view(harness, target, *device_at(harness, case.start))
    visible = view(harness, target, *device_at(harness, case.end))
    readings = await session.read([unchanged, visible])
    for change in (unchanged, visible):
        assert not isinstance(readings[change.id], CarrierError)
    judge = harness.carrier.judge
    reading = readings[unchanged.id]
    assert not isinstance(reading, CarrierError)
    assert judge(unchanged, reading, window_passed=False, purpose="reconcile").kind is Kind.HOLD
    assert judge(unchanged, reading, window_passed=True, purpose="reconcile").kind is Kind.RETRY
    seen = readings[visible.id]
    assert not isinstance(seen, CarrierError)
    assert judge(visible, seen, window_passed=False, purpose="reconcile").kind is Kind.DONE
    assert harness.state(unchanged.iccid) == case.start  # judging sends nothing


# ------------------------------------------------------------------------------------------- error mapping


@pytest.mark.parametrize("fault", [Fault.RATE_LIMITED, Fault.SERVER_ERROR])
async def test_a_call_refused_before_doing_anything_is_retried(harness: CarrierHarness, fault: Fault) -> None:
    told: list[tuple[str, float]] = []
    async with connected(harness, on_rate_limited=lambda endpoint, s: told.append((endpoint, s))) as session:
        await session.authenticate()
        for target, case in single_step_cases(harness):
            change = view(harness, target, *device_at(harness, case.start))
            harness.inject(fault)
            (outcome,) = await session.send(change.step, [change])
            assert outcome.kind is Kind.RETRY, outcome
            assert harness.state(change.iccid) == case.start
            if fault is Fault.RATE_LIMITED:
                assert outcome.retry_after_s == harness.retry_after_s
                if harness.retry_after_s:
                    assert told[-1][1] == harness.retry_after_s
    if fault is Fault.SERVER_ERROR:
        assert told == []


async def test_no_answer_after_sending_is_unknown_and_the_device_tells(harness: CarrierHarness) -> None:
    async with connected(harness) as session:
        await session.authenticate()
        for target, case in settling_now_and_later(harness):
            change = view(harness, target, *device_at(harness, case.start))
            harness.inject(Fault.TIMEOUT_AFTER_SEND)
            (outcome,) = await session.send(change.step, [change])
            assert outcome.kind is Kind.UNKNOWN, outcome
            if harness.carrier.settles_later(change.step):
                harness.complete()
            reading = (await session.read([change]))[change.id]
            assert not isinstance(reading, CarrierError)
            assert harness.carrier.judge(change, reading, window_passed=True, purpose="reconcile").kind is Kind.DONE
            assert harness.state(change.iccid) == case.end


async def test_a_refused_batch_is_isolated_and_a_refused_change_fails(harness: CarrierHarness) -> None:
    async with connected(harness) as session:
        await session.authenticate()
        for target, case in single_step_cases(harness):
            batch = [view(harness, target, *device_at(harness, case.start)) for _ in range(2)]
            harness.inject(Fault.REFUSED)
            outcomes = await session.send(batch[0].step, batch)
            assert [(o.change_id, o.kind) for o in outcomes] == [(c.id, Kind.ISOLATE) for c in batch]
            harness.inject(Fault.REFUSED)
            (alone,) = await session.send(batch[0].step, batch[:1])
            assert (alone.kind, alone.terminal) == (Kind.FAILED, ChangeStatus.ERROR)
            assert alone.code and alone.logs and not alone.logs[0].ok
            assert [harness.state(c.iccid) for c in batch] == [case.start, case.start]


async def test_credentials_refused_while_sending_fail_the_bulk_change(
    harness: CarrierHarness, session: CarrierSession
) -> None:
    target, case = single_step_cases(harness)[0]
    change = view(harness, target, *device_at(harness, case.start))
    await session.authenticate()
    harness.refuse_credentials()
    with pytest.raises(AuthenticationFailed):
        await session.send(change.step, [change])
    assert harness.state(change.iccid) == case.start


# ------------------------------------------------------------------------------------------ pure decisions


async def test_batch_keys_follow_the_request_fields(harness: CarrierHarness) -> None:
    carrier, differs = harness.carrier, False
    for target in harness.cases:
        (a_iccid, a_imei), (b_iccid, b_imei) = harness.new_device(), harness.new_device()
        a, b = harness.request(target, a_iccid, a_imei), harness.request(target, b_iccid, b_imei)
        other = harness.request(target, a_iccid, a_imei, variant=1)
        plan = carrier.plan(target, a, ignore_current_status=False)
        for step in plan:
            assert carrier.batch_key(step, a) == carrier.batch_key(step, b)
            differs = differs or carrier.batch_key(step, a) != carrier.batch_key(step, other)
        assert len({carrier.batch_key(step, a) for step in plan}) == len(set(plan))
    assert differs, "variant 1 changes a request-level field of some step"


async def test_max_batch_stays_within_the_configured_size_and_the_carrier_maximum(harness: CarrierHarness) -> None:
    steps: set[str] = set()
    for target in harness.cases:
        request = harness.request(target, *harness.new_device())
        steps.update(harness.carrier.plan(target, request, ignore_current_status=False))
    for step in steps:
        for configured in (1, 500, harness.max_request, harness.max_request * 10):
            allowed = harness.carrier.max_batch(step, configured)
            assert 1 <= allowed <= min(configured, harness.max_request)


async def test_mirror_has_a_row_for_every_device_of_the_update(harness: CarrierHarness) -> None:
    changes = [view(harness, target, *harness.new_device(), step=-1) for target in harness.cases]
    updates = [(c, CarrierFacts(msisdn=f"155500{i:04d}", ip_address=f"10.9.0.{i + 1}")) for i, c in enumerate(changes)]
    tables = harness.carrier.mirror(harness.account(), updates, now=datetime.now(UTC))
    assert tables
    for table in tables:
        assert set(table.rows) == {c.iccid for c in changes}, table.table
        assert set(table.insert_only) <= set(table.rows), table.table


async def test_limit_scope_is_one_per_account(harness: CarrierHarness) -> None:
    scope = harness.carrier.limit_scope
    assert scope(harness.account()) == scope(harness.account())
    assert scope(harness.account()) != scope(harness.other_account())


async def test_rate_rules_take_the_operators_overrides(harness: CarrierHarness) -> None:
    rules = harness.carrier.rate_rules(harness.account(), "conformance/endpoint=5/2")
    assert rules.per_endpoint["conformance/endpoint"] == RateRule(5, 2.0)
    assert harness.carrier.rate_rules(harness.account(), "") == harness.carrier.rate_rules(harness.other_account(), "")


# ------------------------------------------------------------------------------------------------ callbacks


@pytest.mark.parametrize("target", list(TargetStatus), ids=lambda t: t.value.replace(" ", "_"))
async def test_a_callback_settles_an_accepted_step(
    harness: CarrierHarness, session: CarrierSession, target: TargetStatus
) -> None:
    carrier = harness.carrier
    case = harness.cases.get(target)
    if not isinstance(carrier, ReceivesCallbacks) or case is None:
        pytest.skip("this carrier does not call back, or cannot reach this target")
    iccid, imei = device_at(harness, case.start)
    request = harness.request(target, iccid, imei)
    plan = carrier.plan(target, request, ignore_current_status=False)
    if not any(carrier.settles_later(step) for step in plan):
        pytest.skip("no step of this target settles later")
    await session.authenticate()
    for step in plan:
        change = ChangeView(next(_ids), 1, iccid, imei, target, step, request)
        (sent,) = await session.send(step, [change])
        if not carrier.settles_later(step):
            assert sent.kind is Kind.DONE, sent
            continue
        assert sent.kind is Kind.AWAITING, sent
        harness.complete()
        bodies = harness.callbacks(iccid)
        assert bodies, "the carrier called back"
        verdict = carrier.callback_verdict(bodies[-1], dataclasses.replace(change, carrier_request_id=sent.request_id))
        assert (verdict.change_id, verdict.kind) == (change.id, Kind.DONE), verdict
    assert harness.state(iccid) == case.end
    if case.line:
        line = harness.facts(iccid)
        assert (verdict.facts.msisdn, verdict.facts.ip_address) == (line.msisdn, line.ip_address)
