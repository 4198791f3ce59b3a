"""Finding out from the carrier what happened to changes: reconcile after an unknown outcome, and the
deferred check of changes awaiting their result. Both read the devices through the carrier session and
ask the carrier adapter what the reading says (``Carrier.judge``); ``recording`` writes the outcomes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta

from bulkchange.carrier import errors as cerr
from bulkchange.carrier.port import Carrier, CarrierSession, ChangeView, DeviceReading
from bulkchange.domain.outcomes import Kind, Outcome
from bulkchange.domain.statuses import ChangeStatus, TargetStatus
from bulkchange.engine import changes as ch
from bulkchange.engine.context import EngineContext
from bulkchange.store.tables import M2MDeviceChange

_ACTIVATIONS = frozenset({TargetStatus.ACTIVE, TargetStatus.PENDING_ACTIVATION})


async def read(
    session: CarrierSession, views: Sequence[ChangeView]
) -> Mapping[int, DeviceReading | cerr.CarrierError | None]:
    """Each change's device as the carrier sees it; a failed read stands in for each device it covered
    (refused credentials are the bulk change's failure and propagate)."""
    try:
        return await session.read(views)
    except cerr.AuthenticationFailed:
        raise
    except cerr.CarrierError as exc:
        return {view.id: exc for view in views}


async def reconcile(
    ctx: EngineContext, carrier: Carrier, session: CarrierSession, changes: Sequence[M2MDeviceChange]
) -> list[Outcome]:
    """Outcome unknown (timeout after sending, crash mid-call): read the device before sending anything again."""
    now = ctx.clock()
    window = timedelta(seconds=ctx.settings.reconcile_window_s)
    views = [ch.view_of(c) for c in changes]
    seen = await read(session, views)
    outcomes = []
    for change, view in zip(changes, views, strict=True):
        device = seen.get(view.id)
        if isinstance(device, cerr.CarrierError):
            outcomes.append(Outcome(change.id, Kind.HOLD, f"reconcile read failed: {device.message}", code=device.code))
            continue
        passed = change.sent_at is None or now - change.sent_at >= window
        outcomes.append(carrier.judge(view, device, window_passed=passed, purpose="reconcile"))
    return outcomes


async def check(
    ctx: EngineContext, carrier: Carrier, session: CarrierSession, changes: Sequence[M2MDeviceChange], *, final: bool
) -> list[Outcome]:
    """The deferred check: read the changes still awaiting; what the carrier shows settles them, and on the
    final round the rest are ACTIVATION_UNVERIFIED (activations) or NEEDS_REVIEW (anything else)."""
    views = [ch.view_of(c) for c in changes]
    seen = await read(session, views)
    outcomes = []
    for view in views:
        device = seen.get(view.id)
        if isinstance(device, cerr.CarrierError):
            last_seen = f"unreadable ({device.message})"
        else:
            verdict = carrier.judge(view, device, window_passed=False, purpose="check")
            if verdict.kind in (Kind.DONE, Kind.FAILED):
                outcomes.append(verdict)
                continue
            last_seen = (device.state if device is not None else None) or "absent"
        if final:
            rounds = ctx.settings.update_device_status_retry_number
            terminal = ChangeStatus.ACTIVATION_UNVERIFIED if view.target in _ACTIVATIONS else ChangeStatus.NEEDS_REVIEW
            details = f"{view.step.lower()} not confirmed after {rounds} checks (last seen: {last_seen})"
            outcomes.append(Outcome(view.id, Kind.FAILED, details, terminal=terminal, code="NotConfirmed"))
    return outcomes


async def check_scheduled(
    ctx: EngineContext, carrier: Carrier, session: CarrierSession, changes: Sequence[M2MDeviceChange]
) -> list[Outcome]:
    """Changes the carrier was to apply at a date that has passed: what it shows settles them; a device not
    changed yet is looked at again after ``reconcile_retry_s`` (never given up on by a round count)."""
    views = [ch.view_of(c) for c in changes]
    seen = await read(session, views)
    outcomes = []
    later = ctx.clock() + timedelta(seconds=ctx.settings.reconcile_retry_s)
    for change, view in zip(changes, views, strict=True):
        device = seen.get(view.id)
        verdict = None
        if not isinstance(device, cerr.CarrierError):
            verdict = carrier.judge(view, device, window_passed=False, purpose="check")
        if verdict is not None and verdict.kind in (Kind.DONE, Kind.FAILED):
            outcomes.append(verdict)
            continue
        details = change.status_details or "scheduled at the carrier; not applied yet"
        outcomes.append(
            Outcome(view.id, Kind.AWAITING, details, request_id=change.carrier_request_id, check_after=later)
        )
    return outcomes
