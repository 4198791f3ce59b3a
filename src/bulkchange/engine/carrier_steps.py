"""Sending one batch of changes that share a step and its request fields, and reading the answer.

Nothing here writes to the database: it turns the carrier's answer (or error) into one ``Outcome`` per
change, and the processor records them in one transaction.
"""

from __future__ import annotations

from collections.abc import Sequence

from bulkchange.carrier import errors as cerr
from bulkchange.carrier.thingspace.client import ThingSpaceClient
from bulkchange.carrier.thingspace.models import DeviceId
from bulkchange.domain.change_request import StatusUpdateRequest
from bulkchange.domain.outcomes import Kind, LogEntry, Outcome
from bulkchange.domain.plan import CarrierStep
from bulkchange.domain.statuses import ChangeStatus
from bulkchange.engine.batching import request_fields
from bulkchange.store.tables import M2MDeviceChange

STEP_LOG = {
    CarrierStep.ADD: "Add ThingSpace Device: ThingSpace API",
    CarrierStep.ACTIVATE: "Activate ThingSpace Device: ThingSpace API",
    CarrierStep.DEACTIVATE: "Deactivate ThingSpace Device: ThingSpace API",
    CarrierStep.SUSPEND: "Suspend ThingSpace Device: ThingSpace API",
    CarrierStep.RESTORE: "Restore ThingSpace Device: ThingSpace API",
}


def device_ids(step: CarrierStep, change: M2MDeviceChange) -> list[DeviceId]:
    """The ids sent for a change: ICCID (+ IMEI for Add and Activate, as the original)."""
    ids = [DeviceId(kind="iccid", id=change.iccid)]
    if step in (CarrierStep.ADD, CarrierStep.ACTIVATE) and change.imei:
        ids.append(DeviceId(kind="imei", id=change.imei))
    return ids


def _device_request_text(step: CarrierStep, change: M2MDeviceChange, fields: dict[str, object], account: str) -> str:
    """This device's part of the request, for its log row (not the whole 10,000-device body)."""
    import json

    ids = [{"kind": d.kind, "id": d.id} for d in device_ids(step, change)]
    body = {"accountName": account, "devices": [{"deviceIds": ids}], **{k: v for k, v in fields.items() if v}}
    return f"POST devices/actions/{step.value.lower()} " + json.dumps(body, default=str)


async def send_batch(
    client: ThingSpaceClient,
    step: CarrierStep,
    changes: Sequence[M2MDeviceChange],
    req: StatusUpdateRequest,
    *,
    account: str,
) -> list[Outcome]:
    """Send ``changes`` (same step, same request fields) in one request; one Outcome per change."""
    fields = request_fields(step, req)
    texts = {c.id: _device_request_text(step, c, fields, account) for c in changes}
    devices = [device_ids(step, c) for c in changes]
    description = STEP_LOG[step]
    try:
        if step is CarrierStep.ADD:
            result = await client.add_devices(devices, account_name=account, sku_number=req.request.sku_number)
            return _add_outcomes(changes, result.devices, texts, result.response_text, description)
        if step is CarrierStep.ACTIVATE:
            r = req.request
            accepted = await client.activate(
                devices,
                service_plan=r.rate_plan_code or "",
                mdn_zip_code=r.zip_for_activation or "",
                account_name=account,
                sku_number=r.sku_number,
                public_ip_restriction=r.public_ip_restriction,
                primary_place_of_use=r.thing_space_ppu.to_carrier() if r.thing_space_ppu else None,
            )
        elif step is CarrierStep.DEACTIVATE:
            accepted = await client.deactivate(
                devices,
                reason_code=req.request.reason_code or "FF",
                etf_waiver=req.request.etf_waiver,
                account_name=account,
            )
        elif step is CarrierStep.SUSPEND:
            accepted = await client.suspend(devices, account_name=account)
        else:
            accepted = await client.restore(devices, account_name=account)
    except cerr.AuthenticationFailed:
        raise  # a bulk-level failure: the processor puts the batch back untouched
    except cerr.RateLimited as exc:
        return _all(changes, Kind.RETRY, f"rate limited by the carrier: {exc.message}", exc, texts, description)
    except cerr.TransientError as exc:
        return _all(changes, Kind.RETRY, f"carrier unavailable: {exc.message}", exc, texts, description)
    except cerr.OutcomeUnknown as exc:
        return _all(changes, Kind.UNKNOWN, f"outcome unknown ({exc.message}); reconciling", exc, texts, description)
    except cerr.CarrierError as exc:
        if len(changes) > 1:
            return _all(changes, Kind.ISOLATE, f"batch refused ({exc.message}); sending alone", exc, texts, description)
        return _all(changes, Kind.FAILED, _failure_text(exc), exc, texts, description, terminal=ChangeStatus.ERROR)
    outcomes = []
    for change in changes:
        outcomes.append(
            Outcome(
                change.id,
                Kind.AWAITING,
                f"{step.value.lower()} accepted, requestId {accepted.request_id}; awaiting the carrier's result",
                request_id=accepted.request_id,
                logs=[
                    LogEntry(
                        change.bulk_change_id,
                        change.id,
                        description,
                        True,
                        request_text=texts[change.id],
                        response_text=accepted.response_text,
                    )
                ],
            )
        )
    return outcomes


