"""Submitting a bulk change: read the rows, validate every one, then create everything or nothing.

A row that cannot succeed is refused here, not discovered later (decisions.md): bad ICCID or IMEI, unknown
status, ``active`` without IMEI or SKU, an activation without service plan or zip code, duplicates, a device
of another provider, a device already in another unfinished change, a transition the matrix forbids.

Every lookup is confined to the tenant of the bulk change's service provider: another tenant's devices,
customer rate plans and Rev.io credentials are answered exactly as ones that do not exist.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from itertools import islice
from pathlib import Path
from typing import Any, TextIO

import structlog
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, OperationalError
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
from bulkchange.engine.outbox import add_wakeup, send_after_commit
from bulkchange.integrations.validation import AdditionalStepChecker, split_list
from bulkchange.queue.base import Transport
from bulkchange.queue.message import BulkChangeMessage
from bulkchange.store.constraints import is_deadlock, violates
from bulkchange.store.core import insert_rows
from bulkchange.store.tables import (
    UNFINISHED_CHANGE_INDEX,
    Device,
    DeviceBulkChange,
    M2MDeviceChange,
    ServiceProvider,
    utcnow,
)

log = structlog.get_logger("bulkchange.submit")

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


#: Rows checked and inserted together: one query of each database check and one INSERT per chunk.
CHUNK_ROWS = 1000
#: Problems a report keeps in full; the others are only counted, so refusing a large file of bad rows stays
#: small in memory and in the answer (the first ones show what to fix).
MAX_PROBLEMS_KEPT = 1000


@dataclass
class SubmitReport:
    """Why a submission was refused (no problem at all means accepted).

    ``problems`` holds the first ``MAX_PROBLEMS_KEPT`` problems; ``omitted`` counts the ones after them.
    """

    problems: list[RowProblem] = field(default_factory=list)
    rows: int = 0
    omitted: int = 0
    file_refused: bool = False  # refused as a whole (e.g. too many rows): no row was fully checked

    @property
    def ok(self) -> bool:
        return not self.problems and not self.omitted

    @property
    def problem_count(self) -> int:
        return len(self.problems) + self.omitted

    def add(self, problems: list[RowProblem]) -> None:
        """Keep the first problems in full, count the rest."""
        room = max(0, MAX_PROBLEMS_KEPT - len(self.problems))
        self.problems.extend(problems[:room])
        self.omitted += max(0, len(problems) - room)

    def refuse_file(self, message: str) -> None:
        """The file as a whole is refused: that one problem replaces any found in its rows so far."""
        self.problems = [RowProblem(0, "file", message)]
        self.omitted = 0
        self.file_refused = True


class SubmissionRefused(Exception):
    def __init__(self, report: SubmitReport) -> None:
        super().__init__(f"{report.problem_count} problem(s) in {report.rows} row(s); nothing was created")
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


def read_rows(path: Path, *, max_bytes: int | None = None, max_rows: int | None = None) -> Iterator[dict[str, Any]]:
    """CSV (header row) or JSON (a list of objects, or {"rows": [...]}): the rows as dicts, one at a time.

    Bounded memory: a file over ``max_bytes`` (``BULKCHANGE_MAX_UPLOAD_BYTES``) is refused before it is read;
    the rows are counted in a streaming first pass, here, and a file of more than ``max_rows``
    (``BULKCHANGE_MAX_ROWS_PER_BULK_CHANGE``) is refused before any row is kept. UTF-8 (with or without a
    BOM) and UTF-16 with a BOM are read; anything else, and NUL bytes, are refused naming the line. The
    first pass reads the whole file, so a bad file is refused by this call, before anything is created;
    the returned iterator reads it again and keeps one row at a time (it raises only if the file changed).
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
    return _rows(path, encoding, as_json=as_json, keep=True)


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
    row: int = 0  # its 1-based row number in the file (names it in a refusal found at insert time)


@dataclass(frozen=True)
class CheckedChunk:
    """One chunk of input rows after every check: what may be created, and every problem of these rows."""

    rows: list[tuple[int, Any]]  # (1-based row number, the row as read)
    valid: list[ValidRow]
    problems: list[RowProblem]  # all of them (the report may keep fewer)


