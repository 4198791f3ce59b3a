"""Submitting a bulk change: read the rows, validate every one, then create everything or nothing.

A row that cannot succeed is refused here, not discovered later (decisions.md): bad ICCID or IMEI, unknown
status, ``active`` without IMEI or SKU, an activation without service plan or zip code, duplicates, a device
of another provider, a device already in another unfinished change, a transition the matrix forbids.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

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
_KEPT_COLUMNS = {*_FIELD_ALIASES, *_REV_FIELDS, *_TOP_FIELDS, "isignorecurrentstatus"}


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


class InputRefused(ValueError):
    """The file cannot be read as rows: too big, too many rows, not UTF-8 / UTF-16 text, NUL bytes, not CSV
    or JSON. ``problem`` names where (``row`` 0 / ``field`` "file" for the whole file)."""

    def __init__(self, message: str, *, row: int = 0, field: str = "file") -> None:
        super().__init__(message if row == 0 else f"row {row}, {field}: {message}")
        self.problem = RowProblem(row, field, message)


_CHUNK = 1 << 16
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
# A cell a spreadsheet would run as a formula (CSV injection) when the text is opened in one.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def read_rows(path: Path, *, max_bytes: int | None = None, max_rows: int | None = None) -> list[dict[str, Any]]:
    """CSV (header row) or JSON (a list of objects, or {"rows": [...]}) into a list of dicts.

    Bounded memory: a file over ``max_bytes`` (``BULKCHANGE_MAX_UPLOAD_BYTES``) is refused before it is read;
    the rows are counted in a streaming first pass and a file of more than ``max_rows``
    (``BULKCHANGE_MAX_ROWS_PER_BULK_CHANGE``) is refused before any row is kept. UTF-8 (with or without a
    BOM) and UTF-16 with a BOM are read; anything else, and NUL bytes, are refused naming the line.
    Raises ``InputRefused`` (a ``ValueError``) with a readable reason; nothing else escapes.
    """
    if max_bytes is None or max_rows is None:
        from bulkchange.settings import get_settings

        settings = get_settings()
        max_bytes = settings.max_upload_bytes if max_bytes is None else max_bytes
        max_rows = settings.max_rows_per_bulk_change if max_rows is None else max_rows
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise InputRefused(f"cannot read the file: {exc.strerror or exc}") from exc
    if size > max_bytes:
        raise InputRefused(
            f"the file is {size:,} bytes; the limit is {max_bytes:,} (BULKCHANGE_MAX_UPLOAD_BYTES): split it"
        )
    encoding = _encoding_of(path)
    as_json = path.suffix.lower() == ".json" or _first_char(path, encoding) in ("[", "{")
    for counted, _row in enumerate(_rows(path, encoding, as_json=as_json, keep=False), start=1):
        if counted > max_rows:
            raise InputRefused(
                f"more than {max_rows:,} rows; the limit per bulk change is {max_rows:,} "
                "(BULKCHANGE_MAX_ROWS_PER_BULK_CHANGE): split the file"
            )
    return list(_rows(path, encoding, as_json=as_json, keep=True))


def _encoding_of(path: Path) -> str:
    with path.open("rb") as f:
        head = f.read(4)
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "utf-16"  # Excel's "Unicode text"; the BOM says which byte order
    return "utf-8-sig"


def _first_char(path: Path, encoding: str) -> str:
    try:
        with path.open(encoding=encoding, errors="replace") as f:
            while chunk := f.read(4096):
                stripped = chunk.lstrip()
                if stripped:
                    return stripped[0]
    except (OSError, UnicodeError):
        return ""
    return ""


def _rows(path: Path, encoding: str, *, as_json: bool, keep: bool) -> Iterator[dict[str, Any]]:
    """The rows of the file, one at a time (``keep=False``: parsed and checked, not copied)."""
    try:
        with path.open(encoding=encoding, errors="strict", newline="") as f:
            if as_json:
                yield from _json_rows(f, keep=keep)
            else:
                yield from _csv_rows(f, keep=keep)
    except UnicodeError as exc:
        raise InputRefused(
            f"the file is not UTF-8 text ({exc.__class__.__name__}: {getattr(exc, 'reason', exc)}); "
            "save it as CSV UTF-8 or JSON"
        ) from exc
    except OSError as exc:
        raise InputRefused(f"cannot read the file: {exc.strerror or exc}") from exc


def _lines(f: TextIO) -> Iterator[str]:
    for number, line in enumerate(f, start=1):
        if "\x00" in line:
            raise InputRefused(
                f"NUL byte at line {number}: a binary file, or UTF-16 without a byte-order mark; save it as CSV UTF-8"
            )
        yield line


def _csv_rows(f: TextIO, *, keep: bool) -> Iterator[dict[str, Any]]:
    reader = csv.reader(_lines(f))
    try:
        header = next(reader, None)
        if not header or not any(h.strip() for h in header):
            raise InputRefused("the CSV file has no header row")
        for record in reader:
            if not any(cell.strip() for cell in record):
                continue  # a blank line (Excel leaves some at the end)
            yield dict(zip(header, record, strict=False)) if keep else {}
    except csv.Error as exc:
        raise InputRefused(f"line {reader.line_num}: not valid CSV: {exc}") from exc


def _json_rows(f: TextIO, *, keep: bool) -> Iterator[dict[str, Any]]:
    for number, value in _json_values(f):
        if not isinstance(value, dict):
            raise InputRefused(f"row {number} is not a JSON object", row=number, field="row")
        yield dict(value) if keep else {}


def _json_values(f: TextIO) -> Iterator[tuple[int, Any]]:
    """(row number, value) of a top-level JSON list, streamed; ``{"rows": [...]}`` is read whole (the file
    is already within the size limit)."""
    decoder = json.JSONDecoder()
    buf = ""
    pos = 0
    eof = False

    def more(size: int) -> bool:
        nonlocal buf, pos, eof
        if eof:
            return False
        data = f.read(size)
        if "\x00" in data:
            raise InputRefused("NUL byte in the JSON file; save it as UTF-8 JSON")
        if not data:
            eof = True
            return False
        buf = buf[pos:] + data
        pos = 0
        return True

    def next_char() -> str | None:
        nonlocal pos
        while True:
            while pos < len(buf) and buf[pos] in " \t\r\n":
                pos += 1
            if pos < len(buf):
                return buf[pos]
            if not more(_CHUNK):
                return None

    first = next_char()
    if first == "{":
        while more(_CHUNK):
            pass
        try:
            data = json.loads(buf[pos:])
        except (ValueError, RecursionError) as exc:
            raise InputRefused(f"the file is not valid JSON: {_json_reason(exc)}") from exc
        rows = data.get("rows", data.get("devices")) if isinstance(data, dict) else None
        if not isinstance(rows, list):
            raise InputRefused('JSON input must be a list of objects or {"rows": [...]}')
        yield from enumerate(rows, start=1)
        return
    if first != "[":
        raise InputRefused('JSON input must be a list of objects or {"rows": [...]}')
    pos += 1
    if next_char() == "]":
        pos += 1
    else:
        number = 0
        while True:
            number += 1
            next_char()  # raw_decode does not skip leading whitespace
            while True:
                try:
                    value, end = decoder.raw_decode(buf, pos)
                    break
                except RecursionError as exc:
                    raise InputRefused("nested too deeply", row=number, field="row") from exc
                except ValueError as exc:
                    if not more(max(_CHUNK, len(buf))):  # the value may continue in the next chunk
                        raise InputRefused(f"not valid JSON: {_json_reason(exc)}", row=number, field="row") from exc
            pos = end
            yield number, value
            sep = next_char()
            pos += 1
            if sep == "]":
                break
            if sep != ",":
                raise InputRefused(f"expected ',' or ']' after row {number}", row=number, field="row")
    if next_char() is not None:
        raise InputRefused("unexpected data after the JSON list")


def _json_reason(exc: BaseException) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} (line {exc.lineno}, column {exc.colno})"
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return str(exc)[:200]


def formula_problems(number: int, raw: dict[str, Any]) -> list[RowProblem]:
    """Cells of the columns bulkchange keeps that a spreadsheet would run as a formula (``=CMD|…``, ``+``,
    ``-``, ``@``): refused, so they are never stored nor exported. Numbers (``-5``) are fine."""
    problems = []
    for key, value in raw.items():
        if not isinstance(value, str) or _norm(str(key)) not in _KEPT_COLUMNS:
            continue
        text = value.strip(" ")
        if text.startswith(_FORMULA_START) and not _is_number(text):
            problems.append(
                RowProblem(number, str(key), f"looks like a spreadsheet formula (starts with {text[0]!r}); remove it")
            )
    return problems


def _is_number(text: str) -> bool:
    return _NUMBER.fullmatch(text) is not None


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
    session: Session,
    rows: list[dict[str, Any]],
    *,
    status: str,
    service_provider_id: int,
    ignore_current_status: bool,
    max_rows: int | None = None,
) -> tuple[list[ValidRow], SubmitReport]:
    """Check every row; return the valid ones and a report of every problem (all rows are checked)."""
    report = SubmitReport(rows=len(rows))
    valid: list[ValidRow] = []
    if not rows:
        report.problems.append(RowProblem(0, "file", "no rows"))
        return valid, report
    if max_rows is None:
        from bulkchange.settings import get_settings

        max_rows = get_settings().max_rows_per_bulk_change
    if len(rows) > max_rows:
        report.problems.append(
            RowProblem(
                0,
                "file",
                f"{len(rows):,} rows; the limit per bulk change is {max_rows:,} "
                "(BULKCHANGE_MAX_ROWS_PER_BULK_CHANGE): split the file",
            )
        )
        return valid, report
    seen: dict[str, int] = {}
    parsed: list[tuple[int, StatusUpdateRequest, TargetStatus]] = []
    for number, raw in enumerate(rows, start=1):
        if not isinstance(raw, dict):
            report.problems.append(RowProblem(number, "row", f"a row must be an object, got {type(raw).__name__}"))
            continue
        if formulas := formula_problems(number, raw):
            report.problems.extend(formulas)
            continue
        try:
            req = build_request(raw, status=status, ignore_current_status=ignore_current_status)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            report.problems.append(RowProblem(number, where or "row", first["msg"]))
            continue
        except (ValueError, TypeError) as exc:  # a value no field can hold (defensive: nothing escapes)
            report.problems.append(RowProblem(number, "row", str(exc)[:200]))
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
