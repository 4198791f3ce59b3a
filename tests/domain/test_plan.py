"""The plans of carrier steps: claims rely on how long a plan can be (``LONGEST_PLAN``)."""

from __future__ import annotations

import itertools

from bulkchange.domain.plan import LONGEST_PLAN, CarrierStep, plan_for
from bulkchange.domain.statuses import TargetStatus


def _every_plan() -> list[list[CarrierStep]]:
    plans = []
    for target, ignore, imei, sku in itertools.product(TargetStatus, (False, True), (False, True), (False, True)):
        try:
            plans.append(plan_for(target, ignore_current_status=ignore, has_imei=imei, has_sku=sku))
        except ValueError:  # active without an IMEI or a SKU is refused at submit
            continue
    return plans


def test_no_plan_is_longer_than_longest_plan_and_one_is_that_long() -> None:
    # engine.changes.claim_order tests "a step follows" with LIKE patterns up to LONGEST_PLAN: a longer plan
    # would be claimed as if its middle steps were its last.
    lengths = {len(plan) for plan in _every_plan()}
    assert max(lengths) == LONGEST_PLAN
