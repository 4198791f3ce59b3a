"""What one Control Center edit carries for a change, its batch key, and the limits on an effective date.

Control Center edits one SIM per call, so a batch never shares a request; the batch key still groups
changes that send the same edit (status, plans, effective date), so one claim carries one kind of change
and its log rows read alike. The key is stored on the change row (``BatchKey``): its format must stay
stable across versions.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta

from bulkchange.carrier.controlcenter.steps import Step, cc_status
from bulkchange.carrier.port import UnsupportedTarget
from bulkchange.domain.change_request import StatusUpdateRequest
from bulkchange.domain.statuses import TargetStatus

EFFECTIVE_DATE_MAX_DAYS = 180
"""Control Center schedules a change at most this far ahead."""


@dataclass(frozen=True)
class StatusEdit:
    """The fields of one status edit (``None``: not sent)."""

    status: str
    rate_plan: str | None = None
    communication_plan: str | None = None
    effective_date: datetime | None = None

    def fields(self) -> dict[str, str]:
        """The device fields the edit sets, by their wire names (what the device must show afterwards)."""
        sent = {"status": self.status, "ratePlan": self.rate_plan, "communicationPlan": self.communication_plan}
        return {name: value for name, value in sent.items() if value is not None}


def status_edit(target: TargetStatus, request: StatusUpdateRequest, *, now: datetime) -> StatusEdit:
    """The edit for a change to ``target``. An effective date that is not in the future is left out: the
    change is due now (a date that passed while the change waited in the queue means "at once")."""
    r = request.request
    effective = r.effective_date if r.effective_date is not None and r.effective_date > now else None
    return StatusEdit(cc_status(target), r.rate_plan or None, r.communication_plan or None, effective)


def effective_date_problem(request: StatusUpdateRequest, *, now: datetime) -> str | None:
    """Why the change's EffectiveDate cannot be sent, or None (no date, or one within the carrier's limit)."""
    when = request.request.effective_date
    if when is None:
        return None
    if when > now + timedelta(days=EFFECTIVE_DATE_MAX_DAYS):
        return (
            f"EffectiveDate {when.isoformat()} is more than {EFFECTIVE_DATE_MAX_DAYS} days ahead "
            "(Control Center schedules a change at most that far)"
        )
    return None


def batch_key(step: Step, request: StatusUpdateRequest) -> str:
    """``STATUS:digest`` of the edit's fields (``RATE_PLAN``: the plan is chosen per device, so one key)."""
    if step is Step.RATE_PLAN:
        return Step.RATE_PLAN.value
    r = request.request
    try:
        status = cc_status(TargetStatus.parse(request.update_status))
    except (ValueError, UnsupportedTarget):
        status = request.update_status
    effective = r.effective_date.isoformat() if r.effective_date else None
    fields = json.dumps([status, r.rate_plan, r.communication_plan, effective])
    digest = hashlib.sha256(f"{step.value}|{fields}".encode()).hexdigest()[:40]
    return f"{step.value}:{digest}"
