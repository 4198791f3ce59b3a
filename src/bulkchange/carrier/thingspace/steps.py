"""ThingSpace's steps, the carrier states they lead to, and the plan that takes a device to a target status.

Carrier states (as the device list reports them, lower-cased): ``preactive`` → ``pending activation`` →
``active``; ``active`` → ``suspend`` | ``deactive``; ``suspend`` → ``active``; ``deactive`` → ``active``.
Add answers in its own response; the four actions are accepted with a requestId and settle later (the
CarrierService callback, or a read of the device).

The plan is computed when a bulk change is submitted and stored on the change row, so a change resumed
after a crash follows the steps it started with; everything here is a pure function of its arguments.
"""

from __future__ import annotations

from enum import StrEnum

from bulkchange.carrier.port import UnsupportedTarget
from bulkchange.domain.change_request import StatusUpdateRequest
from bulkchange.domain.statuses import RESULT_DEVICE_STATUS, DeviceStatusId, TargetStatus


class Step(StrEnum):
    """One ThingSpace operation; the value is what the engine stores on the change row."""

    ADD = "ADD"
    ACTIVATE = "ACTIVATE"
    DEACTIVATE = "DEACTIVATE"
    SUSPEND = "SUSPEND"
    RESTORE = "RESTORE"

    @property
    def settles_later(self) -> bool:
        """Accepted with a requestId; the result comes by callback or a read of the device."""
        return self is not Step.ADD

    @property
    def endpoint(self) -> str:
        """The M2M endpoint name (the limiter's and the client's ``endpoint``)."""
        return f"devices/actions/{self.value.lower()}"

    @property
    def verb(self) -> str:
        """The operation's name in outcome details (``activate``, ``add`` …)."""
        return self.value.lower()

    @property
    def expected_state(self) -> str:
        """The carrier state that shows this step took effect."""
        return _EXPECTED_STATE[self]

    @property
    def description(self) -> str:
        """The ``LogEntryDescription`` of this step's carrier call."""
        return f"{self.value.capitalize()} ThingSpace Device: ThingSpace API"


def step_of(step: str) -> Step:
    """The ThingSpace step stored as ``step``; ``ValueError`` when it is not one."""
    try:
        return Step(step)
    except ValueError:
        raise ValueError(f"{step!r} is not a ThingSpace step ({', '.join(Step)})") from None


_EXPECTED_STATE = {
    Step.ADD: "preactive",
    Step.ACTIVATE: "active",
    Step.DEACTIVATE: "deactive",
    Step.SUSPEND: "suspend",
    Step.RESTORE: "active",
}

UNCHANGED: dict[Step, frozenset[str | None]] = {
    Step.ADD: frozenset({None}),
    Step.ACTIVATE: frozenset({None, "preactive", "deactive"}),
    Step.DEACTIVATE: frozenset({"active"}),
    Step.SUSPEND: frozenset({"active"}),
    Step.RESTORE: frozenset({"suspend"}),
}
"""Carrier states (None: not in the account) that show a step has NOT happened, so once the reconcile
window has passed it may be sent again."""

ACTIVATION_IN_PROGRESS = "pending activation"


def plan(target: TargetStatus, request: StatusUpdateRequest, *, ignore_current_status: bool) -> list[Step]:
    """The steps that take a device to ``target``.

    * inventory → Add.
    * pending activation → Add; with IsIgnoreCurrentStatus, Activate directly.
    * active → Add then Activate, which needs an IMEI or a SKU number (``UnsupportedTarget`` otherwise,
      so the row is refused at submit); with IsIgnoreCurrentStatus, Activate directly.
    * deactive / suspend / restore → the one matching action.
    """
    if target is TargetStatus.INVENTORY:
        return [Step.ADD]
    if target is TargetStatus.PENDING_ACTIVATION:
        return [Step.ACTIVATE] if ignore_current_status else [Step.ADD]
    if target is TargetStatus.ACTIVE:
        if ignore_current_status:
            return [Step.ACTIVATE]
        if not (request.request.imei or request.request.sku_number):
            raise UnsupportedTarget("active needs an IMEI or a SKU number")
        return [Step.ADD, Step.ACTIVATE]
    if target is TargetStatus.DEACTIVE:
        return [Step.DEACTIVATE]
    if target is TargetStatus.SUSPEND:
        return [Step.SUSPEND]
    return [Step.RESTORE]


_ALLOWED_FROM: dict[TargetStatus, frozenset[str | None]] = {
    TargetStatus.INVENTORY: frozenset({None, "inventory", "unknown"}),
    TargetStatus.PENDING_ACTIVATION: frozenset({None, "inventory", "pending activation", "unknown"}),
    TargetStatus.ACTIVE: frozenset({None, "inventory", "pending activation", "deactive", "unknown"}),
    TargetStatus.DEACTIVE: frozenset({None, "active", "unknown"}),
    TargetStatus.SUSPEND: frozenset({None, "active", "unknown"}),
    TargetStatus.RESTORE: frozenset({None, "suspend", "unknown"}),
}


def transition_problem(current: str | None, target: TargetStatus, *, ignore_current_status: bool) -> str | None:
    """Why a device in local status ``current`` cannot be moved to ``target``, or None when it can.

    A device unknown locally (None) may be asked anything: the carrier decides. IsIgnoreCurrentStatus
    skips the check, which is what the flag means.
    """
    if ignore_current_status:
        return None
    allowed = _ALLOWED_FROM[target]
    if current in allowed:
        return None
    starts = sorted(s for s in allowed if s is not None)
    return f"cannot go from {current!r} to {target.value!r} (allowed from: {', '.join(starts)})"


_STEP_STATUS = {
    Step.ADD: DeviceStatusId.INVENTORY,
    Step.ACTIVATE: DeviceStatusId.ACTIVE,
    Step.DEACTIVATE: DeviceStatusId.DEACTIVE,
    Step.SUSPEND: DeviceStatusId.SUSPEND,
    Step.RESTORE: DeviceStatusId.ACTIVE,
}


def local_status(step: Step, target: TargetStatus, *, last: bool) -> int:
    """The local ``DeviceStatusId`` once ``step`` took effect: the step's own status when more steps follow
    and always for Activate (the carrier's truth), the target's on the last step."""
    if step is Step.ACTIVATE or not last:
        return _STEP_STATUS[step]
    return RESULT_DEVICE_STATUS[target]


def is_last(step: Step, target: TargetStatus) -> bool:
    """Whether ``step`` ends the plan of a change to ``target`` (known without the stored plan: every plan
    above has a single step except active's Add then Activate, and Add is never last there)."""
    return not (step is Step.ADD and target is TargetStatus.ACTIVE)
