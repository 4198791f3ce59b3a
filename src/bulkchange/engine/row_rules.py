"""What a row of a bulk change is, per carrier, and the checks one row needs nobody else for.

* ``RowRules`` — one carrier's vocabulary: the columns an input file may have (any case, spaces and
  underscores ignored, aliases), which change request field each column fills, and the columns each
  target status needs (the reader reports a header that lacks them once, before any row; each row missing
  a needed value is refused naming it). ``THINGSPACE`` is here; ``CONTROLCENTER`` in ``cc_row_rules``;
  ``rules_for`` picks one by carrier name.
* ``build_request`` — one row as the change request stored on ``M2M_DeviceChange.ChangeRequest``.
* ``check_row`` — every problem of one row together: formula cells, the identifiers (with what Excel did to
  them), the status, the values the target status needs, the fields' types.

The reader (``bulkchange.input``) knows none of the carriers: it is handed a ``RowRules.columns``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from bulkchange.carrier.port import Carrier
from bulkchange.domain.change_request import StatusUpdateRequest
from bulkchange.domain.identifiers import iccid_problem, imei_problem
from bulkchange.domain.statuses import TargetStatus
from bulkchange.engine.additional_step_checks import split_list
from bulkchange.engine.cc_row_rules import CONTROLCENTER
from bulkchange.engine.rowrules_model import RowRules
from bulkchange.input import Column, Columns, Needs, formula_cells, printable

CARRIER = "thingspace"


# Column → the change request's ``Request`` field.
_REQUEST_FIELDS = {
    "ICCID": "ICCID",
    "IMEI": "IMEI",
    "ServicePlan": "RatePlanCode",
    "MdnZipCode": "MdnZipCode",
    "ReasonCode": "ReasonCode",
    "EtfWaiver": "EtfWaiver",
    "SkuNumber": "SkuNumber",
    "PublicIpRestriction": "PublicIpRestriction",
    "RevAccountNumber": "RevAccountNumber",
}
# Columns of the Rev.io service created after success (``RevService``); the two lists are comma-separated.
_REV_FIELDS = (
    "RevCustomerId",
    "ServiceTypeId",
    "ProviderId",
    "Prorate",
    "EffectiveDate",
    "ActivatedDate",
    "UsagePlanGroupId",
    "RevPackageId",
    "RevProductId",
    "Rate",
    "Description",
    "RevProductIdList",
    "RateList",
)
_REV_LIST_FIELDS = frozenset({"RevProductIdList", "RateList"})
_TOP_FIELDS = {
    "CustomerRatePlan": "CustomerRatePlan",
    "Status": "UpdateStatus",
    "IntegrationAuthenticationId": "IntegrationAuthenticationId",
}
# A field the change request names differently from its column (for pydantic's messages).
_FIELD_COLUMNS = {field: column for column, field in _REQUEST_FIELDS.items()} | {"UpdateStatus": "Status"}
#: Columns whose value may differ per row and changes what the row needs (so a header is not checked
#: against one status's needs when it has them).
PER_ROW_RULE_COLUMNS = ("Status", "IsIgnoreCurrentStatus")

COLUMNS = Columns(
    [
        Column("ICCID", example="89148000000800784259"),
        Column("IMEI", example="990013907835578"),
        Column("ServicePlan", aliases=("RatePlanCode", "RatePlan"), example="M2M_4G"),
        Column("MdnZipCode", aliases=("ZipCode", "Zip"), example="98801"),
        Column("SkuNumber", aliases=("Sku",), example="SM-T387V"),
        Column("ReasonCode", example="FF"),
        Column("EtfWaiver", example="false"),
        Column("PublicIpRestriction", example="unrestricted"),
        Column("RevAccountNumber"),
        Column("Status", aliases=("UpdateStatus",), example="active"),
        Column("IsIgnoreCurrentStatus", example="false"),
        Column("CustomerRatePlan"),
        Column("IntegrationAuthenticationId"),
        *(Column(name) for name in _REV_FIELDS),
    ]
)

_ACTIVATE_FIELDS = ("ICCID", "ServicePlan", "MdnZipCode")
_ACTIVATIONS = Needs("activations", _ACTIVATE_FIELDS, (("IMEI", "SkuNumber"),))
_ICCID_ONLY = ("ICCID",)

#: (target status, IsIgnoreCurrentStatus) → the columns its rows need. ThingSpace activates with a service
#: plan and a zip code for the new number; a device it does not know yet is added first, which takes its
#: IMEI or SKU number. With IsIgnoreCurrentStatus a pending activation or an activation goes straight to
#: Activate (``carrier.thingspace.steps``).
NEEDS: dict[tuple[TargetStatus, bool], Needs] = {
    (TargetStatus.INVENTORY, False): Needs("additions to inventory", _ICCID_ONLY),
    (TargetStatus.INVENTORY, True): Needs("additions to inventory", _ICCID_ONLY),
    (TargetStatus.PENDING_ACTIVATION, False): Needs("pending activations", _ICCID_ONLY),
    (TargetStatus.PENDING_ACTIVATION, True): Needs("pending activations that skip the status check", _ACTIVATE_FIELDS),
    (TargetStatus.ACTIVE, False): _ACTIVATIONS,
    (TargetStatus.ACTIVE, True): Needs("activations that skip the status check", _ACTIVATE_FIELDS),
    (TargetStatus.DEACTIVE, False): Needs("deactivations", _ICCID_ONLY),
    (TargetStatus.DEACTIVE, True): Needs("deactivations", _ICCID_ONLY),
    (TargetStatus.SUSPEND, False): Needs("suspensions", _ICCID_ONLY),
    (TargetStatus.SUSPEND, True): Needs("suspensions", _ICCID_ONLY),
    (TargetStatus.RESTORE, False): Needs("restores", _ICCID_ONLY),
    (TargetStatus.RESTORE, True): Needs("restores", _ICCID_ONLY),
    (TargetStatus.RETIRED, False): Needs("retirements", _ICCID_ONLY),
    (TargetStatus.RETIRED, True): Needs("retirements", _ICCID_ONLY),
}


THINGSPACE = RowRules(
    carrier=CARRIER,
    columns=COLUMNS,
    needs=NEEDS,
    request_fields=_REQUEST_FIELDS,
    top_fields=_TOP_FIELDS,
    rev_fields={name: name for name in _REV_FIELDS},
    rev_list_fields=_REV_LIST_FIELDS,
    per_row_rule_columns=PER_ROW_RULE_COLUMNS,
    field_columns=_FIELD_COLUMNS,
)
_RULES: dict[str, RowRules] = {rules.carrier: rules for rules in (THINGSPACE, CONTROLCENTER)}


def rules_for(carrier: str) -> RowRules:
    """The row rules of ``carrier`` (a carrier name, any case); ``ValueError`` naming the known ones."""
    name = carrier.strip().lower()
    if name not in _RULES:
        raise ValueError(f"unknown carrier {carrier!r}; accepted: {', '.join(sorted(_RULES))}")
    return _RULES[name]


def carriers() -> list[str]:
    """The carriers that have row rules."""
    return sorted(_RULES)


def needs_for(target: TargetStatus, *, ignore_current_status: bool, rules: RowRules = THINGSPACE) -> Needs:
    return rules.needs_for(target, ignore_current_status=ignore_current_status)


def template(target: TargetStatus, carrier: str = CARRIER) -> str:
    """A CSV with exactly the columns ``target`` needs on ``carrier`` and one example row."""
    return rules_for(carrier).template(target)


@dataclass(frozen=True)
class RowProblem:
    row: int  # the spreadsheet line (header = line 1; JSON: the object's position); 0 = the whole file
    field: str
    message: str
    iccid: str | None = None


@dataclass(frozen=True)
class ValidRow:
    request: StatusUpdateRequest
    target: TargetStatus
    plan: list[str]
    row: int = 0  # its line in the file (names it in a refusal found at insert time)


def _by_column(raw: dict[str, Any], rules: RowRules) -> dict[str, Any]:
    """The row's non-blank values by column (the first of two spellings of one column wins)."""
    cells: dict[str, Any] = {}
    for key, value in raw.items():
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        column = rules.columns.find(str(key))
        if column is not None and column.name not in cells:
            cells[column.name] = value.strip() if isinstance(value, str) else value
    return cells


