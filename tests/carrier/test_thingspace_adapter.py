"""The ThingSpace adapter's own decisions, where the conformance suite does not look: every plan, the request
fields behind batch keys, local statuses, the local tables' columns, callback verdicts, and what a session
hands its client (limiter, login guard, account)."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from bulkchange.carrier.errors import AuthenticationFailed, LoginLocked
from bulkchange.carrier.port import ChangeView, DeviceReading, RateRule, SessionServices, UnsupportedTarget
from bulkchange.carrier.thingspace.adapter import ThingSpaceCarrier, connection_for, thingspace_account
from bulkchange.domain.change_request import StatusUpdateRequest
from bulkchange.domain.outcomes import CarrierFacts, Kind
from bulkchange.domain.statuses import ChangeStatus, DeviceStatusId, TargetStatus

from .conformance.thingspace_harness import ThingSpaceHarness

ICCID = "89148000000800784259"
IMEI = "990013907835573"
carrier = ThingSpaceCarrier()
ACCOUNT = thingspace_account(
    provider_id=7,
    credential_id=3,
    base_url="https://thingspace.example",
    account_number="0000123456-00001",
    client_id="client",
    username="user",
    client_secret="s3cr3t-value",
    password="pa55-value",
)


def request(target: str = "active", **fields: Any) -> StatusUpdateRequest:
    body: dict[str, Any] = {"ICCID": ICCID, **fields}
    return StatusUpdateRequest.model_validate({"UpdateStatus": target, "Request": body})


def change(step: str, target: TargetStatus = TargetStatus.ACTIVE, **fields: Any) -> ChangeView:
    imei = fields.pop("imei", IMEI)
    return ChangeView(11, 5, ICCID, imei, target, step, request(target.value, IMEI=imei, **fields))


# ------------------------------------------------------------------------------------------------- plans

T = TargetStatus
PLANS = [
    # target, IsIgnoreCurrentStatus, IMEI, SKU, steps (None: refused at submit)
    *[
        (T.INVENTORY, ignore, imei, sku, ["ADD"])
        for ignore in (False, True)
        for imei in (None, IMEI)
        for sku in (None, "S")
    ],
    *[(T.PENDING_ACTIVATION, False, imei, sku, ["ADD"]) for imei in (None, IMEI) for sku in (None, "S")],
    *[(T.PENDING_ACTIVATION, True, imei, sku, ["ACTIVATE"]) for imei in (None, IMEI) for sku in (None, "S")],
    (T.ACTIVE, False, None, None, None),
    (T.ACTIVE, False, IMEI, None, ["ADD", "ACTIVATE"]),
    (T.ACTIVE, False, None, "S", ["ADD", "ACTIVATE"]),
    (T.ACTIVE, False, IMEI, "S", ["ADD", "ACTIVATE"]),
    *[(T.ACTIVE, True, imei, sku, ["ACTIVATE"]) for imei in (None, IMEI) for sku in (None, "S")],
    *[(T.DEACTIVE, ignore, IMEI, None, ["DEACTIVATE"]) for ignore in (False, True)],
    *[(T.SUSPEND, ignore, IMEI, None, ["SUSPEND"]) for ignore in (False, True)],
    *[(T.RESTORE, ignore, IMEI, None, ["RESTORE"]) for ignore in (False, True)],
]


@pytest.mark.parametrize(("target", "ignore", "imei", "sku", "expected"), PLANS)
def test_plan_for_every_target_and_ignore_current_status(
    target: TargetStatus, ignore: bool, imei: str | None, sku: str | None, expected: list[str] | None
) -> None:
    req = request(target.value, IMEI=imei, SkuNumber=sku, IsIgnoreCurrentStatus=ignore)
    if expected is None:
        with pytest.raises(UnsupportedTarget, match="IMEI or a SKU"):
            carrier.plan(target, req, ignore_current_status=ignore)
    else:
        assert carrier.plan(target, req, ignore_current_status=ignore) == expected


def test_transitions_follow_the_local_status() -> None:
    problem = carrier.transition_problem
    assert problem("active", T.SUSPEND, ignore_current_status=False) is None
    assert problem(None, T.RESTORE, ignore_current_status=False) is None  # unknown locally: the carrier decides
    assert problem("suspend", T.SUSPEND, ignore_current_status=True) is None
    refused = problem("deactive", T.SUSPEND, ignore_current_status=False)
    assert refused == "cannot go from 'deactive' to 'suspend' (allowed from: active, unknown)"
    assert problem("active", T.INVENTORY, ignore_current_status=False) is not None


@pytest.mark.parametrize(
    ("step", "target", "last", "status"),
    [
        ("ADD", T.ACTIVE, False, DeviceStatusId.INVENTORY),
        ("ADD", T.INVENTORY, True, DeviceStatusId.INVENTORY),
        ("ADD", T.PENDING_ACTIVATION, True, DeviceStatusId.PENDING_ACTIVATION),
        ("ACTIVATE", T.ACTIVE, True, DeviceStatusId.ACTIVE),
        ("ACTIVATE", T.PENDING_ACTIVATION, True, DeviceStatusId.ACTIVE),  # the carrier's truth
        ("DEACTIVATE", T.DEACTIVE, True, DeviceStatusId.DEACTIVE),
        ("SUSPEND", T.SUSPEND, True, DeviceStatusId.SUSPEND),
        ("RESTORE", T.RESTORE, True, DeviceStatusId.ACTIVE),
    ],
)
def test_local_status_after_each_step(step: str, target: TargetStatus, last: bool, status: int) -> None:
    assert carrier.local_status(step, target, last=last) == status


def test_step_properties() -> None:
    assert [carrier.settles_later(s) for s in ("ADD", "ACTIVATE", "DEACTIVATE", "SUSPEND", "RESTORE")] == [
        False,
        True,
        True,
        True,
        True,
    ]
    assert carrier.step_description("ADD") == "Add ThingSpace Device: ThingSpace API"
    assert carrier.step_description("DEACTIVATE") == "Deactivate ThingSpace Device: ThingSpace API"
    assert carrier.max_batch("ACTIVATE", 500) == 500 and carrier.max_batch("ADD", 50_000) == 10_000
    with pytest.raises(ValueError, match="not a ThingSpace step"):
        carrier.max_batch("STATUS", 10)


# ------------------------------------------------------------------------------------------- batch keys


def test_batch_keys_are_stable_across_versions() -> None:
    """Keys are stored on change rows: a new version must compute the same key for the same request."""
    req = request(RatePlanCode="M2M_4G", MdnZipCode="98801", SkuNumber="SKU-1")
    assert carrier.batch_key("ADD", req) == "ADD:742d07ce9a64f73b9efd06fc76c1b2a4eca52d46"
    assert carrier.batch_key("ACTIVATE", req) == "ACTIVATE:4eba69bae8afcea03e5521b8cb5f3f606d998214"
    assert carrier.batch_key("DEACTIVATE", req) == "DEACTIVATE:34d95f26f22685295983e4c96f9024bcd3597bce"


@pytest.mark.parametrize(
    ("step", "field", "value"),
    [
        ("ADD", "SkuNumber", "SKU-2"),
        ("ACTIVATE", "RatePlanCode", "M2M_5G"),
        ("ACTIVATE", "MdnZipCode", "10001"),
        ("ACTIVATE", "SkuNumber", "SKU-2"),
        ("ACTIVATE", "PublicIpRestriction", "restricted"),
        ("ACTIVATE", "thingSpacePPU", {"FirstName": "Ada", "LastName": "L", "ZipCode": "98801"}),
        ("DEACTIVATE", "ReasonCode", "AB"),
        ("DEACTIVATE", "EtfWaiver", True),
    ],
)
def test_each_request_level_field_splits_batches(step: str, field: str, value: object) -> None:
    base = {"RatePlanCode": "M2M_4G", "MdnZipCode": "98801", "SkuNumber": "SKU-1"}
    assert carrier.batch_key(step, request(**base)) != carrier.batch_key(step, request(**{**base, field: value}))


def test_fields_a_step_does_not_send_do_not_split_batches() -> None:
    a, b = (
        request(RatePlanCode="A", ReasonCode="FF", SkuNumber="1"),
        request(RatePlanCode="B", ReasonCode="X", SkuNumber="2"),
    )
    for step in ("SUSPEND", "RESTORE"):
        assert carrier.batch_key(step, a) == carrier.batch_key(step, b)
    assert carrier.batch_key("ADD", request(RatePlanCode="A")) == carrier.batch_key("ADD", request(RatePlanCode="B"))
    # no reason code means "FF"; the PPU's zip stands in for a missing MDN zip code
    assert carrier.batch_key("DEACTIVATE", request()) == carrier.batch_key("DEACTIVATE", request(ReasonCode="FF"))
    ppu = {"FirstName": "Ada", "LastName": "L", "ZipCode": "98801"}
    assert carrier.batch_key("ACTIVATE", request(thingSpacePPU=ppu)) == carrier.batch_key(
        "ACTIVATE", request(thingSpacePPU=ppu, MdnZipCode="98801")
    )


# ------------------------------------------------------------------------------------ limits and accounts


def test_rate_rules_default_to_the_documented_activate_limit() -> None:
    assert carrier.rate_rules(ACCOUNT, "").per_endpoint == {"devices/actions/activate": RateRule(100, 60.0)}
    rules = carrier.rate_rules(ACCOUNT, "devices/actions/activate=50/60, devices/actions/suspend=10/1")
    assert rules.per_endpoint == {
        "devices/actions/activate": RateRule(50, 60.0),
        "devices/actions/suspend": RateRule(10, 1.0),
    }
    assert rules.max_in_flight is None
    with pytest.raises(ValueError, match="ENDPOINT=LIMIT/SECONDS"):
        carrier.rate_rules(ACCOUNT, "devices/actions/activate=many")


def test_limit_scope_names_the_base_url_and_account() -> None:
    assert carrier.limit_scope(ACCOUNT) == "thingspace:https://thingspace.example:0000123456-00001"


def test_connection_from_the_account() -> None:
    conn = connection_for(ACCOUNT)
    assert conn.token_url == "https://thingspace.example/api/ts/v1/oauth2/token"
    assert conn.login_url == "https://thingspace.example/api/m2m/v1/session/login"
    assert (conn.client_id, conn.username, conn.account_name) == ("client", "user", "0000123456-00001")
    assert conn.client_secret.get_secret_value() == "s3cr3t-value" and conn.password.get_secret_value() == "pa55-value"
    for shown in (repr(conn), repr(ACCOUNT), str(ACCOUNT)):
        assert "s3cr3t" not in shown and "pa55" not in shown
    broken = thingspace_account(
        provider_id=1,
        credential_id=1,
        base_url="https://x",
        account_number="A",
        client_id="c",
        username="",
        client_secret="s",
        password="",
    )
    with pytest.raises(AuthenticationFailed, match="no username, password"):
        carrier.connect(broken, SessionServices())


# --------------------------------------------------------------------------------------------- the mirror


def test_mirror_writes_the_three_tables() -> None:
    now = datetime(2024, 5, 1, tzinfo=UTC)
    activated = change("ACTIVATE", RatePlanCode="M2M_4G", RevAccountNumber="REV-1")
    suspended = ChangeView(12, 5, "89148000000800784267", None, T.SUSPEND, "SUSPEND", request("suspend"))
    facts = CarrierFacts(msisdn="12015550001", ip_address="10.0.0.1")
    tables = {t.table: t for t in carrier.mirror(ACCOUNT, [(activated, facts), (suspended, CarrierFacts())], now=now)}
    device = tables["ThingSpaceDevice"]
    assert device.rows[ICCID] == {
        "DeviceStatusId": DeviceStatusId.ACTIVE,
        "Status": "active",
        "IMEI": IMEI,
        "RatePlan": "M2M_4G",
        "MSISDN": "12015550001",
        "IpAddress": "10.0.0.1",
        "IsActive": True,
        "IsDeleted": False,
    }
    # what we do not know is left out, so a value already stored is never blanked
    assert device.rows[suspended.iccid] == {
        "DeviceStatusId": DeviceStatusId.SUSPEND,
        "Status": "suspend",
        "IsActive": True,
        "IsDeleted": False,
    }
    assert device.insert_description == "Insert ThingSpace Device: AMOP DB"
    detail = tables["ThingSpaceDeviceDetail"]
    assert detail.rows == {ICCID: {}, suspended.iccid: {}}
    assert detail.insert_only == {
        ICCID: {"ThingSpaceDateAdded": now, "AccountNumber": "REV-1"},
        suspended.iccid: {"ThingSpaceDateAdded": now, "AccountNumber": "0000123456-00001"},
    }
    usage = tables["ThingSpaceDeviceUsage"]
    assert usage.rows[ICCID] == {"DeviceStatusId": 8, "Status": "active", "IMEI": IMEI, "RatePlan": "M2M_4G"}
    assert usage.insert_description == "Insert ThingSpace Device Usage: AMOP DB"


def test_mirror_status_follows_the_step_that_took_effect() -> None:
    added = change("ADD")  # Add of Add-then-Activate: the device is in the inventory until activated
    pending = ChangeView(13, 5, ICCID, None, T.PENDING_ACTIVATION, "ADD", request("pending activation"))
    for view, status in ((added, DeviceStatusId.INVENTORY), (pending, DeviceStatusId.PENDING_ACTIVATION)):
        (device, *_) = carrier.mirror(ACCOUNT, [(view, CarrierFacts())], now=datetime.now(UTC))
        assert device.rows[ICCID]["DeviceStatusId"] == status


# ------------------------------------------------------------------------------------------------ judging


def test_judge_activation_in_progress_and_unexpected_states() -> None:
    activating = change("ACTIVATE")
    progress = carrier.judge(
        activating, DeviceReading(ICCID, "pending activation"), window_passed=True, purpose="reconcile"
    )
    assert progress.kind is Kind.AWAITING
    assert progress.logs[0].description == "Reconcile ThingSpace Device: ThingSpace API"
    odd = carrier.judge(
        change("SUSPEND", T.SUSPEND), DeviceReading(ICCID, "deactive"), window_passed=False, purpose="check"
    )
    assert (odd.kind, odd.terminal, odd.code) == (Kind.FAILED, ChangeStatus.NEEDS_REVIEW, "UnexpectedState")
    assert odd.logs[0].description == "Check ThingSpace Device: ThingSpace API"
    facts = CarrierFacts(msisdn="12015550001", ip_address="10.0.0.1")
    done = carrier.judge(activating, DeviceReading(ICCID, "active", facts), window_passed=False, purpose="check")
    assert (done.kind, done.facts) == (Kind.DONE, facts)


# ---------------------------------------------------------------------------------------------- callbacks


def callback(status: str | None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"requestId": "req-1", "deviceIds": [{"kind": "Iccid", "id": ICCID}], **extra}
    if status is not None:
        body["status"] = status
    return body


def test_callback_success_carries_the_line() -> None:
    body = callback(
        "Success",
        deviceResponse={
            "activateResponse": {
                "deviceIds": [{"kind": "msisdn", "id": "12015550001"}, {"kind": "iccid", "id": ICCID}],
                "ipAddress": "10.0.0.1",
            }
        },
    )
    for payload in (body, json.dumps(body), json.dumps(body).encode()):
        verdict = carrier.callback_verdict(payload, change("ACTIVATE"))
        assert verdict.kind is Kind.DONE and verdict.details == "activate confirmed by callback"
        assert verdict.facts == CarrierFacts(msisdn="12015550001", ip_address="10.0.0.1")
        assert verdict.logs[0].description == "ThingSpace Callback: CarrierService" and verdict.logs[0].ok


@pytest.mark.parametrize(
    ("code", "terminal"),
    [
        ("UnifiedWebService.REQUEST_FAILED.DeviceAlreadyActive", ChangeStatus.ERROR),
        ("UnifiedWebService.REQUEST_FAILED.ServiceUnavailable", ChangeStatus.API_FAILED),
    ],
)
def test_callback_fault_fails_the_change_with_its_code(code: str, terminal: ChangeStatus) -> None:
    body = callback("Failed", faultResponse={"faultcode": code, "faultstring": "no"})
    verdict = carrier.callback_verdict(body, change("ACTIVATE"))
    assert (verdict.kind, verdict.terminal, verdict.code) == (Kind.FAILED, terminal, code.split(".", 1)[1])
    assert not verdict.logs[0].ok


def test_a_callback_without_a_verdict_leaves_the_change_awaiting() -> None:
    waiting = ChangeView(
        11, 5, ICCID, IMEI, T.SUSPEND, "SUSPEND", request("suspend"), "req-1", None, "suspend accepted"
    )
    verdict = carrier.callback_verdict(callback("Pending"), waiting)
    assert (verdict.kind, verdict.request_id, verdict.details) == (Kind.AWAITING, "req-1", "suspend accepted")
    with pytest.raises(ValueError):
        carrier.callback_verdict("not json", waiting)


# ------------------------------------------------------------------------------------- a session's wiring


class RecordingGuard:
    def __init__(self, locked: bool = False) -> None:
        self.locked, self.events = locked, []  # type: ignore[var-annotated]

    def check(self) -> None:
        if self.locked:
            raise LoginLocked("an operator must clear the guard")

    def record_failure(self, message: str) -> None:
        self.events.append("failure")

    def record_success(self) -> None:
        self.events.append("success")


async def test_a_session_uses_the_services_it_was_lent() -> None:
    with ThingSpaceHarness() as harness:
        endpoints: list[str] = []

        async def limiter(endpoint: str) -> None:
            endpoints.append(endpoint)

        guard = RecordingGuard()
        session = carrier.connect(harness.account(), SessionServices(limiter=limiter, login_guard=guard))
        iccid, imei = harness.new_device()
        add = ChangeView(1, 1, iccid, imei, T.INVENTORY, "ADD", harness.request(T.INVENTORY, iccid, imei))
        (outcome,) = await session.send("ADD", [add])
        await session.aclose()
        assert outcome.kind is Kind.DONE and guard.events == ["success"]
        assert endpoints == ["oauth2/token", "session/login", "devices/actions/add"]
        sent = outcome.logs[0].request_text or ""
        assert sent.startswith("POST devices/actions/add ") and iccid in sent and imei and imei in sent
        assert json.loads(sent.split(" ", 2)[2])["accountName"] == harness.sim.config.account

        locked = carrier.connect(harness.account(), SessionServices(login_guard=RecordingGuard(locked=True)))
        with pytest.raises(LoginLocked):
            await locked.authenticate()
        await locked.aclose()


def test_a_callback_read_once_is_judged_from_that_reading() -> None:
    """``callback_verdict`` given what ``read_callback`` made of the same body judges that reading: the same
    verdict as from the body alone."""
    body = callback(
        "Success",
        deviceResponse={"activateResponse": {"deviceIds": [{"kind": "msisdn", "id": "12015550001"}]}},
    )
    text = json.dumps(body)
    read = carrier.read_callback(text)
    from_reading = carrier.callback_verdict("not json: the reading is used", change("ACTIVATE"), read=read)
    assert from_reading == carrier.callback_verdict(text, change("ACTIVATE"))
    assert from_reading.facts == CarrierFacts(msisdn="12015550001")
    assert read == dataclasses.replace(read, reading=None)  # the reading is not part of what the report says
