"""Cisco IoT Control Center (AT&T POD 19) behind the carrier port: ``ControlCenterCarrier`` (decisions) and
``ControlCenterSession`` (calls, over ``ControlCenterClient``).

Steps (``steps``): ``STATUS`` — one edit per device (status, and the change's rate plan / communication plan
/ effective date), then a read of the device and, for POD 19 accounts, of its audit trail since the edit,
so an edit Control Center accepted and did not make ends ERROR, never PROCESSED; a future effective date
leaves the change AWAITING until that date (``check_after``). ``RATE_PLAN`` — the optional deactivation
pre-step (``prestep``). Both settle in their own send. The edit fields and batch keys are in ``requests``,
the verdicts in ``verdicts``, the ``JasperDevice`` rows in ``mirror``.

A Control Center ``CarrierAccount``: ``base_url`` (the pod's REST root, e.g. ``POD19_BASE_URL``);
``account`` = the user name; ``fields``: ``username``, ``tps`` (calls per second the account's contract
allows, default 1), ``pod19`` (read the audit trail after each edit), ``rate_plan_pre_step`` (carry out
the deactivation pre-step), ``rate_plans`` (the provider's carrier rate plans, see ``prestep``),
``audit_skew_s`` (how far the carrier's clock may be behind ours; default 120), ``write_is_enabled`` (the
provider's WriteIsEnabled, for the engine to refuse the bulk change as it does for ThingSpace); ``secrets``:
``api_key``.
Control Center has no login and locks nobody out, so the session has no use for a login guard.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from bulkchange.carrier import errors as cerr
from bulkchange.carrier.controlcenter import mirror, prestep, steps, verdicts
from bulkchange.carrier.controlcenter.client import ControlCenterClient
from bulkchange.carrier.controlcenter.models import AuditRecord, ControlCenterConnection
from bulkchange.carrier.controlcenter.requests import (
    StatusEdit,
    batch_key,
    effective_date_problem,
    status_edit,
)
from bulkchange.carrier.controlcenter.steps import AUDIT_DESCRIPTION, GET_DESCRIPTION, Step, step_of
from bulkchange.carrier.port import (
    Carrier,
    CarrierAccount,
    ChangeView,
    DeactivationTerms,
    DeviceReading,
    RateRules,
    SessionServices,
    TokenBucket,
    UnsupportedTarget,
    log_for,
)
from bulkchange.carrier.rate_rules import parse_rate_rules
from bulkchange.domain.change_request import StatusUpdateRequest
from bulkchange.domain.outcomes import CarrierFacts, Kind, LogEntry, Outcome, TableRows
from bulkchange.domain.statuses import ChangeStatus, TargetStatus

Clock = Callable[[], datetime]
"""Aware UTC now."""

NAME = "controlcenter"
MAX_CHANGES_PER_SEND = 10
"""Changes one send carries. Control Center has no bulk edit: a send is a loop of one edit, one read and
(POD 19) one audit read per device, each waiting for the account's few calls per second shared with every
other worker — ten changes are already some thirty seconds of calls at the default 1 TPS. A small claim keeps
the claim's lease short, lets several workers take turns on one account instead of one worker holding a
long queue, and leaves little to reconcile after a crash."""
DEFAULT_TPS = 1.0
RATE_LIMIT_PAUSE_S = 1.0
"""How long the whole account pauses after a 429 without ``Retry-After`` (Control Center counts per second)."""
SPACING_MARGIN = 1.01
"""The account's bucket is refilled 1 % slower than its TPS, for clock rates and rounding only. The delay
between counting a call and its arrival at the carrier is not covered by a margin (on a busy machine it can
exceed any small one): the shared limiter counts each call when its answer is in, which is after the carrier
counted it."""
DEFAULT_BURST = 1
"""Calls an account admits back to back when its provider does not say: Control Center does not document
its bucket's size, so by default no two calls are sent closer than 1/TPS."""
DEFAULT_AUDIT_SKEW_S = 120.0