def _truthy(value: Any) -> bool:
    return value is True or str(value).strip().lower() in {"1", "true", "yes"}


def build_request(
    raw: dict[str, Any], *, status: str, ignore_current_status: bool, rules: RowRules = THINGSPACE
) -> StatusUpdateRequest:
    """One input row as the stored change request (original JSON names). Raises pydantic's
    ``ValidationError`` when a value does not fit its field."""
    return _build(_by_column(raw, rules), rules, status=status, ignore_current_status=ignore_current_status)


def _build(cells: dict[str, Any], rules: RowRules, *, status: str, ignore_current_status: bool) -> StatusUpdateRequest:
    request: dict[str, Any] = {}
    rev: dict[str, Any] = {}
    top: dict[str, Any] = {"UpdateStatus": status, "IsIgnoreCurrentStatus": ignore_current_status}
    for name, value in cells.items():
        if name in rules.request_fields:
            request[rules.request_fields[name]] = value if isinstance(value, bool) else str(value)
        elif name in rules.rev_list_fields:
            rev[rules.rev_fields[name]] = split_list(value)
        elif name in rules.rev_fields:
            rev[rules.rev_fields[name]] = value
        elif name in rules.top_fields:
            top[rules.top_fields[name]] = value
        elif name == "IsIgnoreCurrentStatus":
            top["IsIgnoreCurrentStatus"] = _truthy(value)
    top["Request"] = request
    if rev:
        top["RevService"] = rev
    return StatusUpdateRequest.model_validate(top)


