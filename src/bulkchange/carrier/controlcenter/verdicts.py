"""What Control Center's answers, errors, device reads and audit records say about a change, as ``Outcome``s.

Pure functions: the session (``adapter``) makes the calls and hands the results here.

* An edit that failed: rate limited or unavailable → RETRY (nothing happened); possibly made without an
  answer → UNKNOWN (read the device before sending again); refused → FAILED with the terminal ERROR and
  the carrier's code and message.
* An accepted edit is verified by reading the device back (and, for POD 19, its audit records since the
  call): every field shows the value sent → DONE with the device's facts; an audit record with an error
  status for a field sent, or a field still showing another value → FAILED / ERROR ("accepted but not
  applied"), with the audit record's text. A field that moved on since (the audit trail shows the change
  was executed) counts as made.
* A device read (reconcile after an unknown outcome, the check after a scheduled date): every field as
  asked → DONE; the status still one the change starts from → HOLD until the reconcile window passed, then
  RETRY; anything else (gone, purged, replaced, activated by use) → FAILED / NEEDS_REVIEW.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from bulkchange.carrier import errors as cerr
from bulkchange.carrier.controlcenter.models import AuditRecord, ControlCenterDevice
from bulkchange.carrier.controlcenter.steps import GET_DESCRIPTION, Step, cc_status, step_of, unchanged_states
from bulkchange.carrier.port import ChangeView, DeviceReading, log_for
from bulkchange.domain.outcomes import CarrierFacts, Kind, LogEntry, Outcome
from bulkchange.domain.statuses import ChangeStatus

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

NOT_APPLIED = "NotApplied"
"""The outcome code of an edit Control Center accepted and did not make."""


# ------------------------------------------------------------------------------------------ sending


def error_outcome(
    step: Step, change: ChangeView, exc: cerr.CarrierError, logs: Sequence[LogEntry], *, description: str
) -> Outcome:
    """The outcome of a change whose call failed with ``exc`` (never AuthenticationFailed: the session raises
    it, it is the bulk change's failure). ``description`` names the failed call's log row."""
    failed = log_for(
        change,
        description,
        False,
        request_text=exc.request_text,
        response_text=exc.response_text,
        error_text=f"{type(exc).__name__}: {exc}",
    )
    every = [*logs, failed]
    code = exc.code or type(exc).__name__
    if isinstance(exc, cerr.RateLimited):
        details = f"rate limited by Control Center: {exc.message}"
        return Outcome(change.id, Kind.RETRY, details, code=code, retry_after_s=exc.retry_after, logs=every)
    if isinstance(exc, cerr.TransientError):
        return Outcome(change.id, Kind.RETRY, f"Control Center unavailable: {exc.message}", code=code, logs=every)
    if isinstance(exc, cerr.OutcomeUnknown):
        details = f"outcome unknown ({exc.message}); reconciling"
        return Outcome(change.id, Kind.UNKNOWN, details, code=code, logs=every)
    shown = f" [{exc.code}]" if exc.code else ""
    details = f"Control Center refused the {step.verb}{shown}: {exc.message}"
    return Outcome(change.id, Kind.FAILED, details, code=code, terminal=ChangeStatus.ERROR, logs=every)


def facts_of(device: ControlCenterDevice) -> CarrierFacts:
    """What bulkchange keeps of a device read: numbers, plans and the carrier's status."""
    return CarrierFacts(
        msisdn=device.msisdn or None,
        ip_address=device.fixed_ip_address or None,
        imei=device.imei or None,
        rate_plan=device.rate_plan,
        communication_plan=device.communication_plan,
        carrier_status=device.status,
    )


def _shown(device: ControlCenterDevice, name: str) -> str | None:
    if name == "status":
        return device.status
    return device.rate_plan if name == "ratePlan" else device.communication_plan


def _norm(text: str | None) -> str:
    return re.sub(r"[^a-z0-9]", "", (text or "").lower())


def _about(record: AuditRecord, name: str, value: str) -> bool:
    """The record concerns field ``name`` set to ``value`` (Control Center's audit field names are not
    published: ``status``, ``Status`` and ``SIM Status`` all match ``status``)."""
    if not _norm(record.field).endswith(_norm(name)):
        return False
    return record.value is None or _norm(record.value) == _norm(value)


def _newest(records: Sequence[AuditRecord]) -> AuditRecord | None:
    """The most recent of ``records`` (Control Center lists them most recent first; a dated record orders by
    its date, an undated one keeps its place)."""
    dated = [r for r in records if r.effective_date is not None]
    if len(dated) == len(records) and dated:
        return max(dated, key=lambda r: r.effective_date or _EPOCH)  # the first of equal dates: listed newer
    return records[0] if records else None


def _refusals(fields: Mapping[str, str], records: Sequence[AuditRecord]) -> list[AuditRecord]:
    """For each field sent, its newest audit record about the value sent when that one is an error. An older
    error followed by an executed record is an edit that was refused and then made (sent again after a
    reconcile found the device unchanged): made."""
    refused = []
    for name, value in fields.items():
        newest = _newest([r for r in records if _about(r, name, value)])
        if newest is not None and newest.is_error:
            refused.append(newest)
    return refused


def _executed(fields: Mapping[str, str], records: Sequence[AuditRecord] | None, name: str) -> bool:
    return records is not None and any(not r.is_error and _about(r, name, fields[name]) for r in records)


def audit_text(records: Sequence[AuditRecord]) -> str:
    """The audit records as one line each (for details and error texts)."""
    return "; ".join(
        f"{r.field}: {r.prior_value or ''} -> {r.value or ''} ({r.status or 'no status'}"
        + (f", {r.effective_date.isoformat()}" if r.effective_date else "")
        + (f", by {r.user_name}" if r.user_name else "")
        + ")"
        for r in records
    )


def verify(
    step: Step,
    change: ChangeView,
    fields: Mapping[str, str],
    device: ControlCenterDevice | None,
    records: Sequence[AuditRecord] | None,
    logs: list[LogEntry],
) -> Outcome:
    """The verdict on an accepted edit from the device read after it (and the audit records since the
    call, or None when they were not read)."""
    if device is None:
        details = f"Control Center accepted the {step.verb} but no longer knows the device; look at it"
        return Outcome(
            change.id, Kind.FAILED, details, code="DeviceGone", terminal=ChangeStatus.NEEDS_REVIEW, logs=logs
        )
    refused = _refusals(fields, records or ())
    differs = {
        name: _shown(device, name)
        for name, value in fields.items()
        if _norm(_shown(device, name)) != _norm(value) and not _executed(fields, records, name)
    }
    if not refused and not differs:
        return Outcome(change.id, Kind.DONE, _done_details(step, fields), facts=facts_of(device), logs=logs)
    parts = [f"{name} is {shown or 'empty'} (asked {fields[name]})" for name, shown in differs.items()]
    if refused:
        parts.append(f"audit trail: {audit_text(refused)}")
    details = f"Control Center accepted the {step.verb} but did not make it: {'; '.join(parts)}"
    return Outcome(
        change.id,
        Kind.FAILED,
        details,
        code=NOT_APPLIED,
        terminal=ChangeStatus.ERROR,
        facts=facts_of(device),
        logs=logs,
    )


def _done_details(step: Step, fields: Mapping[str, str]) -> str:
    made = ", ".join(f"{name} {value}" for name, value in fields.items())
    return f"{step.verb} made and verified: {made}"


# ------------------------------------------------------------------------------------------ reading


def reading_of(device: ControlCenterDevice, response_text: str) -> DeviceReading:
    """The port's view of one device read: its status and what we keep, the carrier's body as ``raw``."""
    return DeviceReading(iccid=device.iccid or "", state=device.status, facts=facts_of(device), raw=response_text)


def expected_fields(change: ChangeView) -> dict[str, str]:
    """What the device shows once the change's STATUS step took effect (status and the plans asked for)."""
    r = change.request.request
    fields = {"status": cc_status(change.target)}
    if r.rate_plan:
        fields["ratePlan"] = r.rate_plan
    if r.communication_plan:
        fields["communicationPlan"] = r.communication_plan
    return fields


def judge(change: ChangeView, reading: DeviceReading | None, *, window_passed: bool, purpose: str) -> Outcome:
    """What the carrier's view of the device says about the change's current step.

    ``purpose`` names the read in the log row (``reconcile`` → "Reconcile Jasper Device: Jasper API").
    """
    step = step_of(change.step)
    state = reading.state if reading is not None else None
    shown = state or "absent"
    facts = reading.facts if reading is not None else CarrierFacts()
    log = log_for(
        change,
        f"{purpose.strip().capitalize()} {GET_DESCRIPTION}".replace(" Get ", " "),
        True,
        request_text=f"GET devices/{change.iccid}",
        response_text=(reading.raw or f"status {shown}") if reading is not None else "device not in the account",
    )
    if reading is None:
        details = f"Control Center no longer knows the device during the {step.verb}; look at it"
        return Outcome(
            change.id, Kind.FAILED, details, code="DeviceGone", terminal=ChangeStatus.NEEDS_REVIEW, logs=[log]
        )
    if step is Step.RATE_PLAN:
        # The device cannot tell whether the pre-step was done (the plan it chooses depends on the cycle's
        # usage), and a worker that died before sending it leaves it here too. Doing it again is safe: it reads
        # the usage and edits only a line that is not on the chosen plan yet.
        plan = facts.rate_plan or "an unknown rate plan"
        details = f"rate plan pre-step not confirmed (the line is on {plan}); carrying it out again"
        return Outcome(change.id, Kind.RETRY, details, logs=[log])
    fields = expected_fields(change)
    values = {"status": state, "ratePlan": facts.rate_plan, "communicationPlan": facts.communication_plan}
    if all(_norm(values[name]) == _norm(value) for name, value in fields.items()):
        details = f"status change confirmed: Control Center shows {state}"
        return Outcome(change.id, Kind.DONE, details, facts=facts, logs=[log])
    if state in unchanged_states(fields["status"]) or state == fields["status"]:
        if window_passed:
            details = f"Control Center shows {_summary(values, fields)}: the status change did not happen"
            return Outcome(change.id, Kind.RETRY, details, logs=[log])
        details = f"Control Center still shows {_summary(values, fields)}; looking again shortly"
        return Outcome(change.id, Kind.HOLD, details, logs=[log])
    return Outcome(
        change.id,
        Kind.FAILED,
        f"Control Center shows unexpected status {shown} during the status change to {fields['status']}",
        code="UnexpectedState",
        terminal=ChangeStatus.NEEDS_REVIEW,
        facts=facts,
        logs=[log],
    )


def _summary(values: Mapping[str, str | None], fields: Mapping[str, str]) -> str:
    return ", ".join(f"{name} {values[name] or 'empty'}" for name in fields)
