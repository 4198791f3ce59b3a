"""The status-update webhook end to end: a real receiver over loopback HTTP that verifies the signature with
the algorithm of docs/webhooks.md and drops duplicates by event id + page."""

from __future__ import annotations

import hashlib
import hmac
import json

from sqlalchemy import select, update
from typer.testing import CliRunner

from bulkchange.domain.outcomes import LogEntry
from bulkchange.engine.logbook import write_logs
from bulkchange.integrations.webhooks import OutboxStatus
from bulkchange.simulator.server import serve_in_thread
from bulkchange.store.tables import DeviceBulkChange, M2MDeviceChange, WebhookDeliveryAttempt, WebhookOutbox

from .conftest import (
    SECRET,
    BillingHarness,
    WebhookReceiver,
    billed_row,
    free_port,
    new_iccid,
    new_imei,
    wait_for,
)


def _events(bh: BillingHarness) -> list[WebhookOutbox]:
    with bh.rt.session_factory() as session:
        return list(session.execute(select(WebhookOutbox).order_by(WebhookOutbox.id)).scalars())


def _attempts(bh: BillingHarness) -> list[WebhookDeliveryAttempt]:
    with bh.rt.session_factory() as session:
        return list(session.execute(select(WebhookDeliveryAttempt).order_by(WebhookDeliveryAttempt.id)).scalars())


async def test_one_signed_document_with_every_device_after_billing_settled(
    bh_any: BillingHarness, receiver: tuple[WebhookReceiver, str]
) -> None:
    bh = bh_any
    hook, url = receiver
    bh.configure(webhook_url=url)
    billed = [billed_row(new_iccid(), new_imei(), RevProductId=9, Rate="1") for _ in range(2)]
    bulk_id = bh.submit(billed)
    await bh.run()

    assert hook.bad_signatures == 0 and hook.duplicates == 0
    ((event_id, page), document), *_ = hook.documents.items()
    assert len(hook.documents) == 1 and page == 1
    (event,) = _events(bh)
    assert (event.event_id, event.status, event.page_count, event.pages_delivered) == (event_id, "DELIVERED", 1, 1)
    (request,) = hook.requests
    headers = request["headers"]
    assert headers["x-bulkchange-event-id"] == event_id
    assert (headers["x-bulkchange-page"], headers["x-bulkchange-page-count"]) == ("1", "1")
    # The documented algorithm: HMAC-SHA256(secret, timestamp + "." + body), hex, prefixed "sha256=".
    expected = hmac.new(
        SECRET.encode(), headers["x-bulkchange-timestamp"].encode() + b"." + request["body"], hashlib.sha256
    ).hexdigest()
    assert headers["x-bulkchange-signature"] == f"sha256={expected}"
    assert not WebhookReceiver(secret="another-secret").verify(
        headers["x-bulkchange-timestamp"], request["body"], headers["x-bulkchange-signature"]
    )

    assert document["EventId"] == event_id and document["PageCount"] == 1 and document["DeviceCount"] == 2
    assert document["BulkChange"]["Id"] == bulk_id and document["BulkChange"]["Status"] == "PROCESSED"
    devices = {d["ICCID"]: d for d in document["Devices"]}
    assert set(devices) == {r["ICCID"] for r in billed}
    for change in bh.changes(bulk_id):
        d = devices[change.iccid]
        assert (d["Status"], d["MSISDN"], d["IpAddress"]) == ("PROCESSED", change.msisdn, change.ip_address)
        assert d["StatusDetails"] == change.status_details and d["StatusDetails"]  # the original sent null (B13)
        # Sent after the billing step settled, so it shows the billing result too.
        assert d["AdditionalStepStatus"] == "PROCESSED"
        descriptions = [e["LogEntryDescription"] for e in d["DetailsLogEntries"]]
        assert "Activate ThingSpace Device: ThingSpace API" in descriptions
        assert "Create Rev.io Service: Rev.io API" in descriptions
        assert "rev-pass" not in json.dumps(d)
    (attempt,) = _attempts(bh)
    assert (attempt.response_status, attempt.error, attempt.page_number, attempt.attempt_number) == (200, None, 1, 1)


async def test_the_webhook_waits_for_billing_and_fires_once(
    bh: BillingHarness, receiver: tuple[WebhookReceiver, str]
) -> None:
    hook, url = receiver
    bh.configure(webhook_url=url)
    bh.revio.down = True
    bulk_id = bh.submit([billed_row(new_iccid(), new_imei())])
    async with bh.worker():
        await wait_for(lambda: bh.changes(bulk_id)[0].additional_step_attempt_count >= 2, what="billing retried")
        # Billing unsettled: the bulk change is not finished yet, so no event and nothing sent.
        assert _events(bh) == [] and not hook.requests
        with bh.rt.session_factory() as session:
            bulk = session.get(DeviceBulkChange, bulk_id)
            assert bulk is not None and bulk.status == "PROCESSING"
            assert bulk.status_details == "1 PROCESSED with billing pending"
        bh.revio.down = False
        await wait_for(lambda: len(hook.documents) == 1, what="delivery")
    (document,) = hook.documents.values()
    assert document["Devices"][0]["AdditionalStepStatus"] == "PROCESSED"
    # A refresh of an already terminal bulk change never writes a second event.
    bh.rt.engine.refresh_status(bulk_id)
    assert len(_events(bh)) == 1


