"""What ThingSpace's answers, errors, device reads and callbacks say about device changes, as ``Outcome``s.

Pure functions: the session (``adapter``) makes the calls and hands the results here.

* A send: Add's per-device lines decide each change (an answer missing a device: UNKNOWN); an accepted
  action leaves every change AWAITING its requestId; an error decides the whole batch — rate limited or
  unavailable: RETRY (nothing happened), possibly sent without an answer: UNKNOWN (read before sending
  again), refused: ISOLATE when the batch had several changes (one of them may be the cause), otherwise
  FAILED with the terminal ERROR.
* A device read (reconcile after an unknown outcome, the deferred check): the expected state → DONE;
  activation still in progress → AWAITING; unchanged → HOLD until the reconcile window passed, then RETRY;
  any other state → FAILED (NEEDS_REVIEW: a person looks before anything more is sent).
* A CarrierService callback: success → DONE with the line's MSISDN and IP; a fault → FAILED with its code
  (API_FAILED when the code says the carrier was only briefly unable); neither → AWAITING unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bulkchange.carrier import errors as cerr
from bulkchange.carrier.port import CallbackReport, ChangeView, DeviceReading, log_for
from bulkchange.carrier.thingspace.models import ActionAccepted, AddDeviceResult, CallbackMessage, CarrierDevice
from bulkchange.carrier.thingspace.steps import ACTIVATION_IN_PROGRESS, UNCHANGED, Step, step_of
from bulkchange.domain.outcomes import CarrierFacts, Kind, Outcome
from bulkchange.domain.statuses import ChangeStatus

CALLBACK_DESCRIPTION = "ThingSpace Callback: CarrierService"
_FAILED_STATUSES = {"failed", "failure"}  # what ThingSpace sends for a refused request (with a faultResponse)


# ------------------------------------------------------------------------------------------ sending


def error_outcomes(
    step: Step, changes: Sequence[ChangeView], exc: cerr.CarrierError, texts: Mapping[int, str]
) -> list[Outcome]:
    """One outcome per change of a batch whose request failed with ``exc`` (never AuthenticationFailed,
    which the session raises: it is the whole bulk change's failure, not these changes')."""
    if isinstance(exc, cerr.RateLimited):
        return _all(step, changes, Kind.RETRY, f"rate limited by the carrier: {exc.message}", exc, texts)
    if isinstance(exc, cerr.TransientError):
        return _all(step, changes, Kind.RETRY, f"carrier unavailable: {exc.message}", exc, texts)
    if isinstance(exc, cerr.OutcomeUnknown):
        return _all(step, changes, Kind.UNKNOWN, f"outcome unknown ({exc.message}); reconciling", exc, texts)
    if len(changes) > 1:
        return _all(step, changes, Kind.ISOLATE, f"batch refused ({exc.message}); sending alone", exc, texts)
    code = f" [{exc.code}]" if exc.code else ""
    details = f"carrier refused{code}: {exc.message}"
    return _all(step, changes, Kind.FAILED, details, exc, texts, terminal=ChangeStatus.ERROR)


def _all(
    step: Step,
    changes: Sequence[ChangeView],
    kind: Kind,
    details: str,
    exc: cerr.CarrierError,
    texts: Mapping[int, str],
    *,
    terminal: ChangeStatus | None = None,
) -> list[Outcome]:
    retry_after = exc.retry_after if isinstance(exc, cerr.RateLimited) else None
    error_text = f"{type(exc).__name__}: {exc}"
    return [
        Outcome(
            c.id,
            kind,
            details,
            code=exc.code or type(exc).__name__,
            retry_after_s=retry_after,
            terminal=terminal,
            logs=[
                log_for(
                    c,
                    step.description,
                    False,
                    request_text=texts[c.id],
                    response_text=exc.response_text,
                    error_text=error_text,
                )
            ],
        )
        for c in changes
    ]


def accepted_outcomes(
    step: Step, changes: Sequence[ChangeView], accepted: ActionAccepted, texts: Mapping[int, str]
) -> list[Outcome]:
    """An action accepted with a requestId: every change awaits the carrier's result."""
    details = f"{step.verb} accepted, requestId {accepted.request_id}; awaiting the carrier's result"
    return [
        Outcome(
            c.id,
            Kind.AWAITING,
            details,
            request_id=accepted.request_id,
            logs=[log_for(c, step.description, True, request_text=texts[c.id], response_text=accepted.response_text)],
        )
        for c in changes
    ]


def add_outcomes(
    changes: Sequence[ChangeView], results: Sequence[AddDeviceResult], texts: Mapping[int, str], response_text: str
) -> list[Outcome]:
    """Match Add's per-device lines to the changes by ICCID (a lone line answers a lone change)."""
    by_iccid = {item.iccid: item for item in results if item.iccid}
    outcomes: list[Outcome] = []
    for change in changes:
        item = by_iccid.get(change.iccid)
        if item is None and len(changes) == 1 and len(results) == 1:
            item = results[0]
        outcomes.append(_add_outcome(change, item, texts[change.id], response_text))
    return outcomes


def _add_outcome(change: ChangeView, item: AddDeviceResult | None, request_text: str, response_text: str) -> Outcome:
    description = Step.ADD.description
    if item is None:
        log = log_for(
            change,
            description,
            False,
            request_text=request_text,
            response_text=response_text,
            error_text="device missing from the Add response",
        )
        return Outcome(
            change.id, Kind.UNKNOWN, "the carrier's Add answer did not mention this device; reconciling", logs=[log]
        )
    text = item.response
    if item.ok:
        note = "already in the carrier's inventory" if item.already_exists else "added"
        log = log_for(change, description, True, request_text=request_text, response_text=text)
        return Outcome(change.id, Kind.DONE, f"Add: {note}", logs=[log])
    return Outcome(
        change.id,
        Kind.FAILED,
        f"Add refused by the carrier: {text or 'empty answer'}",
        code="AddRefused",
        terminal=ChangeStatus.ERROR,
        logs=[
            log_for(
                change,
                description,
                False,
                request_text=request_text,
                response_text=text,
                error_text=f"Device '{change.iccid}' not added: {text}",
            )
        ],
    )


