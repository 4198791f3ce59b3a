"""The plan of carrier operations for one device change (decisions.md, "Target statuses").

The plan is fixed at submit time and stored on the change row, so a change resumed after a crash or a
redelivery follows the same steps it started with.
"""

from __future__ import annotations

from enum import StrEnum

from bulkchange.domain.statuses import TargetStatus


class CarrierStep(StrEnum):
    """One carrier operation. ADD answers synchronously; the others are accepted with a requestId."""

    ADD = "ADD"
    ACTIVATE = "ACTIVATE"
    DEACTIVATE = "DEACTIVATE"
    SUSPEND = "SUSPEND"
    RESTORE = "RESTORE"

    @property
    def is_async(self) -> bool:
        """Accepted with a requestId; the result comes by callback or polling."""
        return self is not CarrierStep.ADD

    @property
    def expected_state(self) -> str:
        """The carrier state that shows this step took effect (used by reconcile and verification)."""
        return _EXPECTED_STATE[self]


_EXPECTED_STATE = {
    CarrierStep.ADD: "preactive",
    CarrierStep.ACTIVATE: "active",
    CarrierStep.DEACTIVATE: "deactive",
    CarrierStep.SUSPEND: "suspend",
    CarrierStep.RESTORE: "active",
}


LONGEST_PLAN = 2
"""The most steps ``plan_for`` gives a change (Add, then Activate). Claims order by whether a step follows the
current one (``engine.changes.claim_order``) and test for it up to this length."""


def plan_for(
    target: TargetStatus, *, ignore_current_status: bool, has_imei: bool, has_sku: bool
) -> list[CarrierStep]:
    """The carrier steps for ``target``.

    * inventory → Add (the seed's "Add to Inventory"; the original's DB-only path is bug B11).
    * pending activation → Add; with IsIgnoreCurrentStatus, Activate directly.
    * active → Add then Activate (needs an IMEI or a SKU number — refused at submit otherwise);
      with IsIgnoreCurrentStatus, Activate directly.
    * deactive / suspend / restore → the one matching action.
    * retired → refused (``ValueError``): ThingSpace has no such state.
    """
    if target is TargetStatus.RETIRED:
        raise ValueError("ThingSpace cannot retire a device (retired is a Control Center status)")
    if target is TargetStatus.INVENTORY:
        return [CarrierStep.ADD]
    if target is TargetStatus.PENDING_ACTIVATION:
        return [CarrierStep.ACTIVATE] if ignore_current_status else [CarrierStep.ADD]
    if target is TargetStatus.ACTIVE:
        if ignore_current_status:
            return [CarrierStep.ACTIVATE]
        if not (has_imei or has_sku):
            raise ValueError("active needs an IMEI or a SKU number")
        return [CarrierStep.ADD, CarrierStep.ACTIVATE]
    if target is TargetStatus.DEACTIVE:
        return [CarrierStep.DEACTIVATE]
    if target is TargetStatus.SUSPEND:
        return [CarrierStep.SUSPEND]
    return [CarrierStep.RESTORE]
