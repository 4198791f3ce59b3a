"""Control Center's local table once steps took effect: ``JasperDevice``, one row per service provider + ICCID.

The carrier's own view of the device as the verification read (Get Device Details) reported it: the
Control Center status (``ACTIVATED`` …, in the carrier's words), MSISDN, IMEI, rate plan and communication
plan. A value the carrier did not report never blanks one we know; when no read came with the update (a
step settled without one), the status the step set and the plans the request named stand in for it. The
store adds the audit columns (CreatedBy / CreatedDate / ModifiedBy / ModifiedDate / IsActive / IsDeleted).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from bulkchange.carrier.controlcenter.steps import Step, cc_status, step_of
from bulkchange.carrier.port import CarrierAccount, ChangeView
from bulkchange.domain.outcomes import CarrierFacts, TableRows

DEVICE_TABLE = "JasperDevice"


def device_row(change: ChangeView, facts: CarrierFacts) -> dict[str, Any]:
    """The JasperDevice columns one update writes."""
    step = step_of(change.step)
    r = change.request.request
    status = facts.carrier_status or (cc_status(change.target) if step is Step.STATUS else None)
    rate_plan = facts.rate_plan or (r.rate_plan if step is Step.STATUS else None)
    communication_plan = facts.communication_plan or (r.communication_plan if step is Step.STATUS else None)
    values = {
        "Status": status,
        "MSISDN": facts.msisdn,
        "IMEI": facts.imei or change.imei,
        "RatePlan": rate_plan,
        "CommunicationPlan": communication_plan,
    }
    return {column: value for column, value in values.items() if value}


def mirror_rows(
    account: CarrierAccount, updates: Sequence[tuple[ChangeView, CarrierFacts]], *, now: datetime
) -> list[TableRows]:
    """The JasperDevice rows of ``updates``, keyed by ICCID (a device named twice: the last one wins)."""
    rows: dict[str, dict[str, Any]] = {}
    for change, facts in updates:
        rows[change.iccid] = device_row(change, facts)
    return [TableRows(DEVICE_TABLE, rows, insert_description="Insert Jasper Device: AMOP DB")]
