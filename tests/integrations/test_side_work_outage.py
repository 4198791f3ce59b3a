"""Billing steps and webhook deliveries hand a lost database to the worker loop, which waits the outage out.

A lost connection used to be treated as a crash of the step (logged with a traceback, and a retry recorded —
itself failing against the missing database). Now the runner lets it through: the worker loop logs the
outage once and tries again later, and the step or event it had claimed comes back when its lease expires.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
import structlog
from sqlalchemy import exc as sa_exc
from sqlalchemy import select

from bulkchange.engine.additional_step import AdditionalStepStatus
from bulkchange.integrations.webhooks import EVENT_TYPE, OutboxStatus
from bulkchange.store.tables import DeviceBulkChange, M2MDeviceChange, WebhookOutbox, utcnow

from .conftest import BillingHarness, new_iccid


def connection_refused(*_args: Any, **_kwargs: Any) -> Any:
    raise sa_exc.OperationalError("SELECT 1", {}, psycopg.OperationalError("connection failed: Connection refused"))


def _processed_bulk(bh: BillingHarness) -> int:
    with bh.rt.session_factory.begin() as session:
        bulk = DeviceBulkChange(service_provider_id=bh.provider_id, status="PROCESSED", created_date=utcnow())
        session.add(bulk)
        session.flush()
        return bulk.id


async def test_a_billing_step_cut_off_by_the_outage_is_kept_for_later(bh_any: BillingHarness) -> None:
    bh = bh_any
    bulk_id = _processed_bulk(bh)
    with bh.rt.session_factory.begin() as session:
        change = M2MDeviceChange(
            bulk_change_id=bulk_id,
            service_provider_id=bh.provider_id,
            iccid=new_iccid(),
            status="PROCESSED",
            change_request="{}",
            target_status="active",
            plan="ACTIVATE",
            step_index=0,
            attempt_count=1,
            additional_step_status=AdditionalStepStatus.PENDING.value,
        )
        session.add(change)
        session.flush()
        change_id = change.id
    runner = bh.integrations.billing
    runner._job = connection_refused  # type: ignore[method-assign]  # the database goes away mid-step
    with structlog.testing.capture_logs() as logs, pytest.raises(sa_exc.OperationalError):
        await runner.run_due()
    assert not any(e["event"] == "additional step crashed; will retry" for e in logs)
    with bh.rt.session_factory() as session:
        kept = session.get(M2MDeviceChange, change_id)
    assert kept is not None
    # Still leased to this worker (it comes back when the lease expires), no retry recorded against it.
    assert kept.additional_step_status == AdditionalStepStatus.PROCESSING.value
    assert kept.additional_step_next_attempt_at is None


async def test_a_webhook_delivery_cut_off_by_the_outage_is_kept_for_later(bh_any: BillingHarness) -> None:
    bh = bh_any
    bulk_id = _processed_bulk(bh)
    with bh.rt.session_factory.begin() as session:
        session.add(
            WebhookOutbox(
                event_id="evt-outage",
                event_type=EVENT_TYPE,
                bulk_change_id=bulk_id,
                status=OutboxStatus.PENDING.value,
                pages_delivered=0,
                attempt_count=0,
                created_date=utcnow(),
            )
        )
    dispatcher = bh.configure(webhook_url="http://127.0.0.1:9/hook").webhooks
    dispatcher.deliver = connection_refused  # type: ignore[method-assign]
    with structlog.testing.capture_logs() as logs, pytest.raises(sa_exc.OperationalError):
        await dispatcher.run_due()
    assert not any(e["event"] == "webhook delivery crashed" for e in logs)
    with bh.rt.session_factory() as session:
        event = session.execute(select(WebhookOutbox).where(WebhookOutbox.event_id == "evt-outage")).scalar_one()
    assert (event.status, event.attempt_count) == (OutboxStatus.DELIVERING.value, 0)  # not a failed attempt