@dataclass(frozen=True)
class _Parsed:
    number: int
    row: ValidRow


@dataclass
class _DatabaseFacts:
    """What the database says about one chunk's ICCIDs."""

    current: dict[str, int | None] = field(default_factory=dict)  # ours: ICCID → DeviceStatusId
    # Another provider of the same tenant: ICCID → its id. Another tenant's devices are never read: they
    # are answered exactly as unknown devices (no existence, no provider id leaks across tenants).
    foreign: dict[str, int] = field(default_factory=dict)
    busy: dict[str, int] = field(default_factory=dict)  # in an unfinished change: ICCID → bulk change id


class RowValidator:
    """Checks rows chunk by chunk, keeping across chunks only what must span the whole file.

    That is the ICCID → first row number map of the duplicate check and the lookup tables of the additional
    steps; everything else (parsed requests, Device rows) lives only as long as its chunk, so memory does not
    grow with the file beyond that map.
    """

    def __init__(self, session: Session, *, status: str, service_provider_id: int, ignore_current_status: bool) -> None:
        self.session = session
        self.status = status
        self.service_provider_id = service_provider_id
        self.ignore_current_status = ignore_current_status
        self.first_row: dict[str, int] = {}
        # Everything a row is checked against is the tenant's own (an unknown provider has no tenant: nothing).
        provider = session.get(ServiceProvider, service_provider_id)
        self.tenant_id = provider.tenant_id if provider is not None else None
        self.additional_steps = AdditionalStepChecker(session, self.tenant_id)

    def check(self, chunk: list[tuple[int, Any]]) -> CheckedChunk:
        """Every check of these rows: first each row on its own, then the survivors against the database."""
        problems: list[RowProblem] = []
        parsed: list[_Parsed] = []
        for number, raw in chunk:
            row, row_problems = self._check_row(number, raw)
            problems.extend(row_problems)
            if row is not None:
                parsed.append(_Parsed(number, row))
        valid = self._check_against_database(parsed, problems)
        return CheckedChunk(chunk, valid, problems)

    def _check_row(self, number: int, raw: Any) -> tuple[ValidRow | None, list[RowProblem]]:
        """The checks one row needs nobody else for (and the duplicate check, which only needs the map)."""
        if not isinstance(raw, dict):
            return None, [RowProblem(number, "row", f"a row must be an object, got {type(raw).__name__}")]
        if formulas := formula_problems(number, raw):
            return None, formulas
        try:
            req = build_request(raw, status=self.status, ignore_current_status=self.ignore_current_status)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            return None, [RowProblem(number, where or "row", first["msg"])]
        except (ValueError, TypeError) as exc:  # a value no field can hold (defensive: nothing escapes)
            return None, [RowProblem(number, "row", str(exc)[:200])]
        iccid = req.request.iccid
        try:
            target = TargetStatus.parse(req.update_status)
        except ValueError as exc:
            return None, [RowProblem(number, "status", str(exc), iccid)]
        plan, problems = _request_problems(number, req, target)
        if iccid in self.first_row:
            problems.append(RowProblem(number, "ICCID", f"duplicate of row {self.first_row[iccid]}", iccid))
        else:
            self.first_row[iccid] = number
        return (None if problems else ValidRow(req, target, plan, number)), problems

    def _check_against_database(self, parsed: list[_Parsed], problems: list[RowProblem]) -> list[ValidRow]:
        """Provider, busy device, transition and additional-step checks: one query of each per chunk."""
        facts = self._facts([p.row.request.request.iccid for p in parsed])
        kept: list[ValidRow] = []
        for p in parsed:
            req = p.row.request
            iccid = req.request.iccid
            if iccid in facts.foreign:
                why = f"device belongs to another service provider ({facts.foreign[iccid]})"
                problems.append(RowProblem(p.number, "ICCID", why, iccid))
                continue
            if iccid in facts.busy:
                problems.append(busy_problem(p.number, iccid, facts.busy[iccid]))
                continue
            status_id = facts.current.get(iccid)
            current = DEVICE_STATUS_NAMES.get(status_id) if status_id else None
            if problem := transition_problem(current, p.row.target, ignore_current_status=req.is_ignore_current_status):
                problems.append(RowProblem(p.number, "status", problem, iccid))
                continue
            # Additional steps (issue 4): customer rate plan and Rev.io billing fields, checked up front.
            checked, step_problems = self.additional_steps.check(req)
            if step_problems:
                problems.extend(RowProblem(p.number, f, m, iccid) for f, m in step_problems)
                continue
            kept.append(ValidRow(checked, p.row.target, p.row.plan, p.number) if checked is not req else p.row)
        return kept

    def _facts(self, iccids: list[str]) -> _DatabaseFacts:
        """The local devices and unfinished changes of ``iccids`` (columns only: no ORM objects kept).

        The changes this submission inserted itself never match: a repeated ICCID is refused as a duplicate
        before it gets here.
        """
        facts = _DatabaseFacts()
        if not iccids:
            return facts
        for iccid, provider_id, status_id in self.session.execute(
            select(Device.iccid, Device.service_provider_id, Device.device_status_id)
            .join(ServiceProvider, ServiceProvider.id == Device.service_provider_id)
            .where(
                Device.iccid.in_(iccids), Device.is_deleted.is_(False), ServiceProvider.tenant_id == self.tenant_id
            )
        ).all():
            if provider_id == self.service_provider_id:
                facts.current[iccid] = status_id
            else:
                facts.foreign[iccid] = provider_id
        facts.busy = self._busy(iccids)
        return facts

    def _busy(self, iccids: list[str]) -> dict[str, int]:
        """The early, friendly check: devices already held by an unfinished change (the index is the rule)."""
        return unfinished_holders(self.session, self.service_provider_id, iccids)


