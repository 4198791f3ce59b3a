"""Every kind of durable work bulkchange keeps, and which columns of its table say where a row stands
(status: waiting → working; lease owner / expiry; attempts; due time):

* carrier step — ``M2M_DeviceChange``: READY → SENDING; LeaseOwner / LeaseExpiresAt; AttemptCount;
  NextAttemptAt.
* billing step — ``M2M_DeviceChange`` of a PROCESSED change: AdditionalStepStatus PENDING → PROCESSING;
  AdditionalStepLeaseOwner / AdditionalStepLeaseExpiresAt; AdditionalStepAttemptCount;
  AdditionalStepNextAttemptAt.
* webhook delivery — ``WebhookOutbox``: PENDING → DELIVERING; LeaseOwner / LeaseExpiresAt; AttemptCount;
  NextAttemptAt.
* wake-up — ``OutboxMessage``: PENDING → SENDING; LeaseOwner / LeaseExpiresAt; AttemptCount; NextAttemptAt.
* queue message — ``BulkChangeQueueMessage``: visible → in flight, no status column; ReceiptHandle /
  VisibleAt; ReceiveCount; VisibleAt is both the due time and the lease's end.

Only the carrier step treats an expired lease specially: the request may have left, so the row is
*reconciled* (the device read at the carrier) before anything is sent again. Every other kind records its
intent before acting and simply runs again when a lease expires.
"""

from __future__ import annotations

from typing import cast

from sqlalchemy import Table, and_

from bulkchange.jobs.spec import LeasedRows
from bulkchange.store.tables import M2MDeviceChange, OutboxMessage, QueueMessage, WebhookOutbox

_changes = cast(Table, M2MDeviceChange.__table__)
_webhooks = cast(Table, WebhookOutbox.__table__)
_wakeups = cast(Table, OutboxMessage.__table__)
_messages = cast(Table, QueueMessage.__table__)

CARRIER_STEP = LeasedRows(
    kind="carrier step",
    table=_changes,
    entity=M2MDeviceChange,
    id=_changes.c.id,
    owner=_changes.c.LeaseOwner,
    lease_until=_changes.c.LeaseExpiresAt,
    attempts=_changes.c.AttemptCount,
    due_at=_changes.c.NextAttemptAt,
    status=_changes.c.Status,
    waiting="READY",
    working="SENDING",
)

BILLING_STEP = LeasedRows(
    kind="billing step",
    table=_changes,
    id=_changes.c.id,
    owner=_changes.c.AdditionalStepLeaseOwner,
    lease_until=_changes.c.AdditionalStepLeaseExpiresAt,
    attempts=_changes.c.AdditionalStepAttemptCount,
    due_at=_changes.c.AdditionalStepNextAttemptAt,
    status=_changes.c.AdditionalStepStatus,
    waiting="PENDING",
    working="PROCESSING",
    scope=_changes.c.Status == "PROCESSED",
)

WEBHOOK_DELIVERY = LeasedRows(
    kind="webhook delivery",
    table=_webhooks,
    id=_webhooks.c.id,
    owner=_webhooks.c.LeaseOwner,
    lease_until=_webhooks.c.LeaseExpiresAt,
    attempts=_webhooks.c.AttemptCount,
    due_at=_webhooks.c.NextAttemptAt,
    status=_webhooks.c.Status,
    waiting="PENDING",
    working="DELIVERING",
)

WAKE_UP = LeasedRows(
    kind="wake-up",
    table=_wakeups,
    id=_wakeups.c.id,
    owner=_wakeups.c.LeaseOwner,
    lease_until=_wakeups.c.LeaseExpiresAt,
    attempts=_wakeups.c.AttemptCount,
    due_at=_wakeups.c.NextAttemptAt,
    status=_wakeups.c.Status,
    waiting="PENDING",
    working="SENDING",
)


def queue_messages(queue_name: str) -> LeasedRows:
    """The embedded queue's messages of one logical queue: visible = due; a receive leases the message
    (``VisibleAt`` moves to the end of the visibility timeout); dead letters are out of the work."""
    return LeasedRows(
        kind="queue message",
        table=_messages,
        id=_messages.c.id,
        owner=_messages.c.ReceiptHandle,
        lease_until=_messages.c.VisibleAt,
        attempts=_messages.c.ReceiveCount,
        due_at=_messages.c.VisibleAt,
        scope=and_(_messages.c.QueueName == queue_name, _messages.c.DeadLetteredAt.is_(None)),
    )
