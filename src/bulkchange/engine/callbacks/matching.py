"""Which change a stored callback concerns, and what it may do to it.

A callback settles a change only if it was posted to the change's own provider's URL, names the change's
``CarrierRequestId`` and answers the change's current step. A change whose requestId is unknown (the
outcome of its request was unknown after a crash) is never settled by a callback: the callback only makes
its device be read now, and the read decides. A callback that comes after its change was settled is
recorded on the change's log, and flagged on the change when it contradicts how it was settled.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from bulkchange.carrier.port import CallbackReport
from bulkchange.domain.outcomes import LogEntry
from bulkchange.domain.statuses import ChangeStatus
from bulkchange.engine import changes as ch
from bulkchange.store.tables import M2MDeviceChange, ThingSpaceCallBackResponseLog

ReadCallback = Callable[[str], CallbackReport]
DESCRIPTION = "ThingSpace Callback: CarrierService"


class Binding(StrEnum):
    """How a stored callback relates to the change it names (``match_callbacks``)."""

    VERDICT = "verdict"  # the URL's provider, the change's requestId and its current step: it settles it
    READ = "read"  # the change has no requestId (outcome unknown): only a carrier read may settle it
    WRONG_STEP = "wrong_step"  # the change's requestId, but the callback answers another operation


@dataclass(frozen=True)
class CallbackMatch:
    stored: ThingSpaceCallBackResponseLog
    report: CallbackReport
    change: M2MDeviceChange | None  # None: no change of the callback's provider awaits it (yet)
    binding: Binding | None


def answers_step(report: CallbackReport, change: M2MDeviceChange) -> bool:
    """Does the callback answer the change's current step? A success names its operation; a refusal may
    name none, and then the requestId — recorded per step, cleared when the change moves on — ties it."""
    return report.operation is None or report.operation.upper() == ch.current_step(change).upper()


def match_callbacks(
    session: Session, stored: Sequence[ThingSpaceCallBackResponseLog], read: ReadCallback
) -> list[CallbackMatch]:
    """Pair each stored callback with the change it concerns, among the AWAITING changes of the callback's own
    provider for its device: the one with its requestId (``VERDICT``, or ``WRONG_STEP``), else the one awaiting
    with no requestId (``READ``)."""
    iccids = sorted({s.iccid for s in stored if s.iccid and s.service_provider_id is not None})
    awaiting: dict[tuple[int, str], list[M2MDeviceChange]] = {}
    for start in range(0, len(iccids), 500):
        for waiting in session.execute(
            select(M2MDeviceChange)
            .where(
                M2MDeviceChange.iccid.in_(iccids[start : start + 500]),
                M2MDeviceChange.status == ChangeStatus.AWAITING_RESULT.value,
            )
            .order_by(M2MDeviceChange.id)
        ).scalars():
            awaiting.setdefault((waiting.service_provider_id, waiting.iccid), []).append(waiting)
    matches: list[CallbackMatch] = []
    taken: set[int] = set()
    for row in stored:
        report = read(row.api_response)
        candidates = [c for c in awaiting.get((row.service_provider_id or 0, row.iccid), []) if c.id not in taken]
        exact = next((c for c in candidates if c.carrier_request_id == row.request_id), None)
        unknown = next((c for c in candidates if c.carrier_request_id is None), None)
        binding = None
        if exact is not None:
            binding = Binding.VERDICT if answers_step(report, exact) else Binding.WRONG_STEP
        elif unknown is not None:
            binding = Binding.READ
        change = exact or unknown
        if change is not None:
            taken.add(change.id)
        matches.append(CallbackMatch(row, report, change, binding))
    return matches


def callback_log(report: CallbackReport, change: M2MDeviceChange, note: str | None = None) -> LogEntry:
    """The change's log row for a callback (``note`` says why it settled nothing, when it did not)."""
    fault = f"{report.code}: {report.text}" if report.code else None
    return LogEntry(
        change.bulk_change_id,
        change.id,
        DESCRIPTION,
        report.succeeded and note is None,
        request_text=f"requestId {report.request_id}",
        response_text=f"status {report.status}" + (f", fault {report.code}" if report.code else ""),
        error_text="; ".join(t for t in (note, fault) if t) or None,
    )


def read_requested(session: Session, change: M2MDeviceChange, report: CallbackReport, now: datetime) -> LogEntry | None:
    """A callback for a change without requestId: no verdict, the device is read now (reconcile).

    The change goes back to SENDING with an expired lease nobody holds — exactly where an unknown outcome
    waits — so the next slice of its bulk change reads the device and that read settles it. None (nothing
    done) when the change, read again under a row lock, no longer awaits without requestId.
    """
    session.refresh(change, with_for_update=True)
    if change.status != ChangeStatus.AWAITING_RESULT.value or change.carrier_request_id is not None:
        return None
    ch.hold_for_reconcile(
        change,
        until=now - timedelta(seconds=1),
        details=f"a callback (requestId {report.request_id}) arrived, but this change's requestId is unknown: "
        "reading the device at the carrier",
    )
    return callback_log(report, change, "not a verdict: the change has no requestId; the carrier's view decides")


def settled_elsewhere(session: Session, stored: Sequence[ThingSpaceCallBackResponseLog]) -> dict[int, M2MDeviceChange]:
    """For stored callbacks whose change no longer awaits them (a check, a reconcile or an earlier callback
    settled it, or it moved on): callback row id → that change (its provider, requestId and device). A
    callback with no such change is left out: it may be early (its change has not recorded the requestId)."""
    by_key = {(s.service_provider_id, s.request_id, s.iccid): s for s in stored if s.service_provider_id is not None}
    keys = sorted(by_key, key=lambda k: (k[0] or 0, k[1], k[2]))
    found: dict[int, M2MDeviceChange] = {}
    for start in range(0, len(keys), 500):
        chunk = keys[start : start + 500]
        for change in session.execute(
            select(M2MDeviceChange)
            .where(
                M2MDeviceChange.carrier_request_id.in_({r for _, r, _ in chunk}),
                M2MDeviceChange.iccid.in_({i for _, _, i in chunk}),
                M2MDeviceChange.status != ChangeStatus.AWAITING_RESULT.value,
            )
            .order_by(M2MDeviceChange.id)
        ).scalars():
            row = by_key.get((change.service_provider_id, change.carrier_request_id or "", change.iccid))
            if row is None or row.id in found:
                continue
            row.m2m_device_change_id = change.id
            found[row.id] = change
    return found


def late_report(report: CallbackReport, change: M2MDeviceChange) -> tuple[str, str | None] | None:
    """A callback that contradicts how its change was settled — a refusal (``DeviceAlreadyActive`` …) for a
    PROCESSED change, a success for a failed one: (note, code). None when it agrees, or the change is not
    settled yet (nothing to contradict)."""
    status = ChangeStatus(change.status)
    if not status.is_terminal or status is ChangeStatus.CANCELLED:
        return None
    if status is ChangeStatus.PROCESSED and report.refused:
        code = report.code or "Failed"
        text = report.text or ""
        return f"the carrier later refused this request [{code}]{': ' + text if text else ''}", code
    if status is not ChangeStatus.PROCESSED and report.succeeded:
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
