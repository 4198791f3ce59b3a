"""Finding out what the carrier did: callbacks, the deferred check, and reconcile after an unknown outcome.

All three read the carrier's truth and turn it into ``Outcome``s; ``recording.record_outcomes`` writes them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, cast

from sqlalchemy import Table, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bulkchange.carrier import errors as cerr
from bulkchange.carrier.thingspace.client import ThingSpaceClient
from bulkchange.carrier.thingspace.models import CallbackMessage, CarrierDevice, DeviceId
from bulkchange.domain.outcomes import CarrierFacts, Kind, LogEntry, Outcome
from bulkchange.domain.plan import CarrierStep
from bulkchange.domain.statuses import ChangeStatus
from bulkchange.engine import changes as ch
from bulkchange.engine.context import EngineContext
from bulkchange.store.tables import DeviceBulkChange, M2MDeviceChange, ThingSpaceCallBackResponseLog, utcnow

# Carrier states that show a step has NOT happened (so it may be sent again once the window passed).
_UNCHANGED: dict[CarrierStep, set[str | None]] = {
    CarrierStep.ADD: {None},
    CarrierStep.ACTIVATE: {None, "preactive", "deactive"},
    CarrierStep.DEACTIVATE: {"active"},
    CarrierStep.SUSPEND: {"active"},
    CarrierStep.RESTORE: {"suspend"},
}


def _facts(device: CarrierDevice) -> CarrierFacts:
    return CarrierFacts(msisdn=device.msisdn or device.mdn, ip_address=device.ip_address)


def judge_device(
    change: M2MDeviceChange, device: CarrierDevice | None, *, window_passed: bool, description: str
) -> Outcome:
    """What the carrier's view of ``device`` says about the change's current step."""
    step = ch.current_step(change)
    state = device.state if device is not None else None
    shown = state or "absent"
    log = LogEntry(
        change.bulk_change_id,
        change.id,
        description,
        True,
        request_text=f"devices/actions/list iccid {change.iccid}",
        response_text=f"state {shown}" + (f", msisdn {device.msisdn}" if device and device.msisdn else ""),
    )
    if step is CarrierStep.ADD and device is not None:
        return Outcome(change.id, Kind.DONE, "Add confirmed: the device is in the carrier's inventory", logs=[log])
    if step is not CarrierStep.ADD and device is not None and state == step.expected_state:
        return Outcome(
            change.id,
            Kind.DONE,
            f"{step.value.lower()} confirmed: carrier shows '{state}'",
            facts=_facts(device),
            logs=[log],
        )
    if step is CarrierStep.ACTIVATE and state == "pending activation":
        return Outcome(
            change.id,
            Kind.AWAITING,
            "activation in progress at the carrier",
            request_id=change.carrier_request_id,
            logs=[log],
        )
    if state in _UNCHANGED[step]:
        if window_passed:
            return Outcome(
                change.id, Kind.RETRY, f"carrier shows '{shown}': the {step.value.lower()} did not happen", logs=[log]
            )
        return Outcome(change.id, Kind.HOLD, f"carrier still shows '{shown}'; looking again shortly", logs=[log])
    return Outcome(
        change.id,
        Kind.FAILED,
        f"carrier shows unexpected state '{shown}' during {step.value.lower()}",
        terminal=ChangeStatus.NEEDS_REVIEW,
        code="UnexpectedState",
        logs=[log],
    )


async def read_devices(
    client: ThingSpaceClient, changes: Sequence[M2MDeviceChange]
) -> dict[int, CarrierDevice | cerr.CarrierError | None]:
    """The carrier's view of each change's device (an error in place of a device when the read failed).

    One list request per 2,000 devices (``deviceList``), not one per device.
    """
    seen: dict[int, CarrierDevice | cerr.CarrierError | None] = {}
    try:
        devices = await client.get_devices([DeviceId(kind="iccid", id=c.iccid) for c in changes])
    except cerr.AuthenticationFailed:
        raise
    except cerr.CarrierError as exc:
        return {change.id: exc for change in changes}
    by_iccid = {d.iccid: d for d in devices if d.iccid}
    for change in changes:
        seen[change.id] = by_iccid.get(change.iccid)
    return seen


async def reconcile(ctx: EngineContext, client: ThingSpaceClient, changes: Sequence[M2MDeviceChange]) -> list[Outcome]:
    """Outcome unknown (timeout after sending, crash mid-call): read the device before sending anything again."""
    now = ctx.clock()
    window = timedelta(seconds=ctx.settings.reconcile_window_s)
    seen = await read_devices(client, changes)
    outcomes = []
    for change in changes:
        device = seen[change.id]
        if isinstance(device, cerr.CarrierError):
            outcomes.append(Outcome(change.id, Kind.HOLD, f"reconcile read failed: {device.message}", code=device.code))
            continue
        passed = change.sent_at is None or now - change.sent_at >= window
        outcomes.append(
            judge_device(
                change, device, window_passed=passed, description="Reconcile ThingSpace Device: ThingSpace API"
            )
        )
    return outcomes


async def check_awaiting(
    ctx: EngineContext, client: ThingSpaceClient, changes: Sequence[M2MDeviceChange], *, final: bool
) -> list[Outcome]:
    """The deferred check: poll only changes still awaiting; on the final round, leftovers become unverified."""
    seen = await read_devices(client, changes)
    outcomes = []
    for change in changes:
        device = seen[change.id]
        step = ch.current_step(change)
        if not isinstance(device, cerr.CarrierError):
            verdict = judge_device(
                change, device, window_passed=False, description="Check ThingSpace Device: ThingSpace API"
            )
            if verdict.kind is Kind.DONE or (verdict.kind is Kind.FAILED):
                outcomes.append(verdict)
                continue
            last_seen = device.state if device is not None else "absent"
        else:
            last_seen = f"unreadable ({device.message})"
        if final:
            terminal = ChangeStatus.ACTIVATION_UNVERIFIED if step is CarrierStep.ACTIVATE else ChangeStatus.NEEDS_REVIEW
            rounds = ctx.settings.update_device_status_retry_number
            outcomes.append(
                Outcome(
                    change.id,
                    Kind.FAILED,
                    f"{step.value.lower()} not confirmed after {rounds} checks (last seen: {last_seen})",
                    terminal=terminal,
                    code="NotConfirmed",
                )
            )
    return outcomes


_FAILED_STATUSES = {"failed", "failure"}  # what ThingSpace sends for a refused request (with a faultResponse)


def callback_outcomes(message: CallbackMessage, change: M2MDeviceChange) -> Outcome:
    """A CarrierService callback's verdict on one awaiting change."""
    step = ch.current_step(change)
    log = callback_log(message, change)
    if message.succeeded:
        facts = CarrierFacts(msisdn=message.msisdn or message.mdn, ip_address=message.ip_address)
        return Outcome(change.id, Kind.DONE, f"{step.value.lower()} confirmed by callback", facts=facts, logs=[log])
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
        f"carrier refused {step.value.lower()} [{code}]: {message.fault_string or ''}".strip(),
        code=code,
        terminal=ChangeStatus.ERROR if not isinstance(error, cerr.TransientError) else ChangeStatus.API_FAILED,
        logs=[log],
    )