def _failure_text(exc: cerr.CarrierError) -> str:
    code = f" [{exc.code}]" if exc.code else ""
    return f"carrier refused{code}: {exc.message}"


def _all(
    changes: Sequence[M2MDeviceChange],
    kind: Kind,
    details: str,
    exc: cerr.CarrierError,
    texts: dict[int, str],
    description: str,
    *,
    terminal: ChangeStatus | None = None,
) -> list[Outcome]:
    retry_after = exc.retry_after if isinstance(exc, cerr.RateLimited) else None
    return [
        Outcome(
            c.id,
            kind,
            details,
            code=exc.code or type(exc).__name__,
            retry_after_s=retry_after,
            terminal=terminal,
            logs=[
                LogEntry(
                    c.bulk_change_id,
                    c.id,
                    description,
                    False,
                    request_text=texts[c.id],
                    response_text=exc.response_text,
                    error_text=f"{type(exc).__name__}: {exc}",
                )
            ],
        )
        for c in changes
    ]


def _add_outcomes(
    changes: Sequence[M2MDeviceChange],
    results: Sequence[object],
    texts: dict[int, str],
    response_text: str,
    description: str,
) -> list[Outcome]:
    """Match Add's per-device array to the changes by ICCID; a missing answer is an unknown outcome."""
    by_iccid: dict[str, object] = {}
    for item in results:
        iccid = getattr(item, "iccid", None)
        if iccid:
            by_iccid[iccid] = item
    outcomes: list[Outcome] = []
    for change in changes:
        item = by_iccid.get(change.iccid)
        if item is None and len(changes) == 1 and len(results) == 1:
            item = results[0]
        if item is None:
            outcomes.append(
                Outcome(
                    change.id,
                    Kind.UNKNOWN,
                    "the carrier's Add answer did not mention this device; reconciling",
                    logs=[
                        LogEntry(
                            change.bulk_change_id,
                            change.id,
                            description,
                            False,
                            texts[change.id],
                            response_text,
                            "device missing from the Add response",
                        )
                    ],
                )
            )
            continue
        text = str(getattr(item, "response", ""))
        if getattr(item, "ok", False):
            note = "already in the carrier's inventory" if getattr(item, "already_exists", False) else "added"
            outcomes.append(
                Outcome(
                    change.id,
                    Kind.DONE,
                    f"Add: {note}",
                    logs=[LogEntry(change.bulk_change_id, change.id, description, True, texts[change.id], text)],
                )
            )
        else:
            outcomes.append(
                Outcome(
                    change.id,
                    Kind.FAILED,
                    f"Add refused by the carrier: {text or 'empty answer'}",
                    code="AddRefused",
                    terminal=ChangeStatus.ERROR,
                    logs=[
                        LogEntry(
                            change.bulk_change_id,
                            change.id,
                            description,
                            False,
                            texts[change.id],
                            text,
                            f"Device '{change.iccid}' not added: {text}",
                        )
                    ],
                )
            )
    return outcomes