async def test_receiver_down_then_up_delivers_and_duplicates_are_dropped_by_event_id(bh: BillingHarness) -> None:
    port = free_port()
    hook = WebhookReceiver()
    bh.configure(webhook_url=f"http://127.0.0.1:{port}/hook")
    bulk_id = bh.submit([{"ICCID": new_iccid(), "IMEI": new_imei()}], status="inventory")
    async with bh.worker():
        # Nobody listening: connection refused, retried with backoff.
        await wait_for(lambda: len(_attempts(bh)) >= 2, what="failed attempts")
        (event,) = _events(bh)
        assert event.status in ("PENDING", "DELIVERING") and event.attempt_count >= 1
        assert all(a.response_status is None and a.error for a in _attempts(bh))
        with serve_in_thread(hook.app(), port=port):
            # Listening but answering 503 first, then up.
            hook.status = 503
            await wait_for(lambda: any(a.response_status == 503 for a in _attempts(bh)), what="a 503 attempt")
            hook.status = 200
            await wait_for(lambda: _events(bh)[0].status == "DELIVERED", what="delivered")
            assert len(hook.documents) == 1 and hook.duplicates == 0
            # At least once: the acknowledgement is lost after the receiver took the document, so the
            # event goes out again — same event id and page, and the receiver drops the duplicate.
            with bh.rt.session_factory.begin() as session:
                session.execute(
                    update(WebhookOutbox).values(
                        status=OutboxStatus.PENDING.value, pages_delivered=0, delivered_date=None
                    )
                )
            await wait_for(lambda: hook.duplicates == 1, what="the duplicate delivery")
            await wait_for(lambda: _events(bh)[0].status == "DELIVERED", what="delivered again")
    assert len(hook.documents) == 1
    (event_id, _page), document = next(iter(hook.documents.items()))
    assert {r["headers"]["x-bulkchange-event-id"] for r in hook.requests} == {event_id}
    assert document["BulkChange"]["Id"] == bulk_id
    attempts = _attempts(bh)
    assert [a.attempt_number for a in attempts] == list(range(1, len(attempts) + 1))
    assert attempts[-1].response_status == 200

    # The operator sees the attempts.
    from bulkchange.cli.main import app

    result = CliRunner().invoke(
        app, ["webhooks", "list", "--json"], env={"BULKCHANGE_DATABASE_URL": bh.rt.settings.database_url}
    )
    assert result.exit_code == 0, result.output
    (listed,) = json.loads(result.output)
    assert listed["event_id"] == event_id and listed["status"] == "DELIVERED"
    assert any(a["status"] == 503 for a in listed["attempts"])


async def test_a_bulk_change_of_2500_devices_is_delivered_in_full_in_pages(
    bh: BillingHarness, receiver: tuple[WebhookReceiver, str]
) -> None:
    """2,500 devices, 1,000 per document. The carrier part is settled directly in the database (the
    engine's own tests drive it through the simulator; 2,500 devices there take ~10 s): the bulk change
    still becomes terminal through ``Processor.refresh_status``, whose transaction writes the event."""
    hook, url = receiver
    bh.configure(webhook_url=url, webhook_page_size=1000)
    rows = [{"ICCID": new_iccid(), "IMEI": new_imei()} for _ in range(2500)]
    bulk_id = bh.submit(rows, status="inventory")
    with bh.rt.session_factory.begin() as session:
        session.execute(
            update(M2MDeviceChange)
            .where(M2MDeviceChange.bulk_change_id == bulk_id)
            .values(status="PROCESSED", status_details="Add accepted", is_processed=True, msisdn=None)
        )
        ids = list(
            session.execute(select(M2MDeviceChange.id).where(M2MDeviceChange.bulk_change_id == bulk_id)).scalars()
        )
        write_logs(
            session,
            [
                LogEntry(
                    bulk_id, i, "Add ThingSpace Device: ThingSpace API", True, request_text="POST devices/actions/add"
                )
                for i in ids
            ],
            process_by="test",
        )
    assert bh.rt.engine.refresh_status(bulk_id).value == "PROCESSED"
    assert len(_events(bh)) == 1
    await bh.run()

    assert hook.bad_signatures == 0
    assert sorted(page for _event, page in hook.documents) == [1, 2, 3]
    assert len({event for event, _page in hook.documents}) == 1
    pages = [hook.documents[key] for key in sorted(hook.documents)]
    assert [len(p["Devices"]) for p in pages] == [1000, 1000, 500]
    assert all(p["PageCount"] == 3 and p["DeviceCount"] == 2500 for p in pages)
    delivered = [d["ICCID"] for p in pages for d in p["Devices"]]
    assert len(delivered) == len(set(delivered)) == 2500
    assert set(delivered) == {r["ICCID"] for r in rows}
    assert all(d["Status"] == "PROCESSED" and d["DetailsLogEntries"] for p in pages for d in p["Devices"])
    assert all(p["BulkChange"]["Id"] == bulk_id for p in pages)
    (event,) = _events(bh)
    assert (event.status, event.page_count, event.pages_delivered) == ("DELIVERED", 3, 3)


async def test_an_event_without_a_destination_waits_and_goes_once_one_is_configured(
    bh: BillingHarness, receiver: tuple[WebhookReceiver, str]
) -> None:
    bulk_id = bh.submit([{"ICCID": new_iccid(), "IMEI": new_imei()}], status="inventory")
    await bh.run()  # ends: an event with nowhere to go keeps no worker waiting
    (event,) = _events(bh)
    assert (event.bulk_change_id, event.status, event.attempt_count) == (bulk_id, "PENDING", 0)
    assert _attempts(bh) == []

    hook, url = receiver
    bh.configure(webhook_url=url)  # configured later: the same event is delivered
    await bh.run()
    (event,) = _events(bh)
    assert event.status == "DELIVERED" and len(hook.documents) == 1
