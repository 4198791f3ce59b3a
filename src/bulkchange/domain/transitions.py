"""Which local device statuses a target status may start from (the seed's status transition matrix).

Carrier states: preactive → active; active → suspend | deactive; suspend → active; deactive → active
(thingspace-api.md §3.2). A device unknown locally (``None``) may be asked anything: the carrier decides.
``IsIgnoreCurrentStatus`` skips this check, which is what the flag means.
"""

from __future__ import annotations

from bulkchange.domain.statuses import TargetStatus

_ALLOWED_FROM: dict[TargetStatus, frozenset[str | None]] = {
    TargetStatus.INVENTORY: frozenset({None, "inventory", "unknown"}),
    TargetStatus.PENDING_ACTIVATION: frozenset({None, "inventory", "pending activation", "unknown"}),
    TargetStatus.ACTIVE: frozenset({None, "inventory", "pending activation", "deactive", "unknown"}),
    TargetStatus.DEACTIVE: frozenset({None, "active", "unknown"}),
    TargetStatus.SUSPEND: frozenset({None, "active", "unknown"}),
    TargetStatus.RESTORE: frozenset({None, "suspend", "unknown"}),
    # ThingSpace has no retired state: its plan refuses the target; nothing is a known starting point.
    TargetStatus.RETIRED: frozenset({None, "unknown"}),
}


def transition_problem(current: str | None, target: TargetStatus, *, ignore_current_status: bool) -> str | None:
    """Why a device in local status ``current`` cannot be moved to ``target``, or None when it can."""
    if ignore_current_status:
        return None
    allowed = _ALLOWED_FROM[target]
    if current in allowed:
        return None
    starts = sorted(s for s in allowed if s is not None)
    return f"cannot go from {current!r} to {target.value!r} (allowed from: {', '.join(starts)})"
