"""A bulk change's outcome counts its additional steps (billing): a device whose billing ended ERROR makes
the bulk change PARTIAL with HasErrors, in the database and in the webhook document. ThingSpace simulator and
Rev.io stand-in over loopback HTTP, the real worker loop, SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy import select

from bulkchange.integrations.webhooks import build_page
from bulkchange.store.tables import DeviceBulkChange, WebhookOutbox

from .conftest import BillingHarness, billed_row, new_iccid, new_imei


async def test_a_billing_error_makes_the_bulk_change_partial_with_errors(bh_any: BillingHarness) -> None:
    bh = bh_any
    bh.revio.config = bh.revio.config.model_copy(update={"customers": frozenset({4242})})
    rows = [billed_row(new_iccid(), new_imei()) for _ in range(2)]
    rows.append(billed_row(new_iccid(), new_imei(), RevCustomerId="999"))  # Rev.io refuses this customer
    bulk_id = bh.submit(rows)
    await bh.run()
    assert sorted(c.additional_step_status or "" for c in bh.changes(bulk_id)) == ["ERROR", "PROCESSED", "PROCESSED"]
    with bh.rt.session_factory() as session:
        bulk = session.get(DeviceBulkChange, bulk_id)
        assert bulk is not None
        assert (bulk.status, bulk.has_errors) == ("PARTIAL", True)
        assert bulk.status_details == "2 PROCESSED, 1 PROCESSED with billing ERROR"
        event = session.execute(select(WebhookOutbox).where(WebhookOutbox.bulk_change_id == bulk_id)).scalar_one()
        document = build_page(session, event, page=1, page_count=1, page_size=100, text_limit=1000)
    assert document["BulkChange"]["Status"] == "PARTIAL"
    assert document["BulkChange"]["HasErrors"] is True
    assert "3 PROCESSED" not in document["BulkChange"]["StatusDetails"]