def controlcenter_account(
    *,
    provider_id: int,
    credential_id: int,
    base_url: str,
    username: str,
    api_key: str,
    tps: float = DEFAULT_TPS,
    burst: int = DEFAULT_BURST,
    pod19: bool = False,
    rate_plan_pre_step: bool = False,
    rate_plans: Sequence[prestep.RatePlanOption] = (),
    write_is_enabled: bool = True,
) -> CarrierAccount:
    """A Control Center ``CarrierAccount`` from its settings (the API key already decrypted / resolved)."""
    fields: dict[str, Any] = {
        "username": username,
        "tps": float(tps),
        "burst": int(burst),
        "pod19": pod19,
        "rate_plan_pre_step": rate_plan_pre_step,
        "rate_plans": [plan.as_field() for plan in rate_plans],
        "write_is_enabled": write_is_enabled,
    }
    return CarrierAccount(
        carrier=NAME,
        provider_id=provider_id,
        credential_id=credential_id,
        base_url=base_url,
        account=username,
        fields=fields,
        secrets={"api_key": api_key},
    )


def connection_for(account: CarrierAccount) -> ControlCenterConnection:
    """The client's connection settings; ``AuthenticationFailed`` when the user name or API key is missing."""
    username = str(account.fields.get("username") or account.account or "")
    given = (("username", username), ("api_key", account.secrets.get("api_key")))
    missing = [name for name, value in given if not value]
    if missing:
        where = f"Control Center account at {account.base_url}"
        raise cerr.AuthenticationFailed(f"{where}: no {', '.join(missing)} configured")
    return ControlCenterConnection(base_url=account.base_url, username=username, api_key=account.secrets["api_key"])


def account_tps(account: CarrierAccount) -> float:
    """The account's calls per second (at least a tenth of one; 1 when not configured)."""
    return max(0.1, float(account.fields.get("tps") or DEFAULT_TPS))


def account_burst(account: CarrierAccount) -> int:
    """How many calls the account admits back to back (at least 1; ``DEFAULT_BURST`` when not configured)."""
    return max(1, int(account.fields.get("burst") or DEFAULT_BURST))