@dataclass(frozen=True)
class CheckedRow:
    """One row after its own checks: the change ready to plan (None when refused), every problem it has,
    and its ICCID as written (for the duplicate check and the report)."""

    row: ValidRow | None
    problems: list[RowProblem]
    iccid: str | None


def check_row(
    number: int, raw: Any, *, status: TargetStatus, ignore_current_status: bool, carrier: Carrier
) -> CheckedRow:
    """The row as a change planned for ``carrier`` (read with that carrier's rules), or every problem it has
    on its own (all of them, together)."""
    if not isinstance(raw, dict):
        return CheckedRow(None, [RowProblem(number, "row", f"a row must be an object, got {type(raw).__name__}")], None)
    rules = rules_for(carrier.name)
    cells = _by_column(raw, rules)
    iccid = printable(str(cells["ICCID"])) if "ICCID" in cells else None
    problems = [RowProblem(number, column, message, iccid) for column, message in formula_cells(raw)]
    if problem := iccid_problem(iccid or ""):
        problems.append(RowProblem(number, "ICCID", problem, iccid))
    if "IMEI" in cells and (problem := imei_problem(str(cells["IMEI"]))):
        problems.append(RowProblem(number, "IMEI", problem, iccid))
    ignore = _truthy(cells["IsIgnoreCurrentStatus"]) if "IsIgnoreCurrentStatus" in cells else ignore_current_status
    target: TargetStatus | None = status
    if "Status" in cells:
        try:
            target = TargetStatus.parse(str(cells["Status"]))
        except ValueError as exc:
            problems.append(RowProblem(number, "Status", str(exc), iccid))
            target = None
    if target is not None:
        problems.extend(_missing_values(number, cells, rules.needs_for(target, ignore_current_status=ignore), iccid))
    request, type_problems = _request(number, cells, rules, status, ignore_current_status, iccid)
    problems.extend(p for p in type_problems if p.field not in {q.field for q in problems})
    if problems or request is None or target is None:
        return CheckedRow(None, problems, iccid)
    try:
        plan = carrier.plan(target, request, ignore_current_status=request.is_ignore_current_status)
    except ValueError as exc:  # UnsupportedTarget included: this carrier cannot take the device there
        column = "Status" if "Status" in cells else "status"
        return CheckedRow(None, [RowProblem(number, column, str(exc), iccid)], iccid)
    return CheckedRow(ValidRow(request, target, plan), [], iccid)


def _missing_values(number: int, cells: dict[str, Any], needs: Needs, iccid: str | None) -> list[RowProblem]:
    """A value the target status needs and the row leaves empty (the ICCID is checked on its own)."""
    groups = [(name,) for name in needs.all_of if name != "ICCID"] + list(needs.one_of)
    return [
        RowProblem(number, group[0], f"{needs.describe()}; this row has no {' or '.join(group)}", iccid)
        for group in groups
        if not any(name in cells for name in group)
    ]


def _request(
    number: int, cells: dict[str, Any], rules: RowRules, status: TargetStatus, ignore: bool, iccid: str | None
) -> tuple[StatusUpdateRequest | None, list[RowProblem]]:
    """The change request, or a problem for every value that does not fit its field."""
    try:
        return _build(cells, rules, status=status.value, ignore_current_status=ignore), []
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            names = [str(part) for part in error["loc"] if isinstance(part, str)]
            where = rules.column_of(names[-1]) if names else "row"
            problems.append(RowProblem(number, where, error["msg"], iccid))
        return None, problems
    except (ValueError, TypeError) as exc:  # a value no field can hold (defensive: nothing escapes)
        return None, [RowProblem(number, "row", str(exc)[:200], iccid)]
