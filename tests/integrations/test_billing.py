"""Billing after success, end to end: ThingSpace simulator + Rev.io stand-in over loopback HTTP, the real
worker loop, a real database. The stand-in counts services created per number: "exactly one" is checked
there, not in our own tables."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select

from bulkchange.engine.additional_step import AdditionalStepStatus
from bulkchange.engine.submit import SubmissionRefused, create_bulk_change
from bulkchange.integrations.billing import BillingRunner
from bulkchange.integrations.revio import RevioClient, RevioConnection
from bulkchange.providers import add_provider
from bulkchange.simulator.revio import RevioFaults
from bulkchange.store.tables import CustomerRatePlan, Device, IntegrationAuthentication, M2MDeviceChange, RevService

from .conftest import BillingHarness, billed_row, fast_integrations, new_iccid, new_imei, wait_for

PROCESSED = AdditionalStepStatus.PROCESSED.value


async def test_activation_creates_one_service_with_one_product_numbered_by_the_msisdn(bh_any: BillingHarness) -> None:
    bh = bh_any
    rows = [
        billed_row(new_iccid(), new_imei(), RevProductId=501, Rate="12.5", CustomerRatePlan="IOT-BASIC")
        for _ in range(3)
    ]
    bulk_id = bh.submit(rows)
    await bh.run()

    for change in bh.changes(bulk_id):
        assert change.status == "PROCESSED", change.status_details
        assert change.additional_step_status == PROCESSED, change.additional_step_details
        assert change.msisdn, "an activation is billed after verification, so the MSISDN is known"
        # Rev.io: exactly one service, numbered by the MSISDN (never the ICCID), with the ICCID as number2.
        assert bh.revio.counters.services_created[change.msisdn] == 1
        assert bh.revio.counters.services_created.get(change.iccid, 0) == 0
        (service,) = bh.revio.services_for(change.msisdn)
        assert service["number2"] == change.iccid
        assert service["customer_id"] == 4242
        assert service["service_type_id"] == 7
        assert service["activated_date"] == "2026-11-28"
        (product,) = bh.revio.products_for(service["service_id"])
        assert (product["product_id"], product["rate"], product["quantity"]) == (501, 12.5, 1)
        # Our records.
        row = bh.rev_service(change.id)
        assert row is not None
        assert (row.status, row.rev_service_id, row.number, row.device_id) == (
            "CREATED",
            service["service_id"],
            change.msisdn,
            change.device_id,
        )
        (recorded,) = bh.rev_products(change.id)
        assert (recorded.rev_service_product_id, recorded.rev_product_id, recorded.rate, recorded.status) == (
            product["service_product_id"],
            501,
            Decimal("12.5000"),
            "ACTIVE",
        )
        logs = bh.log_descriptions(change.id)
        for description in (
            "Associate Customer Rate Plan: Update AMOP",
            "Create Rev.io Service: Rev.io API",
            "Create Rev.io Service: Update AMOP",
            "Create Rev.io Service Product: Rev.io API",
            "Create Rev.io Service Product: Update AMOP",
        ):
            assert logs.count(description) == 1, (
                description,
                logs,
                change.additional_step_attempt_count,
                change.additional_step_details,
            )
    # The device is associated with the customer rate plan.
    with bh.rt.session_factory() as session:
        plan_id = session.execute(select(CustomerRatePlan.id).where(CustomerRatePlan.name == "IOT-BASIC")).scalar()
        devices = list(session.execute(select(Device).where(Device.iccid.in_([r["ICCID"] for r in rows]))).scalars())
    assert [d.customer_rate_plan_id for d in devices] == [plan_id] * 3


async def test_several_products_from_the_product_list_with_its_rate_list(bh: BillingHarness) -> None:
    iccid = new_iccid()
    bulk_id = bh.submit([billed_row(iccid, new_imei(), RevProductIdList="601;602;603", RateList="1.5;2;3.25")])
    await bh.run()

    (change,) = bh.changes(bulk_id)
    assert change.additional_step_status == PROCESSED, change.additional_step_details
    (service,) = bh.revio.services_for(change.msisdn or "")
    products = bh.revio.products_for(service["service_id"])
    assert sorted((p["product_id"], p["rate"]) for p in products) == [(601, 1.5), (602, 2.0), (603, 3.25)]
    recorded = bh.rev_products(change.id)
    assert [(p.position, p.rev_product_id, p.rate) for p in recorded] == [
        (0, 601, Decimal("1.5000")),
        (1, 602, Decimal("2.0000")),
        (2, 603, Decimal("3.2500")),
    ]
    assert bh.log_descriptions(change.id).count("Create Rev.io Service Product: Rev.io API") == 3


async def test_inventory_has_no_msisdn_by_nature_so_the_iccid_is_the_number(bh: BillingHarness) -> None:
    iccid = new_iccid()
    bulk_id = bh.submit(
        [{"ICCID": iccid, "IMEI": new_imei(), "RevCustomerId": "9", "ServiceTypeId": 2}], status="inventory"
    )
    await bh.run()
    (change,) = bh.changes(bulk_id)
    assert change.additional_step_status == PROCESSED, change.additional_step_details
    assert bh.revio.counters.services_created[iccid] == 1


async def test_billing_down_then_up_creates_exactly_one_service_per_change(bh: BillingHarness) -> None:
    bh.revio.down = True
    rows = [billed_row(new_iccid(), new_imei(), RevProductId=77, Rate="5") for _ in range(4)]
    bulk_id = bh.submit(rows)
    async with bh.worker():
        # The carrier result comes first and stands; billing keeps failing and is retried with backoff.
        await wait_for(
            lambda: all(c.status == "PROCESSED" and c.additional_step_attempt_count >= 2 for c in bh.changes(bulk_id)),
            what="carrier done and billing retried",
        )
        for change in bh.changes(bulk_id):
            assert change.additional_step_status in ("PENDING", "PROCESSING")
            assert "503" in (change.additional_step_details or "") or change.additional_step_status == "PROCESSING"
        bh.revio.down = False
        await wait_for(
            lambda: all(c.additional_step_status == PROCESSED for c in bh.changes(bulk_id)), what="billing done"
        )
    for change in bh.changes(bulk_id):
        assert change.status == "PROCESSED"
        assert bh.revio.counters.services_created[change.msisdn or ""] == 1
        assert bh.revio.counters.products_created[bh.rev_service(change.id).rev_service_id or 0] == 1  # type: ignore[union-attr]
    assert sum(bh.revio.counters.services_created.values()) == 4


@pytest.mark.parametrize("fault", ["error_after_create", "malformed", "slow"])
async def test_unknown_outcome_of_service_creation_is_reconciled_without_a_duplicate(
    bh: BillingHarness, fault: str
) -> None:
    """The service was created but the answer was lost (500 after the work, garbage, or too late)."""
    bh.configure(billing_timeout_s=0.5)
    bh.revio.set_faults(RevioFaults(slow_s=1.5, endpoints=frozenset({"POST /Services"})))
    bh.revio.fail_next(fault)  # type: ignore[arg-type]
    bulk_id = bh.submit([billed_row(new_iccid(), new_imei(), RevProductId=1, Rate="1")])
    await bh.run()

    (change,) = bh.changes(bulk_id)
    assert change.additional_step_status == PROCESSED, change.additional_step_details
    assert change.additional_step_attempt_count == 2
    assert bh.revio.counters.services_created[change.msisdn or ""] == 1
    assert bh.revio.counters.requests["GET /Services"] == 1  # looked up before creating again
    logs = bh.log_descriptions(change.id)
    assert logs.count("Find Rev.io Service: Rev.io API") == 1
    assert logs.count("Create Rev.io Service: Rev.io API") == 1  # the failed call (the retry adopted)
    row = bh.rev_service(change.id)
    assert row is not None and row.rev_service_id == bh.revio.services_for(change.msisdn or "")[0]["service_id"]


async def test_unknown_outcome_of_a_product_is_reconciled_without_a_duplicate(bh: BillingHarness) -> None:
    bh.revio.set_faults(RevioFaults(endpoints=frozenset({"POST /ServiceProduct"})))
    bh.revio.fail_next("error_after_create")
    bulk_id = bh.submit([billed_row(new_iccid(), new_imei(), RevProductIdList="11;12", RateList="1;2")])
    await bh.run()
    (change,) = bh.changes(bulk_id)
    assert change.additional_step_status == PROCESSED, change.additional_step_details
    (service,) = bh.revio.services_for(change.msisdn or "")
    assert sorted(p["product_id"] for p in bh.revio.products_for(service["service_id"])) == [11, 12]
    assert bh.revio.counters.services_created[change.msisdn or ""] == 1


class Crash(BaseException):
    """A worker dying mid-step (not an Exception: nothing in the step catches it)."""


async def test_a_crash_after_the_service_was_created_is_reconciled_by_the_next_worker(bh: BillingHarness) -> None:
    bh.configure(billing_lease_s=60)
    bulk_id = bh.submit([billed_row(new_iccid(), new_imei(), RevProductId=5, Rate="2")])
    # Carrier steps only (no side work), so the billing step waits for our crashing worker.
    bh.rt.engine.extra_sources.clear()
    await bh.run()
    (change,) = bh.changes(bulk_id)
    assert change.status == "PROCESSED" and change.additional_step_status == "PENDING"

    class CrashingClient(RevioClient):
        async def create_service(self, body):  # type: ignore[no-untyped-def]
            await super().create_service(body)  # Rev.io creates the service …
            raise Crash  # … and the worker dies before recording it

    settings = fast_integrations(billing_lease_s=60)
    crashing = BillingRunner(
        bh.rt.ctx, settings, client_factory=lambda c, t: CrashingClient(c, timeout=t), worker_id="doomed"
    )
    with pytest.raises(Crash):
        await crashing.run_due()
    (change,) = bh.changes(bulk_id)
    assert change.additional_step_status == "PROCESSING"  # claimed by the dead worker, lease running
    assert bh.revio.counters.services_created[change.msisdn or ""] == 1
    row = bh.rev_service(change.id)
    assert row is not None and row.status == "CREATING" and row.rev_service_id is None  # the intent

    # Another worker: nothing to do while the lease runs; after it expires, it reconciles.
    later = BillingRunner(bh.rt.ctx, settings, worker_id="survivor")
    assert await later.run_due() == 0
    expired = BillingRunner(
        bh.rt.ctx, settings, worker_id="survivor", clock=lambda: bh.rt.ctx.clock() + timedelta(seconds=61)
    )
    assert await expired.run_due() == 1
    (change,) = bh.changes(bulk_id)
    assert change.additional_step_status == PROCESSED, change.additional_step_details
    assert bh.revio.counters.services_created[change.msisdn or ""] == 1
    assert len(bh.revio.services_for(change.msisdn or "")) == 1
    assert "Find Rev.io Service: Rev.io API" in bh.log_descriptions(change.id)


async def test_a_refusal_ends_the_step_in_error_without_touching_the_carrier_result(bh: BillingHarness) -> None:
    bh.revio.config = bh.revio.config.model_copy(update={"customers": frozenset({1})})
    bulk_id = bh.submit([billed_row(new_iccid(), new_imei(), RevCustomerId="999")])
    await bh.run()
    (change,) = bh.changes(bulk_id)
    assert change.status == "PROCESSED"
    assert change.additional_step_status == "ERROR"
    assert "customer 999 not found" in (change.additional_step_details or "")
    assert change.additional_step_attempt_count == 1  # refused: not retried
    assert bh.revio.counters.requests["POST /Services"] == 1


async def test_wrong_credentials_are_refused_and_never_logged(bh: BillingHarness) -> None:
    conn = RevioConnection(bh.revio_url, "rev-user", "rev-client", "wrong-password", "rev-subscription-key")
    from bulkchange.integrations.revio import RevioRefused

    async with RevioClient(conn) as client:
        with pytest.raises(RevioRefused) as info:
            await client.create_service({"customer_id": 1, "number": "1", "service_type_id": 1})
    assert info.value.http_status == 401
    assert "wrong-password" not in repr(conn)
    assert bh.revio.counters.unauthorized == 1
    assert sum(bh.revio.counters.services_created.values()) == 0


def test_submit_refuses_rows_that_cannot_be_billed_or_associated(bh: BillingHarness) -> None:
    rows = [
        billed_row(new_iccid(), new_imei(), RevProductIdList="1;2;3", RateList="1;2"),
        billed_row(new_iccid(), new_imei(), CustomerRatePlan="NO-SUCH-PLAN"),
        billed_row(new_iccid(), new_imei(), RevCustomerId="acme"),
        billed_row(new_iccid(), new_imei(), IntegrationAuthenticationId=999),
        billed_row(new_iccid(), new_imei()),  # fine
    ]
    with pytest.raises(SubmissionRefused) as info:
        bh.submit(rows)
    problems = {(p.row, p.field) for p in info.value.report.problems}
    assert problems == {
        (1, "RateList"),
        (2, "CustomerRatePlan"),
        (3, "RevCustomerId"),
        (4, "IntegrationAuthenticationId"),
    }
    assert bh.count(M2MDeviceChange) == 0
    assert bh.count(RevService) == 0


async def test_a_pool_is_associated_as_a_pool(bh: BillingHarness) -> None:
    iccid = new_iccid()
    bulk_id = bh.submit([{"ICCID": iccid, "IMEI": new_imei(), "CustomerRatePlan": "IOT-POOL"}], status="inventory")
    await bh.run()
    (change,) = bh.changes(bulk_id)
    assert change.additional_step_status == PROCESSED
    with bh.rt.session_factory() as session:
        device = session.execute(select(Device).where(Device.iccid == iccid)).scalar_one()
        pool = session.execute(select(CustomerRatePlan).where(CustomerRatePlan.name == "IOT-POOL")).scalar_one()
    assert (device.customer_rate_pool_id, device.customer_rate_plan_id) == (pool.id, None)
    assert sum(bh.revio.counters.requests.values()) == 0  # no billing asked: Rev.io untouched


def _second_tenant(bh: BillingHarness) -> tuple[int, int]:
    """A provider of tenant 2 (same simulated carrier account) and tenant 2's own Rev.io credential."""
    with bh.rt.session_factory() as session:
        provider_id = add_provider(
            session,
            name="tenant-2",
            base_url=bh.sim_url,
            client_id="sim-client",
            client_secret="sim-secret",
            username="sim-user",
            password="sim-pass",
            account="0000123456-00001",
            tenant_id=2,
        )
    with bh.rt.session_factory.begin() as session:
        auth = IntegrationAuthentication(
            tenant_id=2,
            name="rev tenant 2",
            base_url=bh.revio_url,
            username=bh.revio.config.username,
            client_code=bh.revio.config.client_code,
            password=bh.revio.config.password,
            subscription_key=bh.revio.config.subscription_key,
        )
        session.add_all([auth, CustomerRatePlan(tenant_id=2, name="IOT-BASIC")])  # the same name as tenant 1's
        session.flush()
        return provider_id, auth.id


