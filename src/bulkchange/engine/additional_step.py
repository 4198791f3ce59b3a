"""The additional step of a device change (billing and customer rate plan): its statuses and when it is due.

The seed's "Process Rev Service" step. The engine schedules it in the transaction that marks the change
PROCESSED (``schedule_after_success``); the integrations carry it out (``integrations.billing``).
"""

from __future__ import annotations

from enum import StrEnum

from sqlalchemy import update
from sqlalchemy.orm import Session

from bulkchange.domain.change_request import RevServiceRequest, StatusUpdateRequest
from bulkchange.store.tables import M2MDeviceChange


class AdditionalStepStatus(StrEnum):
    """``M2M_DeviceChange.AdditionalStepStatus``. NULL means the change asked for no additional step."""

    PENDING = "PENDING"  # due (or waiting for its next attempt: AdditionalStepNextAttemptAt)
    PROCESSING = "PROCESSING"  # claimed by a worker (lease in AdditionalStepLeaseExpiresAt)
    PROCESSED = "PROCESSED"
    ERROR = "ERROR"  # gave up or refused; the carrier result stands
    # Rev.io refused the credential itself (401 / 403): not a verdict on this change. Not claimed until an
    # operator sets the credential again (``credentials set --billing N``) or re-runs the step.
    WAITING_CREDENTIALS = "WAITING_CREDENTIALS"

    @property
    def settled(self) -> bool:
        return self in (AdditionalStepStatus.PROCESSED, AdditionalStepStatus.ERROR)


UNSETTLED = (
    AdditionalStepStatus.PENDING.value,
    AdditionalStepStatus.PROCESSING.value,
    AdditionalStepStatus.WAITING_CREDENTIALS.value,
)
#: Additional steps an operator may run again: refused or given up, or waiting for their credential.
RERUNNABLE = (AdditionalStepStatus.ERROR.value, AdditionalStepStatus.WAITING_CREDENTIALS.value)
WAITING_FOR_CREDENTIALS = "waiting for billing credentials"


def billing_model(req: StatusUpdateRequest) -> RevServiceRequest | None:
    """What the Rev.io service is created from: ``RevService``, else ``RevServiceProductCreateModel``.

    The original created *two* services when both were present (original-behaviour.md §5.1); here a
    change has at most one service, and the product model (when given) supplies its products.
    """
    return req.rev_service or req.rev_service_product_create_model


def wants_additional_step(req: StatusUpdateRequest) -> bool:
    return billing_model(req) is not None or bool(req.customer_rate_plan)


def schedule_after_success(session: Session, change: M2MDeviceChange, req: StatusUpdateRequest) -> None:
    """Called where a change becomes PROCESSED (same transaction): the additional step becomes due.

    A conditional UPDATE, not an attribute write: a change recorded PROCESSED twice (two racing
    callbacks) must never put an additional step that already ran back to PENDING.
    """
    if not wants_additional_step(req):
        return
    session.execute(
        update(M2MDeviceChange)
        .where(M2MDeviceChange.id == change.id, M2MDeviceChange.additional_step_status.is_(None))
        .values(
            additional_step_status=AdditionalStepStatus.PENDING.value,
            additional_step_details="due: the carrier change succeeded",
            additional_step_next_attempt_at=None,
        )
        .execution_options(synchronize_session=False)
    )
