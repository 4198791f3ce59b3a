"""Billing (Rev.io) and webhook deliveries under a hard deadline: a hanging Rev.io or receiver cannot hold
the caller past it, and work refused for lack of time goes back without counting an attempt.

Real HTTP on loopback (the Rev.io stand-in, a receiver), a real database; the bulk changes are processed
through their messages only, so the side work runs exactly when a test calls it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import select

from bulkchange.domain.deadline import Deadline
from bulkchange.integrations.billing import BillingRunner
from bulkchange.integrations.revio import RevioClient, RevioConnection, RevioDeadlineExceeded, RevioTransient
from bulkchange.integrations.webhooks import MIN_POST_S, OutboxStatus
from bulkchange.simulator.revio import RevioFaults
from bulkchange.simulator.server import serve_in_thread
from bulkchange.store.tables import WebhookDeliveryAttempt, WebhookOutbox

from .conftest import BillingHarness, billed_row, new_iccid, new_imei, wait_for

HANG = 60.0


async def process_messages_only(bh: BillingHarness, bulk_id: int) -> None:
    """Handle the bulk change's messages (no side work) until every change is PROCESSED."""
    transport = bh.rt.transport

    async def turn() -> bool:
        for received in transport.receive(max_messages=10):
            await bh.rt.engine.handle(received)
            transport.delete(received.receipt_handle)
        return all(c.status == "PROCESSED" for c in bh.changes(bulk_id))

    deadline = asyncio.get_running_loop().time() + 30
    while not await turn():
        assert asyncio.get_running_loop().time() < deadline, [c.status for c in bh.changes(bulk_id)]
        await asyncio.sleep(0.05)


def connection(bh: BillingHarness) -> RevioConnection:
    c = bh.revio.config
    return RevioConnection(bh.revio_url, c.username, c.client_code, c.password, c.subscription_key)


# ------------------------------------------------------------------------------------------ Rev.io client


async def test_a_hanging_rev_io_lookup_returns_before_the_deadline(bh: BillingHarness) -> None:
    bh.revio.set_faults(RevioFaults(p_slow=1.0, slow_s=HANG, endpoints=frozenset({"GET /Services"})))
    deadline = Deadline.after(2.0, margin_s=0.5)
    async with RevioClient(connection(bh), timeout=30.0, deadline=deadline, min_call_s=0.5) as client:
        with pytest.raises(RevioDeadlineExceeded):
            await client.find_services("5550001111")
    assert not deadline.expired and bh.revio.counters.requests["GET /Services"] == 1


async def test_a_hanging_rev_io_create_cut_short_is_an_unknown_outcome(bh: BillingHarness) -> None:
    bh.revio.set_faults(RevioFaults(p_slow=1.0, slow_s=HANG, endpoints=frozenset({"POST /Services"})))
    deadline = Deadline.after(2.0, margin_s=0.5)
    async with RevioClient(connection(bh), timeout=30.0, deadline=deadline, min_call_s=0.5) as client:
        with pytest.raises(RevioTransient) as info:
            await client.create_service({"number": "5550001111", "customer_id": 9})
    assert not isinstance(info.value, RevioDeadlineExceeded)  # it may have been created: looked up next time
    assert info.value.outcome_unknown and not deadline.expired


async def test_no_rev_io_call_is_started_with_less_than_the_minimum_left(bh: BillingHarness) -> None:
    async with RevioClient(connection(bh), deadline=Deadline.after(1.0, margin_s=0.5), min_call_s=2.0) as client:
        with pytest.raises(RevioDeadlineExceeded, match="not made"):
            await client.find_services("5550001111")
    assert sum(bh.revio.counters.requests.values()) == 0


# ------------------------------------------------------------------------------------------ billing runner


async def test_billing_claims_nothing_when_a_call_no_longer_fits(bh: BillingHarness) -> None:
    bulk_id = bh.submit([billed_row(new_iccid(), new_imei(), RevProductId=9, Rate="1")])
    await process_messages_only(bh, bulk_id)

    ran = await bh.integrations.billing.run_due(deadline=Deadline.after(1.0))  # billing_timeout_s is 2 s

    (change,) = bh.changes(bulk_id)
    assert ran == 0 and (change.additional_step_status, change.additional_step_attempt_count) == ("PENDING", 0)
    assert sum(bh.revio.counters.requests.values()) == 0
    assert await bh.integrations.billing.run_due() == 1  # without the deadline it runs
    assert bh.changes(bulk_id)[0].additional_step_status == "PROCESSED"