async def test_billing_uses_only_the_bulk_changes_tenants_credential_and_rate_plan(bh: BillingHarness) -> None:
    """A stored request that names another tenant's credential (written before credentials had tenants, or by
    hand) is refused by the runner as an unknown credential: never billed through that tenant's account. The
    customer rate plan associated is the bulk change's tenant's, though another tenant has one of that name."""
    provider_id, tenant_2_auth = _second_tenant(bh)
    forged, honest = new_iccid(), new_iccid()
    rows = [
        billed_row(iccid, new_imei(), IntegrationAuthenticationId=tenant_2_auth, CustomerRatePlan="IOT-BASIC")
        for iccid in (forged, honest)
    ]
    with bh.rt.session_factory() as session:
        bulk_id = create_bulk_change(
            session, bh.rt.transport, rows, status="inventory", service_provider_id=provider_id
        )
    with bh.rt.session_factory.begin() as session:
        change = session.execute(select(M2MDeviceChange).where(M2MDeviceChange.iccid == forged)).scalar_one()
        request = json.loads(change.change_request)
        request["IntegrationAuthenticationId"] = bh.auth_id  # tenant 1's
        change.change_request = json.dumps(request)

    await bh.run()

    by_iccid = {c.iccid: c for c in bh.changes(bulk_id)}
    assert by_iccid[forged].additional_step_status == AdditionalStepStatus.ERROR.value
    assert by_iccid[forged].additional_step_details == f"no active Rev.io integration authentication {bh.auth_id}"
    assert bh.rev_service(by_iccid[forged].id) is None
    assert by_iccid[honest].additional_step_status == PROCESSED
    assert bh.revio.counters.services_created == {honest: 1}  # the inventory device's number is its ICCID
    service = bh.rev_service(by_iccid[honest].id)
    assert service is not None and service.integration_authentication_id == tenant_2_auth
    with bh.rt.session_factory() as session:
        device = session.execute(select(Device).where(Device.iccid == honest)).scalar_one()
        plan = session.execute(
            select(CustomerRatePlan).where(CustomerRatePlan.tenant_id == 2, CustomerRatePlan.name == "IOT-BASIC")
        ).scalar_one()
    assert device.customer_rate_plan_id == plan.id