def insert_callback(
    session: Session, payload: dict[str, Any], message: CallbackMessage, *, service_provider_id: int | None
) -> ThingSpaceCallBackResponseLog | None:
    """Record the callback, deduplicated by requestId + device; None for a duplicate (a replay changes nothing)."""
    row = ThingSpaceCallBackResponseLog(
        request_id=message.request_id or "",
        iccid=message.iccid or "",
        api_status=message.status,
        api_response=json.dumps(_without_credentials(payload)),
        service_provider_id=service_provider_id,
    )
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
    except IntegrityError:
        return None
    return row


def insert_callbacks(
    session: Session, items: Sequence[tuple[dict[str, Any], CallbackMessage, int | None]]
) -> list[int | None]:
    """Record many callbacks at once (a receiver's group commit); per item the stored row's id, or None for
    a duplicate — of a stored callback or of an earlier item of the same batch.

    SQLite and PostgreSQL: INSERT … ON CONFLICT DO NOTHING RETURNING, so a callback another receiver stored
    meanwhile is simply not returned. The rows go as parameters of one statement (SQLAlchemy batches them
    into multi-row INSERTs itself, "insertmanyvalues"), not as literal VALUES: a VALUES clause of a new
    length was compiled afresh for every group commit, ~20 % of the receiver's CPU per callback.
    Elsewhere (SQL Server): the stored ones are read first and the rest inserted; should another receiver
    insert one in between, the batch falls back to one savepoint per callback — slower, same answer.
    """
    keys = [(message.request_id or "", message.iccid or "") for _, message, _ in items]
    received = utcnow()
    first: dict[tuple[str, str], int] = {}
    for position, key in enumerate(keys):
        first.setdefault(key, position)
    dialect = session.get_bind().dialect.name
    upsert = dialect in ("sqlite", "postgresql")
    stored = set() if upsert else _stored_keys(session, list(first))
    fresh = [(key, position) for key, position in first.items() if key not in stored]
    ids: list[int | None] = [None] * len(items)
    if not fresh:
        return ids
    c = _CALLBACK_TABLE.c
    rows = []
    for (request_id, iccid), position in fresh:
        payload, message, provider_id = items[position]
        rows.append(
            {
                c.RequestId.key: request_id,
                c.ICCID.key: iccid,
                c.APIStatus.key: message.status,
                c.APIResponse.key: json.dumps(_without_credentials(payload)),
                c.ServiceProviderId.key: provider_id,
                c.ReceivedDate.key: received,
            }
        )
    if upsert:
        unique = [c.RequestId, c.ICCID]
        statement = (
            postgresql_insert(_CALLBACK_TABLE).on_conflict_do_nothing(index_elements=unique)
            if dialect == "postgresql"
            else sqlite_insert(_CALLBACK_TABLE).on_conflict_do_nothing(index_elements=unique)
        )
        returned = session.execute(statement.returning(c.id, c.RequestId, c.ICCID), rows)
        for row_id, request_id, iccid in returned.all():
            ids[first[(request_id, iccid)]] = int(row_id)
        return ids
    try:
        with session.begin_nested():
            new_ids = session.execute(insert(_CALLBACK_TABLE).returning(c.id, sort_by_parameter_order=True), rows)
            for (_, position), new_id in zip(fresh, new_ids.scalars().all(), strict=True):
                ids[position] = int(new_id)
    except IntegrityError:  # a concurrent receiver stored one of them first
        for _, position in fresh:
            payload, message, provider_id = items[position]
            row = insert_callback(session, payload, message, service_provider_id=provider_id)
            ids[position] = None if row is None else row.id
    return ids


