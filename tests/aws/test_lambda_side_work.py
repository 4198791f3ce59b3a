"""A deployment with only the Lambda functions completes everything the worker loop would: the queue
function applies stored callbacks and runs the side work (billing additional steps, webhook deliveries)
after its records, and a scheduled tick does the same when no message arrives.

Real SQS (moto server on loopback), the ThingSpace simulator, the Rev.io stand-in and a webhook receiver
that verifies the signature — all over loopback HTTP; no worker loop runs anywhere in these tests.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from bulkchange.aws import lambda_handler
from bulkchange.simulator.revio import RevioStandIn
from bulkchange.simulator.server import serve_in_thread
from bulkchange.store.tables import IntegrationAuthentication, M2MDeviceChange
from engine.conftest import Harness, make_harness, new_iccid, new_imei
from integrations.conftest import SECRET, WebhookReceiver

from .conftest import LambdaContext, Queue, invoke_like_esm, lambda_environment


class Deployment:
    """The harness's database and queue, with billing and the webhook configured for the Lambda."""

    def __init__(self, h: Harness, revio: RevioStandIn, hook: WebhookReceiver, queue: Queue) -> None:
        self.h, self.revio, self.hook, self.queue = h, revio, hook, queue

    def submit(self, n: int) -> int:
        rows = [{"ICCID": new_iccid(), "IMEI": new_imei(), "RevCustomerId": "9", "ServiceTypeId": 2} for _ in range(n)]
        return self.h.submit(rows, status="inventory")

    def changes(self, bulk_id: int) -> list[M2MDeviceChange]:
        return self.h.changes(bulk_id)

    def invoke_until_empty(self, *, deadline_s: float = 60.0) -> int:
        """Play the event source mapping until the queue has nothing left to give (no worker anywhere)."""
        invocations = 0
        deadline = time.monotonic() + deadline_s
        while invoke_like_esm(self.queue, wait_s=1) is not None:
            invocations += 1
            assert time.monotonic() < deadline
        return invocations


@pytest.fixture
def deployment(tmp_path: Path, queue: Queue, monkeypatch: pytest.MonkeyPatch) -> Iterator[Deployment]:
    hook = WebhookReceiver()
    revio = RevioStandIn()
    with serve_in_thread(hook.app()) as hook_server, serve_in_thread(revio.app) as revio_server:
        # The function's configuration: set before any runtime is built (the harness's and the Lambda's).
        for name, value in {
            "BULKCHANGE_WEBHOOK_URL": f"{hook_server.base_url}/hook",
            "BULKCHANGE_WEBHOOK_SECRET": SECRET,
            "BULKCHANGE_WEBHOOK_RETRY_BASE_S": "0.05",
            "BULKCHANGE_WEBHOOK_RETRY_CAP_S": "0.2",
            "BULKCHANGE_BILLING_RETRY_BASE_S": "0.05",
            "BULKCHANGE_BILLING_RETRY_CAP_S": "0.2",
            "BULKCHANGE_BILLING_MAX_ATTEMPTS": "50",
        }.items():
            monkeypatch.setenv(name, value)
        for h in make_harness(tmp_path, queue_url=queue.url, sqs_wait_time_s=1, callbacks=False):
            for name, value in lambda_environment(h.rt.settings).items():
                monkeypatch.setenv(name, value)
            with h.rt.session_factory.begin() as session:
                session.add(
                    IntegrationAuthentication(
                        tenant_id=1,
                        name="rev test",
                        base_url=f"{revio_server.base_url}/v1",
                        username=revio.config.username,
                        client_code=revio.config.client_code,
                        password=revio.config.password,
                        subscription_key=revio.config.subscription_key,
                    )
                )
            yield Deployment(h, revio, hook, queue)


