"""Reading the status-update webhook's events and their delivery attempts (``bulkchange webhooks list``)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from bulkchange.store.tables import DeviceBulkChange, WebhookDeliveryAttempt, WebhookOutbox


def webhook_events(
    session: Any, bulk_change_id: int | None = None, attempts: int = 10, tenant_id: int | None = None
) -> list[dict[str, Any]]:
    """Events with their tenant and latest delivery attempts (what ``webhooks list`` shows)."""
    query = (
        select(WebhookOutbox, DeviceBulkChange.tenant_id)
        .join(DeviceBulkChange, DeviceBulkChange.id == WebhookOutbox.bulk_change_id)
        .order_by(WebhookOutbox.id.desc())
        .limit(50)
    )
    if bulk_change_id is not None:
        query = query.where(WebhookOutbox.bulk_change_id == bulk_change_id)
    if tenant_id is not None:
        query = query.where(DeviceBulkChange.tenant_id == tenant_id)
    events = []
    for e, event_tenant in session.execute(query).all():
        rows = session.execute(
            select(WebhookDeliveryAttempt)
            .where(WebhookDeliveryAttempt.outbox_id == e.id)
            .order_by(WebhookDeliveryAttempt.id.desc())
            .limit(attempts)
        ).scalars()
        events.append(
            {
                "event_id": e.event_id,
                "bulk_change_id": e.bulk_change_id,
                "tenant_id": event_tenant,
                "status": e.status,
                "pages": f"{e.pages_delivered}/{e.page_count if e.page_count is not None else '?'}",
                "failed_attempts": e.attempt_count,
                "next_attempt_at": e.next_attempt_at,
                "last_error": e.last_error,
                "created": e.created_date,
                "delivered": e.delivered_date,
                "attempts": [
                    {
                        "at": a.attempted_date,
                        "page": a.page_number,
                        "attempt": a.attempt_number,
                        "status": a.response_status,
                        "error": a.error,
                        "ms": a.duration_ms,
                    }
                    for a in rows
                ],
            }
        )
    return events