_CALLBACK_TABLE = cast(Table, ThingSpaceCallBackResponseLog.__table__)


def _stored_keys(session: Session, keys: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
    """Which (requestId, ICCID) pairs of ``keys`` are already stored (one read per 500 keys)."""
    wanted = sorted(set(keys))
    found: set[tuple[str, str]] = set()
    table = ThingSpaceCallBackResponseLog
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        for request_id, iccid in session.execute(
            select(table.request_id, table.iccid).where(
                table.request_id.in_({r for r, _ in chunk}), table.iccid.in_({i for _, i in chunk})
            )
        ).all():
            found.add((request_id, iccid))
    return found.intersection(wanted)


def pending_callbacks(session: Session, *, limit: int, after_id: int = 0) -> list[ThingSpaceCallBackResponseLog]:
    """Stored callbacks not yet applied, oldest first from ``after_id`` (PostgreSQL: rows another applier
    holds are skipped)."""
    query = (
        select(ThingSpaceCallBackResponseLog)
        .where(ThingSpaceCallBackResponseLog.outcome.is_(None), ThingSpaceCallBackResponseLog.id > after_id)
        .order_by(ThingSpaceCallBackResponseLog.id)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    return list(session.execute(query).scalars())


def any_pending_callback(session: Session, *, after_id: int = 0) -> bool:
    """Is any stored callback above ``after_id`` not yet applied? One index probe, no lock taken."""
    table = ThingSpaceCallBackResponseLog
    query = select(table.id).where(table.outcome.is_(None), table.id > after_id).limit(1)
    return session.execute(query).first() is not None


class Binding(StrEnum):
    """How a stored callback relates to the change it names (``match_callbacks``)."""

    VERDICT = "verdict"  # the URL's provider, the change's requestId and its current step: it settles it
    READ = "read"  # the change has no requestId (outcome unknown): only a carrier read may settle it
    WRONG_STEP = "wrong_step"  # the change's requestId, but the callback answers another operation


@dataclass(frozen=True)
class CallbackMatch:
    stored: ThingSpaceCallBackResponseLog
    message: CallbackMessage
    change: M2MDeviceChange | None  # None: no change of the callback's provider awaits it (yet)
    binding: Binding | None


def answers_step(message: CallbackMessage, change: M2MDeviceChange) -> bool:
    """Does the callback answer the change's current step? A success names its operation
    (``deviceResponse.<operation>Response``); a refusal names none, and then the requestId — recorded per
    step and cleared when the change moves on (``changes.advance``) — is what ties it to this step."""
    operation = message.operation
    return operation is None or operation.lower() == ch.current_step(change).value.lower()


def match_callbacks(session: Session, stored: Sequence[ThingSpaceCallBackResponseLog]) -> list[CallbackMatch]:
    """Pair each stored callback with the change it concerns — only among the AWAITING changes of the bulk
    changes of the callback's own provider (the provider of the URL it was posted to), for its device.

    * The change whose ``CarrierRequestId`` is the callback's requestId: a ``VERDICT`` when the callback
      answers the change's current step, else ``WRONG_STEP`` (recorded, settles nothing).
    * Failing that, the change awaiting with no requestId (a reconcile after a crash saw the step under way
      but never learnt its requestId): ``READ``. Nothing proves the callback answers that change's request,
      so it is no verdict; it only makes the carrier's view be read now, and the read decides.
    """
    iccids = sorted({s.iccid for s in stored if s.iccid and s.service_provider_id is not None})
    awaiting: dict[tuple[int, str], list[M2MDeviceChange]] = {}
    for start in range(0, len(iccids), 500):
        for waiting, provider_id in session.execute(
            select(M2MDeviceChange, DeviceBulkChange.service_provider_id)
            .join(DeviceBulkChange, DeviceBulkChange.id == M2MDeviceChange.bulk_change_id)
            .where(
                M2MDeviceChange.iccid.in_(iccids[start : start + 500]),
                M2MDeviceChange.status == ChangeStatus.AWAITING_RESULT.value,
            )
            .order_by(M2MDeviceChange.id)
        ).all():
            awaiting.setdefault((int(provider_id), waiting.iccid), []).append(waiting)
    matches: list[CallbackMatch] = []
    taken: set[int] = set()
    for row in stored:
        message = CallbackMessage.model_validate_json(row.api_response)
        key = (row.service_provider_id or 0, row.iccid)
        candidates = [c for c in awaiting.get(key, []) if c.id not in taken]
        exact = next((c for c in candidates if c.carrier_request_id == row.request_id), None)
        unknown = next((c for c in candidates if c.carrier_request_id is None), None)
        change = exact or unknown
        binding = None
        if exact is not None:
            binding = Binding.VERDICT if answers_step(message, exact) else Binding.WRONG_STEP
        elif unknown is not None:
            binding = Binding.READ
        if change is not None:
            taken.add(change.id)
        matches.append(CallbackMatch(row, message, change, binding))
    return matches


def callback_log(message: CallbackMessage, change: M2MDeviceChange, note: str | None = None) -> LogEntry:
    """The change's log row for a callback (``note`` says why it settled nothing, when it did not)."""
    fault = f"{message.fault_code}: {message.fault_string}" if message.fault_code else None
    return LogEntry(
        change.bulk_change_id,
        change.id,
        "ThingSpace Callback: CarrierService",
        message.succeeded and note is None,
        request_text=f"requestId {message.request_id}",
        response_text=f"status {message.status}" + (f", fault {message.fault_code}" if message.fault_code else ""),
        error_text="; ".join(t for t in (note, fault) if t) or None,
    )


def read_requested(
    session: Session, change: M2MDeviceChange, message: CallbackMessage, now: datetime
) -> LogEntry | None:
    """A callback for a change without requestId: no verdict, the device is read now (reconcile).

    The change goes back to SENDING with an expired lease nobody holds — exactly where an unknown outcome
    waits — so the next slice of its bulk change reads the device (``reconcile``/``judge_device``) and that
    read settles it, keeps it awaiting, or sends the step again after the window. None (nothing done) when
    the change, read again under a row lock, no longer awaits without requestId.
    """
    session.refresh(change, with_for_update=True)
    if change.status != ChangeStatus.AWAITING_RESULT.value or change.carrier_request_id is not None:
        return None
    ch.hold_for_reconcile(
        change,
        until=now - timedelta(seconds=1),
        details=f"a callback (requestId {message.request_id}) arrived, but this change's requestId is unknown: "
        "reading the device at the carrier",
    )
    return callback_log(message, change, "not a verdict: the change has no requestId; the carrier's view decides")


def settled_elsewhere(session: Session, stored: Sequence[ThingSpaceCallBackResponseLog]) -> dict[int, M2MDeviceChange]:
    """For stored callbacks whose change no longer awaits them (polling, a reconcile or an earlier callback
    settled it, or it moved on): callback row id -> that change, of the callback's own provider, same
    requestId and device. A callback with no such change is left out (it may be early: its change has not
    recorded the requestId yet). One read per 500 callbacks."""
    by_key = {(s.service_provider_id, s.request_id, s.iccid): s for s in stored if s.service_provider_id is not None}
    keys = sorted(by_key, key=lambda k: (k[0] or 0, k[1], k[2]))
    found: dict[int, M2MDeviceChange] = {}
    for start in range(0, len(keys), 500):
        chunk = keys[start : start + 500]
        for change, provider_id in session.execute(
            select(M2MDeviceChange, DeviceBulkChange.service_provider_id)
            .join(DeviceBulkChange, DeviceBulkChange.id == M2MDeviceChange.bulk_change_id)
            .where(
                M2MDeviceChange.carrier_request_id.in_({r for _, r, _ in chunk}),
                M2MDeviceChange.iccid.in_({i for _, _, i in chunk}),
                M2MDeviceChange.status != ChangeStatus.AWAITING_RESULT.value,
            )
            .order_by(M2MDeviceChange.id)
        ).all():
            row = by_key.get((int(provider_id), change.carrier_request_id or "", change.iccid))
            if row is None or row.id in found:
                continue
            row.m2m_device_change_id = change.id
            found[row.id] = change
    return found


def late_report(message: CallbackMessage, change: M2MDeviceChange) -> tuple[str, str | None] | None:
    """A callback that contradicts how its change was settled — a refusal (``DeviceAlreadyActive``,
    ``DeviceActivationInProgress``, …) for a PROCESSED change, a success for a failed one: (note, code).
    None when it agrees, or the change is not settled (still in flight: nothing to contradict yet)."""
    status = ChangeStatus(change.status)
    if not status.is_terminal or status is ChangeStatus.CANCELLED:
        return None
    refused = bool(message.fault_code) or (message.status or "").strip().lower() in _FAILED_STATUSES
    if status is ChangeStatus.PROCESSED and refused:
        code = cerr.strip_service_prefix(message.fault_code or "") or "Failed"
        text = (message.fault_string or "").strip()
        return f"the carrier later refused this request [{code}]{': ' + text if text else ''}", code
    if status is not ChangeStatus.PROCESSED and message.succeeded:
        return "the carrier later reported this request as successful: check the device before retrying", None
    return None


def record_late_report(session: Session, change: M2MDeviceChange, note: str, code: str | None) -> None:
    """Make a contradicting late callback visible on its change: HasErrors, LastErrorCode and a note
    appended to StatusDetails — one conditional UPDATE, so it never lands on a change that moved on."""
    values: dict[str, Any] = {
        "has_errors": True,
        "status_details": func.coalesce(M2MDeviceChange.status_details, "") + f" — {note}"[:1000],
    }
    if code:
        values["last_error_code"] = code
    session.execute(
        update(M2MDeviceChange)
        .where(M2MDeviceChange.id == change.id, M2MDeviceChange.status == change.status)
        .values(**values)
        .execution_options(synchronize_session=False)
    )


def settled_its_change(row: ThingSpaceCallBackResponseLog) -> bool:
    """Did this stored callback settle (or at least decide about) its change — rather than being recorded
    against it as late, for another step, or as a mere reason to read the device?"""
    outcome = row.outcome or ""
    return row.m2m_device_change_id is not None and not outcome.startswith(("not ", "unmatched"))


def _without_credentials(payload: dict[str, Any]) -> dict[str, Any]:
    """The callback as stored: ThingSpace echoes our listener's username/password in it; never keep those."""
    return {k: ("***" if k.lower() in {"username", "password"} and v else v) for k, v in payload.items()}
