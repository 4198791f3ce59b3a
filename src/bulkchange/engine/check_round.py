"""The one deferred check per bulk change (a message with ``IsRetryNewActivateThingSpaceDevice``, the seed's
"Get ThingSpace device after new activate device"): read the changes still awaiting their result; the
carrier's view settles them; on the last round (``THINGSPACE_UPDATE_DEVICE_STATUS_RETRY_NUMBER``) the rest
end unverified. Changes the carrier applies at a date are not part of the rounds: they are read once their
date has passed (``check_scheduled``), as often as it takes."""

from __future__ import annotations

from datetime import datetime

import structlog
from sqlalchemy import select
from sqlalchemy.orm import Session

from bulkchange.carrier.port import CarrierAccount, CarrierSession
from bulkchange.domain.outcomes import expecting
from bulkchange.domain.statuses import ChangeStatus
from bulkchange.engine import reading
from bulkchange.engine.batch import record
from bulkchange.engine.context import EngineContext
from bulkchange.store.db import read_only_session
from bulkchange.store.tables import DeviceBulkChange, M2MDeviceChange

log = structlog.get_logger("bulkchange.engine")

C = M2MDeviceChange


async def check_round(
    ctx: EngineContext, session: CarrierSession, bulk: DeviceBulkChange, account: CarrierAccount, round_: int
) -> None:
    """One round: every change awaiting a callback or check, a batch at a time."""
    final = round_ >= ctx.settings.update_device_status_retry_number
    carrier = ctx.carrier(account.carrier)
    last_id = 0
    while True:
        with read_only_session(ctx.session_factory) as db:
            rows = _awaiting_checks(db, bulk.id, after_id=last_id, limit=ctx.settings.batch_max_devices)
        if not rows:
            break
        last_id = rows[-1].id
        outcomes = await reading.check(ctx, carrier, session, rows, final=final)
        record(ctx, bulk, account, expecting(outcomes, ChangeStatus.AWAITING_RESULT))
    log.info("activation check round done", bulk_change_id=bulk.id, round=round_, final=final)


async def check_scheduled(
    ctx: EngineContext, session: CarrierSession, bulk: DeviceBulkChange, account: CarrierAccount
) -> None:
    """Read the changes whose date at the carrier has passed; each is settled or looked at again later."""
    carrier = ctx.carrier(account.carrier)
    while True:
        with read_only_session(ctx.session_factory) as db:
            rows = _due_scheduled(db, bulk.id, ctx.clock(), ctx.settings.batch_max_devices)
        if not rows:
            return
        outcomes = await reading.check_scheduled(ctx, carrier, session, rows)
        record(ctx, bulk, account, expecting(outcomes, ChangeStatus.SCHEDULED))


def _awaiting_checks(db: Session, bulk_id: int, *, after_id: int, limit: int) -> list[M2MDeviceChange]:
    """Changes awaiting a callback or the check (not a date at the carrier), from ``after_id`` on."""
    query = (
        select(C)
        .where(
            C.bulk_change_id == bulk_id,
            C.status == ChangeStatus.AWAITING_RESULT.value,
            C.next_attempt_at.is_(None),
            C.id > after_id,
        )
        .order_by(C.id)
        .limit(limit)
    )
    return list(db.execute(query).scalars())


def _due_scheduled(db: Session, bulk_id: int, now: datetime, limit: int) -> list[M2MDeviceChange]:
    """Changes the carrier was to apply at a date that has passed (SCHEDULED with ``NextAttemptAt`` due)."""
    query = (
        select(C)
        .where(
            C.bulk_change_id == bulk_id,
            C.status == ChangeStatus.SCHEDULED.value,
            C.next_attempt_at <= now,
        )
        .order_by(C.id)
        .limit(limit)
    )
    return list(db.execute(query).scalars())
