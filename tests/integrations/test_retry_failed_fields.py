""" "Retry failed" re-creates each failed change from every field of its original row: the Rev.io lists and
the request-level IntegrationAuthenticationId included (a retried activation billed without its products,
or refused when the tenant has two Rev.io credentials, was the failure)."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import update

from bulkchange.engine.operator_actions import retry_failed, retry_rows
from bulkchange.engine.row_rules import COLUMNS
from bulkchange.store.tables import IntegrationAuthentication, M2MDeviceChange

from .conftest import BillingHarness, new_iccid, new_imei


def _every_column(iccid: str, auth_id: int) -> dict[str, Any]:
    """One activation row with a value in every column of the input format."""
    return {
        "ICCID": iccid,
        "IMEI": new_imei(),
        "ServicePlan": "M2M_4G",
        "MdnZipCode": "98801",
        "SkuNumber": "SM-T387V",
        "ReasonCode": "FF",
        "EtfWaiver": "true",
        "PublicIpRestriction": "unrestricted",
        "RevAccountNumber": "ACC-77",
        "Status": "active",
        "IsIgnoreCurrentStatus": "false",
        "CustomerRatePlan": "IOT-BASIC",
        "IntegrationAuthenticationId": str(auth_id),
        "RevCustomerId": "4242",
        "ServiceTypeId": "7",
        "ProviderId": "3",
        "Prorate": "true",
        "EffectiveDate": "2026-11-01",
        "ActivatedDate": "2026-11-28",
        "UsagePlanGroupId": "12",
        "RevPackageId": "",
        "RevProductId": "501",
        "Rate": "12.5",
        "Description": "fleet tracker",
        "RevProductIdList": "601;602",
        "RateList": "1.5;2.25",
    }


def test_retry_failed_round_trips_every_column_of_the_input_format(bh_any: BillingHarness) -> None:
    bh = bh_any
    with bh.rt.session_factory() as session:  # a second credential: the row must keep naming its own
        other = IntegrationAuthentication(
            tenant_id=1,
            name="rev other",
            base_url=bh.revio_url,
            username="u",
            client_code="c",
            password="p",
            subscription_key="k",
        )
        session.add(other)
        session.commit()
    row = _every_column(new_iccid(), bh.auth_id)
    assert {c.name for c in COLUMNS.columns} <= set(row), "the test row must cover every input column"
    original = bh.submit([row])
    (failed,) = bh.changes(original)
    with bh.rt.session_factory.begin() as session:  # the carrier refused it (as a worker would record)
        session.execute(update(M2MDeviceChange).where(M2MDeviceChange.id == failed.id).values(status="ERROR"))

    with bh.rt.session_factory() as session:
        (again,) = retry_rows(session, original)
    assert again["RevProductIdList"] == [601, 602]
    assert [str(r) for r in again["RateList"]] == ["1.5", "2.25"]
    assert int(again["IntegrationAuthenticationId"]) == bh.auth_id

    with bh.rt.session_factory() as session:
        retried = retry_failed(session, bh.rt.transport, original)
    (copy,) = bh.changes(retried)
    assert json.loads(copy.change_request) == json.loads(failed.change_request)
    stored = json.loads(copy.change_request)
    assert stored["IntegrationAuthenticationId"] == bh.auth_id
    assert stored["RevService"]["RevProductIdList"] == [601, 602]
    assert stored["RevService"]["RateList"] == ["1.5", "2.25"]
