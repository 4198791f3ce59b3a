"""Which device changes may share one carrier request.

Changes are batched when they share the operation and every request-level field (service plan, zip code,
reason code …): ThingSpace takes those once per request, not per device. The key is stored on the row
(``BatchKey``) so one SQL claim picks a whole compatible batch.
"""

from __future__ import annotations

import hashlib
import json

from bulkchange.domain.change_request import StatusUpdateRequest
from bulkchange.domain.plan import CarrierStep


def request_fields(step: CarrierStep, req: StatusUpdateRequest) -> dict[str, object]:
    """The request-level fields ``step`` sends for this change (everything except the device ids)."""
    r = req.request
    if step is CarrierStep.ADD:
        return {"skuNumber": r.sku_number}
    if step is CarrierStep.ACTIVATE:
        ppu = r.thing_space_ppu.to_carrier() if r.thing_space_ppu else None
        return {
            "servicePlan": r.rate_plan_code,
            "mdnZipCode": r.zip_for_activation,
            "skuNumber": r.sku_number,
            "publicIpRestriction": r.public_ip_restriction,
            "primaryPlaceOfUse": ppu,
        }
    if step is CarrierStep.DEACTIVATE:
        return {"reasonCode": r.reason_code or "FF", "etfWaiver": r.etf_waiver}
    return {}


def batch_key(step: CarrierStep, req: StatusUpdateRequest) -> str:
    """A short stable key: equal for changes that can go in one request."""
    fields = json.dumps(request_fields(step, req), sort_keys=True, default=str)
    digest = hashlib.sha256(f"{step.value}|{fields}".encode()).hexdigest()[:40]
    return f"{step.value}:{digest}"


def solo_key(change_id: int) -> str:
    """A key no other change shares: used to isolate a change after its batch was refused."""
    return f"solo:{change_id}"