def test_the_queue_function_alone_bills_and_delivers_the_webhook(deployment: Deployment) -> None:
    d = deployment
    bulk_id = d.submit(3)

    d.invoke_until_empty()

    changes = d.changes(bulk_id)
    assert [c.status for c in changes] == ["PROCESSED"] * 3
    assert [c.additional_step_status for c in changes] == ["PROCESSED"] * 3, [
        c.additional_step_details for c in changes
    ]
    assert all(d.revio.counters.services_created[c.iccid] == 1 for c in changes)
    assert d.hook.bad_signatures == 0 and len(d.hook.documents) == 1
    ((_event, page), document) = next(iter(d.hook.documents.items()))
    assert page == 1 and document["BulkChange"]["Id"] == bulk_id and document["DeviceCount"] == 3
    assert {dev["AdditionalStepStatus"] for dev in document["Devices"]} == {"PROCESSED"}


def test_a_scheduled_tick_finishes_side_work_when_no_message_arrives(deployment: Deployment) -> None:
    d = deployment
    d.revio.down = True
    bulk_id = d.submit(2)
    d.invoke_until_empty()
    changes = d.changes(bulk_id)
    assert [c.status for c in changes] == ["PROCESSED"] * 2  # the carrier result stands
    assert all(c.additional_step_status == "PENDING" and c.additional_step_attempt_count >= 1 for c in changes)
    assert d.hook.documents == {}  # sent only once billing settled

    d.revio.down = False
    time.sleep(0.3)  # past the billing backoff (capped at 0.2 s here)
    response = lambda_handler.handler(dict(lambda_handler.TICK_EVENT), LambdaContext())

    assert response["tick"]["side_work_done"] >= 3  # two billing steps and one delivery
    assert [c.additional_step_status for c in d.changes(bulk_id)] == ["PROCESSED"] * 2
    assert len(d.hook.documents) == 1 and d.hook.bad_signatures == 0
    assert lambda_handler.handler({"bulkchange": "tick"}, LambdaContext()) == {
        "tick": {"woken": 0, "callbacks_applied": 0, "side_work_done": 0}
    }


def test_a_tick_wakes_a_bulk_change_whose_message_was_lost(deployment: Deployment) -> None:
    d = deployment
    bulk_id = d.submit(1)
    [message] = d.queue.receive_raw(wait_s=1)  # the wake-up is taken, then lost
    d.queue.client.delete_message(QueueUrl=d.queue.url, ReceiptHandle=message["ReceiptHandle"])
    with d.h.rt.db.begin() as conn:  # its pending wake-up long overdue
        conn.execute(text('UPDATE "DeviceBulkChange" SET "NextWakeAt" = NULL WHERE id = :id'), {"id": bulk_id})

    # EventBridge's own Scheduled Event document is a tick too.
    scheduled = {"version": "0", "source": "aws.events", "detail-type": "Scheduled Event", "detail": {}}
    response = lambda_handler.handler(scheduled, LambdaContext())

    assert response["tick"]["woken"] == 1
    d.invoke_until_empty()
    assert [c.additional_step_status for c in d.changes(bulk_id)] == ["PROCESSED"]


def test_an_sqs_event_is_never_taken_for_a_tick() -> None:
    assert lambda_handler.is_tick({"bulkchange": "tick"})
    assert not lambda_handler.is_tick({"Records": [], "bulkchange": "tick"})
    assert not lambda_handler.is_tick({"source": "aws.events"})
    assert not lambda_handler.is_tick(["tick"])


def test_the_template_schedule_sends_the_tick_the_handler_recognises() -> None:
    from .test_template import _template

    template = _template()
    events = template["Resources"]["DeviceBulkChangeFunction"]["Properties"]["Events"]
    schedules = [e["Properties"] for e in events.values() if e["Type"] == "Schedule"]
    assert len(schedules) == 1
    (schedule,) = schedules
    assert lambda_handler.is_tick(json.loads(schedule["Input"])) and schedule["Enabled"] is True
    assert schedule["Schedule"] == {"Ref": "TickSchedule"}
    assert template["Parameters"]["TickSchedule"]["Default"] == "rate(1 minute)"