def unfinished_holders(session: Session, service_provider_id: int, iccids: list[str]) -> dict[str, int]:
    """ICCID → the bulk change whose unfinished change holds the device, for those of ``iccids`` held.

    Reads what ``UX_M2M_DeviceChange_Unfinished`` covers (the same provider, an in-flight status).
    """
    if not iccids:
        return {}
    C = M2MDeviceChange
    rows = session.execute(
        select(C.iccid, C.bulk_change_id).where(
            C.service_provider_id == service_provider_id,
            C.iccid.in_(iccids),
            C.status.in_([s.value for s in IN_FLIGHT_CHANGE_STATUSES]),
        )
    ).all()
    return {iccid: bulk_id for iccid, bulk_id in rows}


def busy_problem(row: int, iccid: str, bulk_change_id: int) -> RowProblem:
    """The refusal of a row whose device is in another bulk change's unfinished change."""
    return RowProblem(row, "ICCID", f"device already has an unfinished change in bulk change {bulk_change_id}", iccid)


def _request_problems(
    number: int, req: StatusUpdateRequest, target: TargetStatus
) -> tuple[list[CarrierStep], list[RowProblem]]:
    """The carrier steps of one parsed row and what is wrong with it on its own (identifiers, plan fields)."""
    iccid = req.request.iccid
    problems: list[RowProblem] = []
    if problem := iccid_problem(iccid):
        problems.append(RowProblem(number, "ICCID", problem, iccid))
    imei = req.request.imei
    if imei and (problem := imei_problem(imei)):
        problems.append(RowProblem(number, "IMEI", problem, iccid))
    try:
        plan = plan_for(
            target,
            ignore_current_status=req.is_ignore_current_status,
            has_imei=bool(imei),
            has_sku=bool(req.request.sku_number),
        )
    except ValueError as exc:
        problems.append(RowProblem(number, "IMEI", str(exc), iccid))
        plan = []
    if CarrierStep.ACTIVATE in plan:
        if not req.request.rate_plan_code:
            problems.append(RowProblem(number, "ServicePlan", "activation needs a service plan", iccid))
        if not req.request.zip_for_activation:
            problems.append(RowProblem(number, "MdnZipCode", "activation needs an MDN zip code", iccid))
    return plan, problems