class ControlCenterSession:
    """One worker's connection to one Control Center account (an HTTP pool; no tokens, no login)."""

    def __init__(self, account: CarrierAccount, services: SessionServices, *, clock: Clock | None = None) -> None:
        self.account = account
        self._services = services
        self._now = clock or _utcnow
        self._http = services.http_client()
        self.client = ControlCenterClient(
            connection_for(account),
            http=self._http,
            timeout=services.timeout_s,
            max_attempts=services.call_attempts,
            limiter=services.limiter,
            clock=lambda: self._now().timestamp(),
            deadline=services.deadline,
        )
        self._pod19 = bool(account.fields.get("pod19"))
        self._skew = timedelta(seconds=float(account.fields.get("audit_skew_s") or DEFAULT_AUDIT_SKEW_S))

    async def authenticate(self) -> None:
        """One cheap read (a one-device search); ``AuthenticationFailed`` when the credentials are refused.
        A refusal for the account's rate pauses the whole account (as for any call) before it is raised."""
        try:
            await self.client.authenticate()
        except cerr.RateLimited as exc:
            if self._services.on_rate_limited is not None:
                self._services.on_rate_limited("*", exc.retry_after or RATE_LIMIT_PAUSE_S)
            raise

    async def send(self, step: str, changes: Sequence[ChangeView]) -> list[Outcome]:
        """Carry out ``step`` for each change in turn (one edit per device and its verification); one Outcome
        each, in order. Raises only ``AuthenticationFailed`` (the batch is given back: an edit repeated
        later sets the same values again, which Control Center answers without changing anything)."""
        s = step_of(step)
        outcomes: list[Outcome] = []
        for change in changes:
            if s is Step.STATUS:
                outcomes.append(await self._status(change))
            else:
                outcomes.append(await self._rate_plan(change))
        return outcomes

    # ------------------------------------------------------------------------------------- STATUS

    async def _status(self, change: ChangeView) -> Outcome:
        started = self._now()
        edit = status_edit(change.target, change.request, now=started)
        try:
            accepted = await self._edit(change, edit)
        except cerr.CarrierError as exc:
            return self._failed_call(Step.STATUS, change, exc, [], Step.STATUS.description)
        logs = [log_for(change, Step.STATUS.description, True, request_text=accepted[0], response_text=accepted[1])]
        if edit.effective_date is not None:
            when = edit.effective_date.astimezone(UTC)
            details = f"scheduled by Control Center for {when.isoformat()}; verified after that date"
            return Outcome(change.id, Kind.AWAITING, details, check_after=when, logs=logs)
        return await self._verify(Step.STATUS, change, edit.fields(), started, logs)

    async def _edit(self, change: ChangeView, edit: StatusEdit) -> tuple[str, str]:
        accepted = await self.client.edit_device(
            change.iccid,
            status=edit.status,
            rate_plan=edit.rate_plan,
            communication_plan=edit.communication_plan,
            effective_date=edit.effective_date,
        )
        return accepted.request_text, accepted.response_text

    async def _verify(
        self, step: Step, change: ChangeView, fields: Mapping[str, str], started: datetime, logs: list[LogEntry]
    ) -> Outcome:
        """Read the device (and its POD 19 audit trail since ``started``) after an accepted edit."""
        try:
            answer = await self.client.get_device_answer(change.iccid)
        except cerr.AuthenticationFailed:
            raise
        except cerr.CarrierError as exc:
            logs.append(_failed_log(change, GET_DESCRIPTION, exc))
            details = f"{step.verb} accepted; reading the device back failed ({exc.message}); reconciling"
            return Outcome(change.id, Kind.UNKNOWN, details, code=exc.code or type(exc).__name__, logs=logs)
        texts = {"request_text": answer.request_text, "response_text": answer.response_text}
        logs.append(log_for(change, GET_DESCRIPTION, answer.device is not None, **texts))
        records = await self._audit(change, fields, started, logs) if self._pod19 and answer.device else None
        return verdicts.verify(step, change, fields, answer.device, records, logs)

    async def _audit(
        self, change: ChangeView, fields: Mapping[str, str], started: datetime, logs: list[LogEntry]
    ) -> list[AuditRecord] | None:
        """The audit records since the edit (less the clock skew allowance); None when unreadable (the device
        read alone then decides, and the log row says why the audit trail is missing)."""
        try:
            answer = await self.client.audit_trails_answer(change.iccid, since=started - self._skew)
        except cerr.AuthenticationFailed:
            raise
        except cerr.CarrierError as exc:
            logs.append(_failed_log(change, AUDIT_DESCRIPTION, exc))
            return None
        refused = [r for r in answer.records if r.is_error]
        error = f"audit trail shows a refused change: {verdicts.audit_text(refused)}" if refused else None
        logs.append(
            log_for(
                change,
                AUDIT_DESCRIPTION,
                not refused,
                request_text=answer.request_text,
                response_text=answer.response_text,
                error_text=error,
            )
        )
        return answer.records

    def _failed_call(
        self, step: Step, change: ChangeView, exc: cerr.CarrierError, logs: list[LogEntry], description: str
    ) -> Outcome:
        if isinstance(exc, cerr.AuthenticationFailed):
            raise exc
        if isinstance(exc, cerr.RateLimited) and self._services.on_rate_limited is not None:
            self._services.on_rate_limited("*", exc.retry_after or RATE_LIMIT_PAUSE_S)  # the whole account waits
        return verdicts.error_outcome(step, change, exc, logs, description=description)

    # ----------------------------------------------------------------------------------- RATE_PLAN

    async def _rate_plan(self, change: ChangeView) -> Outcome:
        """Move the line to the cheapest rate plan covering this cycle's usage; never blocks the deactivation
        (a refused or unmade move warns and the change goes on), only retries what may succeed later."""
        s = Step.RATE_PLAN
        skipped = self._pre_step_skipped(change)
        if skipped:
            log = log_for(change, s.description, True, response_text=skipped)
            return Outcome(change.id, Kind.DONE, skipped, logs=[log])
        plans = prestep.rate_plans_of(self.account.fields.get("rate_plans"))
        if not plans:
            note = "warning: no carrier rate plans known for this service provider; deactivating on the current plan"
            return Outcome(change.id, Kind.DONE, note, logs=[log_for(change, s.description, True, response_text=note)])
        try:
            usage = await self.client.get_usage(change.iccid)
        except cerr.CarrierError as exc:
            outcome = self._failed_call(s, change, exc, [], steps.USAGE_DESCRIPTION)
            return _never_blocks(outcome, "the cycle's usage could not be read")
        if usage is None:
            details = "Control Center does not know the device (rate plan pre-step); nothing was changed"
            return Outcome(change.id, Kind.FAILED, details, code="DeviceNotFound", terminal=ChangeStatus.ERROR)
        chosen = prestep.choose_rate_plan(plans, usage.data_mb)
        assert chosen is not None  # plans is not empty
        usage_note = f"{usage.data_mb:.1f} MB used this cycle"
        usage_text = usage.model_dump_json(by_alias=True, exclude_none=True)
        logs = [
            log_for(
                change,
                steps.USAGE_DESCRIPTION,
                True,
                request_text=f"GET devices/{change.iccid}/ctdUsages",
                response_text=usage_text,
            )
        ]
        if usage.rate_plan == chosen.code:
            details = f"rate plan pre-step: already on {chosen.code} ({usage_note})"
            return Outcome(change.id, Kind.DONE, details, facts=CarrierFacts(rate_plan=chosen.code), logs=logs)
        started = self._now()
        try:
            accepted = await self.client.edit_device(change.iccid, rate_plan=chosen.code)
        except cerr.CarrierError as exc:
            outcome = self._failed_call(s, change, exc, logs, s.description)
            return _never_blocks(outcome, f"moving to {chosen.code} was refused")
        texts = {"request_text": accepted.request_text, "response_text": accepted.response_text}
        logs.append(log_for(change, s.description, True, **texts))
        verified = await self._verify(s, change, {"ratePlan": chosen.code}, started, logs)
        if verified.kind is Kind.DONE:
            verified.details = f"rate plan pre-step: moved to {chosen.code} ({usage_note})"
        return _never_blocks(verified, f"moving to {chosen.code} was not made")

    def _pre_step_skipped(self, change: ChangeView) -> str | None:
        if change.request.is_from_automated_update_device_status_lambda:
            return "rate plan pre-step skipped: an automated status update"
        if not self.account.fields.get("rate_plan_pre_step"):
            return "rate plan pre-step not enabled for this service provider"
        return None

    async def read(self, changes: Sequence[ChangeView]) -> dict[int, DeviceReading | cerr.CarrierError | None]:
        """Each change's device as Control Center reports it (one read each); None when the account does not
        know it, the error when its read failed. Raises only ``AuthenticationFailed``."""
        found: dict[int, DeviceReading | cerr.CarrierError | None] = {}
        for change in changes:
            try:
                answer = await self.client.get_device_answer(change.iccid)
            except cerr.AuthenticationFailed:
                raise
            except cerr.CarrierError as exc:
                found[change.id] = exc
                continue
            found[change.id] = verdicts.reading_of(answer.device, answer.response_text) if answer.device else None
        return found

    async def aclose(self) -> None:
        await self.client.aclose()
        if self._http is not None:  # made for this session from the services' transport: ours to close
            await self._http.aclose()


