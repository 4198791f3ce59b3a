"""The work behind each Control Center endpoint: validate the request, ask the simulator, shape the answer.

Every function runs under the simulator's lock and either returns ``(http_status, body)`` or raises an
:class:`~bulkchange.simulator.errors.ApiError` with Control Center's error body.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from . import errors
from .config import STATUSES
from .devices import TEXT_FIELDS, audit_date, parse_date
from .faults import RequestFaults

if TYPE_CHECKING:
    from .simulator import ControlCenterSimulator, User

Reply = tuple[int, Any]
DAY_S = 86400.0

#: Fields Edit Device Details acts on, in the order they are applied and audited.
EDIT_FIELDS: tuple[str, ...] = ("status", "ratePlan", "communicationPlan", *TEXT_FIELDS)


def _int_param(params: Mapping[str, str], name: str, default: int) -> int:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise errors.invalid_paging(f"{name} must be a whole number") from None


def _paging(sim: ControlCenterSimulator, params: Mapping[str, str]) -> tuple[int, int]:
    """(pageSize, pageNumber): the size defaults to the maximum and is clamped to it; numbers start at 1."""
    limit = sim.config.page_size_max
    size = min(_int_param(params, "pageSize", limit), limit)
    number = _int_param(params, "pageNumber", 1)
    if size < 1:
        raise errors.invalid_paging("pageSize must be at least 1")
    if number < 1:
        raise errors.invalid_paging("pageNumber must be at least 1")
    return size, number


def _date_param(params: Mapping[str, str], name: str) -> float | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    try:
        return parse_date(raw)
    except ValueError:
        raise errors.invalid_date(name, "must be an ISO 8601 date-time such as 2016-04-18T17:31:34+00:00") from None


# --- Get Device Details ---------------------------------------------------------------------------------------


def get_device(sim: ControlCenterSimulator, user: User, iccid: str, params: Mapping[str, str]) -> Reply:
    device = sim.visible(user, iccid)
    fields = params.get("fields")
    wanted = [f for f in fields.split(",") if f] if fields else None
    return 200, device.details(wanted)


# --- Edit Device Details ------------------------------------------------------------------------------------


def _status_value(sim: ControlCenterSimulator, value: str) -> str:
    status = value if sim.config.status_case_sensitive else value.strip().upper()
    if status not in STATUSES:
        raise errors.invalid_status(value)
    return status


def _effective_at(sim: ControlCenterSimulator, raw: Any) -> float | None:
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise errors.invalid_effective_date("must be a string")
    try:
        when = parse_date(raw)
    except ValueError:
        raise errors.invalid_effective_date("must be an ISO 8601 date-time") from None
    latest = sim.now() + sim.config.effective_date_max_days * DAY_S
    if when > latest:
        raise errors.invalid_effective_date(f"at most {sim.config.effective_date_max_days} days ahead")
    return when


def parse_edit(sim: ControlCenterSimulator, body: Mapping[str, Any]) -> tuple[dict[str, str], float | None]:
    """The requested field changes (validated) and the effective date, if any."""
    changes: dict[str, str] = {}
    for name in EDIT_FIELDS:
        if name not in body:
            continue
        value = body[name]
        if not isinstance(value, str):
            raise errors.invalid_request(f"{name} must be a string")
        changes[name] = value
    if not changes:
        raise errors.invalid_request("At least one device field to change is required")
    if "status" in changes:
        changes["status"] = _status_value(sim, changes["status"])
    if "ratePlan" in changes and changes["ratePlan"] not in sim.config.rate_plans:
        raise errors.unknown_rate_plan(changes["ratePlan"])
    if "communicationPlan" in changes and changes["communicationPlan"] not in sim.config.communication_plans:
        raise errors.unknown_communication_plan(changes["communicationPlan"])
    return changes, _effective_at(sim, body.get("effectiveDate"))


def edit_device(
    sim: ControlCenterSimulator, user: User, iccid: str, body: Mapping[str, Any], faults: RequestFaults
) -> Reply:
    sim.visible(user, iccid)
    sim.count().put(iccid)
    changes, effective_at = parse_edit(sim, body)
    return sim.edit(user, iccid, changes, effective_at, faults)


# --- Search Devices ------------------------------------------------------------------------------------------


def _search_window(sim: ControlCenterSimulator, params: Mapping[str, str]) -> tuple[float, float | None]:
    if not params.get("modifiedSince"):
        raise errors.modified_since_required()
    since = _date_param(params, "modifiedSince")
    assert since is not None
    now = sim.now()
    if since > now:
        raise errors.invalid_date("modifiedSince", "cannot be in the future")
    max_age = sim.config.modified_since_max_age_days
    if max_age is not None and since < now - max_age * DAY_S:
        raise errors.invalid_date("modifiedSince", f"cannot be more than {max_age} days ago")
    return since, _date_param(params, "modifiedTill")


def search_devices(sim: ControlCenterSimulator, user: User, params: Mapping[str, str]) -> Reply:
    """Devices modified since a date, oldest modification first, one page of at most ``page_size_max``."""
    since, till = _search_window(sim, params)
    size, number = _paging(sim, params)
    account = params.get("accountId") or user.account_id
    status = params.get("status") or None
    page: list[dict[str, Any]] = []
    skip = (number - 1) * size
    last_page = True
    if account == user.account_id:  # another enterprise's devices are not visible to this user
        for device in sim.store.modified(since=since, till=till, account_id=account, status=status):
            if skip:
                skip -= 1
                continue
            if len(page) == size:
                last_page = False
                break
            page.append(device.summary())
    return 200, {"devices": page, "pageNumber": number, "lastPage": last_page}


# --- Get Device Audit History ------------------------------------------------------------------------------


def audit_trails(sim: ControlCenterSimulator, user: User, iccid: str, params: Mapping[str, str]) -> Reply:
    """The device's change records of the last ``daysOfHistory`` days, most recent first, paged."""
    device = sim.visible(user, iccid)
    days = _int_param(params, "daysOfHistory", sim.config.audit_days_default)
    if not 1 <= days <= sim.config.audit_days_max:
        raise errors.invalid_paging(f"daysOfHistory must be between 1 and {sim.config.audit_days_max}")
    size, number = _paging(sim, params)
    now = sim.now()
    cutoff = now - days * DAY_S
    recent = [record for record in reversed(device.audit) if record.effective_at >= cutoff]
    start = (number - 1) * size
    page = recent[start : start + size]
    return 200, {
        "iccid": iccid,
        "timestamp": audit_date(now),
        "pageNumber": number,
        "lastPage": start + size >= len(recent),
        "deviceAuditTrails": [record.wire() for record in page],
    }
