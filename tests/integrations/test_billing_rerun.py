"""Re-running additional steps, and Rev.io refusing the credential itself (401 / 403): the steps of that
credential wait, visibly, until it is set again or the step is re-run — they do not end ERROR."""

from __future__ import annotations

import pytest

from bulkchange.engine.additional_step import AdditionalStepStatus
from bulkchange.services.billing_steps import NothingToRerun, release_credential_waits, rerun_billing
from bulkchange.services.credentials import set_billing

from .conftest import BillingHarness, billed_row, new_iccid, new_imei

WAITING = AdditionalStepStatus.WAITING_CREDENTIALS.value


def _rows(bh: BillingHarness, n: int) -> list[dict[str, object]]:
    return [billed_row(new_iccid(), new_imei(), RevProductId=501, Rate="9.5") for _ in range(n)]


async def test_a_rotated_billing_password_makes_the_steps_wait_until_it_is_set_again(bh_any: BillingHarness) -> None:
    bh = bh_any
    right = bh.revio.config.password
    bh.revio.config = bh.revio.config.model_copy(update={"password": "rotated-at-rev-io"})  # we still send the old one
    bulk = bh.submit(_rows(bh, 2))
    await bh.run()
    for change in bh.changes(bulk):
        assert change.status == "PROCESSED"
        assert change.additional_step_status == WAITING, change.additional_step_details
        assert "waiting for billing credentials" in (change.additional_step_details or "")
        assert f"credentials set --billing {bh.auth_id}" in (change.additional_step_details or "")
    assert bh.revio.counters.unauthorized >= 2
    assert sum(bh.revio.counters.services_created.values()) == 0

    bh.revio.config = bh.revio.config.model_copy(update={"password": right})
    with bh.rt.session_factory() as session:
        set_billing(session, bh.auth_id, password=right)
        assert release_credential_waits(session, bh.auth_id) == 2
    await bh.run()
    for change in bh.changes(bulk):
        assert change.additional_step_status == "PROCESSED", change.additional_step_details
        assert bh.revio.counters.services_created[change.msisdn or ""] == 1


async def test_a_failed_billing_step_is_re_run_for_one_device_then_for_all(bh: BillingHarness) -> None:
    bh.revio.config = bh.revio.config.model_copy(update={"customers": frozenset({1})})  # 4242 is refused
    bulk = bh.submit(_rows(bh, 3))
    await bh.run()
    changes = bh.changes(bulk)
    assert [c.additional_step_status for c in changes] == ["ERROR"] * 3

    bh.revio.config = bh.revio.config.model_copy(update={"customers": frozenset({4242})})
    with bh.rt.session_factory() as session:
        one = rerun_billing(session, bulk, iccids=[changes[0].iccid], by="test")
    assert one.change_ids == [changes[0].id]
    await bh.run()
    assert [c.additional_step_status for c in bh.changes(bulk)] == ["PROCESSED", "ERROR", "ERROR"]

    with bh.rt.session_factory() as session:
        rest = rerun_billing(session, bulk, by="test")
        assert rest.count == 2
        with pytest.raises(NothingToRerun):
            rerun_billing(session, bulk, change_ids=[changes[0].id])
        with pytest.raises(ValueError):
            rerun_billing(session, bulk, statuses=["PROCESSED"])
        with pytest.raises(KeyError):
            rerun_billing(session, 999_999)
    await bh.run()
    assert [c.additional_step_status for c in bh.changes(bulk)] == ["PROCESSED"] * 3
    for change in bh.changes(bulk):
        assert bh.revio.counters.services_created[change.msisdn or ""] == 1