def _failed_log(change: ChangeView, description: str, exc: cerr.CarrierError) -> LogEntry:
    return log_for(
        change,
        description,
        False,
        request_text=exc.request_text,
        response_text=exc.response_text,
        error_text=f"{type(exc).__name__}: {exc}",
    )


def _never_blocks(outcome: Outcome, what: str) -> Outcome:
    """The pre-step's refusal or unmade move: warn and let the deactivation go on (it is an optimisation)."""
    if outcome.kind is not Kind.FAILED:
        return outcome
    return Outcome(
        outcome.change_id,
        Kind.DONE,
        f"warning: rate plan pre-step: {what} ({outcome.details}); deactivating on the current plan",
        code=outcome.code,
        facts=outcome.facts,
        logs=outcome.logs,
    )


def _utcnow() -> datetime:
    return datetime.now(UTC)


class ControlCenterCarrier:
    """Control Center's decisions. Stateless; one instance serves every account and worker.

    ``clock`` (aware UTC ``datetime``) is when "now" is for effective dates and audit reads: injectable so
    tests can move a simulator's wall clock and the adapter's together.
    """

    name = NAME
    steps: tuple[str, ...] = tuple(step.value for step in Step)
    deactivation = DeactivationTerms(
        releases_number=False,
        fee_unless_waived=False,
        warning=(
            "deactivation stops the line's service (it can be activated again); Control Center keeps the MSISDN "
            "assigned to the SIM: the number is not released"
        ),
    )

    def __init__(self, *, clock: Clock | None = None) -> None:
        self._now = clock or _utcnow

    def plan(self, target: TargetStatus, request: StatusUpdateRequest, *, ignore_current_status: bool) -> list[str]:
        """``[STATUS]`` or, for an operator's deactivation, ``[RATE_PLAN, STATUS]``; ``UnsupportedTarget`` for
        suspend / restore and an EffectiveDate beyond Control Center's limit."""
        planned = steps.plan(target, request)
        if problem := effective_date_problem(request, now=self._now()):
            raise UnsupportedTarget(problem)
        return [s.value for s in planned]

    def transition_problem(
        self, current: str | None, target: TargetStatus, *, ignore_current_status: bool
    ) -> str | None:
        return steps.transition_problem(current, target, ignore_current_status=ignore_current_status)

    def batch_key(self, step: str, request: StatusUpdateRequest) -> str:
        return batch_key(step_of(step), request)

    def max_batch(self, step: str, configured: int) -> int:
        """At most ``MAX_CHANGES_PER_SEND`` (see there why)."""
        step_of(step)
        return max(1, min(configured, MAX_CHANGES_PER_SEND))

    def settles_later(self, step: str) -> bool:
        """False: an edit is verified in its own send (a scheduled one comes back AWAITING its date)."""
        step_of(step)
        return False

    def local_status(self, step: str, target: TargetStatus, *, last: bool) -> int | None:
        return steps.local_status(step_of(step), target)

    def step_description(self, step: str) -> str:
        return step_of(step).description

    def rate_rules(self, account: CarrierAccount, configured: str) -> RateRules:
        """Every call of the account from one token bucket at its TPS (less ``SPACING_MARGIN``) holding its
        burst, and one call in flight.

        With the default burst of 1 no two calls are sent closer than 1/TPS: Control Center does not say how
        many calls it takes back to back. A provider whose contract admits more says so (``burst``), and its
        calls then follow each other at the full rate instead of the rate plus each call's round trip. The
        operator's window rules (``configured``) add limits per endpoint.
        """
        bucket = TokenBucket(account_tps(account) / SPACING_MARGIN, account_burst(account))
        return RateRules(per_endpoint=parse_rate_rules(configured), max_in_flight=1, bucket=bucket)

    def limit_scope(self, account: CarrierAccount) -> str:
        return f"controlcenter:{account.base_url}:{account.fields.get('username') or account.account}"

    def connect(self, account: CarrierAccount, services: SessionServices) -> ControlCenterSession:
        return ControlCenterSession(account, services, clock=self._now)

    def judge(self, change: ChangeView, reading: DeviceReading | None, *, window_passed: bool, purpose: str) -> Outcome:
        return verdicts.judge(change, reading, window_passed=window_passed, purpose=purpose)

    def mirror(
        self, account: CarrierAccount, updates: Sequence[tuple[ChangeView, CarrierFacts]], *, now: datetime
    ) -> list[TableRows]:
        return mirror.mirror_rows(account, updates, now=now)


if TYPE_CHECKING:  # the adapter satisfies the port: checked by the type checker, nothing runs
    _carrier: Carrier = ControlCenterCarrier()