async def test_a_step_whose_call_is_refused_for_time_goes_back_without_an_attempt(bh: BillingHarness) -> None:
    bulk_id = bh.submit([billed_row(new_iccid(), new_imei(), RevProductId=9, Rate="1")])
    await process_messages_only(bh, bulk_id)
    # A client that needs more time per call than is left: the step is claimed, its first call is not made.
    runner = BillingRunner(
        bh.rt.engine.ctx,
        bh.integrations.settings,
        client_factory=lambda conn, timeout: RevioClient(conn, timeout=timeout, min_call_s=120.0),
    )

    assert await runner.run_due(deadline=Deadline.after(60.0)) == 1

    (change,) = bh.changes(bulk_id)
    assert (change.additional_step_status, change.additional_step_attempt_count) == ("PENDING", 0)
    assert change.additional_step_next_attempt_at is None  # due again at once, for the next run
    assert sum(bh.revio.counters.requests.values()) == 0


# ------------------------------------------------------------------------------------------ webhooks


class SlowReceiver:
    """Answers 200 once ``ready()`` says so (checked every 20 ms), counting every POST."""

    def __init__(self, ready: Callable[[], bool]) -> None:
        self.ready = ready
        self.pages: list[str] = []

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/hook")
        async def hook(request: Request) -> JSONResponse:
            self.pages.append(request.headers["x-bulkchange-page"])
            for _ in range(int(HANG / 0.02)):  # polled: ready() reads a clock, nothing can signal it
                if self.ready():
                    break
                await asyncio.sleep(0.02)
            return JSONResponse({"ok": True})

        return app


@pytest.fixture
def slow_receiver() -> Iterator[Callable[[Callable[[], bool]], tuple[SlowReceiver, str]]]:
    servers = []

    def start(ready: Callable[[], bool]) -> tuple[SlowReceiver, str]:
        receiver = SlowReceiver(ready)
        server = serve_in_thread(receiver.app())
        servers.append(server)
        return receiver, f"{server.__enter__().base_url}/hook"

    yield start
    for server in servers:
        server.__exit__(None, None, None)


def events(bh: BillingHarness) -> list[WebhookOutbox]:
    with bh.rt.session_factory() as session:
        return list(session.execute(select(WebhookOutbox)).scalars())


def attempts(bh: BillingHarness) -> list[WebhookDeliveryAttempt]:
    with bh.rt.session_factory() as session:
        return list(session.execute(select(WebhookDeliveryAttempt)).scalars())


async def test_a_hanging_receiver_cannot_hold_the_delivery_past_the_deadline(
    bh: BillingHarness, slow_receiver: Callable[[Callable[[], bool]], tuple[SlowReceiver, str]]
) -> None:
    receiver, url = slow_receiver(lambda: False)  # never answers
    bh.configure(webhook_url=url, webhook_timeout_s=30.0)
    bulk_id = bh.submit([{"ICCID": new_iccid(), "IMEI": new_imei()}], status="inventory")
    await process_messages_only(bh, bulk_id)
    await bh.integrations.billing.run_due()  # its additional step ("nothing to do") settles first
    deadline = Deadline.after(3.0, margin_s=0.5)

    assert await bh.integrations.webhooks.run_due(deadline=deadline) == 1

    assert not deadline.expired and receiver.pages == ["1"]
    (attempt,) = attempts(bh)
    assert attempt.response_status is None and attempt.error  # the POST was made: an attempt, cut short
    (event,) = events(bh)
    assert event.status == OutboxStatus.PENDING.value and event.pages_delivered == 0


async def test_a_page_that_no_longer_fits_is_put_back_without_an_attempt(
    bh: BillingHarness, slow_receiver: Callable[[Callable[[], bool]], tuple[SlowReceiver, str]]
) -> None:
    deadline = Deadline.after(3.0, margin_s=0.5)  # replaced once the bulk change is processed
    # Page 1 is answered once less than a POST's minimum is left: page 2 must then not be sent.
    receiver, url = slow_receiver(lambda: not deadline.allows(MIN_POST_S))
    bh.configure(webhook_url=url, webhook_page_size=1)
    bulk_id = bh.submit([{"ICCID": new_iccid(), "IMEI": new_imei()} for _ in range(2)], status="inventory")
    await process_messages_only(bh, bulk_id)
    await bh.integrations.billing.run_due()
    deadline = Deadline.after(3.0, margin_s=0.5)

    assert await bh.integrations.webhooks.run_due(deadline=deadline) == 1

    (event,) = events(bh)
    assert (event.status, event.page_count, event.pages_delivered) == (OutboxStatus.PENDING.value, 2, 1)
    assert (event.attempt_count, event.next_attempt_at, event.lease_owner) == (0, None, None)
    assert receiver.pages == ["1"] and len(attempts(bh)) == 1

    assert await bh.integrations.webhooks.run_due() == 1  # the next run goes on from page 2
    await wait_for(lambda: events(bh)[0].status == OutboxStatus.DELIVERED.value, what="delivered")
    assert receiver.pages == ["1", "2"]
