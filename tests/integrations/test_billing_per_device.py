"""One Rev.io service per device service (Rev.io account + number), not only per change: a second change of
the same device adopts the service another change created (same customer and service type) or is refused
with the reason; two workers billing the same device at once create one service. Counted by the Rev.io
stand-in over real HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from bulkchange.integrations.billing import BillingRunner
from bulkchange.store.constraints import violates
from bulkchange.store.tables import (
    LIVE_REV_SERVICE_INDEX,
    M2MDeviceChange,
    RevService,
    RevServiceProduct,
    utcnow,
)

from .conftest import BillingHarness, billed_row, fast_integrations, new_iccid, new_imei

PROCESSED = "PROCESSED"


def _suspend_billed(iccid: str, **extra: Any) -> dict[str, Any]:
    """A second change of the same device that also carries billing fields."""
    row: dict[str, Any] = {
        "ICCID": iccid,
        "RevCustomerId": "4242",
        "ServiceTypeId": 7,
        "ProviderId": 3,
        "RevProductId": 501,
        "Rate": "12.5",
    }
    row.update(extra)
    return row


async def _two_processed_changes(bh: BillingHarness, **second: Any) -> tuple[M2MDeviceChange, M2MDeviceChange]:
    """An activation and then a suspension of one device, both PROCESSED, both billing steps still PENDING."""
    side_work = list(bh.rt.engine.extra_sources)
    bh.rt.engine.extra_sources.clear()  # carrier work only: no billing yet
    iccid = new_iccid()
    first = bh.submit([billed_row(iccid, new_imei(), RevProductId=501, Rate="12.5")])
    await bh.run()
    then = bh.submit([_suspend_billed(iccid, **second)], status="suspend")
    await bh.run()
    bh.rt.engine.extra_sources[:] = side_work
    (a,) = bh.changes(first)
    (b,) = bh.changes(then)
    assert (a.status, b.status) == ("PROCESSED", "PROCESSED"), (a.status_details, b.status_details)
    assert (a.additional_step_status, b.additional_step_status) == ("PENDING", "PENDING")
    return a, b


def _claimed_by(bh: BillingHarness, change_id: int, runner: BillingRunner) -> None:
    """The state a worker's claim leaves: the step PROCESSING under ``runner``'s lease."""
    with bh.rt.session_factory.begin() as session:
        session.execute(
            update(M2MDeviceChange)
            .where(M2MDeviceChange.id == change_id, M2MDeviceChange.additional_step_status == "PENDING")
            .values(
                additional_step_status="PROCESSING",
                additional_step_lease_owner=runner.worker_id,
                additional_step_lease_expires_at=utcnow() + timedelta(seconds=60),
                additional_step_attempt_count=M2MDeviceChange.additional_step_attempt_count + 1,
            )
        )


async def _bill(bh: BillingHarness, change_id: int) -> None:
    """One worker bills this one change now."""
    runner = BillingRunner(bh.rt.ctx, fast_integrations(), worker_id="billing-first")
    _claimed_by(bh, change_id, runner)
    await runner.run_claimed(change_id)


def _services(bh: BillingHarness, *change_ids: int) -> dict[int, tuple[str | None, int | None]]:
    with bh.rt.session_factory() as session:
        rows = session.execute(
            select(RevService.m2m_device_change_id, RevService.status, RevService.rev_service_id).where(
                RevService.m2m_device_change_id.in_(change_ids)
            )
        ).all()
    return {cid: (status, sid) for cid, status, sid in rows}


async def test_two_changes_of_one_device_billed_at_the_same_moment_make_one_service(bh_any: BillingHarness) -> None:
    bh = bh_any
    a, b = await _two_processed_changes(bh)
    settings = fast_integrations()
    one = BillingRunner(bh.rt.ctx, settings, worker_id="billing-1")
    two = BillingRunner(bh.rt.ctx, settings, worker_id="billing-2")
    _claimed_by(bh, a.id, one)
    _claimed_by(bh, b.id, two)

    await asyncio.gather(one.run_claimed(a.id), two.run_claimed(b.id))  # two workers, one step each, at once
    await bh.run()  # the one told to wait goes on

    msisdn = a.msisdn or ""
    assert msisdn and b.msisdn == msisdn
    assert bh.revio.counters.services_created[msisdn] == 1
    (service,) = bh.revio.services_for(msisdn)
    assert bh.revio.counters.products_created[service["service_id"]] == 1
    for change in bh.changes(a.bulk_change_id) + bh.changes(b.bulk_change_id):
        assert change.additional_step_status == PROCESSED, change.additional_step_details
    recorded = _services(bh, a.id, b.id)
    assert sorted(status or "" for status, _ in recorded.values()) == ["ADOPTED", "CREATED"]
    assert {sid for _, sid in recorded.values()} == {service["service_id"]}


async def test_a_later_change_of_the_same_device_adopts_the_service_and_its_product(bh_any: BillingHarness) -> None:
    bh = bh_any
    a, b = await _two_processed_changes(bh)
    await _bill(bh, a.id)  # the activation's service and product, created

    await bh.run()

    msisdn = a.msisdn or ""
    assert bh.revio.counters.services_created[msisdn] == 1
    (service,) = bh.revio.services_for(msisdn)
    assert bh.revio.counters.products_created[service["service_id"]] == 1
    (adopter,) = bh.changes(b.bulk_change_id)
    assert adopter.additional_step_status == PROCESSED, adopter.additional_step_details
    assert f"adopted: created by change {a.id}" in (adopter.additional_step_details or "")
    assert "Adopt Rev.io Service: Update AMOP" in bh.log_descriptions(b.id)
    assert _services(bh, a.id, b.id) == {
        a.id: ("CREATED", service["service_id"]),
        b.id: ("ADOPTED", service["service_id"]),
    }
    with bh.rt.session_factory() as session:
        (product,) = session.execute(
            select(RevServiceProduct).where(RevServiceProduct.m2m_device_change_id == b.id)
        ).scalars()
    assert product.status == "ADOPTED" and product.rev_service_id == service["service_id"]


async def test_another_customer_on_an_already_billed_number_is_refused_with_the_reason(bh_any: BillingHarness) -> None:
    bh = bh_any
    a, b = await _two_processed_changes(bh, RevCustomerId="5151")
    await _bill(bh, a.id)  # the activation first: its service holds the number
    assert _services(bh, a.id)[a.id][0] == "CREATED"

    await bh.run()

    msisdn = a.msisdn or ""
    assert bh.revio.counters.services_created[msisdn] == 1
    (refused,) = bh.changes(b.bulk_change_id)
    assert refused.status == "PROCESSED"  # the carrier result stands
    assert refused.additional_step_status == "ERROR"
    details = refused.additional_step_details or ""
    (service,) = bh.revio.services_for(msisdn)
    assert f"number {msisdn} already has Rev.io service {service['service_id']} (customer 4242" in details
    assert f"created by change {a.id}" in details and "customer 5151" in details
    assert refused.additional_step_attempt_count == 1  # refused, not retried
    assert "Create Rev.io Service: number already billed" in bh.log_descriptions(refused.id)
    assert b.id not in _services(bh, b.id)


async def test_without_the_check_the_index_still_keeps_a_second_creation_from_rev_io(
    bh_any: BillingHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SELECT for another change's service is the friendly path; the live-number index is the rule."""
    bh = bh_any
    a, b = await _two_processed_changes(bh)
    bh.configure(billing_max_attempts=2)
    await _bill(bh, a.id)
    monkeypatch.setattr(BillingRunner, "_holder", lambda *_args: None)

    await bh.run()

    msisdn = a.msisdn or ""
    assert bh.revio.counters.services_created[msisdn] == 1
    (second,) = bh.changes(b.bulk_change_id)
    assert second.additional_step_status == "ERROR"
    assert f"another change is creating the Rev.io service for {msisdn}" in (second.additional_step_details or "")


def test_the_database_holds_one_live_service_row_per_number(bh_any: BillingHarness) -> None:
    bh = bh_any
    with bh.rt.session_factory() as session:
        for change_id, status in ((1, "CREATED"), (2, "ADOPTED"), (3, "REFUSED"), (4, "CREATED")):
            session.add(
                RevService(
                    m2m_device_change_id=change_id,
                    number="5550100",
                    integration_authentication_id=bh.auth_id,
                    status=status,
                )
            )
            try:
                session.flush()
            except IntegrityError as exc:
                assert change_id == 4 and violates(exc, LIVE_REV_SERVICE_INDEX)
                session.rollback()
                break
        else:
            pytest.fail("a second live service row for the number was accepted")
