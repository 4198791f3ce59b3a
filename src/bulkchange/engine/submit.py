"""Submitting a bulk change: read the rows, validate every one, then create everything or nothing.

A row that cannot succeed is refused here, not discovered later (decisions.md): bad ICCID or IMEI, unknown
status, ``active`` without IMEI or SKU, an activation without service plan or zip code, duplicates, a device
of another provider, a device already in another unfinished change, a transition the matrix forbids.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from bulkchange.domain.change_request import StatusUpdateRequest
from bulkchange.domain.identifiers import iccid_problem, imei_problem
from bulkchange.domain.plan import CarrierStep, plan_for
from bulkchange.domain.statuses import (
    DEVICE_STATUS_NAMES,
    IN_FLIGHT_CHANGE_STATUSES,
    RESULT_DEVICE_STATUS,
    BulkStatus,
    ChangeStatus,
    TargetStatus,
)
from bulkchange.domain.transitions import transition_problem
from bulkchange.engine.batching import batch_key
from bulkchange.integrations.validation import AdditionalStepChecker, split_list
from bulkchange.queue.base import Transport
from bulkchange.queue.message import BulkChangeMessage
from bulkchange.store.tables import Device, DeviceBulkChange, M2MDeviceChange, ServiceProvider, utcnow

# Input column names (any case) → the change request's Request field names.
_FIELD_ALIASES = {
    "iccid": "ICCID",
    "imei": "IMEI",
    "serviceplan": "RatePlanCode",
    "rateplancode": "RatePlanCode",
    "rateplan": "RatePlanCode",
    "mdnzipcode": "MdnZipCode",
    "zipcode": "MdnZipCode",
    "zip": "MdnZipCode",
    "reasoncode": "ReasonCode",
    "etfwaiver": "EtfWaiver",
    "skunumber": "SkuNumber",
    "sku": "SkuNumber",
    "publiciprestriction": "PublicIpRestriction",
    "revaccountnumber": "RevAccountNumber",
}
_REV_FIELDS = {
    "revcustomerid": "RevCustomerId",
    "servicetypeid": "ServiceTypeId",
    "providerid": "ProviderId",
    "prorate": "Prorate",
    "effectivedate": "EffectiveDate",
    "activateddate": "ActivatedDate",
    "usageplangroupid": "UsagePlanGroupId",
    "revpackageid": "RevPackageId",
    "revproductid": "RevProductId",
    "rate": "Rate",
    "description": "Description",
    "revproductidlist": "RevProductIdList",
    "ratelist": "RateList",
}
_REV_LIST_FIELDS = {"RevProductIdList", "RateList"}
_TOP_FIELDS = {
    "customerrateplan": "CustomerRatePlan",
    "status": "UpdateStatus",
    "updatestatus": "UpdateStatus",
    "integrationauthenticationid": "IntegrationAuthenticationId",
}


@dataclass(frozen=True)
class RowProblem:
    row: int  # 1-based data row number (CSV header not counted)
    field: str
    message: str
    iccid: str | None = None


@dataclass
class SubmitReport:
    """Why a submission was refused (empty ``problems`` means accepted)."""

    problems: list[RowProblem] = field(default_factory=list)
    rows: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


class SubmissionRefused(Exception):
    def __init__(self, report: SubmitReport) -> None:
        super().__init__(f"{len(report.problems)} problem(s) in {report.rows} row(s); nothing was created")
        self.report = report


def read_rows(path: Path) -> list[dict[str, Any]]:
    """CSV (header row) or JSON (a list of objects, or {"rows": [...]}) into a list of dicts."""
    raw = path.read_bytes()
    text = raw.decode("utf-8-sig")
    if path.suffix.lower() == ".json" or text.lstrip().startswith(("[", "{")):
        data = json.loads(text)
        if isinstance(data, dict):
            data = data.get("rows", data.get("devices"))
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise ValueError('JSON input must be a list of objects or {"rows": [...]}')
        return [dict(r) for r in data]
    return [dict(r) for r in csv.DictReader(io.StringIO(text))]


def _norm(key: str) -> str:
    return key.replace("_", "").replace(" ", "").replace("-", "").lower()


def build_request(raw: dict[str, Any], *, status: str, ignore_current_status: bool) -> StatusUpdateRequest:
    """One input row as the stored change request (original JSON names)."""
    request: dict[str, Any] = {}
    rev: dict[str, Any] = {}
    top: dict[str, Any] = {"UpdateStatus": status, "IsIgnoreCurrentStatus": ignore_current_status}
    for key, value in raw.items():
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        k = _norm(str(key))
        if k in _FIELD_ALIASES:
            request[_FIELD_ALIASES[k]] = str(value).strip() if not isinstance(value, bool) else value
        elif k in _REV_FIELDS:
            name = _REV_FIELDS[k]
            rev[name] = split_list(value) if name in _REV_LIST_FIELDS else value
        elif k in _TOP_FIELDS:
            top[_TOP_FIELDS[k]] = value
        elif k == "isignorecurrentstatus":
            top["IsIgnoreCurrentStatus"] = str(value).strip().lower() in {"1", "true", "yes"}
    top["Request"] = request
    if rev:
        top["RevService"] = rev
    return StatusUpdateRequest.model_validate(top)


@dataclass(frozen=True)
class ValidRow:
    request: StatusUpdateRequest
    target: TargetStatus
    plan: list[CarrierStep]


def validate_rows(
    session: Session, rows: list[dict[str, Any]], *, status: str, service_provider_id: int, ignore_current_status: bool
) -> tuple[list[ValidRow], SubmitReport]:
    """Check every row; return the valid ones and a report of every problem (all rows are checked)."""
    report = SubmitReport(rows=len(rows))
    valid: list[ValidRow] = []
    if not rows:
        report.problems.append(RowProblem(0, "file", "no rows"))
        return valid, report
    seen: dict[str, int] = {}
    parsed: list[tuple[int, StatusUpdateRequest, TargetStatus]] = []
    for number, raw in enumerate(rows, start=1):
        try:
            req = build_request(raw, status=status, ignore_current_status=ignore_current_status)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            report.problems.append(RowProblem(number, where or "row", first["msg"]))
            continue
        iccid = req.request.iccid
        try:
            target = TargetStatus.parse(req.update_status)
        except ValueError as exc:
            report.problems.append(RowProblem(number, "status", str(exc), iccid))
            continue
        row_problems: list[RowProblem] = []
        if problem := iccid_problem(iccid):
            row_problems.append(RowProblem(number, "ICCID", problem, iccid))
        imei = req.request.imei
        if imei and (problem := imei_problem(imei)):
            row_problems.append(RowProblem(number, "IMEI", problem, iccid))
        ignore = req.is_ignore_current_status
        try:
            plan = plan_for(
                target, ignore_current_status=ignore, has_imei=bool(imei), has_sku=bool(req.request.sku_number)
            )
        except ValueError as exc:
            row_problems.append(RowProblem(number, "IMEI", str(exc), iccid))
            plan = []
        if CarrierStep.ACTIVATE in plan:
            if not req.request.rate_plan_code:
                row_problems.append(RowProblem(number, "ServicePlan", "activation needs a service plan", iccid))
            if not req.request.zip_for_activation:
                row_problems.append(RowProblem(number, "MdnZipCode", "activation needs an MDN zip code", iccid))
        if iccid in seen:
            row_problems.append(RowProblem(number, "ICCID", f"duplicate of row {seen[iccid]}", iccid))
        else:
            seen[iccid] = number
        if row_problems:
            report.problems.extend(row_problems)
            continue
        parsed.append((number, req, target))
        valid.append(ValidRow(req, target, plan))

    # Checks against the database, in chunks (no per-row round trip).
    iccids = [req.request.iccid for _, req, _ in parsed]
    local: dict[str, Device] = {}
    foreign: dict[str, int] = {}
    busy: dict[str, int] = {}
    for start in range(0, len(iccids), 500):
        chunk = iccids[start : start + 500]
        for known in session.execute(
            select(Device).where(Device.iccid.in_(chunk), Device.is_deleted.is_(False))
        ).scalars():
            if known.service_provider_id == service_provider_id:
                local[known.iccid] = known
            else:
                foreign[known.iccid] = known.service_provider_id
        for iccid, bulk_id in session.execute(
            select(M2MDeviceChange.iccid, M2MDeviceChange.bulk_change_id)
            .join(DeviceBulkChange, DeviceBulkChange.id == M2MDeviceChange.bulk_change_id)
            .where(
                M2MDeviceChange.iccid.in_(chunk),
                M2MDeviceChange.status.in_([s.value for s in IN_FLIGHT_CHANGE_STATUSES]),
                DeviceBulkChange.service_provider_id == service_provider_id,
            )
        ).all():
            busy[iccid] = bulk_id
    kept: list[ValidRow] = []
    additional_steps = AdditionalStepChecker(session)
    for (number, req, target), row in zip(parsed, valid, strict=True):
        iccid = req.request.iccid
        if iccid in foreign:
            report.problems.append(
                RowProblem(number, "ICCID", f"device belongs to another service provider ({foreign[iccid]})", iccid)
            )
            continue
        if iccid in busy:
            report.problems.append(
                RowProblem(
                    number, "ICCID", f"device already has an unfinished change in bulk change {busy[iccid]}", iccid
                )
            )
            continue
        device = local.get(iccid)
        current = DEVICE_STATUS_NAMES.get(device.device_status_id) if device and device.device_status_id else None
        if problem := transition_problem(current, target, ignore_current_status=req.is_ignore_current_status):
            report.problems.append(RowProblem(number, "status", problem, iccid))
            continue
        # Additional steps (issue 4): customer rate plan and Rev.io billing fields, checked up front.
        checked, step_problems = additional_steps.check(req)
        if step_problems:
            report.problems.extend(RowProblem(number, f, m, iccid) for f, m in step_problems)
            continue
        kept.append(ValidRow(checked, row.target, row.plan) if checked is not req else row)
    return kept, report


def create_bulk_change(
    session: Session,
    transport: Transport,
    rows: list[dict[str, Any]],
    *,
    status: str,
    service_provider_id: int,
    ignore_current_status: bool = False,
    created_by: str = "bulkchange",
) -> int:
    """Validate and create the bulk change, its device changes and its first message; return its id.

    Raises ``SubmissionRefused`` (nothing created) when any row is invalid.
    """
    provider = session.get(ServiceProvider, service_provider_id)
    if provider is None or provider.is_deleted:
        raise SubmissionRefused(
            SubmitReport([RowProblem(0, "service_provider", f"no service provider {service_provider_id}")])
        )
    valid, report = validate_rows(
        session,
        rows,
        status=status,
        service_provider_id=service_provider_id,
        ignore_current_status=ignore_current_status,
    )
    if not report.ok:
        session.rollback()
        raise SubmissionRefused(report)
    now = utcnow()
    bulk = DeviceBulkChange(
        tenant_id=provider.tenant_id,
        service_provider_id=service_provider_id,
        change_request_type="StatusUpdate",
        status=BulkStatus.NEW.value,
        created_by=created_by,
        created_date=now,
        next_wake_at=now,
        status_details=f"{len(valid)} READY",
    )
    session.add(bulk)
    session.flush()
    records = []
    for row in valid:
        req = row.request
        req_json = req.model_copy(update={"post_update_status_id": RESULT_DEVICE_STATUS[row.target]}).to_json()
        records.append(
            {
                "bulk_change_id": bulk.id,
                "iccid": req.request.iccid,
                "imei": req.request.imei,
                "device_identifier": req.request.iccid,
                "status": ChangeStatus.READY.value,
                "change_request": req_json,
                "target_status": row.target.value,
                "plan": ",".join(s.value for s in row.plan),
                "step_index": 0,
                "attempt_count": 0,
                "batch_key": batch_key(row.plan[0], req),
                "created_by": created_by,
                "created_date": now,
                "is_processed": False,
                "has_errors": False,
                "is_active": True,
                "is_deleted": False,
                "solo": False,
            }
        )
    session.execute(insert(M2MDeviceChange), records)
    session.commit()
    # After the commit (the row is the truth): if this send is lost, the worker's recovery sweep wakes it.
    transport.send(BulkChangeMessage(bulk_change_id=bulk.id, service_provider_id=service_provider_id))
    return bulk.id
