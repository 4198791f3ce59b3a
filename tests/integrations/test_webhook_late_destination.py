"""A bulk change that finished while no webhook destination existed still has its event: `webhooks list`
shows it undelivered, a destination configured later gets it on the next worker run, and `webhooks retry`
accepts the id the list shows."""

from __future__ import annotations

from bulkchange.cli.integrations_cmd import webhook_events
from bulkchange.integrations.webhooks import rearm

from .conftest import BillingHarness, WebhookReceiver, new_iccid, new_imei


async def test_the_event_waits_for_a_destination_configured_later(
    bh: BillingHarness, receiver: tuple[WebhookReceiver, str]
) -> None:
    hook, url = receiver
    bulk = bh.submit([{"ICCID": new_iccid(), "IMEI": new_imei()}], status="inventory")
    await bh.run()
    with bh.rt.session_factory() as session:
        (event,) = webhook_events(session, bulk)
    assert event["status"] == "PENDING" and event["delivered"] is None
    assert not hook.documents
    with bh.rt.session_factory() as session:
        assert rearm(session, event["event_id"]), "retry takes the id `webhooks list` shows"

    bh.configure(webhook_url=url)  # BULKCHANGE_WEBHOOK_URL set after the fact; then the next worker run
    await bh.run()
    assert [key[0] for key in hook.documents] == [event["event_id"]]
    with bh.rt.session_factory() as session:
        (delivered,) = webhook_events(session, bulk)
        assert delivered["status"] == "DELIVERED"
