"""Control Center's steps, the SIM status each target means, and the plan that takes a device there.

A status change is one synchronous edit (``STATUS``: ``PUT /devices/{iccid}`` with the status, and the
change's rate plan / communication plan / effective date), verified in the same send by reading the device
back. A deactivation may first move the line to the cheapest rate plan that covers this cycle's usage
(``RATE_PLAN``, the original's pre-step): planned for every deactivation an operator asks for (not for an
automated status update, which says ``IsFromAutomatedUpdateDeviceStatusLambda``), and carried out only
for service providers that enable it; for the others it is done at once, with no call.

The plan is computed when a bulk change is submitted and stored on the change row; everything here is a
pure function of its arguments.
"""

from __future__ import annotations

from enum import StrEnum

from bulkchange.carrier.port import UnsupportedTarget
from bulkchange.domain.change_request import StatusUpdateRequest
from bulkchange.domain.statuses import DEVICE_STATUS_NAMES, RESULT_DEVICE_STATUS, TargetStatus


class Step(StrEnum):
    """One Control Center operation; the value is what the engine stores on the change row."""

    RATE_PLAN = "RATE_PLAN"
    STATUS = "STATUS"

    @property
    def description(self) -> str:
        """The ``LogEntryDescription`` of this step's edit (the original's words)."""
        return _DESCRIPTION[self]

    @property
    def verb(self) -> str:
        """The operation's name in outcome details."""
        return "status change" if self is Step.STATUS else "rate plan pre-step"


_DESCRIPTION = {
    Step.STATUS: "Update Jasper Status: Jasper API",
    Step.RATE_PLAN: "Update Jasper Rate Plan: Jasper API",
}

GET_DESCRIPTION = "Get Jasper Device: Jasper API"
AUDIT_DESCRIPTION = "Get Jasper Audit Trail: Jasper API"
USAGE_DESCRIPTION = "Get Jasper Device Usage: Jasper API"


def step_of(step: str) -> Step:
    """The Control Center step stored as ``step``; ``ValueError`` when it is not one."""
    try:
        return Step(step)
    except ValueError:
        raise ValueError(f"{step!r} is not a Control Center step ({', '.join(Step)})") from None


CC_STATUS: dict[TargetStatus, str] = {
    TargetStatus.INVENTORY: "INVENTORY",
    TargetStatus.PENDING_ACTIVATION: "ACTIVATION_READY",
    TargetStatus.ACTIVE: "ACTIVATED",
    TargetStatus.DEACTIVE: "DEACTIVATED",
    TargetStatus.RETIRED: "RETIRED",
}
"""The Control Center status (REST value) each supported target means."""

ACCOUNT_SETTABLE: frozenset[str] = frozenset(CC_STATUS.values())
"""The statuses an enterprise account sets through the API."""

MOVES_ON_BY_ITSELF: dict[str, str] = {"ACTIVATION_READY": "ACTIVATED"}
"""A status the SIM leaves without any call (first network use), and where it goes."""


def cc_status(target: TargetStatus) -> str:
    """The Control Center status of ``target``; ``UnsupportedTarget`` for suspend / restore."""
    try:
        return CC_STATUS[target]
    except KeyError:
        raise UnsupportedTarget(
            f"Control Center has no {target.value!r}: a SIM is deactivated and activated again instead"
        ) from None


def plan(target: TargetStatus, request: StatusUpdateRequest) -> list[Step]:
    """``[STATUS]``; a deactivation an operator asked for is ``[RATE_PLAN, STATUS]`` (see the module doc)."""
    cc_status(target)
    if target is TargetStatus.DEACTIVE and not request.is_from_automated_update_device_status_lambda:
        return [Step.RATE_PLAN, Step.STATUS]
    return [Step.STATUS]


def transition_problem(current: str | None, target: TargetStatus, *, ignore_current_status: bool) -> str | None:
    """Why a device in local status ``current`` is not sent to ``target``, or None.

    Control Center lets an account move a SIM between any of its settable statuses, so the only refusals
    are a status it cannot have (ThingSpace's ``suspend``) and a device that is already there (send it
    anyway with IsIgnoreCurrentStatus, e.g. when the local record is known to be stale).
    """
    if ignore_current_status:
        return None
    if current == "suspend":
        return "a suspended device is a ThingSpace device; Control Center has no suspend"
    if current is not None and current == DEVICE_STATUS_NAMES[RESULT_DEVICE_STATUS[target]]:
        return f"the device is already {current!r} (set IsIgnoreCurrentStatus to send the change anyway)"
    return None


def local_status(step: Step, target: TargetStatus) -> int | None:
    """The local ``DeviceStatusId`` once ``step`` took effect: the target's after STATUS; None after the
    rate plan pre-step, which leaves the status as it is."""
    return RESULT_DEVICE_STATUS[target] if step is Step.STATUS else None


def unchanged_states(expected: str) -> frozenset[str]:
    """Carrier statuses that mean a change to ``expected`` has NOT happened (so once the reconcile window
    passed it may be sent again): every other account-settable status, and TEST_READY. A SIM showing
    ACTIVATED when ACTIVATION_READY was asked is not among them: it may have been used since."""
    unchanged = (ACCOUNT_SETTABLE | {"TEST_READY"}) - {expected}
    return unchanged - {moved for start, moved in MOVES_ON_BY_ITSELF.items() if start == expected}