def _numbered_chunks(rows: Iterable[Any], size: int, *, stop_after: int) -> Iterator[list[tuple[int, Any]]]:
    """(row number, row) in lists of ``size``; never pulls more than ``stop_after`` rows from ``rows``."""
    chunk: list[tuple[int, Any]] = []
    for numbered in islice(enumerate(rows, start=1), stop_after):
        chunk.append(numbered)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def checked_chunks(
    session: Session,
    rows: Iterable[Any],
    report: SubmitReport,
    *,
    status: str,
    service_provider_id: int,
    ignore_current_status: bool,
    max_rows: int | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> Iterator[CheckedChunk]:
    """Read ``rows`` (any iterable, e.g. a generator over a file) and check it chunk by chunk.

    Each chunk is yielded once checked, so a caller can act on it (insert it, show it) and let it go. The
    problems go into ``report`` as they are found and ``report.rows`` counts the rows read. A file with more
    than ``max_rows`` rows (``BULKCHANGE_MAX_ROWS_PER_BULK_CHANGE``) is refused as soon as row ``max_rows + 1``
    is read — the rest is never pulled — and then the report holds that one file-level problem only, as
    before streaming: the file must be split, and its parts will be checked again.
    """
    if max_rows is None:
        from bulkchange.settings import get_settings

        max_rows = get_settings().max_rows_per_bulk_change
    validator = RowValidator(
        session, status=status, service_provider_id=service_provider_id, ignore_current_status=ignore_current_status
    )
    for chunk in _numbered_chunks(rows, chunk_rows, stop_after=max_rows + 1):
        report.rows = chunk[-1][0]
        if report.rows > max_rows:
            report.refuse_file(
                f"at least {report.rows:,} rows; the limit per bulk change is {max_rows:,} "
                "(BULKCHANGE_MAX_ROWS_PER_BULK_CHANGE): split the file"
            )
            return
        checked = validator.check(chunk)
        report.add(checked.problems)
        yield checked
    if report.rows == 0:
        report.add([RowProblem(0, "file", "no rows")])


def validate_rows(
    session: Session,
    rows: Iterable[Any],
    *,
    status: str,
    service_provider_id: int,
    ignore_current_status: bool,
    max_rows: int | None = None,
) -> tuple[list[ValidRow], SubmitReport]:
    """Check every row; return the valid ones and a report of every problem (all rows are checked).

    This keeps every valid row: for a whole-file answer on small inputs. ``create_bulk_change`` and the
    preview use ``checked_chunks`` and keep one chunk at a time.
    """
    report = SubmitReport()
    valid: list[ValidRow] = []
    for chunk in checked_chunks(
        session,
        rows,
        report,
        status=status,
        service_provider_id=service_provider_id,
        ignore_current_status=ignore_current_status,
        max_rows=max_rows,
    ):
        valid.extend(chunk.valid)
    if report.file_refused:
        valid = []
    return valid, report


def create_bulk_change(
    session: Session,
    transport: Transport,
    rows: Iterable[Any],
    *,
    status: str,
    service_provider_id: int,
    ignore_current_status: bool = False,
    created_by: str = "bulkchange",
    max_rows: int | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> int:
    """Validate and create the bulk change, its device changes and its first message; return its id.

    ``rows`` may be any iterable (a generator over a file): it is read once, a chunk at a time, and each
    chunk is checked and inserted before the next is read, so memory stays flat in the size of the file.
    Everything happens in one transaction: when any row anywhere is refused, it is rolled back and
    ``SubmissionRefused`` is raised with the report (nothing created). Any other exception (e.g. the reader
    refusing the file midway) also rolls back and propagates. The wake-up message is written in the same
    transaction and sent after the commit; a queue that refuses it then does not fail the call.

    One unfinished change per device is the database's rule (``UX_M2M_DeviceChange_Unfinished``), taken by
    each chunk's INSERT: a submission that races another for the same devices and loses is refused row by
    row like one that came second (``_insert_chunk``), never half-created.
    """
    provider = session.get(ServiceProvider, service_provider_id)
    if provider is None or provider.is_deleted:
        raise SubmissionRefused(
            SubmitReport([RowProblem(0, "service_provider", f"no service provider {service_provider_id}")])
        )
    now = utcnow()
    report = SubmitReport()
    bulk: DeviceBulkChange | None = None
    created = 0
    try:
        for chunk in checked_chunks(
            session,
            rows,
            report,
            status=status,
            service_provider_id=service_provider_id,
            ignore_current_status=ignore_current_status,
            max_rows=max_rows,
            chunk_rows=chunk_rows,
        ):
            if not report.ok or not chunk.valid:
                continue  # something was refused: nothing will be kept, only the report is completed
            if bulk is None:  # created with the first rows to insert (a file refused early never writes)
                bulk = _new_bulk_change(session, provider.tenant_id, service_provider_id, created_by, now)
            records = _change_records(bulk.id, service_provider_id, chunk.valid, created_by, now)
            if lost := _insert_chunk(session, service_provider_id, chunk.valid, records):
                report.add(lost)  # the rest of the file is still checked: the whole report, as for a second comer
                continue
            created += len(chunk.valid)
        if not report.ok or bulk is None:
            raise SubmissionRefused(report)
        bulk.status_details = f"{created} READY"
        # The wake-up is written with the bulk change (engine.outbox): it exists iff the bulk change does.
        wakeup = add_wakeup(
            session, BulkChangeMessage(bulk_change_id=bulk.id, service_provider_id=service_provider_id), now=now
        )
        session.commit()
    except BaseException:
        session.rollback()
        raise
    # After the commit nothing may fail the submission: the bulk change exists. If the queue does not take
    # the wake-up now, the row stays pending and the running workers relay it (``wakeup_pending`` tells).
    send_after_commit(session, transport, wakeup.id)
    return bulk.id


def _new_bulk_change(
    session: Session, tenant_id: int, service_provider_id: int, created_by: str, now: datetime
) -> DeviceBulkChange:
    """The DeviceBulkChange row, flushed so its changes can name it (its counts are written at the end)."""
    bulk = DeviceBulkChange(
        tenant_id=tenant_id,
        service_provider_id=service_provider_id,
        change_request_type="StatusUpdate",
        status=BulkStatus.NEW.value,
        created_by=created_by,
        created_date=now,
        next_wake_at=now,
        status_details="0 READY",
    )
    session.add(bulk)
    session.flush()
    return bulk


#: How often one chunk's INSERT is tried when it collides with a holder that is gone by the time it is read.
INSERT_ATTEMPTS = 3


def _insert_chunk(
    session: Session, service_provider_id: int, valid: list[ValidRow], records: list[dict[str, Any]]
) -> list[RowProblem]:
    """INSERT one chunk's changes under a savepoint; return the refusals if other submissions hold its devices.

    The loser of a race hears of it here: its INSERT fails on the unique index (on PostgreSQL once the
    winner has committed), the savepoint is rolled back (this transaction stays usable, and rolls back as a
    whole when the refusal is raised), and the holders — committed by now — are read to name each row, as
    the check before the insert does for a submission that came second. A deadlock with a submission
    inserting overlapping devices in another order is treated alike. Any other integrity error propagates.
    """
    for _ in range(INSERT_ATTEMPTS):
        try:
            with session.begin_nested():
                insert_rows(session, M2MDeviceChange, records)
            return []
        except IntegrityError as exc:
            if not violates(exc, UNFINISHED_CHANGE_INDEX):
                raise
        except OperationalError as exc:
            if not is_deadlock(exc):
                raise
        held = unfinished_holders(session, service_provider_id, [r.request.request.iccid for r in valid])
        if held:
            log.info(
                "submission lost a race for devices",
                service_provider_id=service_provider_id,
                devices=len(held),
                held_by=sorted(set(held.values())),
            )
            return [
                busy_problem(r.row, iccid, held[iccid]) for r in valid if (iccid := r.request.request.iccid) in held
            ]
    return [
        RowProblem(
            0,
            "file",
            "another submission is changing some of these devices at this moment; nothing was created: "
            "submit again once it is accepted",
        )
    ]


def _change_records(
    bulk_id: int, service_provider_id: int, valid: list[ValidRow], created_by: str, now: datetime
) -> list[dict[str, Any]]:
    """One chunk's M2M_DeviceChange rows, as bound parameters of one INSERT."""
    records = []
    for row in valid:
        req = row.request
        req_json = req.model_copy(update={"post_update_status_id": RESULT_DEVICE_STATUS[row.target]}).to_json()
        records.append(
            {
                "bulk_change_id": bulk_id,
                "service_provider_id": service_provider_id,
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
    return records
