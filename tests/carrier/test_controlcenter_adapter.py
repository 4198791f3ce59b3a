"""The Control Center adapter's own decisions, where the conformance suite does not look: every plan and the
refused statuses, effective dates, batch keys, the pre-step's choice, local statuses and rows, the rate
rules; and, over real HTTP against the simulator, verification (accepted but not applied, POD 19 audit
trail), scheduled changes, rate limits, refused credentials and the pre-step."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from bulkchange.carrier.controlcenter.adapter import (
    ControlCenterCarrier,
    ControlCenterSession,
    controlcenter_account,
)
from bulkchange.carrier.controlcenter.prestep import RatePlanOption, choose_rate_plan
from bulkchange.carrier.controlcenter.requests import status_edit
from bulkchange.carrier.errors import AuthenticationFailed
from bulkchange.carrier.port import (
    CarrierAccount,
    ChangeView,
    DeviceReading,
    RateRule,
    SessionServices,
    UnsupportedTarget,
)
from bulkchange.carrier.thingspace.adapter import ThingSpaceCarrier
from bulkchange.domain.change_request import StatusUpdateRequest
from bulkchange.domain.outcomes import CarrierFacts, Kind, Outcome
from bulkchange.domain.statuses import ChangeStatus, DeviceStatusId, TargetStatus
from bulkchange.simulator import ManualClock, ServerHandle, run_in_thread
from bulkchange.simulator.controlcenter import API_ROOT, ControlCenterConfig, ControlCenterSimulator

T = TargetStatus
ICCID = "89011704258000001237"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
carrier = ControlCenterCarrier(clock=lambda: NOW)


def request(target: str = "active", top: dict[str, Any] | None = None, **fields: Any) -> StatusUpdateRequest:
    body: dict[str, Any] = {"ICCID": ICCID, **fields}
    return StatusUpdateRequest.model_validate({"UpdateStatus": target, "Request": body, **(top or {})})


def view(
    step: str, target: TargetStatus = T.ACTIVE, iccid: str = ICCID, top: dict[str, Any] | None = None, **fields: Any
) -> ChangeView:
    return ChangeView(11, 5, iccid, None, target, step, request(target.value, top, **{**fields, "ICCID": iccid}))


# ------------------------------------------------------------------------------------------ plans, statuses


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (T.INVENTORY, ["STATUS"]),
        (T.PENDING_ACTIVATION, ["STATUS"]),
        (T.ACTIVE, ["STATUS"]),
        (T.DEACTIVE, ["RATE_PLAN", "STATUS"]),
        (T.RETIRED, ["STATUS"]),
        (T.SUSPEND, None),
        (T.RESTORE, None),
    ],
)
def test_plan_for_every_target(target: TargetStatus, expected: list[str] | None) -> None:
    for ignore in (False, True):
        if expected is None:
            with pytest.raises(UnsupportedTarget, match="Control Center has no"):
                carrier.plan(target, request(target.value), ignore_current_status=ignore)
        else:
            assert carrier.plan(target, request(target.value), ignore_current_status=ignore) == expected


def test_an_automated_deactivation_has_no_rate_plan_pre_step() -> None:
    automated = request("deactivated", {"IsFromAutomatedUpdateDeviceStatusLambda": True})
    assert carrier.plan(T.DEACTIVE, automated, ignore_current_status=False) == ["STATUS"]


@pytest.mark.parametrize(
    ("words", "target"),
    [
        ("inventory", T.INVENTORY),
        ("activation ready", T.PENDING_ACTIVATION),
        ("Activation-Ready", T.PENDING_ACTIVATION),
        ("ACTIVATION_READY", T.PENDING_ACTIVATION),
        ("pending activation", T.PENDING_ACTIVATION),
        ("active", T.ACTIVE),
        ("Activated", T.ACTIVE),
        ("deactive", T.DEACTIVE),
        ("deactivated", T.DEACTIVE),
        ("retired", T.RETIRED),
        ("RETIRED", T.RETIRED),
    ],
)
def test_the_operators_words_name_control_center_targets(words: str, target: TargetStatus) -> None:
    assert TargetStatus.parse(words) is target


@pytest.mark.parametrize(("words", "reason"), [("TEST_READY", "operator"), ("test ready", "operator"),
                                               ("purged", "permanent"), ("Replaced", "swapped")])
def test_statuses_no_account_sets_are_refused_with_the_reason(words: str, reason: str) -> None:
    with pytest.raises(ValueError, match=f"cannot be set by a bulk change.*{reason}"):
        TargetStatus.parse(words)


def test_thingspace_refuses_retired_and_scheduled_changes() -> None:
    thingspace = ThingSpaceCarrier()
    with pytest.raises(UnsupportedTarget, match="retire"):
        thingspace.plan(T.RETIRED, request("retired"), ignore_current_status=False)
    later = request("deactive", EffectiveDate=(NOW + timedelta(days=3)).isoformat())
    with pytest.raises(UnsupportedTarget, match="EffectiveDate"):
        thingspace.plan(T.DEACTIVE, later, ignore_current_status=False)


def test_effective_date_at_most_180_days_ahead() -> None:
    ok = request("active", EffectiveDate=(NOW + timedelta(days=180)).isoformat())
    assert carrier.plan(T.ACTIVE, ok, ignore_current_status=False) == ["STATUS"]
    too_far = request("active", EffectiveDate=(NOW + timedelta(days=180, minutes=1)).isoformat())
    with pytest.raises(UnsupportedTarget, match="more than 180 days ahead"):
        carrier.plan(T.ACTIVE, too_far, ignore_current_status=False)


def test_an_effective_date_that_passed_means_at_once() -> None:
    past = request("active", EffectiveDate="2026-02-01T00:00:00Z")
    assert status_edit(T.ACTIVE, past, now=NOW).effective_date is None
    naive = request("active", EffectiveDate="2026-04-01T08:30:00")  # no zone: UTC
    assert status_edit(T.ACTIVE, naive, now=NOW).effective_date == datetime(2026, 4, 1, 8, 30, tzinfo=UTC)


def test_transitions_refuse_only_the_status_a_device_already_has() -> None:
    assert carrier.transition_problem(None, T.ACTIVE, ignore_current_status=False) is None
    assert carrier.transition_problem("deactive", T.ACTIVE, ignore_current_status=False) is None
    assert carrier.transition_problem("retired", T.INVENTORY, ignore_current_status=False) is None
    assert "already" in (carrier.transition_problem("active", T.ACTIVE, ignore_current_status=False) or "")
    assert carrier.transition_problem("active", T.ACTIVE, ignore_current_status=True) is None
    assert "suspend" in (carrier.transition_problem("suspend", T.ACTIVE, ignore_current_status=False) or "")


def test_local_status_and_descriptions() -> None:
    assert carrier.local_status("STATUS", T.RETIRED, last=True) == DeviceStatusId.RETIRED
    assert carrier.local_status("STATUS", T.PENDING_ACTIVATION, last=True) == DeviceStatusId.PENDING_ACTIVATION
    assert carrier.local_status("RATE_PLAN", T.DEACTIVE, last=False) is None  # the status does not move
    assert carrier.step_description("STATUS") == "Update Jasper Status: Jasper API"
    assert carrier.step_description("RATE_PLAN") == "Update Jasper Rate Plan: Jasper API"
    assert not carrier.settles_later("STATUS") and not carrier.settles_later("RATE_PLAN")
    with pytest.raises(ValueError, match="not a Control Center step"):
        carrier.settles_later("ACTIVATE")


def test_batch_keys_group_equal_edits() -> None:
    key = carrier.batch_key
    a = request("active", RatePlan="POD19 1GB")
    assert key("STATUS", a) == key("STATUS", request("Activated", RatePlan="POD19 1GB", ICCID="8901"))
    assert key("STATUS", a) != key("STATUS", request("active", RatePlan="POD19 5GB"))
    assert key("STATUS", a) != key("STATUS", request("inventory", RatePlan="POD19 1GB"))
    assert key("STATUS", a) != key("STATUS", request("active", RatePlan="POD19 1GB", CommunicationPlan="POD19 Data"))
    later = request("active", RatePlan="POD19 1GB", EffectiveDate="2026-04-01T00:00:00Z")
    assert key("STATUS", a) != key("STATUS", later)
    assert key("RATE_PLAN", a) == key("RATE_PLAN", later) == "RATE_PLAN"
    assert all(len(key("STATUS", r)) <= 64 for r in (a, later))  # BatchKey column


def test_max_batch_is_small() -> None:
    assert [carrier.max_batch("STATUS", n) for n in (1, 5, 10, 500, 10_000)] == [1, 5, 10, 10, 10]


def _account(**fields: Any) -> CarrierAccount:
    values: dict[str, Any] = {
        "provider_id": 1,
        "credential_id": 1,
        "base_url": "https://restapi19.att.com/rws/api",
        "username": "user",
        "api_key": "key-value",
    }
    values.update(fields)
    return controlcenter_account(**values)


def test_rate_rules_draw_every_call_from_the_accounts_bucket_and_allow_one_in_flight() -> None:
    rules = carrier.rate_rules(_account(tps=5), "")
    assert rules.max_in_flight == 1 and rules.per_endpoint == {}
    assert rules.bucket is not None and rules.bucket.burst == 1  # by default no two calls closer than 1/TPS
    assert rules.bucket.rate_per_s == pytest.approx(5 / 1.01)
    default = carrier.rate_rules(_account(), "").bucket
    assert default is not None and default.rate_per_s == pytest.approx(1 / 1.01)
    bursty = carrier.rate_rules(_account(tps=5, burst=5), "").bucket
    assert bursty is not None and bursty.burst == 5
    overridden = carrier.rate_rules(_account(), "devices/edit=2/10")
    assert overridden.per_endpoint == {"devices/edit": RateRule(2, 10.0)} and overridden.bucket == default


def test_limit_scope_is_base_url_and_user() -> None:
    scope = carrier.limit_scope
    assert scope(_account()) == scope(_account(tps=3, provider_id=9))
    assert scope(_account()) != scope(_account(username="other"))
    assert scope(_account()) != scope(_account(base_url="https://restapi3.att.com/rws/api"))


def test_the_account_keeps_its_api_key_out_of_its_repr() -> None:
    assert "key-value" not in repr(_account())


# --------------------------------------------------------------------------------------------- pre-step

PLANS = [
    RatePlanOption("POD19 5GB", 5120, Decimal("20.00")),
    RatePlanOption("POD19 1GB", 1024, Decimal("8.00")),
    RatePlanOption("POD19 Suspend", 0, Decimal("1.00")),
]


@pytest.mark.parametrize(
    ("usage_mb", "chosen"),
    [(0, "POD19 Suspend"), (0.5, "POD19 1GB"), (1024, "POD19 1GB"), (1024.5, "POD19 5GB"), (9000, "POD19 5GB")],
)
def test_the_pre_step_picks_the_cheapest_plan_covering_the_usage(usage_mb: float, chosen: str) -> None:
    picked = choose_rate_plan(PLANS, usage_mb)
    assert picked is not None and picked.code == chosen


def test_the_pre_step_has_no_choice_without_plans_and_a_stable_one_on_ties() -> None:
    assert choose_rate_plan([], 10) is None
    tied = [RatePlanOption("B", 100, Decimal("5")), RatePlanOption("A", 200, Decimal("5"))]
    assert choose_rate_plan(tied, 50) == tied[1]  # same rate: the larger allowance
    assert RatePlanOption.from_field(PLANS[0].as_field()) == PLANS[0]


# --------------------------------------------------------------------------------------------- judging


def _reading(status: str | None, **facts: Any) -> DeviceReading | None:
    if status is None:
        return None
    return DeviceReading(ICCID, status, CarrierFacts(carrier_status=status, **facts), raw='{"status": "x"}')


@pytest.mark.parametrize(
    ("target", "shown", "window_passed", "kind", "terminal"),
    [
        (T.ACTIVE, "ACTIVATED", False, Kind.DONE, None),
        (T.ACTIVE, "INVENTORY", False, Kind.HOLD, None),
        (T.ACTIVE, "DEACTIVATED", True, Kind.RETRY, None),
        (T.ACTIVE, "TEST_READY", True, Kind.RETRY, None),
        (T.ACTIVE, "PURGED", True, Kind.FAILED, ChangeStatus.NEEDS_REVIEW),
        (T.ACTIVE, "REPLACED", False, Kind.FAILED, ChangeStatus.NEEDS_REVIEW),
        (T.ACTIVE, None, True, Kind.FAILED, ChangeStatus.NEEDS_REVIEW),
        (T.PENDING_ACTIVATION, "ACTIVATION_READY", False, Kind.DONE, None),
        # Activated by first use since, or never changed: a person looks before it is set back.
        (T.PENDING_ACTIVATION, "ACTIVATED", True, Kind.FAILED, ChangeStatus.NEEDS_REVIEW),
        (T.RETIRED, "RETIRED", False, Kind.DONE, None),
    ],
)
def test_judge_a_device_by_its_status(
    target: TargetStatus, shown: str | None, window_passed: bool, kind: Kind, terminal: ChangeStatus | None
) -> None:
    outcome = carrier.judge(view("STATUS", target), _reading(shown), window_passed=window_passed, purpose="reconcile")
    assert (outcome.kind, outcome.terminal) == (kind, terminal), outcome
    assert outcome.logs[0].description == "Reconcile Jasper Device: Jasper API"


def test_a_pre_step_not_confirmed_is_carried_out_again() -> None:
    """A reconcile of the rate plan pre-step (its answer lost, or its worker died before sending it): the device
    read cannot tell whether the move was made, so the pre-step runs again (it edits only a line not yet on the
    plan it chooses) instead of being taken as done."""
    pre = view("RATE_PLAN", T.DEACTIVE)
    outcome = carrier.judge(pre, _reading("ACTIVATED", rate_plan="POD19 1GB"), window_passed=False, purpose="reconcile")
    assert outcome.kind is Kind.RETRY and outcome.terminal is None, outcome
    assert "POD19 1GB" in outcome.details
    gone = carrier.judge(pre, _reading(None), window_passed=True, purpose="reconcile")
    assert (gone.kind, gone.terminal) == (Kind.FAILED, ChangeStatus.NEEDS_REVIEW)


def test_judge_wants_the_plans_asked_for_too() -> None:
    change = view("STATUS", T.ACTIVE, RatePlan="POD19 5GB")
    on_old_plan = _reading("ACTIVATED", rate_plan="POD19 1GB")
    assert carrier.judge(change, on_old_plan, window_passed=False, purpose="check").kind is Kind.HOLD
    assert carrier.judge(change, on_old_plan, window_passed=True, purpose="check").kind is Kind.RETRY
    done = carrier.judge(change, _reading("ACTIVATED", rate_plan="POD19 5GB"), window_passed=False, purpose="check")
    assert done.kind is Kind.DONE and done.facts.rate_plan == "POD19 5GB"


def test_mirror_writes_the_carriers_view() -> None:
    status = view("STATUS", T.ACTIVE, RatePlan="POD19 5GB")
    pre = view("RATE_PLAN", T.DEACTIVE, iccid="89011704258000009999")
    facts = CarrierFacts(msisdn="15551230000", imei="990000000000001", rate_plan="POD19 5GB",
                         communication_plan="POD19 Data", carrier_status="ACTIVATED")
    (table,) = carrier.mirror(_account(), [(status, facts), (pre, CarrierFacts(rate_plan="POD19 Suspend"))], now=NOW)
    assert table.table == "JasperDevice"
    assert table.rows[ICCID] == {"Status": "ACTIVATED", "MSISDN": "15551230000", "IMEI": "990000000000001",
                                 "RatePlan": "POD19 5GB", "CommunicationPlan": "POD19 Data"}
    assert table.rows["89011704258000009999"] == {"RatePlan": "POD19 Suspend"}  # the status is not the pre-step's


# ------------------------------------------------------------------------------------- over real HTTP


class Carrier:
    """The simulator on loopback with a manual wall clock shared with the adapter."""

    def __init__(self, sim: ControlCenterSimulator, server: ServerHandle, clock: ManualClock) -> None:
        self.sim, self.clock = sim, clock
        self.base_url = server.base_url + API_ROOT
        self.carrier = ControlCenterCarrier(clock=self.now)
        self.told: list[tuple[str, float]] = []

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    def account(self, **fields: Any) -> CarrierAccount:
        values: dict[str, Any] = {
            "provider_id": 1,
            "credential_id": 1,
            "base_url": self.base_url,
            "username": self.sim.config.username,
            "api_key": self.sim.config.api_key,
            "pod19": True,
        }
        values.update(fields)
        return controlcenter_account(**values)

    def session(self, **fields: Any) -> ControlCenterSession:
        told = self.told
        services = SessionServices(timeout_s=3.0, call_attempts=1, on_rate_limited=lambda e, s: told.append((e, s)))
        return self.carrier.connect(self.account(**fields), services)

    def device(self, status: str, **kwargs: Any) -> str:
        return self.sim.add_device(status=status, **kwargs).iccid

    async def send(self, step: str, target: TargetStatus, iccid: str, **fields: Any) -> Outcome:
        session_fields = fields.pop("account", {})
        top = fields.pop("top", None)
        change = ChangeView(1, 1, iccid, None, target, step, request(target.value, top, **{**fields, "ICCID": iccid}))
        session = self.session(**session_fields)
        try:
            (outcome,) = await session.send(step, [change])
        finally:
            await session.aclose()
        return outcome


@pytest.fixture
def cc() -> Iterator[Carrier]:
    clock = ManualClock(start=NOW.timestamp())
    sim = ControlCenterSimulator(ControlCenterConfig(tps=1000, tps_burst=1000), clock=clock)
    with run_in_thread(sim) as server:
        yield Carrier(sim, server, clock)


def _descriptions(outcome: Outcome) -> list[str]:
    return [log.description for log in outcome.logs]


async def test_a_status_change_is_made_verified_and_logged_with_the_carriers_bodies(cc: Carrier) -> None:
    iccid = cc.device("INVENTORY")
    outcome = await cc.send("STATUS", T.ACTIVE, iccid, RatePlan="POD19 5GB", CommunicationPlan="POD19 Data+SMS")
    device = cc.sim.device(iccid)
    assert device is not None and (device.status, device.rate_plan) == ("ACTIVATED", "POD19 5GB")
    assert outcome.kind is Kind.DONE, outcome
    assert outcome.facts == CarrierFacts(msisdn=device.msisdn, imei=device.imei or None, rate_plan="POD19 5GB",
                                         communication_plan="POD19 Data+SMS", carrier_status="ACTIVATED")
    assert _descriptions(outcome) == [
        "Update Jasper Status: Jasper API",
        "Get Jasper Device: Jasper API",
        "Get Jasper Audit Trail: Jasper API",
    ]
    put, get, audit = outcome.logs
    assert put.request_text and put.request_text.startswith(f"PUT {cc.base_url}/v1/devices/{iccid}")
    assert '"status":"ACTIVATED"' in put.request_text and '"ratePlan":"POD19 5GB"' in put.request_text
    assert put.response_text == f'{{"iccid": "{iccid}"}}'
    assert get.response_text and '"status": "ACTIVATED"' in get.response_text
    assert audit.ok and audit.response_text and "Executed" in audit.response_text


async def test_accepted_but_not_applied_ends_error_with_the_audit_record(cc: Carrier) -> None:
    iccid = cc.device("ACTIVATED")
    cc.sim.fail_next("not_applied")
    outcome = await cc.send("STATUS", T.DEACTIVE, iccid)
    assert (outcome.kind, outcome.terminal, outcome.code) == (Kind.FAILED, ChangeStatus.ERROR, "NotApplied")
    assert "did not make it" in outcome.details and "status: ACTIVATED -> DEACTIVATED (Error" in outcome.details
    audit = outcome.logs[-1]
    assert audit.description == "Get Jasper Audit Trail: Jasper API" and not audit.ok
    assert audit.error_text and "DEACTIVATED (Error" in audit.error_text
    assert cc.sim.device(iccid).status == "ACTIVATED"  # type: ignore[union-attr]


async def test_an_edit_made_after_one_that_was_not_is_done_despite_the_earlier_error_record(cc: Carrier) -> None:
    """The engine sends an edit again when its first verification could not be read and the device later showed
    it unchanged; the audit trail read after the second edit still holds the first one's error record (within
    the clock-skew allowance), but the newest record about the field says the change was made."""
    iccid = cc.device("DEACTIVATED")
    cc.sim.fail_next("not_applied")
    first = await cc.send("STATUS", T.RETIRED, iccid)
    assert (first.kind, first.code) == (Kind.FAILED, "NotApplied")
    cc.clock.advance(30)
    again = await cc.send("STATUS", T.RETIRED, iccid)
    assert cc.sim.device(iccid).status == "RETIRED"  # type: ignore[union-attr]
    assert again.kind is Kind.DONE, again
    assert [r.status for r in cc.sim.audit_trail(iccid)] == ["Executed", "Error"]  # newest first


async def test_without_pod19_an_unchanged_device_still_fails_and_no_audit_is_read(cc: Carrier) -> None:
    iccid = cc.device("ACTIVATED")
    cc.sim.fail_next("not_applied")
    outcome = await cc.send("STATUS", T.DEACTIVE, iccid, account={"pod19": False})
    assert (outcome.kind, outcome.terminal) == (Kind.FAILED, ChangeStatus.ERROR)
    assert "status is ACTIVATED (asked DEACTIVATED)" in outcome.details
    assert "devices/auditTrails" not in cc.sim.counters.requests


async def test_an_answer_without_the_iccid_is_unknown(cc: Carrier) -> None:
    iccid = cc.device("INVENTORY")
    cc.sim.fail_next("missing_iccid")
    outcome = await cc.send("STATUS", T.ACTIVE, iccid)
    assert outcome.kind is Kind.UNKNOWN, outcome
    reading = (await cc.session().read([view("STATUS", T.ACTIVE, iccid=iccid)]))[11]
    assert isinstance(reading, DeviceReading)
    assert carrier.judge(view("STATUS", T.ACTIVE, iccid=iccid), reading, window_passed=True,
                         purpose="reconcile").kind is Kind.DONE


async def test_a_scheduled_change_awaits_its_date_and_is_verified_after_it(cc: Carrier) -> None:
    iccid = cc.device("ACTIVATED")
    when = NOW + timedelta(days=2)
    outcome = await cc.send("STATUS", T.DEACTIVE, iccid, EffectiveDate=when.isoformat())
    assert (outcome.kind, outcome.check_after) == (Kind.AWAITING, when), outcome
    assert "scheduled by Control Center" in outcome.details
    assert cc.sim.device(iccid).status == "ACTIVATED"  # type: ignore[union-attr]
    change = view("STATUS", T.DEACTIVE, iccid=iccid, EffectiveDate=when.isoformat())
    session = cc.session()
    early = (await session.read([change]))[11]
    assert carrier.judge(change, early, window_passed=False, purpose="check").kind is Kind.HOLD  # type: ignore[arg-type]
    cc.clock.advance(2 * 86400 + 1)
    cc.sim.run_due()
    late = (await session.read([change]))[11]
    await session.aclose()
    assert carrier.judge(change, late, window_passed=False, purpose="check").kind is Kind.DONE  # type: ignore[arg-type]


async def test_a_rate_limited_edit_is_retried_and_pauses_the_account(cc: Carrier) -> None:
    iccid = cc.device("INVENTORY")
    cc.sim.fail_next("rate_limited")
    outcome = await cc.send("STATUS", T.ACTIVE, iccid)
    assert (outcome.kind, outcome.code) == (Kind.RETRY, "40000029")
    assert cc.told == [("*", 1.0)]  # no Retry-After: the whole account pauses a second
    assert cc.sim.device(iccid).status == "INVENTORY"  # type: ignore[union-attr]


async def test_other_refusals_fail_with_the_carriers_code_and_message(cc: Carrier) -> None:
    iccid = cc.device("INVENTORY")
    outcome = await cc.send("STATUS", T.ACTIVE, iccid, RatePlan="No Such Plan")
    assert (outcome.kind, outcome.terminal, outcome.code) == (Kind.FAILED, ChangeStatus.ERROR, "90000412")
    assert "Invalid rate plan: No Such Plan" in outcome.details
    assert outcome.logs[0].response_text and "90000412" in outcome.logs[0].response_text


async def test_refused_credentials_stop_the_send(cc: Carrier) -> None:
    iccid = cc.device("INVENTORY")
    with pytest.raises(AuthenticationFailed):
        await cc.send("STATUS", T.ACTIVE, iccid, account={"api_key": "wrong-key"})
    assert cc.sim.counters.puts == {}


async def test_the_pre_step_moves_to_the_cheapest_covering_plan_then_deactivation_follows(cc: Carrier) -> None:
    iccid = cc.device("ACTIVATED", rate_plan="POD19 1GB")
    cc.sim.set_usage(iccid, 3000 * 1_048_576)
    on = {"rate_plan_pre_step": True, "rate_plans": PLANS}
    moved = await cc.send("RATE_PLAN", T.DEACTIVE, iccid, account=on)
    assert moved.kind is Kind.DONE and "moved to POD19 5GB" in moved.details, moved
    assert moved.facts.rate_plan == "POD19 5GB"
    assert _descriptions(moved)[:2] == ["Get Jasper Device Usage: Jasper API", "Update Jasper Rate Plan: Jasper API"]
    assert cc.sim.device(iccid).rate_plan == "POD19 5GB"  # type: ignore[union-attr]
    done = await cc.send("STATUS", T.DEACTIVE, iccid, account=on)
    assert done.kind is Kind.DONE and cc.sim.device(iccid).status == "DEACTIVATED"  # type: ignore[union-attr]


async def test_the_pre_step_never_blocks(cc: Carrier) -> None:
    iccid = cc.device("ACTIVATED")
    off = await cc.send("RATE_PLAN", T.DEACTIVE, iccid)
    assert off.kind is Kind.DONE and "not enabled" in off.details
    no_plans = await cc.send("RATE_PLAN", T.DEACTIVE, iccid, account={"rate_plan_pre_step": True})
    assert no_plans.kind is Kind.DONE and "no carrier rate plans known" in no_plans.details
    assert no_plans.logs[0].ok and no_plans.logs[0].response_text and "warning" in no_plans.logs[0].response_text
    assert cc.sim.counters.requests == {}  # neither made a call
    unknown_plan = [RatePlanOption("Not At The Carrier", 10**6, Decimal("1"))]
    refused = await cc.send("RATE_PLAN", T.DEACTIVE, iccid, account={"rate_plan_pre_step": True,
                                                                     "rate_plans": unknown_plan})
    assert refused.kind is Kind.DONE and "warning" in refused.details, refused
    assert not refused.logs[-1].ok  # the refused edit's row says so
    cc.sim.fail_next("refused", endpoints=frozenset({"devices/ctdUsages"}))
    no_usage = await cc.send("RATE_PLAN", T.DEACTIVE, iccid, account={"rate_plan_pre_step": True, "rate_plans": PLANS})
    assert no_usage.kind is Kind.DONE and "usage could not be read" in no_usage.details, no_usage
    cc.sim.fail_next("server_error", endpoints=frozenset({"devices/ctdUsages"}))
    later = await cc.send("RATE_PLAN", T.DEACTIVE, iccid, account={"rate_plan_pre_step": True, "rate_plans": PLANS})
    assert later.kind is Kind.RETRY  # what may succeed later is tried again


async def test_an_automated_deactivation_skips_the_pre_step_even_when_planned(cc: Carrier) -> None:
    iccid = cc.device("ACTIVATED")
    on = {"rate_plan_pre_step": True, "rate_plans": PLANS}
    outcome = await cc.send("RATE_PLAN", T.DEACTIVE, iccid, account=on,
                            top={"IsFromAutomatedUpdateDeviceStatusLambda": True})
    assert outcome.kind is Kind.DONE and "automated" in outcome.details
    assert cc.sim.counters.requests == {}
