"""What a destructive submission would do, summed up from its rows (``services.consequences``)."""

from __future__ import annotations

import uuid

from sqlalchemy.orm import Session, sessionmaker

from bulkchange.domain.carriers import IntegrationId
from bulkchange.domain.statuses import DeviceStatusId
from bulkchange.services.consequences import consequences_of
from bulkchange.store.tables import Device, ServiceProvider

from .conftest import add_provider, unique_iccid


def _device(session: Session, provider_id: int, status_id: int) -> str:
    iccid = unique_iccid()
    session.add(Device(service_provider_id=provider_id, iccid=iccid, device_status_id=status_id))
    session.commit()
    return iccid


def test_deactivations_release_the_mdn_and_may_cost_an_etf_unless_waived(factory: sessionmaker[Session]) -> None:
    with factory() as s:
        provider = add_provider(s)
        rows = [
            {"ICCID": unique_iccid(), "EtfWaiver": "true"},
            {"ICCID": unique_iccid(), "EtfWaiver": ""},
            {"iccid": unique_iccid()},
            {"ICCID": unique_iccid(), "Status": "active", "ServicePlan": "M2M_4G"},  # this row activates
            {"IMEI": "no ICCID"},  # refused by the submission itself; not counted here
        ]
        c = consequences_of(s, rows, status="deactivated", service_provider_id=provider)
        assert (c.lines, c.deactivations, c.etf_may_apply, c.destructive) == (5, 3, 2, 3)
        assert c.sentences() == [
            "MDN released on 3 lines (the phone numbers are lost)",
            "ETF (early termination fee) may apply to 2 lines: EtfWaiver not set",
        ]


def test_a_suspension_is_destructive_for_lines_that_are_or_may_be_active(factory: sessionmaker[Session]) -> None:
    with factory() as s:
        provider = add_provider(s)
        active = [_device(s, provider, DeviceStatusId.ACTIVE) for _ in range(2)]
        suspended = _device(s, provider, DeviceStatusId.SUSPEND)
        other_providers_active = _device(s, add_provider(s), DeviceStatusId.ACTIVE)
        rows = [{"ICCID": i} for i in [*active, suspended, other_providers_active]]
        c = consequences_of(s, rows, status="suspend", service_provider_id=provider)
        assert (c.suspensions_of_active, c.suspensions_status_unknown, c.destructive) == (2, 1, 3)
        assert c.sentences() == ["Service suspended on 3 lines that may be active, 1 of them with no status known here"]


def test_activations_and_restores_are_not_destructive(factory: sessionmaker[Session]) -> None:
    with factory() as s:
        provider = add_provider(s)
        rows = [{"ICCID": unique_iccid(), "ServicePlan": "M2M_4G", "MdnZipCode": "98801"} for _ in range(3)]
        assert consequences_of(s, rows, status="active", service_provider_id=provider).destructive == 0
        assert consequences_of(s, rows, status="restore", service_provider_id=provider).sentences() == []


def test_a_control_center_deactivation_keeps_the_number_and_has_no_fee(factory: sessionmaker[Session]) -> None:
    with factory() as s:
        pod19 = ServiceProvider(
            name=f"svc-cc-{uuid.uuid4().hex[:12]}", tenant_id=1, integration_id=IntegrationId.CONTROLCENTER
        )
        s.add(pod19)
        s.commit()
        rows = [{"ICCID": unique_iccid()}, {"ICCID": unique_iccid(), "EtfWaiver": "true"}]
        c = consequences_of(s, rows, status="deactive", service_provider_id=pod19.id)
        assert (c.deactivations, c.etf_may_apply, c.destructive, c.deactivation_releases_number) == (2, 0, 2, False)
        assert c.sentences() == ["Service stopped on 2 lines (deactivated; each MSISDN stays assigned to its SIM)"]
        assert not any("MDN" in sentence for sentence in c.sentences())