# ------------------------------------------------------------------------------------------ reading


def reading_of(device: CarrierDevice) -> DeviceReading:
    """The port's view of one listed device: its state and the line's numbers."""
    return DeviceReading(
        iccid=device.iccid or "",
        state=device.state,
        facts=CarrierFacts(msisdn=device.msisdn or device.mdn, ip_address=device.ip_address),
        raw=device.model_dump_json(by_alias=True, exclude_none=True),
    )


def judge(change: ChangeView, reading: DeviceReading | None, *, window_passed: bool, purpose: str) -> Outcome:
    """What the carrier's view of the device says about the change's current step.

    ``purpose`` names the read in the log row's description (``reconcile`` → "Reconcile ThingSpace
    Device: ThingSpace API", ``check`` → "Check ThingSpace Device: ThingSpace API").
    """
    step = step_of(change.step)
    state = reading.state if reading is not None else None
    shown = state or "absent"
    msisdn = reading.facts.msisdn if reading is not None else None
    log = log_for(
        change,
        f"{purpose.strip().capitalize()} ThingSpace Device: ThingSpace API",
        True,
        request_text=f"devices/actions/list iccid {change.iccid}",
        response_text=f"state {shown}" + (f", msisdn {msisdn}" if msisdn else ""),
    )
    if step is Step.ADD and reading is not None:
        return Outcome(change.id, Kind.DONE, "Add confirmed: the device is in the carrier's inventory", logs=[log])
    if reading is not None and step is not Step.ADD and state == step.expected_state:
        details = f"{step.verb} confirmed: carrier shows '{state}'"
        return Outcome(change.id, Kind.DONE, details, facts=reading.facts, logs=[log])
    if step is Step.ACTIVATE and state == ACTIVATION_IN_PROGRESS:
        return Outcome(
            change.id,
            Kind.AWAITING,
            "activation in progress at the carrier",
            request_id=change.carrier_request_id,
            logs=[log],
        )
    if state in UNCHANGED[step]:
        if window_passed:
            return Outcome(
                change.id, Kind.RETRY, f"carrier shows '{shown}': the {step.verb} did not happen", logs=[log]
            )
        return Outcome(change.id, Kind.HOLD, f"carrier still shows '{shown}'; looking again shortly", logs=[log])
    return Outcome(
        change.id,
        Kind.FAILED,
        f"carrier shows unexpected state '{shown}' during {step.verb}",
        terminal=ChangeStatus.NEEDS_REVIEW,
        code="UnexpectedState",
        logs=[log],
    )


# ---------------------------------------------------------------------------------------- callbacks


def parse_callback(payload: str | bytes | Mapping[str, Any]) -> CallbackMessage:
    """A stored CarrierService callback body (JSON text or decoded); ``ValueError`` when it is not one."""
    if isinstance(payload, Mapping):
        return CallbackMessage.parse(dict(payload))
    return CallbackMessage.parse(payload)


def callback_report(message: CallbackMessage) -> CallbackReport:
    """The callback in the port's neutral words (which request, which device, success or refusal)."""
    if not message.request_id or not message.iccid:
        raise ValueError("requestId and an ICCID are required")
    refused = bool(message.fault_code) or (message.status or "").strip().lower() in _FAILED_STATUSES
    operation = message.operation
    return CallbackReport(
        request_id=message.request_id,
        iccid=message.iccid,
        status=message.status,
        operation=operation,
        succeeded=message.succeeded,
        refused=refused and not message.succeeded,
        code=cerr.strip_service_prefix(message.fault_code or "") or None,
        text=(message.fault_string or "").strip() or None,
        reading=message,
    )


def callback_verdict(message: CallbackMessage, change: ChangeView) -> Outcome:
    """A CarrierService callback's verdict on one change awaiting its result."""
    step = step_of(change.step)
    fault = f", fault {message.fault_code}" if message.fault_code else ""
    log = log_for(
        change,
        CALLBACK_DESCRIPTION,
        message.succeeded,
        request_text=f"requestId {message.request_id}",
        response_text=f"status {message.status}{fault}",
        error_text=None if message.succeeded else f"{message.fault_code}: {message.fault_string}",
    )
    if message.succeeded:
        facts = CarrierFacts(msisdn=message.msisdn or message.mdn, ip_address=message.ip_address)
        return Outcome(change.id, Kind.DONE, f"{step.verb} confirmed by callback", facts=facts, logs=[log])
    if not message.fault_code and (message.status or "").strip().lower() not in _FAILED_STATUSES:
        # Neither a success nor a failure (no status, an unknown one, no fault): no verdict. The change keeps
        # awaiting as it was; a genuine callback or the deferred check settles it.
        return Outcome(
            change.id,
            Kind.AWAITING,
            change.status_details or "awaiting the carrier's result",
            request_id=change.carrier_request_id,
            logs=[log],
        )
    code = cerr.strip_service_prefix(message.fault_code or "") or None
    error = cerr.error_for_code(message.fault_code or "Unknown", message.fault_string or "carrier fault")
    return Outcome(
        change.id,
        Kind.FAILED,
        f"carrier refused {step.verb} [{code}]: {message.fault_string or ''}".strip(),
        code=code,
        terminal=ChangeStatus.API_FAILED if isinstance(error, cerr.TransientError) else ChangeStatus.ERROR,
        logs=[log],
    )
