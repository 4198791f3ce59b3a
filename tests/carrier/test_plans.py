"""Claims rely on how long a plan can be (``carrier.port.LONGEST_PLAN``): no carrier plans longer, for any
target, option or request the adapters accept."""

from __future__ import annotations

import itertools

import pytest

from bulkchange.carrier.port import LONGEST_PLAN, Carrier
from bulkchange.domain.change_request import StatusUpdateRequest
from bulkchange.domain.statuses import TargetStatus
from bulkchange.engine.context import default_carriers

_DEVICES = [{}, {"IMEI": "990013907835573"}, {"SkuNumber": "SM-T387V"}, {"IMEI": "990013907835573", "SkuNumber": "S"}]


def _request(target: TargetStatus, ignore: bool, device: dict[str, str]) -> StatusUpdateRequest:
    return StatusUpdateRequest.model_validate(
        {
            "UpdateStatus": target.value,
            "IsIgnoreCurrentStatus": ignore,
            "Request": {"ICCID": "89148000000800784259", "RatePlanCode": "M2M_4G", "MdnZipCode": "98801", **device},
        }
    )


@pytest.mark.parametrize("carrier", list(default_carriers().values()), ids=lambda c: c.name)
def test_no_plan_is_longer_than_the_claims_assume(carrier: Carrier) -> None:
    lengths = []
    for target, ignore, device in itertools.product(TargetStatus, (False, True), _DEVICES):
        try:
            plan = carrier.plan(target, _request(target, ignore, device), ignore_current_status=ignore)
        except ValueError:  # refused at submit (UnsupportedTarget, a missing IMEI): no plan to claim
            continue
        assert plan and set(plan) <= set(carrier.steps), (carrier.name, target, plan)
        lengths.append(len(plan))
    assert max(lengths) == LONGEST_PLAN
