"""What one ThingSpace request of a step carries: the device ids, the request-level fields, the batch key.

ThingSpace takes the request-level fields (service plan, zip code, reason code …) once per request, so
changes may share a request only when their step and every such field are equal; the batch key says so
and is stored on the change row (``BatchKey``), so its format must stay stable across versions.
"""

from __future__ import annotations

import hashlib
import json

from bulkchange.carrier.thingspace.models import DeviceId
from bulkchange.carrier.thingspace.steps import Step
from bulkchange.domain.change_request import StatusUpdateRequest

MAX_DEVICES_PER_REQUEST = 10_000
"""ThingSpace refuses a provisioning request naming more devices than this."""


def device_ids(step: Step, iccid: str, imei: str | None) -> list[DeviceId]:
    """The ids sent for one device: its ICCID, plus its IMEI for Add and Activate."""
    ids = [DeviceId(kind="iccid", id=iccid)]
    if step in (Step.ADD, Step.ACTIVATE) and imei:
        ids.append(DeviceId(kind="imei", id=imei))
    return ids


def request_fields(step: Step, request: StatusUpdateRequest) -> dict[str, object]:
    """The request-level fields ``step`` sends for this change (everything except the device ids)."""
    r = request.request
    if step is Step.ADD:
        return {"skuNumber": r.sku_number}
    if step is Step.ACTIVATE:
        ppu = r.thing_space_ppu.to_carrier() if r.thing_space_ppu else None
        return {
            "servicePlan": r.rate_plan_code,
            "mdnZipCode": r.zip_for_activation,
            "skuNumber": r.sku_number,
            "publicIpRestriction": r.public_ip_restriction,
            "primaryPlaceOfUse": ppu,
        }
    if step is Step.DEACTIVATE:
        return {"reasonCode": r.reason_code or "FF", "etfWaiver": r.etf_waiver}
    return {}


def batch_key(step: Step, request: StatusUpdateRequest) -> str:
    """``STEP:digest`` of the step and its request-level fields: equal exactly when two changes can share
    one request of ``step``."""
    fields = json.dumps(request_fields(step, request), sort_keys=True, default=str)
    digest = hashlib.sha256(f"{step.value}|{fields}".encode()).hexdigest()[:40]
    return f"{step.value}:{digest}"


def device_request_text(step: Step, iccid: str, imei: str | None, fields: dict[str, object], account: str) -> str:
    """One device's part of a request, for its own log row (not the whole 10,000-device body)."""
    ids = [{"kind": d.kind, "id": d.id} for d in device_ids(step, iccid, imei)]
    body = {"accountName": account, "devices": [{"deviceIds": ids}], **{k: v for k, v in fields.items() if v}}
    return f"POST {step.endpoint} " + json.dumps(body, default=str)
