"""A bulk change whose last change settled in a process that died before refreshing its status (two
transactions) is refreshed by the next worker: it does not stay PROCESSING for ever without its event."""

from __future__ import annotations

from sqlalchemy import delete, select, update

from bulkchange.store.tables import DeviceBulkChange, M2MDeviceChange, OutboxMessage, QueueMessage, WebhookOutbox

from .conftest import BillingHarness, new_iccid, new_imei


async def test_a_settled_bulk_change_left_unrefreshed_is_finished_by_the_next_worker(bh: BillingHarness) -> None:
    bulk_id = bh.submit([{"ICCID": new_iccid(), "IMEI": new_imei()} for _ in range(3)], status="inventory")
    # What a worker SIGKILLed between the two transactions leaves: every change settled, its message gone
    # (acknowledged before), the status never refreshed.
    with bh.rt.session_factory.begin() as session:
        session.execute(
            update(M2MDeviceChange)
            .where(M2MDeviceChange.bulk_change_id == bulk_id)
            .values(status="PROCESSED", status_details="Add accepted", is_processed=True)
        )
        session.execute(delete(QueueMessage))
        session.execute(delete(OutboxMessage))
    with bh.rt.session_factory() as session:
        assert session.get(DeviceBulkChange, bulk_id).status == "NEW"  # type: ignore[union-attr]

    await bh.run()

    with bh.rt.session_factory() as session:
        bulk = session.get(DeviceBulkChange, bulk_id)
        assert bulk is not None and bulk.status == "PROCESSED" and bulk.processed_date is not None
        events = session.execute(select(WebhookOutbox.event_type).where(WebhookOutbox.bulk_change_id == bulk_id))
        assert list(events.scalars()) == ["bulk_change.completed"]
